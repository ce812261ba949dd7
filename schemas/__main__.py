"""`python -m schemas validate PATH` and `python -m schemas reverbalize SRC DST [--thresholds]`."""
from __future__ import annotations

import argparse
import sys

from .io import SchemaError, count_by_status, read_annotations, reverbalize_files
from .verbalize import Compat, VerbalizeConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate", help="check a file or output directory against the contract")
    check.add_argument("path")
    again = sub.add_parser("reverbalize", help="recompute the text columns with other thresholds")
    again.add_argument("src")
    again.add_argument("dst")
    defaults = VerbalizeConfig()
    for name in ("owod_min_score", "sgg_min_score", "ocr_min_score", "ps_min_score"):
        again.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    again.add_argument("--sgg-max-relations", type=int, default=defaults.sgg_max_relations)
    again.add_argument("--compat", choices=[c.value for c in Compat], default=defaults.compat.value)
    args = parser.parse_args(argv)
    try:
        if args.command == "validate":
            table = read_annotations(args.path)
            print(f"{args.path}: {table.num_rows} rows, {count_by_status(table)}: conforms")
        else:
            cfg = VerbalizeConfig(args.owod_min_score, args.sgg_min_score, args.sgg_max_relations,
                                  args.ocr_min_score, args.ps_min_score, Compat(args.compat))
            rows = reverbalize_files(args.src, args.dst, cfg)
            print(f"re-verbalized {rows} rows into {args.dst}")
    except SchemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
