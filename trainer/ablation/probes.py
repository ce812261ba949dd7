"""Where the auxiliary information goes: measurements for an arm that falls short.

- `sign_word_probe`: does the Compressor's output still identify the sign word? A linear probe
  (multinomial logistic regression) on the flattened compressed aux tokens (num_latents x D),
  fit on training scenes, scored on held-out scenes, next to the majority-class rate. The sign
  word is only in the OCR part of the aux text, so this is the text questions' information.
- `answer_loss`: the mean next-token loss on held-out answer tokens per question type; the
  text-question loss should fall in `moai` and not in `no-aux` if the word gets through.
The Mixer's change of the normed states per layer is `arm.mixer_effect` (run before and after training).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.data import IGNORE_INDEX, collate

from .arm import model_inputs, of_types


@torch.no_grad()
def answer_loss(model, dataset, pad_token_id: int, entries: list[dict], batch_size: int = 32) -> dict[str, float]:
    """Mean next-token loss over answer tokens (incl. the end of answer) per question type (+ 'all')."""
    kind_of = {e["id"]: e["question_type"] for e in entries}
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    model.eval()
    for start in range(0, len(dataset), batch_size):
        indices = range(start, min(len(dataset), start + batch_size))
        out = model(**model_inputs(collate([dataset[i] for i in indices], pad_token_id)))
        target = out.labels[:, 1:]  # (B, T'-1)
        losses = F.cross_entropy(out.logits[:, :-1].transpose(1, 2).float(), target.clamp(min=0),
                                 reduction="none")  # (B, T'-1)
        real = target != IGNORE_INDEX
        for i, loss, mask in zip(indices, losses, real):
            kind = kind_of[dataset.samples[i]["sample_id"]]
            for key in (kind, "all"):
                sums[key] = sums.get(key, 0.0) + float(loss[mask].sum())
                counts[key] = counts.get(key, 0) + int(mask.sum())
    return {k: sums[k] / counts[k] for k in sums}


@torch.no_grad()
def compressed_aux(model, dataset, pad_token_id: int, indices: list[int], batch_size: int = 32) -> torch.Tensor:
    """The Compressor's output for the given samples, flattened: (N, num_latents * D)."""
    parts = []
    for start in range(0, len(indices), batch_size):
        batch = model_inputs(collate([dataset[i] for i in indices[start:start + batch_size]], pad_token_id))
        aux = model._compressed_aux(batch["input_ids"].shape[0], batch["aux_input_ids"],
                                    batch["aux_attention_mask"], batch["ps_features"])  # (B, num_latents, D)
        parts.append(aux.flatten(1).float())
    return torch.cat(parts)


def one_per_image(dataset, words: dict[str, str]) -> tuple[list[int], list[str]]:
    """One sample index per picture that has a sign word, and that word."""
    seen, indices, labels = set(), [], []
    for i, sample in enumerate(dataset.samples):
        image = sample["image_id"]
        if image in words and image not in seen:
            seen.add(image)
            indices.append(i)
            labels.append(words[image])
    return indices, labels


