"""The oracle annotator: a scene's ground truth as one annotation row in our schema.

Rows carry what the four CV models would report if they were perfect (panoptic segments with
the ps_map, detections, the scene graph, OCR), verbalized by `schemas.verbalize`, and are
written with `schemas.rows_to_table`, so the trainer reads them exactly as it reads the
pipeline's output. `blank_row` is the ablation's "aux removed" arm: the same image with nothing
detected and an all-zero ps_map.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from schemas import encode_ps_map, rows_to_table
from schemas.schema import empty_row
from schemas.verbalize import verbalize_row

from .scenes import BACKGROUND_LABEL, BACKGROUND_LABEL_ID, OBJECT_KINDS, SIGN_LABEL, SIGN_LABEL_ID, Scene

LABEL_IDS = {name: label_id for name, label_id, _ in OBJECT_KINDS} | {
    SIGN_LABEL: SIGN_LABEL_ID, BACKGROUND_LABEL: BACKGROUND_LABEL_ID}
DETECTION_QUERIES = tuple(name for name, _, _ in OBJECT_KINDS) + ("signboard",)
PREDICATE_IDS = {"over": 1, "beside": 3}   # 1-based PSG predicate ids
ORACLE_SCORE = 0.99                           # above every MoAI keep-threshold


def mask_box(mask: np.ndarray) -> list[float]:
    """Normalized [x0, y0, x1, y1] of a boolean (H, W) mask; x1 = last column + 1 (detectron2)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    box = np.array([cols[0] / w, rows[0] / h, (cols[-1] + 1) / w, (rows[-1] + 1) / h], np.float32)
    # float32 as stored, so the text written now equals the text re-verbalized from the file
    return [float(v) for v in box]


def segments(scene: Scene, id_map: np.ndarray) -> list[dict]:
    """Panoptic segments, ids as `scenes.render` draws them: objects 1..N, the sign, the wall."""
    labelled = [(o.kind, True) for o in scene.objects] + [(SIGN_LABEL, False), (BACKGROUND_LABEL, False)]
    out = []
    for segment_id, (label, is_thing) in enumerate(labelled, start=1):
        mask = id_map == segment_id
        if not mask.any():  # fully covered (cannot happen on the grid, but never emit an empty box)
            continue
        out.append({"segment_id": segment_id, "label_id": LABEL_IDS[label], "label": label, "is_thing": is_thing,
                    "score": ORACLE_SCORE, "box": mask_box(mask), "area": int(mask.sum())})
    return out


def oracle_row(scene: Scene, id_map: np.ndarray, source: str) -> dict:
    """The annotation row a perfect pipeline would write for `scene` (image id = file name)."""
    row = empty_row(f"{scene.scene_id}.png", source, scene.size, scene.size)
    panoptic = segments(scene, id_map)
    by_id = {s["segment_id"]: s for s in panoptic}
    things = [by_id[i] for i in range(1, len(scene.objects) + 1)]
    sign = by_id[len(scene.objects) + 1]
    detections = [{"label": s["label"], "query_index": DETECTION_QUERIES.index(s["label"]),
                   "score": ORACLE_SCORE, "box": s["box"]} for s in things]
    detections.append({"label": "signboard", "query_index": DETECTION_QUERIES.index("signboard"),
                       "score": ORACLE_SCORE, "box": sign["box"]})
    objects = [{"label": s["label"], "label_id": s["label_id"], "score": ORACLE_SCORE, "box": s["box"]}
               for s in things]
    relations = [{"subject": i, "object": j, "predicate": predicate, "predicate_id": PREDICATE_IDS[predicate],
                  "score": ORACLE_SCORE}
                 for predicate, pairs in (("over", scene.over_pairs()), ("beside", scene.beside_pairs()))
                 for i, j in pairs]
    x0, y0, x1, y1 = sign["box"]
    ocr = [{"text": scene.sign_word, "score": ORACLE_SCORE,
            "polygon": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]}]
    row.update(panoptic=panoptic, ps_map=encode_ps_map(id_map), detections=detections,
               scene_graph={"objects": objects, "relations": relations}, ocr=ocr)
    row.update(verbalize_row(row))
    return row


def blank_row(scene: Scene, source: str) -> dict:
    """The same image with every annotator run and nothing found: empty texts, all-zero ps_map."""
    row = empty_row(f"{scene.scene_id}.png", source, scene.size, scene.size)
    row.update(panoptic=[], ps_map=encode_ps_map(np.zeros((scene.size, scene.size), np.uint8)), detections=[],
               scene_graph={"objects": [], "relations": []}, ocr=[])
    row.update(verbalize_row(row))
    return row


def write_rows(rows: list[dict], path: str | Path, provenance: dict) -> Path:
    """One Parquet file in the annotation contract, provenance in its metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows_to_table(rows, provenance), path)
    return path
