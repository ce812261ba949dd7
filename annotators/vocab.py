"""Named, hashed label vocabularies (query lists for open-world detection, class names).

Vocabularies are never bundled in this repository: they come from a model checkpoint, an
installed package, or a file the user names (JSON list of strings, or one name per line).
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


# Vocabularies shipped inside installed packages, as `package:name`.
PACKAGE_VOCABULARIES = {
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

    MoAI's OWLv2 queries are ADE20K-847 + ImageNet-1k: `("ade20k_847.json", "imagenet_1000.json")`.
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
