"""`trainer` command: subcommands dispatch to their module's main(argv), imported only when used.

    trainer cache --annotations DIR --conversations FILE --out DIR --recipe FILE
    trainer train --recipe FILE --stage 1|2 [--resume] [--set section.key=value ...]
    trainer generate --model DIR --annotations DIR --image ID --question TEXT
    trainer conversations --annotations DIR --out FILE
    trainer evaluate prepare|run|score --benchmark NAME ...
    trainer ablation --out DIR [--quick]
    trainer published convert SRC OUT | dryrun
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "cache": ("trainer.cache", "compute the frozen CLIP features and tokenized aux text once"),
    "train": ("trainer.train", "train one stage (1: experts drawn at random, 2: gated mixing)"),
    "conversations": ("trainer.conversations", "write a demo conversation JSON from annotations (objects per image)"),
    "generate": ("trainer.generate", "answer a question about an image with a trained model"),
    "evaluate": ("trainer.evaluate", "benchmarks: prepare the questions, answer them, score the answers"),
    "ablation": ("trainer.ablation", "ablation studies"),
    "published": ("trainer.published.__main__", "convert the published XComposer2-VL / MoAI-7B weights; 7B dry run"),
}


def usage() -> str:
    lines = ["usage: trainer COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<14} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"trainer: unknown command {command!r}\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    if not hasattr(module, "main"):
        print(f"trainer: {COMMANDS[command][0]} has no main(argv)", file=sys.stderr)
        return 2
    try:
        return int(module.main(rest) or 0)
    except (ValueError, FileNotFoundError) as err:  # bad input (SchemaError is one): one line, exit 2
        print(f"trainer {command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
