"""Convert OpenPSG's `psgtr_r50_epoch_60.pth` (an mmdet checkpoint, 585 tensors) into our model folder (checkpoint.py).

    python -m annotators.psgtr.convert psgtr_r50_epoch_60.pth models/psgtr_r50 [--sha256 published]
        [--classes moai:coco_panoptic] [--predicates moai:psg_predicates]   # the shipped lists

Accepts mmcv-1.x names (`attentions.0`, `attentions.1`, `ffns.0`, as OpenPSG saved them) and MoAI's
mmdet-3 renaming (`self_attn`, `cross_attn`, `ffn`). Refuses a checkpoint whose keys or shapes do not
match, listing missing, unexpected and mis-shaped keys.

Loading is pickle-safe: `torch.load(weights_only=True)` first. mmcv also pickles a `meta` dict; if it
holds objects the weights-only unpickler refuses, we reload with an unpickler that allows exactly the
same globals as weights_only and replaces every other global by an inert stub (its code never runs;
its name is reported). Only `state_dict` tensors are used.
"""
from __future__ import annotations

import argparse
import pickle
import re
import sys
from pathlib import Path

import torch

from ..vocab import load_vocabulary
from ..base import sha256_file
from .checkpoint import save_model_dir
from .config import PSGTRConfig
from .model import PSGTR

PUBLISHED_SHA256 = "1c4ddcbda74686568b7e6b8145f7f33030407e27e390c37c23206f95c51829ed"  # OpenPSG README, R50
LAYER_KEY = re.compile(r"^transformer\.(encoder|decoder)\.layers\.(\d+)\.(.+)$")
LAYER_RENAMES = (  # (pattern, replacement) on the part after `layers.N.`
    (re.compile(r"^(?:attentions\.0|self_attn)\.attn\.(.+)$"), r"self_attn.\1"),
    (re.compile(r"^(?:attentions\.1|cross_attn)\.attn\.(.+)$"), r"cross_attn.\1"),
    (re.compile(r"^(?:ffns\.0|ffn)\.layers\.0\.0\.(.+)$"), r"linear1.\1"),
    (re.compile(r"^(?:ffns\.0|ffn)\.layers\.1\.(.+)$"), r"linear2.\1"),
)
NORM_KEY = re.compile(r"^norms\.(\d+)\.(.+)$")


class ConversionError(ValueError):
    """The checkpoint does not fit the PSGTR architecture; the message lists the offending keys."""


def rename_key(key: str) -> str | None:
    """Checkpoint key -> our parameter name, or None for a key we do not know."""
    if key.startswith("module."):
        key = key[len("module."):]
    if key.startswith("backbone."):
        return key
    if not key.startswith("bbox_head."):
        return None
    key = key[len("bbox_head."):]
    match = LAYER_KEY.match(key)
    if not match:
        return key
    part, index, rest = match.groups()
    norm = NORM_KEY.match(rest)
    if norm:
        return f"transformer.{part}.layers.{index}.norm{int(norm.group(1)) + 1}.{norm.group(2)}"
    for pattern, replacement in LAYER_RENAMES:
        if pattern.match(rest):
            return f"transformer.{part}.layers.{index}.{pattern.sub(replacement, rest)}"
    return None


OPENPSG_NAMES = (  # our layer part -> OpenPSG's mmcv-1.x name: the inverse of LAYER_RENAMES
    (re.compile(r"^self_attn\.(.+)$"), r"attentions.0.attn.\1"),
    (re.compile(r"^cross_attn\.(.+)$"), r"attentions.1.attn.\1"),
    (re.compile(r"^linear1\.(.+)$"), r"ffns.0.layers.0.0.\1"),
    (re.compile(r"^linear2\.(.+)$"), r"ffns.0.layers.1.\1"),
)


def openpsg_key(name: str) -> str:
    """Our parameter name -> the key OpenPSG's checkpoint stores it under (`rename_key`'s inverse),
    for writing checkpoints in the published format (annotators.fake_weights)."""
    if name.startswith("backbone."):
        return name
    match = LAYER_KEY.match(name)
    if match:
        part, index, rest = match.groups()
        norm = re.match(r"^norm(\d+)\.(.+)$", rest)
        if norm:
            rest = f"norms.{int(norm.group(1)) - 1}.{norm.group(2)}"
        for pattern, replacement in OPENPSG_NAMES:
            rest = pattern.sub(replacement, rest)
        name = f"transformer.{part}.layers.{index}.{rest}"
    return f"bbox_head.{name}"


def config_from_state_dict(state: dict[str, torch.Tensor]) -> PSGTRConfig:
    """The published architecture, with class/predicate/query counts read from the head shapes."""
    try:
        return PSGTRConfig(num_classes=state["sub_cls_embed.weight"].shape[0] - 1,
                           num_predicates=state["rel_cls_embed.weight"].shape[0] - 1,
                           num_queries=state["query_embed.weight"].shape[0])
    except KeyError as err:
        raise ConversionError(f"not a PSGTR checkpoint: no {err.args[0]!r} after renaming") from err


