"""Named, hashed label vocabularies (query lists for open-world detection, class names).

A vocabulary comes from a file the user names (JSON list of strings, or one name per line), an
installed package (`ultralytics:lvis`), or the few MoAI lists this project ships (`moai:owlv2`,
the 1,847 OWLv2 queries; `annotators/vocabularies/SOURCES.md` says where each comes from).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Vocabulary:
    name: str
    names: tuple[str, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.names).encode()).hexdigest()

    def __len__(self) -> int:
        return len(self.names)

    def provenance(self) -> dict:
        return {"name": self.name, "size": len(self.names), "sha256": self.sha256}

    def __add__(self, other: "Vocabulary") -> "Vocabulary":
        return Vocabulary(f"{self.name}+{other.name}", self.names + other.names)


def load_vocabulary_file(path: str | Path, name: str | None = None) -> Vocabulary:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        names = json.loads(text)
        if isinstance(names, dict):  # {"0": "person", ...} as in id2label
            names = [names[k] for k in sorted(names, key=int)]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{path}: a vocabulary is a non-empty list of non-empty strings")
    return Vocabulary(name or path.stem, tuple(names))


SHIPPED_DIR = Path(__file__).parent / "vocabularies"
SHIPPED = {"owlv2": "moai_owlv2_1847.json", "coco_panoptic": "coco_panoptic_133.json",
           "psg_predicates": "psg_predicates_56.json"}
MOAI_QUERIES = "moai:owlv2"  # MoAI's OWLv2 queries: ADE20K-847 names, then ImageNet-1k names


def shipped_file(name: str) -> Path:
    """The file behind `moai:<name>`."""
    return SHIPPED_DIR / SHIPPED[name]


# Vocabularies shipped inside installed packages (and this one), as `package:name`.
PACKAGE_VOCABULARIES = {
    "moai": SHIPPED,
    # ultralytics' dataset YAMLs carry the class-name lists of their datasets.
    "ultralytics": {"coco": "coco.yaml", "lvis": "lvis.yaml", "imagenet": "ImageNet.yaml",
                    "objects365": "Objects365.yaml", "ade20k": "ade20k.yaml", "voc": "VOC.yaml",
                    "open-images-v7": "open-images-v7.yaml"},
}


def package_vocabulary(spec: str) -> Vocabulary:
    """`ultralytics:coco` -> the COCO class names from ultralytics' installed coco.yaml."""
    package, _, name = spec.partition(":")
    known = PACKAGE_VOCABULARIES.get(package)
    if known is None or name not in known:
        choices = [f"{p}:{n}" for p, names in PACKAGE_VOCABULARIES.items() for n in names]
        raise ValueError(f"unknown package vocabulary {spec!r}; choose from {choices} or name a file")
    if package == "moai":
        return load_vocabulary_file(shipped_file(name), name=spec)
    if package == "ultralytics":
        try:
            import ultralytics
        except ImportError as err:
            raise ImportError(f"vocabulary {spec!r} needs the ultralytics package (extra 'yolo')") from err
        import yaml
        path = Path(ultralytics.__file__).parent / "cfg" / "datasets" / known[name]
        names = yaml.safe_load(path.read_text(encoding="utf-8"))["names"]
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names, key=int)]
        return Vocabulary(spec, tuple(str(n) for n in names))
    raise AssertionError(f"no loader for package {package!r}")


def load_vocabulary(spec: str | Path | tuple | list) -> Vocabulary:
    """One spec or several (concatenated in order): `package:name` or a file path.

    MoAI's OWLv2 queries (ADE20K-847 + ImageNet-1k names) ship as `moai:owlv2`.
    """
    if isinstance(spec, (tuple, list)):
        if not spec:
            raise ValueError("an empty vocabulary spec; name at least one file or `package:name`")
        parts = [load_vocabulary(s) for s in spec]
        vocab = parts[0]
        for part in parts[1:]:
            vocab = vocab + part
        return vocab
    text = str(spec)
    if ":" in text and text.split(":", 1)[0] in PACKAGE_VOCABULARIES:
        return package_vocabulary(text)
    return load_vocabulary_file(text)


def vocabulary_requirements(key: str, spec) -> list:
    """One `Requirement` per part of a vocabulary spec: a file must exist; a `package:name` must be
    one we know (its package is checked when the annotator loads it)."""
    from .base import Requirement
    parts = (spec,) if isinstance(spec, (str, Path)) else tuple(spec)
    requirements = []
    for part in parts:
        text = str(part)
        package = text.split(":", 1)[0] if ":" in text else ""
        if package in PACKAGE_VOCABULARIES:
            known = text.split(":", 1)[1] in PACKAGE_VOCABULARIES[package]
            where = str(shipped_file(text.split(":", 1)[1])) if package == "moai" and known else text
            requirements.append(Requirement(key, f"vocabulary {text}", where, known,
                                            "" if known else f"unknown vocabulary; choose a file or one of "
                                            f"{[f'{p}:{n}' for p, ns in PACKAGE_VOCABULARIES.items() for n in ns]}"))
        else:
            found = Path(text).is_file()
            requirements.append(Requirement(key, f"vocabulary file {Path(text).name}", text, found,
                                            "" if found else "name an existing JSON list or one-name-per-line file"))
    return requirements
