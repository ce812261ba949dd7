"""Train and evaluate one arm of the ablation on cached features, with its own small loop.

The LM is the phase-0 LM (`textlm.py`), frozen as in MoAI: an arm trains MoAI's own parts
(connector, Compressor, Mixers) or, without Mixers, the connector only. The loop is the
ablation's own so that every arm gets the very same batches (planned from one list of lengths),
stage-1 expert draws, steps and learning rates, and so that a model without Compressor and Mixer
runs in it too. Everything else is the trainer's own code: `trainer.data` joins and tokenizes,
`trainer.cache` holds the frozen CLIP features, `trainer.data.plan_batches` orders the data,
`MoAIModel.forward` computes the loss and `MoAIModel.generate` answers.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from trainer.data import IGNORE_INDEX, collate, plan_batches
from trainer.observe import gate_sums
from trainer.schedule import warmup_cosine


@dataclass(frozen=True)
class TrainBudget:
    """The same for every arm: seed, batches, steps, optimizer."""
    seed: int = 0
    batch_size: int = 16
    stage1_epochs: float = 1.0
    stage2_epochs: float = 1.0
    # MoAI's parts are small and start from scratch: far above MoAI's 1e-4 (docs/moai.md)
    lr: float = 1e-3
    stage2_lr: float = 5e-4
    min_lr: float = 1e-4
    expert_lr_scale: float = 1.0  # the Mixers' learning rate relative to lr (a fix to try, in MoAI's bounds)
    warmup_fraction: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 10.0
    max_new_tokens: int = 4      # word-level tokens: 'bottom right' is 2, then the end of answer
    # NOT in MoAI's recipe, a data order of this rig (every arm gets the same batches): the first
    # steps of each stage ask only the text question, as phase 0's copy warm-up (docs/ablation.md, "Reading")
    text_warmup_steps: int = 0

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.stage1_epochs < 0 or self.stage2_epochs < 0 or self.stage1_epochs + self.stage2_epochs <= 0:
            raise ValueError(f"need non-negative epochs with a positive sum, got stage1_epochs="
                             f"{self.stage1_epochs}, stage2_epochs={self.stage2_epochs}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must lie in [0, 1), got {self.warmup_fraction}")
        if self.text_warmup_steps < 0:
            raise ValueError(f"text_warmup_steps must be >= 0, got {self.text_warmup_steps}")
        if self.lr <= 0 or self.stage2_lr <= 0 or self.expert_lr_scale <= 0:
            raise ValueError(f"learning rates must be positive, got lr={self.lr}, stage2_lr={self.stage2_lr}, "
                             f"expert_lr_scale={self.expert_lr_scale}")


def step_plan(lengths: list[int], batch_size: int, epochs: float, seed: int, stage: int,
              warmup: list[int] = (), warmup_steps: int = 0) -> list[list[int]]:
    """Batches of sample indices: whole epochs of `plan_batches`, then a fraction of one more.

    `lengths` must not depend on the arm (use the conversation's tokens, not the aux text), so
    that every arm sees the same batches in the same order. With `warmup` (sample indices), the
    first `warmup_steps` batches are drawn from those samples only; the plan keeps its length.
    """
    total = int(round(epochs * (len(lengths) // batch_size)))
    first = []
    if warmup and warmup_steps:
        chosen = list(warmup)
        first = [[chosen[i] for i in step] for step in
                 epochs_of_batches([lengths[i] for i in chosen], batch_size, warmup_steps, seed + 100 * stage + 7)]
    return (first + epochs_of_batches(lengths, batch_size, total - len(first), seed + 100 * stage))[:total]


def epochs_of_batches(lengths: list[int], batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """`steps` batches from consecutive epochs of `plan_batches` over `lengths`."""
    plan, epoch = [], 0
    while len(plan) < steps and len(lengths) >= batch_size:
        plan += [step[0] for step in plan_batches(lengths, batch_size, 1, 1, seed, epoch)]
        epoch += 1
    return plan[:max(0, steps)]


def train_stage(model, dataset, stage: int, budget: TrainBudget, pad_token_id: int, lengths: list[int],
                log=print, text_questions: list[int] = ()) -> list[float]:
    """One stage on the frozen LM: set_stage, AdamW + warm-up cosine; returns the per-step losses.

    lengths: per sample, the same list in every arm (it decides the batches), e.g. the tokens of
    the conversation without aux text; text_questions: the indices of the text questions (the
    text warm-up draws from them)."""
    if len(lengths) != len(dataset):
        raise ValueError(f"lengths has {len(lengths)} entries for {len(dataset)} samples")
    model.set_stage(stage)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    experts = [p for n, p in trainable if ".mixers." in f".{n}"]
    others = [p for n, p in trainable if ".mixers." not in f".{n}"]
    lr = budget.lr if stage == 1 else budget.stage2_lr
    groups = [{"params": others, "lr": lr}] + ([{"params": experts, "lr": lr * budget.expert_lr_scale}]
                                               if experts else [])
    optimizer = torch.optim.AdamW(groups, weight_decay=budget.weight_decay)
    plan = step_plan(lengths, budget.batch_size, budget.stage1_epochs if stage == 1 else budget.stage2_epochs,
                     budget.seed, stage, text_questions, budget.text_warmup_steps)
    base = [g["lr"] for g in optimizer.param_groups]
    warmup = max(1, int(budget.warmup_fraction * len(plan)))
    losses, started = [], time.monotonic()
    model.train()
    for step, indices in enumerate(plan):
        for group, lr in zip(optimizer.param_groups, base):
            group["lr"] = lr * warmup_cosine(step, len(plan), warmup, budget.min_lr / lr)
        batch = model_inputs(collate([dataset[i] for i in indices], pad_token_id))
        # stage-1 expert draws depend only on (seed, stage, step): the same in every arm
        generator = torch.Generator().manual_seed(budget.seed * 1_000_003 + stage * 100_003 + step)
        loss = model(**batch, generator=generator).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                       budget.max_grad_norm)
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == len(plan) - 1:
            recent = losses[-50:]
            log(f"  stage {stage} step {step + 1}/{len(plan)} loss {sum(recent) / len(recent):.3f} "
                f"({time.monotonic() - started:.0f}s)")
    model.eval()
    return losses


class ExpertOutputGain(torch.nn.Module):
    """NOT MoAI (`--expert-output-scale`): a learnable scalar on one expert's attention output.

    Appended to the expert's output projection `o`, so the expert computes query + gain * o(attention)
    instead of query + o(attention). The gain starts at 0 (as Flamingo's and LLaMA-Adapter's
    zero-initialised gates): each Mixer starts as the identity, the frozen LM reads its phase-0
    inputs unchanged, and the Compressor receives no gradient from a random expert path that
    scrambles the LM's input; the gain grows only where a path lowers the loss."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x * self.gain


def add_expert_output_gains(model) -> int:
    """Append an ExpertOutputGain to every Mixer expert of `model` (a MoAIModel); returns how many.

    Its parameters sit under `mixers.`, so they train with the experts at the experts' learning rate."""
    added = 0
    for mixer in model.mixers.values():
        for experts in (mixer.image_experts, mixer.language_experts):
            for expert in experts.values():
                expert.o.append(ExpertOutputGain())
                added += 1
    return added


class WithoutMixers(torch.nn.Module):
    """Arm 'no-mixer': the same LM, vision features and connector, no Compressor and no Mixer.

    `model.without_mixers()`, MoAIModel's own LLaVA-style baseline over this model's LM and
    connector (shared, so every arm starts from the same weights), so it cannot drift from the MoAI
    arm in anything but the Mixer path. The MoAI model's Mixer hooks stay registered on the shared
    LM, idle: a MoAI forward's routing reaches only that forward (and its checkpoint recompute).
    """

    def __init__(self, model):
        super().__init__()
        self.moai = model
        self.baseline = model.without_mixers()
        self.tokenizer = model.tokenizer

    def set_stage(self, stage: int) -> None:
        """Same stages as MoAI, but only the connector trains (the LM stays frozen)."""
        self.moai.requires_grad_(False)
        self.baseline.set_stage(stage)

    def forward(self, generator=None, **batch):
        return self.baseline(**batch)

    @torch.no_grad()
    def generate(self, max_new_tokens: int, **batch):
        return self.baseline.generate(max_new_tokens=max_new_tokens, **batch)

    @property
    def lm(self):
        return self.moai.lm


class Subset:
    """Some samples of a cached dataset, with its `samples` records (`--question-types`)."""

    def __init__(self, dataset, indices: list[int]):
        self.dataset, self.indices = dataset, list(indices)
        self.samples = [dataset.samples[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return self.dataset[self.indices[i]]


def of_types(dataset, entries: list[dict], types: tuple[str, ...]):
    """`dataset` restricted to questions of `types` (itself when that is every question)."""
    kind_of = {e["id"]: e["question_type"] for e in entries}
    keep = [i for i, s in enumerate(dataset.samples) if kind_of[s["sample_id"]] in types]
    return dataset if len(keep) == len(dataset) else Subset(dataset, keep)


@torch.no_grad()
def answer(model, dataset, pad_token_id: int, budget: TrainBudget, batch_size: int = 32) -> dict[str, str]:
    """Greedy answers (sample id -> text) to every held-out sample's question."""
    tokenizer = model.tokenizer
    answers = {}
    model.eval()
    for start in range(0, len(dataset), batch_size):
        items = [prompt_only(dataset[i]) for i in range(start, min(len(dataset), start + batch_size))]
        batch = model_inputs(collate(items, pad_token_id))
        batch.pop("labels")
        tokens = model.generate(**batch, max_new_tokens=budget.max_new_tokens)
        for i, row in zip(range(start, start + len(items)), tokens):
            answers[dataset.samples[i]["sample_id"]] = clean_answer(tokenizer.decode(row), tokenizer)
    return answers


def model_inputs(batch: dict) -> dict:
    """A collated cache batch as MoAIModel.forward takes it (cached features may be bf16)."""
    batch = dict(batch)
    for key in ("image_features", "ps_features"):
        batch[key] = batch[key].float()  # (B, N, Dv)
    return batch


def prompt_only(item: dict) -> dict:
    """A training item cut before its first answer token: what the model sees when asked."""
    labels = item["labels"]
    first = int((labels != IGNORE_INDEX).nonzero()[0])
    return {**item, "input_ids": item["input_ids"][:first], "labels": labels[:first]}


def clean_answer(text: str, tokenizer=None) -> str:
    """The answer up to the end-of-turn markup, end of sequence, padding or the first line break."""
    stops = ["<|im_end|>", "<|", "\n"]
    if tokenizer is not None:
        stops += [t for t in (tokenizer.eos_token, tokenizer.pad_token) if t]
    for stop in stops:
        text = text.split(stop)[0]
    return text.strip()


@torch.no_grad()
def gate_weights(model, dataset, pad_token_id: int, batch_size: int = 32) -> dict[int, dict[str, list[float]]]:
    """Mean stage-2 gate weights per Mixer layer over held-out prompts: image (aux, lang, self),
    language (aux, img, self)."""
    model.set_stage(2)
    model.eval()
    sums: dict[int, dict[str, torch.Tensor]] = {}
    counts: dict[int, dict[str, float]] = {}
    for start in range(0, len(dataset), batch_size):
        batch = model_inputs(collate([dataset[i] for i in range(start, min(len(dataset), start + batch_size))],
                                     pad_token_id))
        for layer, sides in gate_sums(model(**batch).gate_weights).items():
            for side, (total, n) in sides.items():
                sums.setdefault(layer, {}).setdefault(side, torch.zeros(3)).add_(total)
                counts.setdefault(layer, {}).setdefault(side, 0.0)
                counts[layer][side] += n
    return {layer: {side: (sums[layer].get(side, torch.zeros(3)) / max(counts[layer].get(side, 0), 1)).tolist()
                    for side in ("image", "language")} for layer in sorted(sums)}


@torch.no_grad()
def mixer_effect(model, dataset, pad_token_id: int, samples: int = 64) -> dict[int, float]:
    """How much each Mixer changes what its layer's attention reads: ||mixed - normed|| / ||normed||
    over held-out prompts (stage 2). Near 0 means the Mixer (and so the aux path) is close to a no-op."""
    from trainer.model.inject import pre_attention_norms

    norms = pre_attention_norms(model.lm)
    before, after, handles = {}, {}, []
    for layer in model.mixer_layers:  # prepend: runs before the Mixer's own hook, sees the plain norm output
        handles.append(norms[layer].register_forward_hook(
            lambda module, args, out, layer=layer: before.__setitem__(layer, out.detach()), prepend=True))
        handles.append(norms[layer].register_forward_hook(
            lambda module, args, out, layer=layer: after.__setitem__(layer, out.detach())))
    change, total = {layer: 0.0 for layer in model.mixer_layers}, {layer: 0.0 for layer in model.mixer_layers}
    model.set_stage(2)
    try:
        for start in range(0, min(samples, len(dataset)), 16):
            batch = model_inputs(collate([dataset[i] for i in range(start, min(samples, len(dataset), start + 16))],
                                         pad_token_id))
            model(**batch)
            for layer in model.mixer_layers:
                change[layer] += float((after[layer] - before[layer]).pow(2).sum())
                total[layer] += float(before[layer].pow(2).sum())
    finally:
        for handle in handles:
            handle.remove()
    return {layer: (change[layer] / total[layer]) ** 0.5 for layer in model.mixer_layers}
