"""`python -m pipeline run --input ... --output ...`: annotate a corpus into Parquet with Ray Data.

read (listing) -> decode on CPU tasks -> one actor pool per enabled annotator -> verbalize ->
Parquet files of `rows_per_file` rows with provenance metadata. Every input image ends as exactly
one row (ok or error). Re-running with the same output annotates only what is not there yet.

The driver does no per-image work (docs/pipeline.md §Scale): a manifest is read in Ray tasks, which
ids are already written and which repeat is worked out by Ray tasks (pipeline/plan.py), images go
in blocks of at most `block_rows`, and the summary is what the write tasks report.

Ray: `--address` / $RAY_ADDRESS connects to a cluster (this is what `ray job submit` gives the
job); otherwise an embedded local Ray on 127.0.0.1 uses this machine's CPUs and GPUs.

Before any Ray work, every enabled annotator's Config is built and every file it names is looked
for (pipeline/check.py): anything missing exits 2 with one line per problem. Devices follow the
resources (pipeline/placement.py): a GPU profile on a machine without a GPU runs on the CPU with
one warning line; on a cluster, a stage no node can host stops the job after `resource_wait_s`.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import time
import uuid
from dataclasses import asdict

from annotators.base import MODELS_ROOT_ENV, models_root
from schemas.schema import SCHEMA_VERSION

from .check import SetupError, check_stages, problems_of
from .config import PROFILES, RunConfig, check_columns, load_config
from .decode import decode_batch
from .inflight import remove_run_folder, run_folder
from .inputs import check_manifest_header, input_dataset, is_manifest, list_inputs
from .placement import UnsatisfiableResources, fit_to_machine, on_cpu, wait_for_resources
from .plan import block_rows_for, count_inputs, error_ids, inputs_among, pending, write_lost_rows, written_index
from .resume import AnnotationDatasink, clear_tmp, drop_rows
from .stages import AnnotateStage, annotator_class, finalize

PACKAGES = ("ray", "pyarrow", "torch", "transformers", "paddleocr", "ultralytics", "numpy", "pillow")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="directory, glob, URI, manifest (.parquet/.csv: id,path) or LLaVA JSON")
    parser.add_argument("--output", help="output directory (local or pyarrow filesystem URI)")
    parser.add_argument("--config", default="moai", help=f"profile {PROFILES} or a YAML file (default moai)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. annotators.ocr.enabled=false (repeatable)")
    parser.add_argument("--only", help="comma-separated annotators to enable (others off)")
    parser.add_argument("--image-root", dest="image_root", help="base for relative paths in a manifest/JSON")
    parser.add_argument("--address", help="Ray address (default $RAY_ADDRESS, else embedded local Ray)")
    parser.add_argument("--retry-errors", dest="retry_errors", action="store_true", default=None,
                        help="re-annotate images whose stored row is an error")
    parser.add_argument("--cpu", action="store_true", default=None,
                        help="run every annotator on the CPU (num_gpus 0), e.g. the moai profile on a laptop")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    overrides = list(args.overrides)
    if args.only is not None:
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        base = load_config(args.config)
        unknown = wanted - set(base.annotators)
        if unknown:
            raise ValueError(f"--only names unknown annotators {sorted(unknown)}; known {sorted(base.annotators)}")
        overrides = [f"annotators.{name}.enabled={'true' if name in wanted else 'false'}"
                     for name in base.annotators] + overrides
    cfg = load_config(args.config, overrides, input=args.input, output=args.output,
                      image_root=args.image_root, address=args.address, retry_errors=args.retry_errors)
    return on_cpu(cfg) if getattr(args, "cpu", None) else cfg


def stage_options(cfg: RunConfig) -> dict[str, dict]:
    """Each enabled annotator's Config options; tiny stages first write their small model."""
    options = {}
    for name, stage in cfg.enabled.items():
        opts = dict(stage.options)
        if stage.tiny:
            module = importlib.import_module(annotator_class(stage.kind).__module__)
            opts = {**module.tiny_config(os.path.join(cfg.tiny_workdir, name)), **opts}
        options[name] = opts
    return options


