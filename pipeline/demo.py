"""The README demo: write the bundled corpus, annotate it, report on it, draw it.

corpus -> annotation job (tiny profile, embedded local Ray on 127.0.0.1) -> inspect report ->
gallery. Re-running resumes: images already in the output are skipped.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .demo_corpus import write_demo_corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline demo", description=__doc__)
    parser.add_argument("--workdir", default="demo")
    parser.add_argument("--config", default="tiny", help="profile or YAML file for the job (default tiny)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--sample", type=int, default=12, help="images drawn in the gallery")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    corpus, output, gallery = workdir / "corpus", workdir / "out" / "annotations", workdir / "out" / "gallery"
    images = write_demo_corpus(corpus)
    print(f"demo corpus: {len(images)} images in {corpus}")

    from .run import main as run_main
    sets = [a for s in [f"tiny_workdir={workdir / 'out' / 'tiny-models'}", *args.overrides] for a in ("--set", s)]
    code = run_main(["--config", args.config, "--input", str(corpus), "--output", str(output), *sets])
    if code:
        return code
    from .inspect import main as inspect_main
    from .show import main as show_main
    code = inspect_main([str(output)]) or show_main([str(output), "--sample", str(args.sample), "--out", str(gallery)])
    if not code:
        print(f"gallery: {gallery / 'index.html'}")
    return code