def fit_linear_probe(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int = 300,
                     weight_decay: float = 1e-3, seed: int = 0) -> torch.nn.Linear:
    """Multinomial logistic regression on standardized features, full-batch Adam."""
    generator = torch.Generator().manual_seed(seed)
    probe = torch.nn.Linear(x.shape[1], classes)
    torch.nn.init.normal_(probe.weight, std=1e-3, generator=generator)
    torch.nn.init.zeros_(probe.bias)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(probe(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return probe


def sign_word_probe(model, train, heldout, pad_token_id: int, train_entries: list[dict],
                    heldout_entries: list[dict], log=print) -> dict[str, float]:
    """Held-out accuracy of a linear probe for the sign word on the compressed aux tokens."""
    words = {e["image"]: e["conversations"][1]["value"] for e in (*train_entries, *heldout_entries)
             if e["question_type"] == "text"}
    train_idx, train_words = one_per_image(train, words)
    held_idx, held_words = one_per_image(heldout, words)
    vocab = sorted(set(train_words) | set(held_words))
    y_train = torch.tensor([vocab.index(w) for w in train_words])
    y_held = torch.tensor([vocab.index(w) for w in held_words])
    model.eval()
    x_train = compressed_aux(model, train, pad_token_id, train_idx)  # (N, num_latents * D)
    x_held = compressed_aux(model, heldout, pad_token_id, held_idx)
    mean, std = x_train.mean(0), x_train.std(0).clamp(min=1e-6)
    with torch.enable_grad():
        probe = fit_linear_probe((x_train - mean) / std, y_train, len(vocab))
    with torch.no_grad():
        accuracy = float((probe((x_held - mean) / std).argmax(-1) == y_held).float().mean())
        train_accuracy = float((probe((x_train - mean) / std).argmax(-1) == y_train).float().mean())
    majority = float((y_held == torch.bincount(y_train, minlength=len(vocab)).argmax()).float().mean())
    log(f"  sign-word probe on the compressed aux: held-out {100 * accuracy:.1f} % (train "
        f"{100 * train_accuracy:.1f} %, majority {100 * majority:.1f} %, {len(vocab)} words)")
    return {"heldout": accuracy, "train": train_accuracy, "majority": majority, "classes": len(vocab),
            "train_images": len(train_idx), "heldout_images": len(held_idx)}


@torch.no_grad()
def reading_layers(lm, tokenizer, entries: list[dict], aux: dict[str, str], prompt, samples: int = 64) -> dict[int, float]:
    """Where the frozen LM reads the sign word when the aux text is in its prompt: per layer, the
    attention weight (its most attentive head, mean over held-out text questions) from the last
    prompt position to the sign word's token. A Mixer can only hand the word to the LM's copy
    through layers at or before the one that reads it."""
    from .questions import answer_of, question_of
    from .textlm import pad_rows, text_sequence

    chosen = [e for e in entries if e["question_type"] == "text"][:samples]
    if not chosen:
        return {}
    rows = [text_sequence(aux[e["image"]], [(question_of(e), answer_of(e))], tokenizer, prompt) for e in chosen]
    batch = pad_rows(rows, tokenizer.pad_token_id)
    implementation = lm.config._attn_implementation
    lm.config._attn_implementation = "eager"  # attention weights are returned by the eager kernel only
    try:
        attentions = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        output_attentions=True).attentions  # per layer (B, H, T, T)
    finally:
        lm.config._attn_implementation = implementation
    last = (batch["labels"] != IGNORE_INDEX).int().argmax(dim=1) - 1  # (B,) the position that answers
    out = {}
    for layer, weights in enumerate(attentions):
        per_head = torch.zeros(weights.shape[1])
        for b, e in enumerate(chosen):
            word = tokenizer.convert_tokens_to_ids(answer_of(e))
            ids = batch["input_ids"][b, :last[b]]
            per_head += weights[b, :, last[b], :last[b]][:, ids == word].sum(dim=-1)
        out[layer] = float(per_head.max()) / len(chosen)
    return out


@torch.no_grad()
def answer_lens(model, dataset, pad_token_id: int, entries: list[dict], kind: str = "text",
                samples: int = 128, batch_size: int = 32) -> dict[int, dict[str, float]]:
    """How far the answer gets inside the LM: per layer, the residual stream at the last prompt
    position read through the final norm and the (tied) unembedding ("logit lens"); top-1
    accuracy and mean rank of the right first answer token over held-out questions of `kind`."""
    questions = of_types(dataset, entries, (kind,))
    chosen = list(range(min(samples, len(questions))))
    if not chosen:
        return {}
    lm = model.lm
    layers = lm.model.layers
    states: dict[int, torch.Tensor] = {}
    handles = [layer.register_forward_hook(
        lambda module, args, output, i=i: states.__setitem__(i, output[0] if isinstance(output, tuple) else output))
        for i, layer in enumerate(layers)]
    hits, ranks, total = [0] * len(layers), [0.0] * len(layers), 0
    model.eval()
    try:
        for start in range(0, len(chosen), batch_size):
            indices = chosen[start:start + batch_size]
            out = model(**model_inputs(collate([questions[i] for i in indices], pad_token_id)))
            rows = torch.arange(len(indices))
            first = (out.labels != IGNORE_INDEX).int().argmax(dim=1)  # (B,) first answer token
            target = out.labels[rows, first]
            for layer in range(len(layers)):
                logits = lm.lm_head(lm.model.norm(states[layer][rows, first - 1]))  # (B, V)
                hits[layer] += int((logits.argmax(-1) == target).sum())
                ranks[layer] += float((logits > logits.gather(1, target[:, None])).sum())
            total += len(indices)
    finally:
        for handle in handles:
            handle.remove()
    return {layer: {"top1": hits[layer] / max(1, total), "mean_rank": ranks[layer] / max(1, total)}
            for layer in range(len(layers))}
