"""Pipeline throughput against MoAI-style per-image loops over the same annotators, one run, one machine.

  python bench/bench_pipeline.py --images 48                        # tiny profile, CPU
  python bench/bench_pipeline.py --config moai --twin /tmp/twin --images 8
                                 # the moai profile as shipped, on a full-size random-weight twin
                                 # of the published models (annotators.fake_weights)
  python bench/bench_pipeline.py --config my.yaml --images 2000     # any profile/YAML, e.g. on a GPU node

Prints images/s for:
  pipeline   `pipeline.run` on an embedded local Ray (decode tasks + one actor pool per annotator),
             with the encoded OWLv2 queries on disk from an earlier run ("cold": a first run, without)
  per-image  MoAI-style: for each image, decode it, then run each annotator on it alone, in turn; for
             OWLv2 as published, the text queries are re-encoded with every image
  bare       the sum over annotators of one bare batched loop each over pre-decoded images (model
             time only: no decode, no Parquet, no Ray) -- a floor for any sequential design
the ratios pipeline/per-image and pipeline/bare, and each stage's share of the bare time.
Annotators are built once per loop; build time is not counted in the loops (the pipeline's actors
do count theirs). The loops use the device and dtype the pipeline's actors would.
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_corpus(folder: Path, count: int) -> Path:
    from pipeline.demo_corpus import write_demo_corpus
    photos = write_demo_corpus(folder / "base")
    images = folder / "images"
    images.mkdir()
    for i in range(count):
        source = photos[i % len(photos)]
        shutil.copy(source, images / f"{i:05d}{source.suffix}")
    return images


def use_twin(folder: Path) -> None:
    """Write (or reuse) the full-size twin and point this process (and its Ray workers) at it."""
    os.environ["HF_HOME"] = str(folder / "hf")  # before huggingface_hub is imported: it reads this once
    os.environ["MOAI_MODELS"] = str(folder)
    from annotators.fake_weights import write_twin
    start = time.perf_counter()
    write_twin(folder)
    print(f"full-size twin in {folder} ({time.perf_counter() - start:.0f} s)")


def loop_annotators(cfg, options: dict) -> dict:
    """The annotators, in-process, on the device and dtype the pipeline's actors would pick."""
    import torch
    from pipeline.placement import placed_options
    from pipeline.stages import annotator_class, build_annotator
    gpu = torch.cuda.is_available()
    built = {}
    for name, stage in cfg.enabled.items():
        placed = placed_options(options[name], annotator_class(stage.kind),
                                stage if gpu else replace(stage, num_gpus=0), [0] if gpu else [])
        built[name] = build_annotator(stage.kind, placed)
    return built


def published_owlv2(annotator):
    """OWLv2 as MoAI runs it: per image, tokenize and encode all queries again, full forward."""
    import torch
    names = list(annotator.vocabulary.names)

    def run(image):
        inputs = annotator.processor(text=names, images=[image], return_tensors="pt").to(annotator.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(annotator.model.dtype)
        with torch.inference_mode():
            outputs = annotator.model(**inputs)
        outputs.logits, outputs.pred_boxes = outputs.logits.float(), outputs.pred_boxes.float()
        return annotator.postprocess(outputs, [image.shape[:2]])
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--twin", type=Path, help="write/reuse a full-size random-weight twin here and use it")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    if args.twin:
        use_twin(args.twin.absolute())
    import numpy as np
    from annotators.owlv2 import OWLv2Annotator
    from pipeline.config import load_config
    from pipeline.decode import decode_image, read_bytes
    from pipeline.inputs import list_inputs
    from pipeline.run import init_ray, run, stage_options

    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    images = make_corpus(work, args.images)
    cfg = load_config(args.config, args.overrides, input=str(images), output=str(work / "out"),
                      tiny_workdir=str(work / "models"))
    options = stage_options(cfg)
    items = list_inputs(cfg.input)
    print(f"{len(items)} images, annotators {sorted(cfg.enabled)}, working size {cfg.working_size}", flush=True)

    annotators = loop_annotators(cfg, options)
    moai_style = {name: published_owlv2(a) if isinstance(a, OWLv2Annotator) else (lambda a: lambda x: a(x[None]))(a)
                  for name, a in annotators.items()}
    start = time.perf_counter()
    for item in items:
        pixels, _, _ = decode_image(read_bytes(item.source), cfg.working_size, cfg.max_pixels)
        for run_one in moai_style.values():
            run_one(pixels)
    per_image = len(items) / (time.perf_counter() - start)
    print(f"per-image loop done: {per_image:.3f} images/s", flush=True)

    decoded = np.stack([decode_image(read_bytes(i.source), cfg.working_size, cfg.max_pixels)[0] for i in items])
    bare_seconds = {}
    for name, annotator in annotators.items():
        size = cfg.enabled[name].batch_size
        start = time.perf_counter()
        for first in range(0, len(decoded), size):
            annotator(decoded[first:first + size])  # (B, S, S, 3)
        bare_seconds[name] = time.perf_counter() - start
    bare = len(items) / sum(bare_seconds.values())
    print(f"bare loops done: {bare:.3f} images/s", flush=True)
    del annotators, moai_style
    gc.collect()

    # The pipeline twice: with an empty disk cache of encoded OWLv2 queries (a first run), then with
    # the cache the first run left (any later run, and every actor restart or added actor).
    os.environ["MOAI_CACHE"] = str(work / "cache")  # before Ray starts: its workers inherit it
    ray = init_ray(cfg)
    ray.data.DataContext.get_current().enable_progress_bars = False
    cold = len(items) / run(cfg)["seconds"]
    print(f"pipeline (cold query cache) done: {cold:.3f} images/s", flush=True)
    pipeline = len(items) / run(replace(cfg, output=str(work / "out-warm")))["seconds"]
    shutil.rmtree(work, ignore_errors=True)

    total = sum(bare_seconds.values())
    print(f"\nconfig={args.config}{' (twin ' + str(args.twin) + ')' if args.twin else ''} images={len(items)}")
    print(f"{'':10s} {'images/s':>9s} {'s/image':>8s}")
    for label, ips in (("pipeline", pipeline), ("cold", cold), ("per-image", per_image), ("bare", bare)):
        print(f"{label:10s} {ips:9.3f} {1 / ips:8.2f}")
    print("bare time by stage: " + ", ".join(f"{k} {v / len(items):.2f} s/image ({100 * v / total:.0f} %)"
                                             for k, v in bare_seconds.items()))
    print(f"ratio pipeline/per-image = {pipeline / per_image:.2f}x, pipeline/bare = {pipeline / bare:.2f}x "
          f"(cold: {cold / per_image:.2f}x, {cold / bare:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
