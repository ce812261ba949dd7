"""Write the ablation corpus: scene images, oracle annotations, conversations, two splits.

Layout under `out/`:
  images/scene_XXXXXX.png             the pictures (the real pipeline can annotate this folder too)
  annotations/oracle.parquet          ground-truth rows for every scene (arm "moai")
  annotations/blank.parquet           the same images with nothing found (arm "no-aux")
  train.json, heldout.json            LLaVA conversations; the splits' scenes are disjoint
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .oracle import blank_row, oracle_row, write_rows
from .questions import scene_conversations
from .scenes import SceneConfig, make_scene, render


@dataclass(frozen=True)
class CorpusConfig:
    seed: int = 0
    train_scenes: int = 1200
    heldout_scenes: int = 150
    scene: SceneConfig = SceneConfig()

    def __post_init__(self):
        if self.train_scenes < 1 or self.heldout_scenes < 1:
            raise ValueError(f"need at least one scene per split, got train_scenes={self.train_scenes}, "
                             f"heldout_scenes={self.heldout_scenes}")


@dataclass(frozen=True)
class CorpusPaths:
    root: Path
    images: Path
    oracle: Path
    blank: Path
    train: Path
    heldout: Path


def corpus_paths(out: str | Path) -> CorpusPaths:
    root = Path(out)
    return CorpusPaths(root, root / "images", root / "annotations" / "oracle.parquet",
                       root / "annotations" / "blank.parquet", root / "train.json", root / "heldout.json")


def write_corpus(out: str | Path, cfg: CorpusConfig = CorpusConfig()) -> CorpusPaths:
    """Generate and write every file; scenes 0..train-1 are train, the next ones held out."""
    paths = corpus_paths(out)
    paths.images.mkdir(parents=True, exist_ok=True)
    oracle_rows, blank_rows, splits = [], [], {"train": [], "heldout": []}
    for index in range(cfg.train_scenes + cfg.heldout_scenes):
        scene = make_scene(cfg.seed, index, cfg.scene)
        image, id_map = render(scene)
        image_path = paths.images / f"{scene.scene_id}.png"
        image.save(image_path)
        oracle_rows.append(oracle_row(scene, id_map, str(image_path)))
        blank_rows.append(blank_row(scene, str(image_path)))
        split = "train" if index < cfg.train_scenes else "heldout"
        splits[split] += scene_conversations(scene, cfg.seed)
    provenance = {"annotator": "trainer.ablation.oracle", "corpus": _plain(asdict(cfg))}
    write_rows(oracle_rows, paths.oracle, provenance)
    write_rows(blank_rows, paths.blank, provenance | {"annotator": "trainer.ablation.oracle.blank_row"})
    paths.train.write_text(json.dumps(splits["train"], indent=1))
    paths.heldout.write_text(json.dumps(splits["heldout"], indent=1))
    return paths


def _plain(value):
    return json.loads(json.dumps(value))
