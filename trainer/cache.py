"""The feature cache: frozen CLIP features of each photo and its panoptic colour map, computed once.

Layout of `--out DIR`:
  index.arrow                one row per sample: ids, tokenized conversation and auxiliary text,
                             and where its image's features live (shard, slot)
  features-00000.safetensors image_features (n, N, Dv) and ps_features (n, N, Dv), one slot per image
  meta.json                  model config, dtype, bytes per sample, the join report
Shards are read lazily (`safe_open` memory-maps; one slot is one slice), so training streams
the cache without loading it. Images shared by several conversations are encoded once.

A cache is written whole into a hidden folder beside `DIR` and swapped in only when complete, so a
killed `trainer cache` leaves the previous cache (or nothing) at `DIR`, never a mix of old index and
new shards; the next run starts over. A non-empty `DIR` that is not a cache is refused.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from schemas.dtypes import DTYPE_NAMES, torch_dtype
from schemas.files import swap_folder

from .data import (
    ANNOTATION_COLUMNS, JoinReport, PromptFormat, answer_tokens, join_samples, load_conversations, load_image,
    load_ps_ids, sample_lengths,
)

INDEX_FILE = "index.arrow"  # Arrow IPC, uncompressed: memory-mapped, never loaded whole
META_FILE = "meta.json"


class CacheError(ValueError):
    """The cache directory cannot be written or read as a cache; the message says why."""


def staging_dir(out: Path) -> Path:
    """Where `trainer cache` builds `out`: beside it, hidden, one per target (a killed run's is redone)."""
    return out.with_name(f".{out.name}.building")


def check_out_dir(out: Path) -> None:
    """`out` may be new, empty, or a cache (which is replaced); anything else is someone's data."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / META_FILE).is_file())):
        raise CacheError(f"{out} exists and is not a feature cache; choose an empty or new --out")


def start_staging(out: Path) -> Path:
    check_out_dir(out)
    staging = staging_dir(out)
    shutil.rmtree(staging, ignore_errors=True)  # what a killed run left
    staging.mkdir(parents=True)
    return staging


def swap_into_place(staging: Path, out: Path) -> None:
    """Replace `out` by the finished `staging`: readers see the old cache or the new one, whole."""
    swap_folder(staging, out)


def shard_name(k: int) -> str:
    return f"features-{k:05d}.safetensors"


def _write_shard(out: Path, k: int, image_feats: list, ps_feats: list) -> None:
    from safetensors.torch import save_file
    save_file({"image_features": torch.cat(image_feats), "ps_features": torch.cat(ps_feats)},
              str(out / shard_name(k)))


@torch.no_grad()
def build_cache(model, table, conversations: list[dict], out: str | os.PathLike, *,
                prompt: PromptFormat = PromptFormat(), max_length: int | None = None,
                dtype: str = "bfloat16", batch_size: int = 8, shard_size: int = 256,
                device: str = "cpu", progress: bool = True) -> JoinReport:
    """Encode every image that some usable conversation refers to; write shards + index + meta +
    join_report.json into a staging folder, then swap it in as `out`.

    Images that cannot be read are reported (`unreadable_image`) and their samples left out.
    """
    from tqdm import tqdm
    target = Path(out)
    out = start_staging(target)
    samples, report = join_samples(table, conversations, model.tokenizer, model.image_token_id, prompt, max_length)
    rows = sorted({s["row"] for s in samples})
    sources = table.column("source").to_pylist()
    ps_maps = table.column("ps_map")
    where, unreadable = {}, {}
    image_feats, ps_feats, shard, filled = [], [], 0, 0
    model.eval().to(device)
    size = model.config.image_size
    for start in tqdm(range(0, len(rows), batch_size), desc="cache", unit="batch", disable=not progress):
        batch_rows, images, ps_ids = [], [], []
        for row in rows[start:start + batch_size]:
            try:
                image, ps = load_image(sources[row], size), load_ps_ids(ps_maps[row].as_py(), size)
            except Exception as exc:  # a vanished or corrupt file: report, never crash the cache
                unreadable[row] = f"{sources[row]}: {type(exc).__name__}: {exc}"
                continue
            images.append(image)
            ps_ids.append(ps)
            batch_rows.append(row)
        if not batch_rows:
            continue
        pixels = model.image_pixel_values(torch.from_numpy(np.stack(images)).to(device))  # (B, 3, 490, 490)
        ps_pixels = model.ps_pixel_values(torch.from_numpy(np.stack(ps_ids)).to(device))  # (B, 3, 490, 490)
        image_feats.append(model.encode_vision(pixels).to("cpu", torch_dtype(dtype)))  # (B, N, Dv)
        ps_feats.append(model.encode_vision(ps_pixels).to("cpu", torch_dtype(dtype)))
        for row in batch_rows:
            where[row] = (shard, filled)
            filled += 1
        if filled >= shard_size:
            _write_shard(out, shard, image_feats, ps_feats)
            image_feats, ps_feats, shard, filled = [], [], shard + 1, 0
    if filled:
        _write_shard(out, shard, image_feats, ps_feats)

    kept = report.drop(samples, unreadable, "unreadable_image")  # every other row has its features
    unreadable_samples = report.unreadable_image
    index = pa.table({
        "sample_id": [s["sample_id"] for s in kept],
        "image_id": [s["image_id"] for s in kept],
        "input_ids": pa.array([s["input_ids"] for s in kept], pa.list_(pa.int32())),
        "labels": pa.array([s["labels"] for s in kept], pa.list_(pa.int32())),
        "aux_input_ids": pa.array([s["aux_input_ids"] for s in kept], pa.list_(pa.int32())),
        "shard": pa.array([where[s["row"]][0] for s in kept], pa.int32()),
        "slot": pa.array([where[s["row"]][1] for s in kept], pa.int32()),
        "length": pa.array(sample_lengths(kept), pa.int32()),
        "answer_tokens": pa.array(answer_tokens(kept), pa.int32()),
    })
    with pa.OSFile(str(out / INDEX_FILE), "wb") as sink, pa.ipc.new_file(sink, index.schema) as writer:
        writer.write_table(index, max_chunksize=65536)
    feature_shape = tuple(image_feats[0].shape[1:]) if image_feats else None
    if feature_shape is None and where:
        from safetensors import safe_open
        with safe_open(str(out / shard_name(0)), "pt") as f:
            feature_shape = tuple(f.get_slice("image_features").get_shape()[1:])
    bytes_per_image = 2 * int(np.prod(feature_shape or (0,))) * torch.finfo(torch_dtype(dtype)).bits // 8
    meta = {"model": model.config.to_dict(), "dtype": dtype, "images": len(where), "samples": len(kept),
            "unreadable_image": unreadable_samples, "feature_shape": list(feature_shape or []),
            "bytes_per_image": bytes_per_image, "prompt": prompt.__dict__, "max_length": max_length,
            "join_report": report.__dict__}
    (out / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    report.write(out / "join_report.json")
    swap_into_place(out, target)
    return report


class CachedDataset(torch.utils.data.Dataset):
    """Samples from a cache directory; each item reads one image's slot from its shard (mmap)."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.dir = Path(cache_dir)
        if not (self.dir / INDEX_FILE).is_file():
            raise FileNotFoundError(f"{self.dir} is not a feature cache (no {INDEX_FILE}); "
                                    "make one with `trainer cache`")
        self.meta = json.loads((self.dir / META_FILE).read_text())
        self._table, self._handles = None, {}
        index = self._index()
        self.lengths = index.column("length").to_numpy().tolist()
        self.answer_tokens = index.column("answer_tokens").to_numpy().tolist()

    def __len__(self) -> int:
        return len(self.lengths)

    def _index(self):
        if self._table is None:  # memory-mapped: rows are paged in when read
            self._table = pa.ipc.open_file(pa.memory_map(str(self.dir / INDEX_FILE))).read_all()
        return self._table

    @property
    def samples(self) -> list[dict]:
        """Every record as Python values (small caches, e.g. ablations); at scale use record(i)."""
        if "_samples" not in self.__dict__:
            self._samples = self._index().to_pylist()
        return self._samples

    def record(self, i: int) -> dict:
        """Sample i's ids, tokens and feature location, as Python values."""
        return {name: self._index().column(name)[i].as_py() for name in self._index().column_names}

    def _shard(self, k: int):
        if k not in self._handles:  # opened per DataLoader worker, on first use
            from safetensors import safe_open
            self._handles[k] = safe_open(str(self.dir / shard_name(k)), framework="pt")
        return self._handles[k]

    def image_slots(self) -> dict[str, tuple[int, int]]:
        """image_id -> (shard, slot) of every cached image."""
        index = self._index().select(["image_id", "shard", "slot"]).to_pydict()
        return dict(zip(index["image_id"], zip(index["shard"], index["slot"])))

    def features(self, shard_id: int, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's (image, ps) features, each (N, Dv), in the cache's dtype."""
        shard = self._shard(shard_id)
        return (shard.get_slice("image_features")[slot:slot + 1][0],
                shard.get_slice("ps_features")[slot:slot + 1][0])

    def __getitem__(self, i: int) -> dict:
        index = self._index()
        image, ps = self.features(index.column("shard")[i].as_py(), index.column("slot")[i].as_py())
        text = {name: torch.from_numpy(index.column(name)[i].values.to_numpy(zero_copy_only=False).astype("int64"))
                for name in ("input_ids", "labels", "aux_input_ids")}
        return {**text, "image_features": image, "ps_features": ps}  # features (N, Dv)

    def __getstate__(self):  # DataLoader workers map the index and open the shards themselves
        state = {**self.__dict__, "_handles": {}, "_table": None}
        state.pop("_samples", None)
        return state


def check_compatible(meta: dict, model_config: dict) -> None:
    """A cache is only valid for the vision tower and tokenizer it was made with."""
    from .model.config import FEATURE_QUIRKS, ModelCompat

    cached = meta["model"]
    for key in ("vision", "lm", "image_size", "compat", "image_token"):
        if key not in cached or key not in model_config:
            continue
        if key == "compat":  # only the quirks that change the features matter (docs/published.md §5)
            same = (ModelCompat.parse(cached[key]).quirks & FEATURE_QUIRKS
                    == ModelCompat.parse(model_config[key]).quirks & FEATURE_QUIRKS)
        else:
            same = cached[key] == model_config[key]
        if not same:
            raise ValueError(f"feature cache was made with {key}={cached[key]!r} but the recipe's model has "
                             f"{key}={model_config[key]!r}; rebuild the cache with `trainer cache`")


def main(argv: list[str] | None = None) -> int:
    from schemas import read_annotations

    from .recipe import build_model, load_recipe, parse_overrides
    parser = argparse.ArgumentParser(prog="trainer cache", description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", required=True, help="pipeline output: a Parquet file or directory")
    parser.add_argument("--conversations", required=True, help="LLaVA/ShareGPT4V conversation JSON")
    parser.add_argument("--out", required=True, help="cache directory to write")
    parser.add_argument("--recipe", required=True, help="recipe YAML naming the model (vision tower, tokenizer)")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="bfloat16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=256, help="images per shard file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, as for `trainer train`")
    args = parser.parse_args(argv)
    try:  # before the (possibly 7B) model is built
        check_out_dir(Path(args.out))
    except CacheError as err:
        print(f"trainer cache: error: {err}", file=sys.stderr)
        return 2
    recipe = parse_overrides(load_recipe(args.recipe), args.set)
    model = build_model(recipe["model"])
    table = read_annotations(args.annotations, columns=ANNOTATION_COLUMNS)
    report = build_cache(model, table, load_conversations(args.conversations), args.out,
                         prompt=PromptFormat.from_dict(recipe["data"].get("prompt")),
                         max_length=recipe["data"].get("max_length"), dtype=args.dtype,
                         batch_size=args.batch_size, shard_size=args.shard_size, device=args.device)
    meta = json.loads((Path(args.out) / META_FILE).read_text())
    print(report.summary(), file=sys.stderr)
    print(f"cache: {meta['images']} images, {meta['samples']} samples, "
          f"{meta['bytes_per_image'] / 2**20:.2f} MiB of features per image -> {args.out}")
    return 0
