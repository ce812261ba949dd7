"""`python -m pipeline check [--config moai] [--set ...] [--only ...]`: is every model of a profile here?

For each enabled annotator: its Config built on the driver (no weights loaded), every file or folder
it names (checkpoint, vocabulary, model folders) with where it is looked for, found or missing,
size and sha256, and the device and dtype it will run in. `pipeline run` makes the same check
(without hashing) before Ray starts and exits 2 with one line per problem.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from annotators.base import Requirement, sha256_file

from .config import PROFILES, RunConfig
from .placement import planned_placement
from .stages import annotator_class

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".pdiparams", ".json", ".yml", ".yaml")


class SetupError(ValueError):
    """The job cannot start; one line per problem, each naming the key and how to fix it."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class StageCheck:
    stage: str
    kind: str
    placement: str = ""
    requirements: list[Requirement] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_stages(cfg: RunConfig, options: dict[str, dict], gpu_here: bool | None) -> list[StageCheck]:
    """Build each enabled annotator's Config and look for what it names; nothing is loaded."""
    checks = []
    for name, stage in cfg.enabled.items():
        check = StageCheck(name, stage.kind)
        checks.append(check)
        try:
            cls = annotator_class(stage.kind)
            config = cls.Config(**options[name])
        except (ValueError, TypeError, ImportError, AttributeError) as err:
            check.problems.append(f"annotators.{name}.options: {err}")
            continue
        check.placement = planned_placement(options[name], cls, stage, gpu_here)
        requirements = getattr(cls, "requirements", None)
        check.requirements = list(requirements(config)) if requirements else []
        for req in check.requirements:
            if not req.found:
                check.problems.append(f"annotators.{name}.options.{req.key}: {req.what} not found at "
                                      f"{req.path}; {req.fix}")
    return checks


def problems_of(checks: list[StageCheck]) -> list[str]:
    return [problem for check in checks for problem in check.problems]


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    return []


def describe(req: Requirement, hash_files: bool = True) -> str:
    """'found  1.2 GB  sha256 ab12… (model.safetensors)' for one requirement."""
    if not req.found:
        return "MISSING"
    if req.prepared:
        return f"absent: {req.fix}"
    files = _files(Path(req.path))
    size = sum(p.stat().st_size for p in files)
    text = f"found  {size / 1e6:,.1f} MB"
    if hash_files and files:
        biggest = max(files, key=lambda p: p.stat().st_size)
        text += f"  sha256 {sha256_file(biggest)} ({biggest.name})"
    return text


def report(checks: list[StageCheck], hash_files: bool = True) -> str:
    lines = []
    for check in checks:
        lines.append(f"{check.stage} ({check.kind}): runs on {check.placement or '?'}")
        for req in check.requirements:
            lines.append(f"  {req.key}: {req.what}\n    at {req.path}\n    {describe(req, hash_files)}")
        lines += [f"  error: {problem}" for problem in check.problems]
    return "\n".join(lines)


def local_gpu() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def main(argv: list[str] | None = None) -> int:
    from .run import config_from_args, stage_options
    parser = argparse.ArgumentParser(prog="python -m pipeline check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="moai", help=f"profile {PROFILES} or a YAML file (default moai)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--only", help="comma-separated annotators to enable (others off)")
    parser.add_argument("--address", help="a Ray cluster: devices are whatever its nodes offer")
    parser.add_argument("--cpu", action="store_true", default=None, help="as `run --cpu`: every annotator on the CPU")
    parser.add_argument("--no-hash", dest="hash_files", action="store_false", help="skip the sha256 of each file")
    args = parser.parse_args(argv)
    args.input = args.output = args.image_root = args.retry_errors = None
    try:
        cfg = config_from_args(args)
        options = stage_options(cfg)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    checks = check_stages(cfg, options, None if args.address else local_gpu())
    print(report(checks, args.hash_files))
    problems = problems_of(checks)
    print(f"{len(problems)} problem(s)" if problems else "every model is here")
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
