"""Floating-point dtypes by name: the one list every annotator, pipeline stage and trainer option
accepts, and the one place that turns a name into a torch dtype (torch imported only when asked)."""
from __future__ import annotations

DTYPE_NAMES = ("float32", "bfloat16", "float16")


def check_dtype(name: str, allowed: tuple[str, ...] = DTYPE_NAMES, what: str = "dtype") -> str:
    if name not in allowed:
        raise ValueError(f"{what} {name!r} is not one of {allowed}")
    return name


def torch_dtype(name: str, device: str | None = None, allowed: tuple[str, ...] = DTYPE_NAMES):
    """'bfloat16' -> torch.bfloat16; float16 is refused on the CPU (slow or unsupported kernels there)."""
    import torch
    check_dtype(name, allowed)
    if name == "float16" and device is not None and str(device).startswith("cpu"):
        raise ValueError("dtype 'float16' needs device 'cuda'; on the CPU use 'float32' or 'bfloat16'")
    return getattr(torch, name)
