"""The MoAI training recipe: setup -> model / optimizer / data -> loss step -> train -> cleanup.

The same command runs on one CPU process and on N GPUs:
    trainer train --recipe trainer/recipes/tiny.yaml --stage 1
    torchrun --nproc_per_node 8 -m trainer.cli train --recipe trainer/recipes/moai_7b.yaml --stage 1
Every rank computes the same length-grouped plan of global batches and takes its slice, and the
loss is a sum over answer tokens divided by the answer tokens of the whole global batch, so one
process with batch 2B, one with batch B and 2 accumulation steps, and two with batch B take the
same optimizer step.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

from .checkpoint import (
    checkpoint_dir, latest_checkpoint, load_checkpoint, load_trainable, save_checkpoint,
)
from .recipe import TrainConfig, build_model, load_recipe, parse_overrides, stage_config
from .data import IGNORE_INDEX, collate, plan_batches
from .observe import Observer
from .schedule import warmup_cosine

FINAL = "final"


class MoAIRecipe:
    """One training stage. `setup()`, then `train()`, then `cleanup()`."""

    def __init__(self, recipe: dict, stage: int, resume: bool = False):
        self.recipe, self.stage, self.resume = recipe, stage, resume
        self.cfg: TrainConfig = stage_config(recipe, stage)
        self.out = Path(self.cfg.output_dir) / f"stage{stage}"

    # ---- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        self._setup_distributed()
        self._setup_model()
        self._setup_data()
        self._setup_optimizer()
        self.start_step, self.epoch_position = 0, (0, 0)
        checkpoint = latest_checkpoint(self.out) if self.resume else None
        if self.resume and checkpoint is None:
            self.log(f"--resume: no checkpoint in {self.out}, starting from step 0")
        if checkpoint is not None:
            state = load_checkpoint(checkpoint, self.model, self.optimizer, self.scheduler)
            if state.get("global_batch", self.global_batch) != self.global_batch:
                raise ValueError(f"{checkpoint} was trained with a global batch of {state['global_batch']}, this "
                                 f"run has {self.global_batch} (micro_batch_size x processes x grad_accum); "
                                 "resume with the same global batch so the data position means the same samples")
            self.start_step, self.epoch_position = state["step"], tuple(state["data_position"])
            self.log(f"resumed from {checkpoint} at step {self.start_step}")
        self.observer = Observer(self.out, self.total_steps, self.start_step, self.stage, enabled=self.is_main)

    def _setup_distributed(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and self.cfg.device in ("auto", "cuda")
        self.device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        self.is_main = self.rank == 0
        self.autocast = self.cfg.precision == "bf16" and use_cuda

    def _setup_model(self) -> None:
        torch.manual_seed(self.cfg.seed)  # same initial weights on every rank (FSDP does not broadcast)
        if self.is_main:
            model = build_model(self.recipe["model"])
        self.barrier()  # rank 0 may have built tiny backbones on disk first
        if not self.is_main:
            model = build_model(self.recipe["model"])
        model.set_stage(self.stage)
        if self.stage == 2 and not (self.resume and latest_checkpoint(self.out) is not None):
            init = Path(self.cfg.init_from or Path(self.cfg.output_dir) / "stage1" / FINAL)
            missing, unexpected = model.load_state_dict(load_trainable(init), strict=False)
            if unexpected:
                raise ValueError(f"{init} holds weights this model does not have: {unexpected[:5]}")
            self.log(f"stage 2 starts from stage-1 weights {init}")
        if self.cfg.gradient_checkpointing:  # the LM's decoder layers recompute activations in backward
            if hasattr(model.lm, "activation_checkpointing_enable"):
                model.lm.activation_checkpointing_enable({"use_reentrant": False})
            else:
                model.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        for part in (model.connector, model.compressor, model.mixers):
            if part is not None:  # no compressor when mixer_layers=() (the LLaVA-style baseline)
                part.float()  # fp32 master weights for AdamW even when the frozen backbones are bf16
        self.module = model.to(self.device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.model = self._wrap(model)
        n_train = sum(p.numel() for p in self.params)
        self.log(f"stage {self.stage}: {n_train:,} trainable of {sum(p.numel() for p in model.parameters()):,} "
                 f"parameters on {self.world_size} x {self.device.type}"
                 + (f" ({self.cfg.distributed})" if self.world_size > 1 else ""))

    def _wrap(self, model):
        if self.world_size == 1:
            return model
        if self.cfg.distributed == "fsdp":
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if self.autocast else None,
                                          reduce_dtype=torch.float32)
            for module in model.modules():  # shard per decoder / encoder layer, then the rest
                if type(module).__name__.endswith(("DecoderLayer", "EncoderLayer")):
                    fully_shard(module, mp_policy=policy)
            fully_shard(model, mp_policy=policy)
            self.params = [p for p in model.parameters() if p.requires_grad]
            return model
        from torch.nn.parallel import DistributedDataParallel
        # stage 1 draws one expert per Mixer layer, so the other experts get no gradient that step
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                       find_unused_parameters=self.stage == 1)

    def _setup_data(self) -> None:
        data = self.recipe["data"]
        if data.get("cache"):
            from .cache import CachedDataset, check_compatible
            self.dataset = CachedDataset(data["cache"])
            check_compatible(self.dataset.meta, self.module.config.to_dict())
            report = self.dataset.meta["join_report"]
            self.log(f"feature cache {data['cache']}: {len(self.dataset)} samples "
                     f"({report['conversations']} conversations, see join_report.json there)")
        else:
            from schemas import read_annotations

            from .data import (ANNOTATION_COLUMNS, OnlineDataset, PromptFormat, drop_unreadable, join_samples,
                               load_conversations)
            table = read_annotations(data["annotations"], columns=ANNOTATION_COLUMNS)
            samples, report = join_samples(table, load_conversations(data["conversations"]), self.module.tokenizer,
                                           self.module.image_token_id, PromptFormat.from_dict(data.get("prompt")),
                                           data.get("max_length"))
            samples = drop_unreadable(samples, table, report, self.module.config.image_size)
            self.log(report.summary())
            if self.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                report.write(self.out / "join_report.json")
            self.dataset = OnlineDataset(samples, table, self.module.config.image_size)
        n_samples = len(self.dataset)
        if not n_samples:
            raise ValueError("no usable training samples; see the join report above")
        self.lengths, self.answer_tokens = self.dataset.lengths, self.dataset.answer_tokens
        self.global_batch = global_batch = self.cfg.micro_batch_size * self.world_size * self.cfg.grad_accum
        self.steps_per_epoch = n_samples // global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(f"{n_samples} samples do not fill one global batch of {global_batch} "
                             "(micro_batch_size x processes x grad_accum); lower one of them")
        if n_samples % global_batch:
            self.log(f"{n_samples % global_batch} samples beyond the last full global batch of "
                     f"{global_batch} are left out of each epoch (a different tail each epoch)")
        self.total_steps = self.steps_per_epoch * self.cfg.epochs
        if self.cfg.max_steps:
            self.total_steps = min(self.total_steps, self.cfg.max_steps)
        pad = self.module.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else 0

    def _setup_optimizer(self) -> None:
        cfg = self.cfg
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                           weight_decay=cfg.weight_decay)
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(cfg.warmup_ratio * self.total_steps)
        floor = cfg.min_lr / cfg.lr

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, partial(warmup_cosine, total=self.total_steps, warmup=warmup, floor=floor))

    # ---- loss step ---------------------------------------------------------------------------
    def _model_inputs(self, batch: dict) -> dict:
        to = partial(torch.Tensor.to, device=self.device, non_blocking=True)
        inputs = {k: to(batch[k]) for k in ("input_ids", "attention_mask", "labels", "aux_input_ids",
                                            "aux_attention_mask")}
        if "image_features" in batch:
            inputs["image_features"] = to(batch["image_features"]).float()  # (B, N, Dv)
            inputs["ps_features"] = to(batch["ps_features"]).float()
        else:
            inputs["pixel_values"] = self.module.image_pixel_values(to(batch["image"]))  # (B, 3, 490, 490)
            inputs["ps_pixel_values"] = self.module.ps_pixel_values(to(batch["ps_ids"]))
        return inputs

    def _loss_step(self, batch: dict, step: int, micro: int):
        """Summed token loss of one micro-batch (the model returns the mean over its answer tokens)."""
        inputs = self._model_inputs(batch)
        # stage-1 expert draws depend only on (seed, step, micro): identical on every rank and on resume
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step * 1009 + micro)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            output = self.model(**inputs, generator=generator)
        n_tokens = (batch["labels"] != IGNORE_INDEX).sum()
        return output.loss.float() * n_tokens, output

    def _sync_grads(self, last_micro: bool):
        if self.world_size == 1:
            return contextlib.nullcontext()
        if self.cfg.distributed == "fsdp":
            self.model.set_requires_gradient_sync(last_micro)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if last_micro else self.model.no_sync()

    # ---- train -------------------------------------------------------------------------------
    def _loader(self, plan: list, first_step: int):
        accum, world = self.cfg.grad_accum, self.world_size
        micro_batches = [plan[s][a * world + self.rank] for s in range(first_step, len(plan)) for a in range(accum)]
        return iter(torch.utils.data.DataLoader(
            self.dataset, batch_sampler=micro_batches, num_workers=self.cfg.num_workers,
            collate_fn=partial(collate, pad_token_id=self.pad_token_id), pin_memory=self.device.type == "cuda",
            persistent_workers=False))

    def train(self) -> dict:
        cfg, step = self.cfg, self.start_step
        losses, stopped = [], False
        self.model.train()
        epoch, position = self.epoch_position
        while step < self.total_steps and not stopped:
            plan = plan_batches(self.lengths, cfg.micro_batch_size, self.world_size, cfg.grad_accum, cfg.seed, epoch)
            loader = self._loader(plan, position)
            for position in range(position, len(plan)):
                if step >= self.total_steps:
                    break
                started = time.perf_counter()
                global_tokens = sum(self.answer_tokens[i] for micro in plan[position] for i in micro)
                totals = torch.zeros(2, device=self.device)  # summed loss, tokens seen
                gate_weights = None
                for a in range(cfg.grad_accum):
                    batch = next(loader)
                    with self._sync_grads(a == cfg.grad_accum - 1):
                        loss_sum, output = self._loss_step(batch, step, a)
                        # DDP/FSDP average gradients over ranks; scale back to the global token mean
                        (loss_sum * self.world_size / global_tokens).backward()
                    totals += torch.stack([loss_sum.detach(), (batch["attention_mask"].sum()
                                           + batch["aux_attention_mask"].sum()).float().to(self.device)])
                    gate_weights = output.gate_weights if self.stage == 2 else None
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
                lr = self.scheduler.get_last_lr()[0]
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.world_size > 1:
                    dist.all_reduce(totals)
                step += 1
                loss = (totals[0] / global_tokens).item()
                losses.append(loss)
                self.observer.step(step, loss=loss, lr=lr, grad_norm=float(grad_norm), tokens=float(totals[1]),
                                   seconds=time.perf_counter() - started, gate_weights=gate_weights)
                next_position = (epoch, position + 1) if position + 1 < len(plan) else (epoch + 1, 0)
                if cfg.save_every and step % cfg.save_every == 0 and step < self.total_steps:
                    self._save(checkpoint_dir(self.out, step), step, next_position)
                if cfg.stop_after and step >= self.start_step + cfg.stop_after and step < self.total_steps:
                    self._save(checkpoint_dir(self.out, step), step, next_position)
                    self.log(f"stopped after {cfg.stop_after} steps at step {step}; continue with --resume")
                    stopped = True
                    break
            else:
                epoch, position = epoch + 1, 0
        path = None
        if not stopped:
            path = self._save(self.out / FINAL, step, (epoch, position))
            export_pretrained(self.module, path, self.stage, self.is_main)
        return {"losses": losses, "checkpoint": path or checkpoint_dir(self.out, step), "step": step,
                "finished": not stopped}

    def _save(self, path: Path, step: int, position: tuple) -> Path:
        state = {"step": step, "data_position": list(position), "stage": self.stage,
                 "world_size": self.world_size, "global_batch": self.global_batch, "recipe": self.recipe,
                 "model_config": self.module.config.to_dict()}
        save_checkpoint(path, self.model, self.optimizer, self.scheduler, state, is_main=self.is_main,
                        keep=self.cfg.keep_checkpoints if path.name != FINAL else None)
        self.barrier()
        return path

    # ---- cleanup -----------------------------------------------------------------------------
    def cleanup(self) -> None:
        self.observer.close()
        if dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if dist.is_initialized():
            dist.barrier()

    def log(self, message: str) -> None:
        if self.is_main:
            print(message, file=sys.stderr, flush=True)


def export_pretrained(module, directory: Path, stage: int, is_main: bool) -> None:
    """MoAIModel.from_pretrained's files (config + all MoAI weights) from a plain, DDP or FSDP model."""
    from safetensors.torch import save_file

    from .model.moai import CONFIG_FILE, WEIGHTS_FILE
    weights = {}
    for name, value in module.trainable_state_dict().items():  # FSDP: DTensor shards, gathered here
        value = value.full_tensor() if hasattr(value, "full_tensor") else value
        weights[name] = value.detach().to("cpu").contiguous()
    if is_main:
        module.config.save(directory / CONFIG_FILE)
        save_file(weights, str(directory / WEIGHTS_FILE), metadata={"stage": str(stage)})


