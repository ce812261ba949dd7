"""`python -m pipeline COMMAND ...` — each command lives in its own module.

  run       annotate a corpus into Parquet (pipeline.run)
  check     is every model of a profile on this machine? where, size, sha256, device (pipeline.check)
  inspect   summarize an annotation output with Polars (pipeline.inspect)
  show      render overlay pictures and an HTML gallery (pipeline.show)
  demo      the README demo: bundled corpus -> run -> inspect -> show (pipeline.demo)
  corpus    write the bundled demo corpus (pipeline.demo_corpus)
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "run": "pipeline.run",
    "check": "pipeline.check",
    "inspect": "pipeline.inspect",
    "show": "pipeline.show",
    "demo": "pipeline.demo",
    "corpus": "pipeline.demo_corpus",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[command])
    sys.argv = [f"python -m pipeline {command}", *rest]
    result = module.main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
