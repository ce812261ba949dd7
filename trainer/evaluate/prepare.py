"""`trainer evaluate prepare`: a benchmark in its official layout -> images + manifest + questions."""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from . import BENCHMARKS, benchmark
from .common import MANIFEST, QUESTIONS, PreparedWriter


def prepare(name: str, data: Path, out: Path, image_root: Path | None = None) -> PreparedWriter:
    plugin = benchmark(name)
    if not Path(data).exists():
        raise FileNotFoundError(f"--data {data} does not exist")
    writer = PreparedWriter(out)
    try:
        for record, image in plugin.read(Path(data), Path(image_root) if image_root else None):
            writer.add({**record, "benchmark": name}, image)
    except (KeyError, TypeError, IndexError) as err:  # a field the official layout has is missing
        raise ValueError(f"{data}: not {name}'s official layout ({type(err).__name__}: {err})") from err
    if not writer.questions:
        raise ValueError(f"{data}: no {name} questions found")
    writer.close()
    return writer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainer evaluate prepare", description=__doc__)
    parser.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    parser.add_argument("--data", required=True, help="the benchmark's question file or folder")
    parser.add_argument("--image-root", help="where its images live when apart from the questions")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    writer = prepare(args.benchmark, Path(args.data), out, args.image_root and Path(args.image_root))
    splits = Counter(q["meta"].get("split") or q["meta"].get("task") for q in writer.questions)
    detail = "" if None in splits else " (" + ", ".join(f"{k} {v}" for k, v in splits.items()) + ")"
    print(f"{args.benchmark}: {len(writer.questions)} questions{detail} on {len(writer.images)} images -> {out}")
    print("annotate the images, then answer:")
    print(f"  python -m pipeline run --config moai --input {out / MANIFEST} --output {out / 'annotations'}")
    print(f"  trainer evaluate run --benchmark {args.benchmark} --questions {out / QUESTIONS} "
          f"--annotations {out / 'annotations'} --model CKPT --out RESULTS")
    return 0
