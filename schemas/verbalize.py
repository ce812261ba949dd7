"""MoAI's verbalization of CV outputs, byte-identical to the published prompts.

See docs/moai.md §3. One module, used by the pipeline (at write time) and by the trainer
and `reverbalize` (from stored rows). Inputs are rows shaped by `schemas.schema`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from typing import Iterable, Sequence

import numpy as np

from .schema import STATUS_OK


class Compat(str, Enum):
    """`none`: correct behaviour. `moai`: reproduce the published quirks (docs/moai.md §3b)."""
    NONE = "none"
    MOAI = "moai"


@dataclass(frozen=True)
class VerbalizeConfig:
    owod_min_score: float = 0.5     # OWLv2 detections verbalized at score >= this
    sgg_min_score: float = 0.8      # relations kept at max predicate prob >= this
    sgg_max_relations: int = 10     # candidates = top min(this, #objects) relations
    ocr_min_score: float = 0.85     # OCR strings kept at confidence >= this
    ps_min_score: float = 0.0       # MoAI verbalizes every panoptic segment
    compat: Compat = Compat.NONE

    def __post_init__(self):
        for name in ("owod_min_score", "sgg_min_score", "ocr_min_score", "ps_min_score"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        if self.sgg_max_relations < 0:
            raise ValueError(f"sgg_max_relations must be >= 0, got {self.sgg_max_relations!r}")
        object.__setattr__(self, "compat", Compat(self.compat))

    @classmethod
    def recorded(cls, provenance: dict) -> "VerbalizeConfig":
        """The thresholds an output's texts were made with: from its provenance after a reverbalize,
        else MoAI's defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (provenance.get("verbalization") or {}).items() if k in known})


BOX_PREAMBLE = "The image includes bounding box coordinates and their objects: "
SGG_PREAMBLE = "The image includes relationships between objects: "
OCR_PREAMBLE = "The image includes text descriptions: "
JOIN = ", and "
NAME_SUFFIXES = ("-merged", "-other", "-stuff")


def clean_name(name: str) -> str:
    """COCO panoptic names without `-merged`, `-other`, `-stuff` ('sky-other-merged' -> 'sky')."""
    stripped = True
    while stripped:
        stripped = False
        for suffix in NAME_SUFFIXES:
            if name.endswith(suffix):
                name, stripped = name[: -len(suffix)], True
    return name


def stored(value: float) -> float:
    """The value as the Parquet file holds it (float32). Verbalizing a fresh float64 and the
    stored float32 would differ at rounding and threshold boundaries (0.725 -> 0.72 vs 0.73)."""
    return float(np.float32(value))


def format_box(box: Sequence[float]) -> str:
    """`[0.00, 0.10, 0.52, 0.98]`: rounded to 2 decimals, printed with 2 decimals."""
    return "[" + ", ".join(f"{round(stored(v), 2):.2f}" for v in box) + "]"


def _sentence(preamble: str, items: list[str]) -> str:
    return preamble + JOIN.join(items) + "." if items else ""


def verbalize_panoptic(segments: Iterable[dict] | None, cfg: VerbalizeConfig = VerbalizeConfig()) -> str:
    items = [f"{format_box(s['box'])} {clean_name(s['label'])}"
             for s in segments or () if stored(s["score"]) >= cfg.ps_min_score]
    return _sentence(BOX_PREAMBLE, items)


def verbalize_detections(detections: Iterable[dict] | None, cfg: VerbalizeConfig = VerbalizeConfig()) -> str:
    items = [f"{format_box(d['box'])} {d['label']}"
             for d in detections or () if stored(d["score"]) >= cfg.owod_min_score]
    return _sentence(BOX_PREAMBLE, items)


def numbered_object_names(labels: Sequence[str]) -> list[str]:
    """Names occurring more than once get `(#k)` in order of appearance: 'person (#2)'."""
    names = [clean_name(label) for label in labels]
    totals: dict[str, int] = {}
    for name in names:
        totals[name] = totals.get(name, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if totals[name] > 1:
            seen[name] = seen.get(name, 0) + 1
            name = f"{name} (#{seen[name]})"
        out.append(name)
    return out


def select_relations(scene_graph: dict | None, cfg: VerbalizeConfig = VerbalizeConfig()) -> list[int]:
    """Indices of the relations MoAI verbalizes, in the order they are written.

    Candidates: the top min(sgg_max_relations, #objects) by score (descending, ties by index;
    the published code leaves this order to `argpartition`), then score >= sgg_min_score.
    With compat=moai, fewer relations than candidates yields none (the published bare except).
    """
    if not scene_graph:
        return []
    relations = scene_graph["relations"] or []
    k = min(cfg.sgg_max_relations, len(scene_graph["objects"] or []))
    if cfg.compat is Compat.MOAI and len(relations) < k:
        return []
    scores = [stored(r["score"]) for r in relations]
    order = sorted(range(len(relations)), key=lambda i: (-scores[i], i))[:k]
    return [i for i in order if scores[i] >= cfg.sgg_min_score]


def verbalize_scene_graph(scene_graph: dict | None, cfg: VerbalizeConfig = VerbalizeConfig()) -> str:
    keep = select_relations(scene_graph, cfg)
    if not keep:
        return ""
    names = numbered_object_names([o["label"] for o in scene_graph["objects"]])
    relations = scene_graph["relations"]
    items = [f"{names[relations[i]['subject']]} is {relations[i]['predicate']} {names[relations[i]['object']]}"
             for i in keep]
    return _sentence(SGG_PREAMBLE, items)


def verbalize_ocr(lines: Iterable[dict] | None, cfg: VerbalizeConfig = VerbalizeConfig()) -> str:
    return _sentence(OCR_PREAMBLE, [line["text"] for line in lines or () if stored(line["score"]) >= cfg.ocr_min_score])


def combine(text_ps: str, text_owod: str, text_sgg: str, text_ocr: str) -> str:
    """The four parts joined by single spaces; empty parts keep their space (MoAI)."""
    return " ".join((text_ps, text_owod, text_sgg, text_ocr))


def verbalize_row(row: dict, cfg: VerbalizeConfig = VerbalizeConfig()) -> dict[str, str | None]:
    """The five text columns for one schema row (all None for an error row)."""
    if row.get("status") != STATUS_OK:
        return {"text_ps": None, "text_owod": None, "text_sgg": None, "text_ocr": None, "text_aux": None}
    parts = {
        "text_ps": verbalize_panoptic(row.get("panoptic"), cfg),
        "text_owod": verbalize_detections(row.get("detections"), cfg),
        "text_sgg": verbalize_scene_graph(row.get("scene_graph"), cfg),
        "text_ocr": verbalize_ocr(row.get("ocr"), cfg),
    }
    parts["text_aux"] = combine(parts["text_ps"], parts["text_owod"], parts["text_sgg"], parts["text_ocr"])
    return parts
