"""What a training run shows: a progress bar (loss, tokens/s, ETA), TensorBoard scalars, losses.jsonl."""
from __future__ import annotations

import json
from pathlib import Path

EXPERTS = ("aux", "other", "self")  # gate columns: w0 X_AUX + w1 X_other + w2 X_SELF (docs/moai.md §6)


def gate_sums(gate_weights) -> dict[int, dict[str, tuple]]:
    """{layer: {"image"|"language": (sum of the gate rows (3,), number of tokens)}} from the model's
    {layer: GateWeights}: image tokens all count, language tokens only where the mask is set."""
    sums = {}
    for layer, weights in (gate_weights or {}).items():
        language_mask = weights.language_mask.bool()
        sums[layer] = {}
        for kind, values in (("image", weights.image.reshape(-1, weights.image.shape[-1])),  # (B*I, 3)
                             ("language", weights.language[language_mask])):            # (tokens, 3)
            if values.shape[0]:
                sums[layer][kind] = (values.detach().float().sum(0).cpu(), values.shape[0])
    return sums


def gate_means(gate_weights) -> dict[str, float]:
    """Mean gate weight per Mixer layer, token kind and expert, named for TensorBoard."""
    return {f"gates/layer{layer}/{kind}_{name}": w
            for layer, sides in gate_sums(gate_weights).items() for kind, (total, n) in sides.items()
            for name, w in zip(EXPERTS, (total / n).tolist())}


class Observer:
    """Rank 0 only: tqdm bar, TensorBoard under OUT/tb, one JSON line per step in OUT/losses.jsonl."""

    def __init__(self, out: Path, total_steps: int, start_step: int, stage: int, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm
        out.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(out / "tb"))
        self.bar = tqdm(total=total_steps, initial=start_step, desc=f"stage {stage}", unit="step", dynamic_ncols=True)
        self.lines = (out / "losses.jsonl").open("a")

    def step(self, step: int, *, loss: float, lr: float, grad_norm: float, tokens: float, seconds: float,
             gate_weights=None) -> None:
        if not self.enabled:
            return
        tokens_per_s = tokens / max(seconds, 1e-9)
        scalars = {"train/loss": loss, "train/lr": lr, "train/grad_norm": grad_norm,
                   "train/tokens_per_s": tokens_per_s, **gate_means(gate_weights)}
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        self.lines.write(json.dumps({"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                                     "tokens_per_s": tokens_per_s, "seconds": seconds}) + "\n")
        self.lines.flush()
        self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", lr=f"{lr:.2e}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.writer.close()
            self.lines.close()