def run_provenance(cfg: RunConfig, options: dict) -> dict:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"schema_version": SCHEMA_VERSION, "working_size": cfg.working_size,
            "verbalization": {k: getattr(v, "value", v) for k, v in asdict(cfg.verbalize).items()},
            "stages": {n: {"kind": s.kind, "options": options[n]} for n, s in cfg.enabled.items()},
            "packages": versions}


def is_embedded(cfg: RunConfig) -> bool:
    return not (cfg.address or os.environ.get("RAY_ADDRESS"))


def init_ray(cfg: RunConfig):
    import ray
    if ray.is_initialized():
        return ray
    if not is_embedded(cfg):  # a cluster's workers find the weights through their own environment (the image's)
        ray.init(address=cfg.address or os.environ["RAY_ADDRESS"], log_to_driver=True)
    else:
        os.environ.setdefault(MODELS_ROOT_ENV, str(models_root()))  # absolute: the workers inherit it
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # bind to 127.0.0.1 only
        kwargs = {"num_cpus": cfg.num_cpus or None, "object_store_memory": cfg.object_store_memory or None}
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                 **{k: v for k, v in kwargs.items() if v})
    return ray


def build_dataset(ds, cfg: RunConfig, options: dict, inflight_dir: str = ""):
    """The lazy Ray Data pipeline on (image_id, source) blocks: decode tasks -> one actor pool per
    annotator -> finalize.

    `inflight_dir` (per run, under the output) holds the markers with which a stage turns an image
    that kills its worker on every attempt into an error row (stages.py). Each such image costs its
    actor two of `max_restarts` (a budget for the actor's life) and its block two of
    `max_task_retries`; once those run out, the rows of the block in flight become `worker` errors.
    """
    from ray.data import ActorPoolStrategy
    ds = ds.map_batches(decode_batch, batch_format="pyarrow", batch_size=cfg.decode_batch_size,
                        fn_kwargs={"working_size": cfg.working_size, "max_pixels": cfg.max_pixels},
                        num_cpus=cfg.decode_num_cpus)
    for name, stage in cfg.enabled.items():
        # A subclass per stage only so Ray's progress bars say which annotator is which.
        stage_class = type(f"Annotate_{name}", (AnnotateStage,), {})
        # max_restarts / max_task_retries go through ray_remote_args (deprecated, still honoured in
        # 2.60): map_batches has no named parameter for them, and Ray Data's default is infinite.
        ds = ds.map_batches(
            stage_class, batch_format="pyarrow", batch_size=stage.batch_size,
            fn_constructor_kwargs={"stage": name, "kind": stage.kind, "options": options[name],
                                   "working_size": cfg.working_size, "inflight_dir": inflight_dir,
                                   "placement": stage},
            compute=ActorPoolStrategy(min_size=stage.min_actors, max_size=stage.max_actors),
            num_gpus=stage.num_gpus, num_cpus=stage.num_cpus,
            max_restarts=stage.max_restarts, max_task_retries=stage.max_task_retries)
    return ds.map_batches(finalize, batch_format="pyarrow", fn_kwargs={"verbalize": cfg.verbalize},
                          num_cpus=cfg.decode_num_cpus)


def place(ray, cfg: RunConfig) -> RunConfig:
    """Fit the stages to an embedded Ray's machine, or wait for a cluster to offer what they ask."""
    if is_embedded(cfg):
        resources = ray.cluster_resources()
        cfg, warning = fit_to_machine(cfg, resources.get("CPU", 0.0), resources.get("GPU", 0.0))
        if warning:
            print(warning, flush=True)
    wait_for_resources(ray, cfg, 0.0 if is_embedded(cfg) else cfg.resource_wait_s)
    return cfg


def summarize(cfg: RunConfig, sink: AnnotationDatasink | None, todo: int, skipped: int, seconds: float,
              lost: int) -> dict:
    """This run's rows by status and error stage, as its write tasks reported them (+ lost rows)."""
    written = sink.written if sink is not None else {}
    kinds = {key.split(":", 1)[1]: n for key, n in written.items() if key.startswith("stage:")}
    if lost:
        kinds["worker"] = kinds.get("worker", 0) + lost
    return {"ok": written.get("ok", 0), "error": written.get("error", 0) + lost, "skipped": skipped,
            "lost": lost, "errors_by_stage": kinds, "seconds": round(seconds, 2),
            "images_per_s": round(todo / seconds, 2) if seconds > 0 else 0.0, "output": cfg.output}


