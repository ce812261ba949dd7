"""`trainer evaluate`: the benchmarks MoAI reports, annotated by our pipeline, scored by their rules.

    trainer evaluate prepare --benchmark NAME --data FILE_OR_DIR [--image-root DIR] --out DIR
    python -m pipeline run --config moai --input DIR/manifest.csv --output DIR/annotations
    trainer evaluate run --benchmark NAME --questions DIR/questions.jsonl --annotations DIR/annotations \
        --model CKPT --out RESULTS
    trainer evaluate score --benchmark NAME --questions DIR/questions.jsonl --predictions FILE [--out DIR]

One plug-in module per benchmark (see common.py for what a plug-in provides).
"""
from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("pope", "mme", "textvqa", "mmbench", "seed", "scienceqa", "ai2d")
COMMANDS = ("prepare", "run", "score")


def benchmark(name: str):
    """The plug-in module for `name`; a ValueError naming the known ones otherwise."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return importlib.import_module(f"{__name__}.{name}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        raise ValueError(f"unknown evaluate command {argv[0]!r}; one of {', '.join(COMMANDS)}")
    return importlib.import_module(f"{__name__}.{argv[0]}").main(argv[1:])
