"""MoAI-Mixer: six low-rank attention experts and two gates (docs/moai.md §6).

Image tokens are mixed from I_AUX (-> compressed aux), I_LANG (-> language) and I_SELF; language
tokens from L_AUX, L_IMG and L_SELF. Stage 1 draws one expert per side per forward (no gates);
stage 2 mixes all three with per-token softmax gates.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainer.model.experts import LowRankAttentionExpert

NUM_EXPERTS = 3  # per side, in gate order: aux, other modality, self


@dataclass
class MixerOutput:
    """Mixed states and the weight each token gave to (aux, other, self)."""

    image: torch.Tensor  # (B, I, D)
    language: torch.Tensor  # (B, L, D)
    image_weights: torch.Tensor  # (B, I, 3)
    language_weights: torch.Tensor  # (B, L, 3)


def draw_experts(generator: torch.Generator | None) -> tuple[int, int]:
    """Stage 1: one expert index for the image side and, independently, one for the language side."""
    device = generator.device if generator is not None else "cpu"
    image_choice, language_choice = torch.randint(NUM_EXPERTS, (2,), generator=generator, device=device).tolist()
    return image_choice, language_choice


class Mixer(nn.Module):
    def __init__(self, dim: int, rank: int = 64, heads: int = 4, half_gates: bool = False):
        """half_gates: the published gate softmax, in float16 at inference and bfloat16 in training
        (compat quirk `gate_half`); the default is float32 (the weights' dtype)."""
        super().__init__()
        self.half_gates = half_gates
        self.image_experts = nn.ModuleDict(
            {name: LowRankAttentionExpert(dim, rank, heads) for name in ("aux", "lang", "self")})
        self.language_experts = nn.ModuleDict(
            {name: LowRankAttentionExpert(dim, rank, heads) for name in ("aux", "img", "self")})
        self.image_gate = nn.Linear(dim, NUM_EXPERTS)
        self.language_gate = nn.Linear(dim, NUM_EXPERTS)

    def forward(self, image: torch.Tensor, language: torch.Tensor, language_mask: torch.Tensor,
                aux: torch.Tensor, stage: int, experts: tuple[int, int] | None = None) -> MixerOutput:
        """image (B, I, D), language (B, L, D) with language_mask (B, L) bool, aux (B, N, D) -> MixerOutput.

        experts: stage 1's (image, language) expert indices, drawn by the caller before the forward so
        that a recomputation (gradient checkpointing) reuses them; None draws from torch's global RNG.

        Image tokens are never padding (one image per row); padded language slots are neither keys nor
        meaningful queries (their outputs are discarded by the caller).
        """
        if stage not in (1, 2):
            raise ValueError(f"Mixer stage must be 1 or 2, got {stage!r}")
        dtype = self.image_gate.weight.dtype
        image, language, aux = image.to(dtype), language.to(dtype), aux.to(dtype)
        language_mask = language_mask.bool()
        image_branches = (
            lambda: self.image_experts["aux"](image, aux),
            lambda: self.image_experts["lang"](image, language, language_mask),
            lambda: self.image_experts["self"](image, image),
        )
        language_branches = (
            lambda: self.language_experts["aux"](language, aux),
            lambda: self.language_experts["img"](language, image),
            lambda: self.language_experts["self"](language, language, language_mask),
        )
        if stage == 1:
            image_choice, language_choice = experts if experts is not None else draw_experts(None)
            image_weights = nn.functional.one_hot(
                torch.full(image.shape[:2], image_choice, device=image.device), NUM_EXPERTS).to(dtype)
            language_weights = nn.functional.one_hot(
                torch.full(language.shape[:2], language_choice, device=image.device), NUM_EXPERTS).to(dtype)
            return MixerOutput(image_branches[image_choice](), language_branches[language_choice](),
                               image_weights, language_weights)
        gate_dtype = None
        if self.half_gates:  # their sum is then not exactly 1 (1 +- 4e-4 in float16)
            gate_dtype = torch.bfloat16 if self.training else torch.float16
        image_weights = self.image_gate(image).softmax(dim=-1, dtype=gate_dtype)  # (B, I, 3)
        language_weights = self.language_gate(language).softmax(dim=-1, dtype=gate_dtype)  # (B, L, 3)
        # A half-precision weight times an expert output promotes to the expert's dtype.
        image_mixed = sum(image_weights[..., i:i + 1] * branch() for i, branch in enumerate(image_branches))
        language_mixed = sum(language_weights[..., i:i + 1] * branch()
                             for i, branch in enumerate(language_branches))
        return MixerOutput(image_mixed, language_mixed, image_weights.to(dtype), language_weights.to(dtype))
