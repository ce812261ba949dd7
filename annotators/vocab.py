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
