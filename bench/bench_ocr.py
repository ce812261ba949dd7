"""PaddleOCR annotator: one batched call vs a per-image loop vs the bare library, in one run.

    python bench/bench_ocr.py [--images 16] [--repeats 3] [--batch-size 16] [--workdir /tmp/moai-bench-ocr]

Images: signs rendered with text (demo corpus) and text-free photos from scikit-image, squashed
to 490x490 as MoAI does. Uses the real PP-OCR small weights from the rapidocr wheel (tiny_config).
Prints median seconds per image for each path and the ratios, and checks the paths agree.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from annotators.ocr import PaddleOCRAnnotator, tiny_config
from pipeline.demo_corpus import render_sign

SIZE = 490
WORDS = ("HELLO WORLD 2026", "OPEN 24 HOURS", "EXIT", "MOAI PIPELINE", "RAY DATA", "PARQUET 1.0")


def corpus(count: int) -> np.ndarray:
    from skimage import data
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    images = []
    for i in range(count):
        if i % 3 == 2:
            image = Image.fromarray(photos[i % len(photos)])
        else:
            image = render_sign(WORDS[i % len(WORDS)], (255, 255, 255), (20, 20, 20), seed=i)
        images.append(np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)))
    return np.stack(images)  # (B, 490, 490, 3)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/moai-bench-ocr"))
    args = parser.parse_args()

    options = {**tiny_config(args.workdir), "batch_size": args.batch_size}
    ocr = PaddleOCRAnnotator(PaddleOCRAnnotator.Config(**options))
    images = corpus(args.images)
    bgr = [np.ascontiguousarray(image[..., ::-1]) for image in images]
    ocr(images[:2])  # warm-up: ONNX Runtime sessions allocate on first use

    batched_s, batched = timed(lambda: ocr(images), args.repeats)
    loop_s, looped = timed(lambda: [ocr(image[None])[0] for image in images], args.repeats)
    bare_s, _ = timed(lambda: list(ocr.pipeline.predict(bgr)), args.repeats)

    texts = lambda results: [[line["text"] for line in r["ocr"]] for r in results]  # noqa: E731
    n = len(images)
    print(f"PaddleOCR {ocr.provenance()['library']['paddleocr']}, {options['det_model_name']} + "
          f"{options['rec_model_name']}, engine {ocr.config.engine} on {ocr.device}, {n} images "
          f"{SIZE}x{SIZE}, batch_size {args.batch_size}, median of {args.repeats}")
    print(f"{'path':<34}{'s/image':>10}{'images/s':>10}")
    for label, seconds in (("annotator, one batched call", batched_s),
                           ("annotator, per-image loop", loop_s),
                           ("bare PaddleOCR.predict(list)", bare_s)):
        print(f"{label:<34}{seconds / n:>10.4f}{n / seconds:>10.2f}")
    print(f"batched vs per-image loop: {loop_s / batched_s:.2f}x faster")
    print(f"annotator overhead vs bare library: {batched_s / bare_s:.2f}x")
    print(f"lines read: {sum(map(len, texts(batched)))}; batched == looped texts: {texts(batched) == texts(looped)}")


if __name__ == "__main__":
    main()
