"""Training step from the feature cache vs the online step (decode + frozen CLIP every step), side by side.

    python bench/bench_trainer.py                          # tiny backbones, 490 px (1,225 tokens), CPU
    python bench/bench_trainer.py --vision-layers 24 --vision-width 1024 --device cuda   # CLIP-L-shaped tower

Both runs train the same samples in the same order with the same recipe; only where the image and
PS-map features come from differs. Reports the median step time, tokens/s, the ratio, and the
cache's bytes per image (GPU: peak memory too). Random weights, built locally; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def clip_tower(directory: Path, layers: int, width: int) -> str:
    """A random CLIP vision tower of the given depth/width (patch 14), saved where MoAI can load it."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel
    if not (directory / "config.json").is_file():
        CLIPVisionModel(CLIPVisionConfig(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                                         num_attention_heads=max(1, width // 64), image_size=336,
                                         patch_size=14)).save_pretrained(directory)
        CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
                           ).save_pretrained(directory)
    return str(directory)


def timed_run(recipe: dict, out: Path, device: str) -> dict:
    import torch

    from trainer.train import run
    recipe = {**recipe, "train": {**recipe["train"], "output_dir": str(out), "device": device}}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run(recipe, 1)
    lines = [json.loads(x) for x in (out / "stage1" / "losses.jsonl").read_text().splitlines()][1:]  # warm-up
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {"seconds": statistics.median(x["seconds"] for x in lines),
            "tokens_per_s": statistics.median(x["tokens_per_s"] for x in lines),
            "losses": [x["loss"] for x in lines], "peak_gib": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps (after one warm-up step)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=490)
    parser.add_argument("--vision-layers", type=int, default=0, help="0 = the tiny test tower (2 x 32)")
    parser.add_argument("--vision-width", type=int, default=1024)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args(argv)

    import torch

    from schemas import read_annotations
    from trainer.synthetic import tiny_recipe, write_corpus
    from trainer.cache import build_cache
    from trainer.data import ANNOTATION_COLUMNS, load_conversations
    from trainer.recipe import build_model

    root = Path(tempfile.mkdtemp(prefix="bench_trainer_"))
    n_images = args.batch_size * (args.steps + 1)
    paths = write_corpus(root, n_images=n_images)
    recipe = tiny_recipe(root, root / "backbones", micro_batch_size=args.batch_size, max_steps=args.steps + 1,
                         epochs=1, save_every=0, precision="bf16")
    recipe["model"]["image_size"] = args.image_size
    if args.vision_layers:
        build_model(recipe["model"])  # writes the tiny LM first
        recipe["model"]["vision"] = clip_tower(root / "vision-big", args.vision_layers, args.vision_width)
    model = build_model(recipe["model"])
    started = time.perf_counter()
    build_cache(model, read_annotations(paths["annotations"], columns=ANNOTATION_COLUMNS),
                load_conversations(paths["conversations"]), root / "cache",
                dtype="bfloat16" if args.device == "cuda" else "float32", device=args.device, progress=False)
    cache_seconds = time.perf_counter() - started
    meta = json.loads((root / "cache" / "meta.json").read_text())
    del model

    online = timed_run(recipe, root / "online", args.device)
    cached = timed_run({**recipe, "data": {**recipe["data"], "cache": str(root / "cache")}}, root / "cached",
                       args.device)
    tokens = meta["feature_shape"][0]
    print(f"\nbench_trainer: batch {args.batch_size}, {args.image_size} px ({tokens} image tokens), vision "
          f"{'tiny 2x32' if not args.vision_layers else f'{args.vision_layers}x{args.vision_width}'}, "
          f"{args.device}, torch threads {torch.get_num_threads()}, median of {args.steps} steps")
    print(f"{'':22}{'online':>12}{'cached':>12}{'ratio':>10}")
    print(f"{'step time (s)':22}{online['seconds']:12.3f}{cached['seconds']:12.3f}"
          f"{online['seconds'] / cached['seconds']:9.2f}x")
    print(f"{'tokens/s':22}{online['tokens_per_s']:12.0f}{cached['tokens_per_s']:12.0f}"
          f"{cached['tokens_per_s'] / online['tokens_per_s']:9.2f}x")
    if args.device == "cuda":
        print(f"{'peak memory (GiB)':22}{online['peak_gib']:12.2f}{cached['peak_gib']:12.2f}")
    print(f"cache: {meta['images']} images in {cache_seconds:.1f} s, {meta['bytes_per_image']:,} bytes per image "
          f"({meta['dtype']}); {tokens} tokens x {meta['feature_shape'][1]} dims x 2 (photo + PS map)")
    same = all(abs(a - b) < 1e-3 for a, b in zip(online["losses"], cached["losses"]))
    print(f"losses online == cached (1e-3): {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
