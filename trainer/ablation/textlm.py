"""Phase 0 of the ablation: a small LM that *reads*, pretrained as a text model, then frozen.

MoAI freezes an LM that already reads text and trains only the parts that bring the auxiliary
information in. Offline we have no such LM, so we make one for the synthetic domain:

- a word-level tokenizer built by code from the domain's closed vocabulary: every class name
  word, sign word, box coordinate (`0.43`) and count is one token, punctuation is dropped (the
  verbalized aux text of a scene is ~150 tokens instead of ~900 bytes);
- a Llama-shaped LM trained on the training scenes only, with the verbalized aux text in the
  prompt (the LLaVA way of giving an LM the same information), several questions of one scene
  per sequence (every answer is a training signal) and some sequences without the aux text (so
  it also knows the plain `<image>`-less prompt and answers it from priors);
- `reading_accuracy`: exact-match accuracy on held-out scenes per question type, aux in the
  prompt or not. With the aux text it is the ceiling of every arm that runs on this LM.

Everything is cached under `OUT/lm` (tokenizer + weights, `phase0.json`), so a rerun skips it.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from trainer.data import IGNORE_INDEX, PromptFormat, tokenize_conversation
from trainer.schedule import warmup_cosine

from .questions import KINDS, PLURALS, answer_of, question_of
from .scenes import COL_NAMES, ROW_NAMES, SIGN_WORDS

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<image>", "<unk>")
# Punctuation carries nothing here; a '.' is kept only inside numbers (0.43).
DROPPED = r"[\[\](),:?!]|\.(?!\d)"


@dataclass(frozen=True)
class LMShape:
    """The phase-0 LM and how long it is pretrained."""
    width: int = 128
    layers: int = 4
    heads: int = 4
    steps: int = 2000
    batch_size: int = 16
    lr: float = 3e-3
    min_lr: float = 1e-4
    warmup: int = 50
    questions_per_sequence: int = 6   # at most; a random 1..n of the scene's questions per sequence
    no_aux_fraction: float = 0.2      # sequences without the aux text in the prompt
    text_loss_weight: float = 1.0     # + next-token loss on every token (the aux text too): a text model
    tie_embeddings: bool = True       # copying a word from the prompt is then an identity map, found early
    # A curriculum: the first steps ask only the text question (copy the OCR word from the prompt).
    # Mixed with every type from the start, the copy was not found in 1,400 steps (text 4 %);
    # alone it is found in ~300 steps (100 % held out), and the other types build on it.
    copy_warmup_steps: int = 300
    seed: int = 0

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be a multiple of heads {self.heads}")
        if self.layers < 1 or self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"need layers, steps, batch_size >= 1, got {self.layers}, {self.steps}, "
                             f"{self.batch_size}")
        if not 0 <= self.copy_warmup_steps < self.steps:
            raise ValueError(f"copy_warmup_steps must lie in [0, steps), got {self.copy_warmup_steps}")
        if not 0 <= self.no_aux_fraction < 1:
            raise ValueError(f"no_aux_fraction must lie in [0, 1), got {self.no_aux_fraction}")


def domain_words() -> list[str]:
    """Every word the synthetic language uses: aux verbalization, questions, answers, markup."""
    from schemas.verbalize import BOX_PREAMBLE, OCR_PREAMBLE, SGG_PREAMBLE

    words = " ".join((BOX_PREAMBLE, OCR_PREAMBLE, SGG_PREAMBLE)).replace(":", " ").split()
    words += "and is over beside banner signboard wall USER ASSISTANT".split()
    words += "Is there a in the image What does sign say Where How many are".split()
    words += [w for name in KINDS for w in name.split()] + [w for p in PLURALS.values() for w in p.split()]
    words += list(ROW_NAMES) + list(COL_NAMES) + ["yes", "no"] + list(SIGN_WORDS)
    words += [str(n) for n in range(10)] + [f"#{n}" for n in range(1, 10)]
    words += [f"{n / 100:.2f}" for n in range(101)]
    return list(dict.fromkeys(words))


def build_word_tokenizer():
    """A word-level tokenizer over `domain_words()`: one token per word, punctuation dropped."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in domain_words():
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Replace(Regex(DROPPED), " ")
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})


