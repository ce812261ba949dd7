"""Where each annotator runs: the device follows the resources Ray gives its actor, and a profile
is fitted to the machine or cluster before any work starts, so a job never waits forever.

- An actor with `num_gpus > 0` runs its model on the GPU Ray assigned to it, in the stage's
  `gpu_dtype` (else the annotator's: bf16 for Mask2Former, OWLv2 and PSGTR, fp16 for YOLO-World);
  `num_gpus: 0` runs on the CPU in float32. An explicit `device` (or `dtype`) option still wins.
- Embedded local Ray (no cluster): a profile that asks for GPUs on a machine without one runs on
  the CPU with one warning line, and the stages' minimum actors plus a decode task are fitted to
  the machine's CPUs (more than that and Ray Data would wait for actors that can never start).
- A cluster: every stage's per-actor request must fit some node within `resource_wait_s` (the
  autoscaler is asked for it meanwhile); otherwise the job stops naming the stage and the request.
"""
from __future__ import annotations

import dataclasses
import os
import time

from .config import AnnotatorStage, RunConfig


class UnsatisfiableResources(RuntimeError):
    """No node of the cluster can host an actor (or task) of a stage."""


def device_for_gpu_ids(gpu_ids: list, visible: str | None = None) -> str:
    """Ray's GPU ids for this actor -> the torch device that is that GPU in this process.

    Ray sets CUDA_VISIBLE_DEVICES to the actor's GPUs, so its first GPU is `cuda:0`; where that is
    switched off (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES) the id indexes all devices."""
    if not gpu_ids:
        return "cpu"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "") if visible is None else visible
    first, ids = str(gpu_ids[0]), [v.strip() for v in visible.split(",") if v.strip()]
    return f"cuda:{ids.index(first)}" if first in ids else f"cuda:{first}"


def placed_options(options: dict, annotator_cls: type, stage: AnnotatorStage, gpu_ids: list) -> dict:
    """The annotator's options with `device` and `dtype` set from the actor's resources."""
    names = {f.name for f in dataclasses.fields(annotator_cls.Config)}
    if "device" not in names or "device" in options:
        return dict(options)
    device = device_for_gpu_ids(gpu_ids) if stage.num_gpus > 0 else "cpu"
    placed = {**options, "device": device}
    if "dtype" in names and "dtype" not in options:
        gpu_dtype = stage.gpu_dtype or getattr(annotator_cls, "gpu_dtype", None) or "float32"
        placed["dtype"] = "float32" if device == "cpu" else gpu_dtype
    return placed


def planned_placement(options: dict, annotator_cls: type, stage: AnnotatorStage, gpu_here: bool | None) -> str:
    """What `placed_options` will choose, in words, for `pipeline check` (gpu_here None: a cluster)."""
    has_dtype = "dtype" in {f.name for f in dataclasses.fields(annotator_cls.Config)}
    if "device" in options:
        return f"{options['device']} {options.get('dtype', '')} (set in options)".replace("  ", " ")
    if stage.num_gpus > 0 and gpu_here is not False:
        dtype = ((options.get("dtype") or stage.gpu_dtype or getattr(annotator_cls, "gpu_dtype", None) or "float32")
                 if has_dtype else "as exported")
        where = "the GPU Ray assigns" if gpu_here is None else "this machine's GPU"
        return f"cuda {dtype} ({stage.num_gpus:g} GPU per actor, {where})"
    reason = "no GPU here, " if stage.num_gpus > 0 else ""
    return f"cpu{' float32' if has_dtype else ''} ({reason}num_gpus 0)"


def _replace_stages(cfg: RunConfig, change) -> RunConfig:
    stages = {name: change(stage) if stage.enabled else stage for name, stage in cfg.annotators.items()}
    return dataclasses.replace(cfg, annotators=stages)


def on_cpu(cfg: RunConfig) -> RunConfig:
    """Every enabled GPU stage moved to the CPU (the `--cpu` flag, or no GPU here): `num_gpus: 0`
    and one image per batch. A GPU profile's batches buy nothing on a CPU, and one-image blocks let
    the stages overlap, each actor on its own core, instead of running one after the other."""
    if not any(s.num_gpus > 0 for s in cfg.enabled.values()):
        return cfg
    cfg = _replace_stages(cfg, lambda s: dataclasses.replace(s, num_gpus=0.0, batch_size=1) if s.num_gpus > 0 else s)
    return dataclasses.replace(cfg, decode_batch_size=1)


def fit_to_machine(cfg: RunConfig, cpus: float, gpus: float) -> tuple[RunConfig, str | None]:
    """(the profile as it can run on this one machine, a warning line or None)."""
    warning = None
    wants_gpu = sorted(name for name, s in cfg.enabled.items() if s.num_gpus > 0)
    if wants_gpu and gpus <= 0:
        cfg = on_cpu(cfg)
        warning = (f"warning: no GPU on this machine: {', '.join(wants_gpu)} run on the CPU in float32 "
                   "(slow); pass --cpu to say so and silence this line")
    need = cfg.decode_num_cpus + sum(s.min_actors * s.num_cpus for s in cfg.enabled.values())
    if need > cpus > 0:
        scale = cpus / need  # each stage keeps its share; all minimum actors and a decode task fit
        cfg = _replace_stages(cfg, lambda s: dataclasses.replace(s, num_cpus=round(s.num_cpus * scale, 4)))
        cfg = dataclasses.replace(cfg, decode_num_cpus=round(cfg.decode_num_cpus * scale, 4))
    return cfg, warning


def requests(cfg: RunConfig) -> dict[str, dict[str, float]]:
    """Per stage, what one of its actors (or decode tasks) asks Ray for."""
    wanted = {"decode": {"CPU": cfg.decode_num_cpus}}
    for name, stage in cfg.enabled.items():
        wanted[name] = {"CPU": stage.num_cpus, "GPU": stage.num_gpus}
    return {name: {k: float(v) for k, v in request.items() if v > 0} for name, request in wanted.items()}


def unplaceable(wanted: dict[str, dict[str, float]], nodes: list[dict[str, float]]) -> dict[str, dict]:
    """The requests that no single node's total resources can hold."""
    return {name: request for name, request in wanted.items()
            if not any(all(node.get(k, 0.0) >= v for k, v in request.items()) for node in nodes)}


def wait_for_resources(ray, cfg: RunConfig, timeout_s: float, poll_s: float = 2.0) -> None:
    """Return once every stage's request fits some alive node; raise after `timeout_s` otherwise."""
    wanted = requests(cfg)
    deadline = time.monotonic() + timeout_s
    asked = False
    while True:
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        missing = unplaceable(wanted, nodes)
        if not missing:
            if asked:
                from ray.autoscaler.sdk import request_resources
                request_resources(bundles=[])  # the actors' own demand takes over from here
            return
        if time.monotonic() >= deadline:
            have = sorted({tuple(sorted((k, v) for k, v in n.items() if k in ("CPU", "GPU"))) for n in nodes})
            lines = [f"stage {name!r} asks for {request} per actor, and no node of the cluster has that "
                     f"after {timeout_s:g} s (nodes offer {[dict(h) for h in have]})" for name, request in missing.items()]
            raise UnsatisfiableResources("\n".join(lines) + "\nadd such nodes (or an autoscaler that can), "
                                         "lower the stage's num_gpus/num_cpus, or run on CPU with --cpu; "
                                         "resource_wait_s sets how long to wait")
        if not asked:  # an autoscaler adds nodes only for demand it sees
            from ray.autoscaler.sdk import request_resources
            request_resources(bundles=list(missing.values()))
            asked = True
        time.sleep(poll_s)