def run(recipe: dict, stage: int, resume: bool = False) -> dict:
    """Run one stage of `recipe` (a dict as loaded from YAML); returns losses and the checkpoint."""
    job = MoAIRecipe(recipe, stage, resume)
    job.setup()
    try:
        result = job.train()
    finally:
        job.cleanup()
    return result


def check_inputs(recipe: dict, stage: int, resume: bool) -> None:
    """Every path the run will read exists; FileNotFoundError naming the first that does not."""
    data = recipe["data"]
    keys = ("cache",) if data.get("cache") else ("annotations", "conversations")
    for key in keys:
        if not Path(data[key]).exists():
            raise FileNotFoundError(f"data.{key}: {data[key]} does not exist")
    cfg = stage_config(recipe, stage)
    if stage == 2 and not (resume and latest_checkpoint(Path(cfg.output_dir) / "stage2") is not None):
        init = Path(cfg.init_from or Path(cfg.output_dir) / "stage1" / FINAL)
        if not init.exists():
            raise FileNotFoundError(f"stage 2 starts from the stage-1 weights at {init}, which do not exist: "
                                    "run `trainer train --stage 1` first, or set train.init_from")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainer train", description="Train one MoAI stage from a recipe.")
    parser.add_argument("--recipe", required=True, help="YAML recipe (trainer/recipes/)")
    parser.add_argument("--stage", type=int, choices=(1, 2), required=True)
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint of this stage")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set train.max_steps=10 --set data.cache=cache/")
    parser.add_argument("--losses-json", help="also write the per-step losses here (rank 0)")
    args = parser.parse_args(argv)
    recipe = parse_overrides(load_recipe(args.recipe), args.set)
    check_inputs(recipe, args.stage, args.resume)  # before a (7B) model is built
    result = run(recipe, args.stage, args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        if args.losses_json:
            Path(args.losses_json).write_text(json.dumps(result["losses"]) + "\n")
        state = "final" if result["finished"] else "interrupted"
        print(f"{state} checkpoint (step {result['step']}): {result['checkpoint']}")
    return 0
