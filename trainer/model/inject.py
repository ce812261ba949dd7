"""Where a Mixer goes in a Hugging Face causal LM, and how it rewrites the normed hidden states.

docs/moai.md §6: the Mixer acts on the output of the pre-attention norm of chosen decoder layers; the
mixed states replace what self-attention reads, the residual stream is untouched. A forward hook on
the norm does exactly that without copying or subclassing the LM.
"""
from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

# (pre-attention norm, attention, post-attention norm) attribute names of a sequential pre-norm layer.
NATIVE_LAYOUT = ("input_layernorm", "self_attn", "post_attention_layernorm")  # Llama, Mistral, Qwen2/3, ...
REMOTE_LAYOUTS = {"internlm2": ("attention_norm", "attention", "ffn_norm")}


def check_lm_folder(path: str, trust_remote_code: bool) -> dict:
    """Read an LM folder's config.json and refuse remote code unless it was asked for explicitly."""
    config_file = Path(path, "config.json")
    if not config_file.is_file():
        raise FileNotFoundError(f"no language model at {path!r} (config.json missing); MoAI loads its LM "
                                "from a local folder only, nothing is downloaded")
    from transformers import CONFIG_MAPPING

    config = json.loads(config_file.read_text())
    model_type = config.get("model_type", "?")
    # A native architecture loads natively even when its config still names remote code.
    if model_type not in CONFIG_MAPPING and not trust_remote_code:
        hint = (" (InternLM-XComposer2 or MoAI-7B? `python -m trainer.published convert` makes it load natively)"
                if model_type == "internlm2" else "")
        raise ValueError(f"the LM at {path!r} (model_type {model_type!r}) ships its own modelling code; "
                         f"set MoAIConfig.trust_remote_code=True to run it (only for code you trust){hint}")
    return config