def map_state_dict(checkpoint_state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], PSGTRConfig]:
    """Rename every key and check the result strictly against our model (names and shapes)."""
    renamed, origin, unknown = {}, {}, []
    for key, value in checkpoint_state.items():
        name = rename_key(key)
        if name is None:
            unknown.append(key)
        else:
            renamed[name], origin[name] = value, key
    cfg = config_from_state_dict(renamed)
    with torch.device("meta"):  # shapes only, no allocation
        expected = {k: v.shape for k, v in PSGTR(cfg).state_dict().items()}
    missing = sorted(set(expected) - set(renamed))
    unexpected = sorted(unknown + [origin[k] for k in renamed if k not in expected])
    mis_shaped = sorted(f"{origin[k]}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k])}"
                        for k, v in renamed.items() if k in expected and v.shape != expected[k])
    if missing or unexpected or mis_shaped:
        raise ConversionError(
            "checkpoint does not match PSGTR"
            + (f"\nmissing keys, in our names ({len(missing)}): {missing}" if missing else "")
            + (f"\nunexpected keys ({len(unexpected)}): {unexpected}" if unexpected else "")
            + (f"\nshape mismatches ({len(mis_shaped)}): {mis_shaped}" if mis_shaped else ""))
    return {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in renamed.items()}, cfg


class _InertStub:
    """Stands in for a non-allowlisted global in the pickle; construction, state and contents are
    ignored. It takes what pickle fills containers with (items of a dict subclass such as mmcv's
    ConfigDict, elements of a list subclass), so such metadata loads; none of its code ever runs."""
    qualified_name = "?"

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):  # SETITEM(S) on a dict subclass
        pass

    def append(self, value):  # APPEND on a list subclass
        pass

    def extend(self, values):  # APPENDS on a list subclass
        pass

    def add(self, value):  # ADDITEMS on a set subclass
        pass


def _stubbing_pickle_module(stubbed: list[str]):
    """A pickle-module look-alike whose Unpickler resolves only weights_only's allowlist."""
    from torch._weights_only_unpickler import _get_allowed_globals
    allowed = _get_allowed_globals()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            qualified = f"{module}.{name}"
            if qualified in allowed:
                return allowed[qualified]
            stubbed.append(qualified)
            return type(name, (_InertStub,), {"qualified_name": qualified})

    return type("StubbingPickle", (), {"Unpickler": Unpickler, "load": pickle.load, "__name__": "stubbing_pickle"})


def load_checkpoint_state(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(tensor state dict, globals that had to be stubbed) of an mmdet/mmengine .pth file."""
    stubbed: list[str] = []
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_stubbing_pickle_module(stubbed))
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: expected a dict with a 'state_dict' of tensors")
    return dict(state), sorted(set(stubbed))


def convert(checkpoint: str | Path, out_dir: str | Path, classes: str | Path = "moai:coco_panoptic",
            predicates: str | Path = "moai:psg_predicates", sha256: str | None = None) -> Path:
    """Verify (optionally), map and write the model folder; returns it."""
    digest = sha256_file(checkpoint)
    expected = PUBLISHED_SHA256 if sha256 == "published" else sha256
    if expected and digest != expected.lower():
        raise ConversionError(f"{checkpoint}: SHA-256 {digest} does not match the expected {expected}")
    class_vocab, predicate_vocab = load_vocabulary(str(classes)), load_vocabulary(str(predicates))
    raw, stubbed = load_checkpoint_state(checkpoint)
    state, cfg = map_state_dict(raw)
    source = {"checkpoint": Path(checkpoint).name, "checkpoint_sha256": digest, "sha256_verified": bool(expected),
              "num_keys": len(raw), "stubbed_metadata_globals": stubbed,
              "classes": class_vocab.provenance(), "predicates": predicate_vocab.provenance()}
    return save_model_dir(state, cfg, out_dir, class_vocab.names, predicate_vocab.names, source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m annotators.psgtr.convert", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="psgtr_r50_epoch_60.pth (OpenPSG) or a MoAI-renamed copy")
    parser.add_argument("out_dir", help="folder to write model.safetensors and config.json into")
    parser.add_argument("--classes", default="moai:coco_panoptic",
                        help="133 COCO panoptic class names: a JSON list or one-per-line file, or the shipped "
                             "moai:coco_panoptic (default)")
    parser.add_argument("--predicates", default="moai:psg_predicates",
                        help="56 PSG predicate names: a file, or the shipped moai:psg_predicates (default)")
    parser.add_argument("--sha256", help="expected SHA-256 of the checkpoint, or 'published' for OpenPSG's")
    args = parser.parse_args(argv)
    try:
        out = convert(args.checkpoint, args.out_dir, args.classes, args.predicates, args.sha256)
    except (ConversionError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a checkpoint we cannot read at all: one line, not a traceback
        print(f"error: {args.checkpoint}: cannot read it as a PSGTR checkpoint ({type(err).__name__}: {err})",
              file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