def build_lm(shape: LMShape, vocab_size: int):
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=shape.width, intermediate_size=4 * shape.width,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.heads,
        head_dim=shape.width // shape.heads, max_position_embeddings=1024, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, tie_word_embeddings=shape.tie_embeddings)
    torch.manual_seed(shape.seed)
    return transformers.AutoModelForCausalLM.from_config(config)


# ---- phase-0 data: text conversations with the aux text in the prompt ----------------------------
def text_sequence(aux: str, qas: list[tuple[str, str]], tokenizer, prompt: PromptFormat) -> tuple[list, list]:
    """(input_ids, labels) of one text conversation: `aux` (may be empty) then the questions, one
    per turn; the same markup the arms use, minus the image token (a text LM has no image)."""
    turns = []
    for i, (question, answer) in enumerate(qas):
        value = f"{aux}\n{question}" if i == 0 and aux else question
        turns += [{"from": "human", "value": value}, {"from": "gpt", "value": answer}]
    ids, labels = tokenize_conversation(turns, tokenizer, -1, prompt)
    keep = [i for i, t in enumerate(ids) if t != -1]
    return [ids[i] for i in keep], [labels[i] for i in keep]


def by_image(entries: list[dict]) -> dict[str, list[tuple[str, str, str]]]:
    """Questions grouped per picture: image -> [(question_type, question, answer)]."""
    out: dict[str, list] = {}
    for e in entries:
        out.setdefault(e["image"], []).append((e["question_type"], question_of(e), answer_of(e)))
    return out


def sample_batch(rng: random.Random, scenes: list, aux: dict[str, str], shape: LMShape, tokenizer,
                 prompt: PromptFormat, only: str | None = None) -> dict[str, torch.Tensor]:
    """A batch of text conversations from random scenes; `only`: ask only questions of that type."""
    rows = []
    for image, qas in rng.sample(scenes, min(shape.batch_size, len(scenes))):
        if only is not None:
            qas = [qa for qa in qas if qa[0] == only] or qas
        picked = rng.sample(qas, rng.randint(1, min(shape.questions_per_sequence, len(qas))))
        text = "" if rng.random() < shape.no_aux_fraction else aux[image]
        rows.append(text_sequence(text, [(q, a) for _, q, a in picked], tokenizer, prompt))
    return pad_rows(rows, tokenizer.pad_token_id)


def pad_rows(rows: list[tuple[list, list]], pad: int) -> dict[str, torch.Tensor]:
    length = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), length), pad)
    labels = torch.full((len(rows), length), IGNORE_INDEX)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for b, (ids, lab) in enumerate(rows):
        input_ids[b, :len(ids)], labels[b, :len(ids)], mask[b, :len(ids)] = torch.tensor(ids), torch.tensor(lab), 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def reading_accuracy(lm, tokenizer, entries: list[dict], aux: dict[str, str], prompt: PromptFormat,
                     with_aux: bool = True, batch_size: int = 64) -> dict[str, float]:
    """Exact-match accuracy per question type (+ 'all') of one question per prompt.

    Teacher-forced: a sample is right when every answer token and the end of answer are the
    argmax given the right prefix, which is exactly when greedy decoding writes the answer."""
    lm.eval()
    correct: dict[str, int] = {}
    total: dict[str, int] = {}
    for start in range(0, len(entries), batch_size):
        chunk = entries[start:start + batch_size]
        rows = [text_sequence(aux[e["image"]] if with_aux else "", [(question_of(e), answer_of(e))], tokenizer,
                              prompt) for e in chunk]
        batch = pad_rows(rows, tokenizer.pad_token_id)
        logits = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
        target = batch["labels"][:, 1:]
        hit = (logits[:, :-1].argmax(-1) == target) | (target == IGNORE_INDEX)
        for e, ok in zip(chunk, hit.all(dim=1).tolist()):
            kind = e["question_type"]
            correct[kind] = correct.get(kind, 0) + ok
            total[kind] = total.get(kind, 0) + 1
    lm.train()
    out = {k: correct[k] / total[k] for k in sorted(total)}
    out["all"] = sum(correct.values()) / max(1, sum(total.values()))
    return out


