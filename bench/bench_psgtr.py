"""PSGTR `sgg` annotator throughput, side by side in one run: per-image loop (batch 1, as the
published code runs) vs batched, and bf16 vs fp32 where the device supports it.

Random weights in the real model's size (ResNet-50, 100 queries, 133/56), written in the converted
on-disk format and run through the annotator (pre-processing, model, both mask branches,
post-processing). With random weights the panoptic keep filter passes nothing, as in most
images at MoAI's thresholds, so post-processing cost is the top-k/dedup part.

    python bench/bench_psgtr.py --size 128 --image-scale 256 256 --images 4 --batch-size 4   # CPU, small
    python bench/bench_psgtr.py --device cuda --size 490 --images 64 --batch-size 16          # MoAI: 490 -> 800x800
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from annotators.base import resolve_device
from annotators.psgtr.annotator import PSGTRAnnotator
from annotators.psgtr.checkpoint import save_model_dir
from annotators.psgtr.config import PSGTRConfig
from annotators.psgtr.model import PSGTR


def write_random_model(workdir: Path) -> Path:
    cfg = PSGTRConfig()
    torch.manual_seed(0)
    return save_model_dir(PSGTR(cfg).state_dict(), cfg, workdir / "psgtr_r50_random",
                          [f"class_{i}" for i in range(cfg.num_classes)],
                          [f"predicate_{i}" for i in range(cfg.num_predicates)], {"checkpoint": "random init"})


def measure(options: dict, images: np.ndarray, device: str) -> tuple[float, float]:
    """(images per second after one warm-up batch, peak GPU memory in GiB or nan)."""
    annotator = PSGTRAnnotator(PSGTRAnnotator.Config(**options))
    annotator(images[: options["batch_size"]])
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    annotator(images)
    elapsed = time.perf_counter() - start
    memory = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return len(images) / elapsed, memory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=490, help="square working image size (MoAI: 490)")
    parser.add_argument("--image-scale", type=int, nargs=2, default=(1333, 800), help="resize to fit (long, short)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--mask-chunk-size", type=int, default=25)
    parser.add_argument("--bf16", choices=("auto", "yes", "no"), default="auto",
                        help="auto: only on CUDA (CPU bf16 is slow without AMX)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    images = np.random.default_rng(0).integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        base = {"model_dir": str(write_random_model(Path(tmp))), "device": device,
                "image_scale": tuple(args.image_scale), "mask_chunk_size": args.mask_chunk_size}
        runs = [("per-image loop, fp32 (published: batch 1)", {**base, "batch_size": 1}),
                (f"batched x{args.batch_size}, fp32", {**base, "batch_size": args.batch_size})]
        if args.bf16 == "yes" or (args.bf16 == "auto" and device == "cuda"):
            runs.append((f"batched x{args.batch_size}, bf16",
                         {**base, "batch_size": args.batch_size, "dtype": "bfloat16"}))
        results = [(name, *measure(options, images, device)) for name, options in runs]
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"PSGTR R50, {args.images} images {args.size}x{args.size} -> fit {tuple(args.image_scale)}, {name}, "
          f"torch {torch.__version__}")
    print(f"{'mode':<45} {'images/s':>9} {'vs batch 1':>10} {'peak GiB':>9}")
    for label, rate, memory in results:
        print(f"{label:<45} {rate:>9.2f} {rate / results[0][1]:>9.2f}x {memory:>9.2f}")


if __name__ == "__main__":
    main()
