"""Pipeline throughput against MoAI-style per-image loops over the same annotators, one run, one machine.

  python bench/bench_pipeline.py --images 48                       # tiny profile, CPU
  python bench/bench_pipeline.py --config my.yaml --images 2000    # any profile/YAML, e.g. on a GPU node

Prints images/s for:
  pipeline   `pipeline.run` on an embedded local Ray (decode tasks + one actor pool per annotator)
  per-image  MoAI-style: for each image, decode it, then run each annotator on it alone, in turn
  bare       the sum over annotators of one bare batched loop each over pre-decoded images (model
             time only: no decode, no Parquet, no Ray) -- a floor for any sequential design
and the ratios pipeline/per-image and pipeline/bare. Annotators are built once per loop; build time
is not counted in the loops (the pipeline's actors do count theirs).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_config  # noqa: E402
from pipeline.decode import decode_image, read_bytes  # noqa: E402
from pipeline.demo_corpus import write_demo_corpus  # noqa: E402
from pipeline.inputs import list_inputs  # noqa: E402
from pipeline.run import init_ray, run, stage_options  # noqa: E402
from pipeline.stages import build_annotator  # noqa: E402


def make_corpus(folder: Path, count: int) -> Path:
    photos = write_demo_corpus(folder / "base")
    images = folder / "images"
    images.mkdir()
    for i in range(count):
        source = photos[i % len(photos)]
        shutil.copy(source, images / f"{i:05d}{source.suffix}")
    return images


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    images = make_corpus(work, args.images)
    cfg = load_config(args.config, args.overrides, input=str(images), output=str(work / "out"),
                      tiny_workdir=str(work / "models"))
    options = stage_options(cfg)
    items = list_inputs(cfg.input)
    print(f"{len(items)} images, annotators {sorted(cfg.enabled)}, working size {cfg.working_size}")

    annotators = {name: build_annotator(stage.kind, options[name]) for name, stage in cfg.enabled.items()}
    start = time.perf_counter()
    for item in items:
        pixels, _, _ = decode_image(read_bytes(item.source), cfg.working_size, cfg.max_pixels)
        for annotator in annotators.values():
            annotator(pixels[None])
    per_image = len(items) / (time.perf_counter() - start)

    import numpy as np
    decoded = np.stack([decode_image(read_bytes(i.source), cfg.working_size, cfg.max_pixels)[0] for i in items])
    bare_seconds = {}
    for name, annotator in annotators.items():
        size = cfg.enabled[name].batch_size
        start = time.perf_counter()
        for first in range(0, len(decoded), size):
            annotator(decoded[first:first + size])  # (B, S, S, 3)
        bare_seconds[name] = time.perf_counter() - start
    bare = len(items) / sum(bare_seconds.values())
    del annotators

    ray = init_ray(cfg)
    ray.data.DataContext.get_current().enable_progress_bars = False
    summary = run(cfg)
    pipeline = summary["images_per_s"]
    shutil.rmtree(work, ignore_errors=True)

    print(f"{'':10s} {'images/s':>9s}")
    print(f"{'pipeline':10s} {pipeline:9.2f}")
    print(f"{'per-image':10s} {per_image:9.2f}")
    print(f"{'bare':10s} {bare:9.2f}   ({', '.join(f'{k} {v:.1f} s' for k, v in bare_seconds.items())})")
    print(f"ratio pipeline/per-image = {pipeline / per_image:.2f}x, pipeline/bare = {pipeline / bare:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