def phase0_loss(lm, batch: dict, text_loss_weight: float) -> torch.Tensor:
    """Mean loss on answer tokens, plus `text_loss_weight` x the mean next-token loss on all text.

    The aux text repeats itself (the boxes of the panoptic list again in the detection list, the
    object names in the relations), so predicting it is the copy task that teaches reading."""
    logits = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]  # (B, T-1, V)
    answers = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits.transpose(1, 2), answers, ignore_index=IGNORE_INDEX)
    if text_loss_weight:
        text = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, IGNORE_INDEX)
        loss = loss + text_loss_weight * F.cross_entropy(logits.transpose(1, 2), text, ignore_index=IGNORE_INDEX)
    return loss


def pretrain(lm, tokenizer, train: list[dict], aux: dict[str, str], shape: LMShape, prompt: PromptFormat,
             heldout: list[dict] | None = None, log=print, eval_every: int = 0) -> list[float]:
    """Phase 0: AdamW + warm-up cosine on answer tokens of random text conversations (train scenes)."""
    scenes = sorted(by_image(train).items())
    rng = random.Random(shape.seed)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=shape.lr, weight_decay=0.0)
    losses, started = [], time.monotonic()
    lm.train()
    for step in range(shape.steps):
        for group in optimizer.param_groups:
            group["lr"] = shape.lr * warmup_cosine(step, shape.steps, shape.warmup, shape.min_lr / shape.lr)
        batch = sample_batch(rng, scenes, aux, shape, tokenizer, prompt,
                             only="text" if step < shape.copy_warmup_steps else None)
        loss = phase0_loss(lm, batch, shape.text_loss_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step == shape.steps - 1:
            recent = losses[-100:]
            line = f"  phase 0 step {step + 1}/{shape.steps} loss {sum(recent) / len(recent):.3f}"
            if heldout and eval_every and (step + 1) % eval_every == 0:
                acc = reading_accuracy(lm, tokenizer, heldout, aux, prompt)
                line += " held-out " + " ".join(f"{k} {100 * v:.0f}" for k, v in acc.items())
            log(line + f" ({time.monotonic() - started:.0f}s)")
    lm.eval()
    return losses


def aux_texts(annotations: Path) -> dict[str, str]:
    """image file name -> verbalized aux text, from an annotation file."""
    from schemas import read_annotations

    table = read_annotations(annotations, columns=["image_id", "text_aux"])
    return dict(zip(table.column("image_id").to_pylist(), (t or "" for t in table.column("text_aux").to_pylist())))


def pretrained_lm(out: Path, shape: LMShape, train: list[dict], heldout: list[dict], aux: dict[str, str],
                  prompt: PromptFormat, log=print) -> tuple[Path, dict]:
    """The phase-0 LM folder (LM + tokenizer, loadable by MoAIModel) and its reading report,
    trained once and cached: a folder whose `phase0.json` records the same shape is reused."""
    from schemas.files import replaced_atomically

    out = Path(out)
    stamp = out / "phase0.json"
    if stamp.is_file():
        saved = json.loads(stamp.read_text())
        if saved.get("shape") == asdict(shape):
            return out, saved
    tokenizer = build_word_tokenizer()
    lm = build_lm(shape, len(tokenizer))
    started = time.monotonic()
    # progress on a few held-out questions every 500 steps: reading shows up late and suddenly
    losses = pretrain(lm, tokenizer, train, aux, shape, prompt, heldout=heldout[:300], log=log, eval_every=500)
    tail = losses[-max(1, min(100, len(losses) // 4)):]
    report = {"shape": asdict(shape), "seconds": time.monotonic() - started,
              "first_loss": losses[0], "final_loss": sum(tail) / len(tail),
              "heldout_with_aux": reading_accuracy(lm, tokenizer, heldout, aux, prompt, with_aux=True),
              "heldout_without_aux": reading_accuracy(lm, tokenizer, heldout, aux, prompt, with_aux=False),
              "tokens_per_aux_text": sum(len(tokenizer(t)["input_ids"]) for t in aux.values()) / max(1, len(aux))}
    lm.generation_config.pad_token_id = tokenizer.pad_token_id
    with replaced_atomically(out, keep_existing=False) as tmp:
        lm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (Path(tmp) / "phase0.json").write_text(json.dumps(report, indent=2) + "\n")
    return out, report
