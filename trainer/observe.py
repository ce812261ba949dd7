"""What a training run shows: a progress bar (loss, tokens/s, ETA), TensorBoard scalars, losses.jsonl."""
from __future__ import annotations

import json
from pathlib import Path

EXPERTS = ("aux", "other", "self")  # gate columns: w0 X_AUX + w1 X_other + w2 X_SELF (reference §6)


def gate_means(gate_weights) -> dict[str, float]:
    """Mean gate weight per Mixer layer, token kind and expert from the model's {layer: GateWeights}."""
    means = {}
    for layer, weights in (gate_weights or {}).items():
        language_mask = weights.language_mask.bool()
        for kind, values in (("image", weights.image.reshape(-1, weights.image.shape[-1])),  # (B*I, 3)
                             ("language", weights.language[language_mask])):            # (tokens, 3)
            if values.numel() == 0:
                continue
            for name, w in zip(EXPERTS, values.detach().float().mean(0).tolist()):
                means[f"gates/layer{layer}/{kind}_{name}"] = w
    return means


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
