"""The learning-rate schedule of both stages (and of the ablation's arms): linear warm-up over
`warmup` steps, then a cosine from the peak down to `floor` x peak at `total` steps."""
from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int, floor: float) -> float:
    """The factor on the peak learning rate at `step` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
