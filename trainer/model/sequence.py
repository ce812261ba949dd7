"""Splicing 1,225 image tokens into each row's `<image>` placeholder, and the prompt/answer split.

Each row holds exactly one placeholder, so every row grows by the same amount and padding stays where
it was (left or right). The prompt is everything before a row's first answer token (label != -100).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass
class SplicedBatch:
    embeds: torch.Tensor  # (B, T', D)
    attention_mask: torch.Tensor  # (B, T')
    position_ids: torch.Tensor  # (B, T')
    labels: torch.Tensor | None  # (B, T') with IGNORE_INDEX on image, prompt and padding positions
    image_flags: torch.Tensor  # (B, T') bool
    prompt_language_flags: torch.Tensor  # (B, T') bool: real, non-image tokens before the first answer


def splice_image_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None,
                        image_tokens: torch.Tensor, image_token_id: int, embed) -> SplicedBatch:
    """input_ids/attention_mask/labels (B, T), image_tokens (B, I, D) -> SplicedBatch of length T - 1 + I."""
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} "
                         "must both be (B, T)")
    if labels is not None and labels.shape != input_ids.shape:
        raise ValueError(f"labels {tuple(labels.shape)} must match input_ids {tuple(input_ids.shape)}")
    B, T = input_ids.shape
    if image_tokens.shape[0] != B:
        raise ValueError(f"{image_tokens.shape[0]} images for a batch of {B} rows")
    num_image = image_tokens.shape[1]
    is_placeholder = input_ids == image_token_id
    counts = is_placeholder.sum(dim=1)
    if (counts != 1).any():
        raise ValueError(f"each row of input_ids needs exactly one image token (id {image_token_id}); "
                         f"rows hold {counts.tolist()}")
    placeholder = is_placeholder.int().argmax(dim=1)  # (B,)
    rows = torch.arange(B, device=input_ids.device)
    if not attention_mask[rows, placeholder].bool().all():
        raise ValueError("the image token is masked out by attention_mask in some row")

    positions = torch.arange(T - 1 + num_image, device=input_ids.device)[None, :]  # (1, T')
    offset = positions - placeholder[:, None]  # (B, T')
    image_flags = (offset >= 0) & (offset < num_image)
    text_source = torch.where(offset < 0, positions, positions - num_image + 1).clamp(0, T - 1)  # (B, T')
    image_source = offset.clamp(0, num_image - 1)  # (B, T')

    # The placeholder id may lie outside the LM's vocabulary; it is never looked up.
    text_embeds = embed(input_ids.masked_fill(is_placeholder, 0))  # (B, T, D)
    dim = text_embeds.shape[-1]
    text_part = text_embeds.gather(1, text_source[..., None].expand(-1, -1, dim))  # (B, T', D)
    image_part = image_tokens.to(text_embeds.dtype).gather(1, image_source[..., None].expand(-1, -1, dim))
    embeds = torch.where(image_flags[..., None], image_part, text_part)  # (B, T', D)

    mask = torch.where(image_flags, 1, attention_mask.long().gather(1, text_source))  # (B, T')
    position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
    new_labels = None
    prompt_end = torch.full((B,), positions.shape[1], device=input_ids.device)
    if labels is not None:
        new_labels = torch.where(image_flags, IGNORE_INDEX, labels.gather(1, text_source))
        new_labels = new_labels.masked_fill(mask == 0, IGNORE_INDEX)
        is_answer = new_labels != IGNORE_INDEX
        has_answer = is_answer.any(dim=1)
        first_answer = is_answer.int().argmax(dim=1)
        prompt_end = torch.where(has_answer, first_answer, prompt_end)
        if (placeholder + num_image > prompt_end).any():
            raise ValueError("the image token must come before the first answer token (label != -100) in "
                             "every row: the Mixer only sees the prompt")
    prompt_language = (mask.bool() & ~image_flags) & (positions < prompt_end[:, None])
    return SplicedBatch(embeds, mask, position_ids, new_labels, image_flags, prompt_language)


def left_align(batch: SplicedBatch) -> SplicedBatch:
    """Move each row's padding to the left (for generation), keeping token order."""
    order = torch.sort(batch.attention_mask, dim=1, stable=True).indices  # (B, T') padding first

    def take(x):
        return None if x is None else x.gather(1, order if x.ndim == 2 else order[..., None].expand_as(x))

    mask = take(batch.attention_mask)
    return SplicedBatch(take(batch.embeds), mask, (mask.cumsum(dim=1) - 1).clamp(min=0), take(batch.labels),
                        take(batch.image_flags), take(batch.prompt_language_flags))