def pre_attention_norms(lm: nn.Module) -> list[nn.Module]:
    """The pre-attention norm of every decoder layer, or a ValueError naming what is unsupported."""
    model_type = getattr(lm.config, "model_type", "?")
    norm_name, attn_name, post_name = REMOTE_LAYOUTS.get(model_type, NATIVE_LAYOUT)
    decoder = lm.get_decoder() if hasattr(lm, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if layers is None:  # remote-code models may not define get_decoder
        layers = getattr(getattr(lm, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList) or not all(
            hasattr(layer, norm_name) and hasattr(layer, attn_name) and hasattr(layer, post_name)
            for layer in layers):
        raise ValueError(
            f"unsupported LM layout: {type(lm).__name__} (model_type {model_type!r}) has no sequential "
            f"pre-norm decoder layers (decoder.layers[i].{norm_name} -> {attn_name}, then {post_name}); "
            "MoAI supports Llama, Mistral, Qwen2/Qwen3 and models sharing their layer layout, InternLM2 with "
            "PLoRA natively (`python -m trainer.published convert`), and InternLM2 with trust_remote_code=True")
    return [getattr(layer, norm_name) for layer in layers]


@dataclass
class MixerRouting:
    """Which positions of the (B, T) embedded sequence a Mixer reads and rewrites during one prefill."""

    seq_len: int
    image_index: torch.Tensor  # (B, I) positions of the image tokens
    language_index: torch.Tensor  # (B, L) positions of prompt language tokens, padded
    language_mask: torch.Tensor  # (B, L) bool, True for real language slots
    aux: torch.Tensor  # (B, N, D) compressed aux tokens
    stage: int
    experts: dict[int, tuple[int, int]]  # stage 1: layer -> (image expert, language expert)
    gate_weights: dict = field(default_factory=dict)  # layer -> GateWeights, filled by the hooks
    layer_inputs: dict = field(default_factory=dict)  # layer -> weakref to the norm input the forward mixed


class MixerRouter:
    """Hands each Mixer hook call the routing it belongs to.

    While a forward or generate runs, that is its routing (`start` .. `finish`). In backward, a
    gradient-checkpointing recompute re-runs a decoder layer after its forward has finished: the
    recomputed layer reads the very input the forward saved (the same tensor, or a detached alias
    of it), which identifies that forward. Any other call reads a different tensor, so a finished
    forward's routing cannot leak into it. A saved input dies with its forward's graph (after
    backward, or when the outputs are dropped), and the routing is forgotten with it.
    """

    def __init__(self) -> None:
        self.current: MixerRouting | None = None
        self.awaiting_recompute: list[MixerRouting] = []

    def start(self, routing: MixerRouting) -> None:
        self.current = routing

    def finish(self, recompute_expected: bool = False) -> None:
        """End the running forward; keep its routing for backward when layers may be recomputed."""
        routing, self.current = self.current, None
        if recompute_expected and routing is not None and routing.layer_inputs:
            self.awaiting_recompute.append(routing)

    def routing_for(self, layer: int, normed_input) -> MixerRouting | None:
        """The routing of this hook call: the running forward's, else the one being recomputed."""
        return self.current if self.current is not None else self._recomputed(layer, normed_input)

    def mixing(self, layer: int, routing: MixerRouting, normed_input) -> None:
        """Note the input a running forward's layer mixes: a recompute will read the same tensor."""
        if routing is self.current and isinstance(normed_input, torch.Tensor):
            routing.layer_inputs[layer] = weakref.ref(normed_input)

    def _recomputed(self, layer: int, normed_input) -> MixerRouting | None:
        self.awaiting_recompute = [r for r in self.awaiting_recompute
                                   if any(ref() is not None for ref in r.layer_inputs.values())]
        if not isinstance(normed_input, torch.Tensor):
            return None
        for routing in reversed(self.awaiting_recompute):
            ref = routing.layer_inputs.get(layer)
            seen = ref() if ref is not None else None
            if seen is not None and (seen is normed_input or (
                    seen.data_ptr() == normed_input.data_ptr() and seen.device == normed_input.device
                    and seen.shape == normed_input.shape and seen.stride() == normed_input.stride())):
                return routing
        return None


@dataclass
class GateWeights:
    """Per-token weights over (aux, other modality, self); one-hot in stage 1."""

    image: torch.Tensor  # (B, I, 3)
    language: torch.Tensor  # (B, L, 3)
    language_mask: torch.Tensor  # (B, L)


def prompt_language_slots(language_flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) bool flags -> (B, L) positions of the flagged tokens in order, and their (B, L) mask."""
    counts = language_flags.sum(dim=1)  # (B,)
    width = int(counts.max()) if counts.numel() else 0
    # A stable descending sort lists each row's flagged positions first, in sequence order.
    order = torch.sort(language_flags.to(torch.int8), dim=1, descending=True, stable=True).indices
    index = order[:, :width]  # (B, L)
    mask = torch.arange(width, device=index.device)[None, :] < counts[:, None]  # (B, L)
    return index, mask


def apply_mixer(mixer: nn.Module, layer: int, routing: MixerRouting, normed: torch.Tensor) -> torch.Tensor:
    """normed (B, T, D) -> the same with image and prompt language positions replaced by the Mixer's."""
    dim = normed.shape[-1]
    image_index = routing.image_index[..., None].expand(-1, -1, dim)  # (B, I, D)
    language_index = routing.language_index[..., None].expand(-1, -1, dim)  # (B, L, D)
    image = normed.gather(1, image_index)
    language = normed.gather(1, language_index)
    out = mixer(image, language, routing.language_mask, routing.aux, routing.stage,
                routing.experts.get(layer))
    routing.gate_weights[layer] = GateWeights(out.image_weights, out.language_weights, routing.language_mask)
    # Padded language slots point at other (distinct) positions: write those back unchanged, and
    # write the image tokens last so a padded slot pointing at an image position cannot undo them.
    language_out = torch.where(routing.language_mask[..., None], out.language.to(normed.dtype), language)
    mixed = normed.scatter(1, language_index, language_out)
    return mixed.scatter(1, image_index, out.image.to(normed.dtype))
