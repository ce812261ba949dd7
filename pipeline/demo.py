"""The README demo: write the bundled corpus, then run what the product offers on it.

Grows with the pipeline: corpus -> annotation job (tiny profile, embedded local Ray) ->
inspect report -> gallery.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .demo_corpus import write_demo_corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline demo", description=__doc__)
    parser.add_argument("--workdir", default="demo")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    images = write_demo_corpus(workdir / "corpus")
    print(f"demo corpus: {len(images)} images in {workdir / 'corpus'}")
    return 0