def run(cfg: RunConfig) -> dict:
    cfg.check_runnable()
    check_columns({name: tuple(annotator_class(s.kind).columns) for name, s in cfg.enabled.items()})
    options = stage_options(cfg)
    if cfg.check_weights:
        problems = problems_of(check_stages(cfg, options, gpu_here=None))
        if problems:
            raise SetupError(problems)
    # A missing or wrong input is one line before any Ray work: a manifest's header, or the listing.
    listed = None if is_manifest(cfg.input) else list_inputs(cfg.input, cfg.image_root)
    if listed is None:
        check_manifest_header(cfg.input)
    clear_tmp(cfg.output)
    ray = init_ray(cfg)
    # The planning passes must see every input: a dataset keeps the DataContext of its creation, and
    # an earlier run in this process may have left max_errored_blocks (for the annotation) set.
    context = ray.data.DataContext.get_current()
    context.max_errored_blocks = 0
    inputs = input_dataset(ray, cfg.input, cfg.image_root, listed)
    try:
        if cfg.retry_errors:
            retry = inputs_among(inputs, error_ids(cfg.output))
            print(f"retrying {drop_rows(cfg.output, retry)} error rows", flush=True)
        index = written_index(ray, cfg.output, skip_errors=cfg.retry_errors)
        counts = count_inputs(ray, inputs, index)
    except Exception as exc:  # a malformed manifest fails inside a Ray task: say it in one line
        if isinstance(exc, ValueError) and not isinstance(exc, ray.exceptions.RayError):
            raise  # ours, already one line (a repeated id)
        raise ValueError(f"reading {cfg.input}: {root_cause(exc)}") from exc
    print(f"{counts.inputs} images: {counts.written} already in {cfg.output}, {counts.todo} to annotate with "
          f"{sorted(cfg.enabled) or 'no annotators'}", flush=True)
    start = time.perf_counter()
    lost, sink = 0, None
    if counts.todo:
        provenance = run_provenance(cfg, options)
        cfg = place(ray, cfg)
        context.max_errored_blocks = cfg.max_errored_blocks  # for the annotation's dataset only
        # Under the output (every node sees it), keyed by this run, removed when it ends.
        run_id = uuid.uuid4().hex[:12]
        sink = AnnotationDatasink(cfg.output, provenance, cfg.rows_per_file)
        todo = pending(input_dataset(ray, cfg.input, cfg.image_root, listed, num_cpus=cfg.decode_num_cpus), index,
                       block_rows_for(counts.todo, cfg.decode_batch_size, cfg.block_rows), cfg.decode_num_cpus)
        try:
            build_dataset(todo, cfg, options, run_folder(cfg.output, run_id)).write_datasink(sink)
        finally:
            remove_run_folder(cfg.output, run_id)
        if sink.written["ok"] + sink.written["error"] != counts.todo:  # only then look for which
            lost = write_lost_rows(ray, inputs, cfg.output, provenance, "its block failed on every attempt "
                                   "(counted in max_errored_blocks; see Ray logs)", sink.run_id)
    summary = summarize(cfg, sink, counts.todo, counts.written, time.perf_counter() - start, lost)
    by_stage = ", ".join(f"{k}={v}" for k, v in sorted(summary["errors_by_stage"].items())) or "none"
    print(f"summary: ok={summary['ok']} error={summary['error']} skipped={summary['skipped']} "
          f"(errors by stage: {by_stage}) {summary['images_per_s']} images/s in {summary['seconds']} s "
          f"-> {summary['output']}", flush=True)
    return summary


def root_cause(exc: BaseException) -> str:
    """The first line of the innermost error Ray wrapped (a task's traceback is many lines)."""
    while True:
        inner = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
        if inner is None or inner is exc:
            break
        exc = inner
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = config_from_args(args)
        cfg.check_runnable()
        summary = run(cfg)
    except (ValueError, UnsatisfiableResources) as exc:  # SetupError too: one line per problem
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    # Every image has its row either way; exit non-zero only when no batch survived (a broken setup).
    return 3 if summary["lost"] and summary["lost"] == summary["ok"] + summary["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
