"""Shared helpers for the annotator tests: real images, schema round trip, a seeded HF cache."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

WORKING_SIZE = 490


def real_images(n: int = 3, size: int = WORKING_SIZE) -> np.ndarray:
    """(n, size, size, 3) uint8 RGB: photos shipped in installed packages, squashed as MoAI does."""
    import ultralytics
    from PIL import Image
    assets = Path(ultralytics.__file__).parent / "assets"
    photos = [Image.open(assets / name).convert("RGB") for name in ("bus.jpg", "zidane.jpg")]
    rng = np.random.default_rng(0)
    while len(photos) < n:
        photos.append(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))
    return np.stack([np.asarray(p.resize((size, size), Image.BILINEAR)) for p in photos[:n]])


def round_trip(results: list[dict], provenance: dict, tmp_path: Path):
    """Results -> schema rows -> Parquet -> the validating reader; returns the table read back."""
    import pyarrow.parquet as pq

    from schemas import read_annotations, read_provenance, rows_to_table
    from schemas.schema import empty_row
    from schemas.verbalize import verbalize_row
    rows = []
    for i, result in enumerate(results):
        row = empty_row(f"img{i}.jpg", f"/data/img{i}.jpg", WORKING_SIZE, WORKING_SIZE)
        row.update(result)
        row.update(verbalize_row(row))
        rows.append(row)
    path = tmp_path / "annotations.parquet"
    pq.write_table(rows_to_table(rows, provenance={"annotators": provenance}), path)
    assert read_provenance(path)["annotators"] == provenance
    return read_annotations(path)


def seed_hf_cache(folder: Path, repo_id: str, cache: Path) -> Path:
    """Place a save_pretrained folder in a Hugging Face hub cache as if `repo_id` had been downloaded."""
    from annotators.fake_weights import hub_snapshot
    shutil.copytree(folder, hub_snapshot(cache, repo_id))
    return cache


def use_hf_cache(monkeypatch, cache: Path) -> None:
    """Point huggingface_hub and transformers at `cache` for this test (both read it per call)."""
    import huggingface_hub.constants
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
