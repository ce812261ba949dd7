"""Training data: the pipeline's annotation Parquet joined with a LLaVA/ShareGPT4V conversation JSON.

One sample = one conversation. Its image is found in the annotations (by `image_id`, else by the
end of `source`), the photo is read from the row's `source` and squashed to 490x490 (docs/moai.md §1),
the panoptic map comes from `ps_map` and the auxiliary text from `text_aux`. Nothing is dropped
silently: conversations whose image is not annotated, whose row is an error, that have no image, or
that are too long are counted in a `JoinReport` that the CLI prints and writes next to its output.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from schemas.image import load_working_image
from schemas.schema import STATUS_OK

from .model.sequence import IGNORE_INDEX

IMAGE_PLACEHOLDER = "<image>"
IMAGE_SIZE = 490
ANNOTATION_COLUMNS = ["image_id", "source", "status", "ps_map", "text_aux"]


@dataclass(frozen=True)
class PromptFormat:
    """How turns are written around the text. Default: InternLM2's chat markup, as MoAI's LM uses."""
    system: str = ""
    user_start: str = "<|im_start|>user\n"
    user_end: str = "<|im_end|>\n"
    assistant_start: str = "<|im_start|>assistant\n"
    assistant_end: str = "<|im_end|>\n"

    @classmethod
    def from_dict(cls, values: dict | None) -> "PromptFormat":
        values = dict(values or {})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown prompt fields {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**values)


@dataclass
class JoinReport:
    """What happened to every conversation and annotation row; printed, never silent."""
    conversations: int = 0
    samples: int = 0
    missing_annotation: int = 0      # the conversation's image has no row in the annotations
    error_rows: int = 0              # its row has status 'error'
    missing_ps_map: int = 0          # its row is ok but the panoptic annotator was off
    no_image: int = 0                # text-only conversation: MoAI needs an image per sample
    too_long: int = 0                # no answer token left within max_length
    no_answer: int = 0               # no 'gpt' turn: nothing to learn
    empty_answer: int = 0            # an answer that is empty or only whitespace
    malformed: int = 0               # an answer before the first question, or <image> / chat markup inside a turn
    unreadable_image: int = 0        # `trainer cache` could not read the photo at `source`
    unused_annotations: int = 0      # annotated images no conversation refers to
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, reason: str, sample_id: str, keep: int = 10) -> None:
        setattr(self, reason, getattr(self, reason) + 1)
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < keep:
            self.examples[reason].append(sample_id)

    def drop(self, samples: list[dict], bad_rows: dict[int, str], reason: str) -> list[dict]:
        """The samples whose annotation row is not in `bad_rows`; the others are noted under
        `reason` with the row's why. `samples` becomes the count kept."""
        kept = []
        for s in samples:
            if s["row"] in bad_rows:
                self.note(reason, f"{s['sample_id']}: {bad_rows[s['row']]}")
            else:
                kept.append(s)
        self.samples = len(kept)
        return kept

    def summary(self) -> str:
        skipped = {k: v for k, v in asdict(self).items()
                   if k not in ("conversations", "samples", "examples", "unused_annotations") and v}
        text = f"{self.samples}/{self.conversations} conversations usable"
        if skipped:
            text += "; skipped: " + ", ".join(f"{k}={v} (e.g. {self.examples[k][:3]})" for k, v in skipped.items())
        if self.unused_annotations:
            text += f"; {self.unused_annotations} annotated images unused"
        return text

    def write(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


def load_conversations(path: str | os.PathLike) -> list[dict]:
    """A LLaVA/ShareGPT4V JSON list (or JSONL) of {"id", "image"?, "conversations": [...]}.
    Anything else raises ValueError naming the file and the place."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"conversation file {path} does not exist")
    text = path.read_text()
    try:
        if text.lstrip().startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        if text.lstrip().startswith("{") and text.count("\n") > 1:
            raise ValueError(f"{path}: not JSON Lines (one record per line) nor a JSON list: {err}") from err
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ValueError(f"{path}: record {i} is a {type(rec).__name__}, not an object with 'conversations'")
        turns = rec.get("conversations")
        if not isinstance(turns, list) or not turns:
            raise ValueError(f"{path}: record {i} (id {rec.get('id')!r}) has no 'conversations' list")
        for turn in turns:
            if turn.get("from") not in ("human", "gpt") or not isinstance(turn.get("value"), str):
                raise ValueError(f"{path}: record {i} (id {rec.get('id')!r}) has a turn {turn!r}; "
                                 "expected {'from': 'human'|'gpt', 'value': str}")
    return records


def tokenize_conversation(turns: list[dict], tokenizer, image_token_id: int,
                          prompt: PromptFormat = PromptFormat()) -> tuple[list[int], list[int]]:
    """Turns -> (input_ids, labels). Exactly one `image_token_id` where `<image>` was (inserted at
    the start of the first human turn when absent); labels are IGNORE_INDEX except answer tokens
    and the end-of-answer markup, which the model must learn to emit."""
    input_ids: list[int] = []
    labels: list[int] = []

    def add(text: str, learn: bool) -> None:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        input_ids.extend(ids)
        labels.extend(ids if learn else [IGNORE_INDEX] * len(ids))

    if tokenizer.bos_token_id is not None:
        input_ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE_INDEX)
    add(prompt.system, False)
    first_human = True
    for turn in turns:
        value = turn["value"]
        if turn["from"] == "human":
            add(prompt.user_start, False)
            if first_human:
                # the image goes where `<image>` stood (LLaVA data has it first or last), else first
                before, _, after = value.partition(IMAGE_PLACEHOLDER) if IMAGE_PLACEHOLDER in value else ("", "", value)
                before, after = before.rstrip("\n"), after.replace(IMAGE_PLACEHOLDER, "").lstrip("\n")
                add(before + "\n" if before else "", False)
                input_ids.append(image_token_id)
                labels.append(IGNORE_INDEX)
                add("\n" + after if after else "", False)
                first_human = False
            else:
                add(value.replace(IMAGE_PLACEHOLDER, ""), False)
            add(prompt.user_end + prompt.assistant_start, False)
        else:
            add(value, True)
            add(prompt.assistant_end, True)
    return input_ids, labels


def conversation_problem(turns: list[dict], prompt: PromptFormat) -> str | None:
    """Why the model cannot train on these turns (a JoinReport reason), or None."""
    answers = [t["value"] for t in turns if t["from"] == "gpt"]
    if not answers:
        return "no_answer"
    if turns[0]["from"] != "human":
        return "malformed"  # an answer before the first question
    markup = {m.strip() for m in (prompt.user_start, prompt.user_end, prompt.assistant_start, prompt.assistant_end)}
    markup.discard("")
    for turn in turns:
        if any(m in turn["value"] for m in markup) or (turn["from"] == "gpt" and IMAGE_PLACEHOLDER in turn["value"]):
            return "malformed"
    if any(not a.strip() for a in answers):
        return "empty_answer"
    return None


def generation_prompt(question: str, tokenizer, image_token_id: int,
                      prompt: PromptFormat = PromptFormat()) -> list[int]:
    """The input_ids a trained model sees before answering `question` (same markup as training)."""
    ids, _ = tokenize_conversation([{"from": "human", "value": question}], tokenizer, image_token_id, prompt)
    return ids


def match_rows(table) -> tuple[dict[str, int], dict[str, int]]:
    """Annotation rows by image_id, and by the last 1-4 parts of their source path: how a
    conversation's `image` (or a user's `--image`) finds its row."""
    by_id = {image_id: i for i, image_id in enumerate(table.column("image_id").to_pylist())}
    by_source = {}
    for i, source in enumerate(table.column("source").to_pylist()):
        parts = Path(source).parts
        for k in range(1, min(len(parts), 4) + 1):  # "coco/train2017/x.jpg" matches ".../coco/train2017/x.jpg"
            by_source.setdefault("/".join(parts[-k:]), i)
    return by_id, by_source


def join_samples(table, conversations: list[dict], tokenizer, image_token_id: int,
                 prompt: PromptFormat = PromptFormat(), max_length: int | None = None
                 ) -> tuple[list[dict], JoinReport]:
    """Join conversations with annotation rows (a pyarrow Table from `schemas.read_annotations`).

    Returns samples {sample_id, row, image_id, input_ids, labels, aux_input_ids} and the report.
    """
    report = JoinReport(conversations=len(conversations))
    by_id, by_source = match_rows(table)
    status = table.column("status").to_pylist()
    has_ps = [v is not None for v in table.column("ps_map").to_pylist()]
    texts = table.column("text_aux").to_pylist()
    used, aux_cache, samples = set(), {}, []
    for k, conv in enumerate(conversations):
        sample_id = str(conv.get("id", k))
        image = conv.get("image")
        if not image:
            report.note("no_image", sample_id)
            continue
        row = by_id.get(image, by_source.get(str(image).lstrip("./")))
        if row is None:
            report.note("missing_annotation", f"{sample_id}:{image}")
            continue
        used.add(row)
        if status[row] != STATUS_OK:
            report.note("error_rows", f"{sample_id}:{image}")
            continue
        if not has_ps[row]:
            report.note("missing_ps_map", f"{sample_id}:{image}")
            continue
        problem = conversation_problem(conv["conversations"], prompt)
        if problem:
            report.note(problem, sample_id)
            continue
        input_ids, labels = tokenize_conversation(conv["conversations"], tokenizer, image_token_id, prompt)
        if max_length is not None and len(input_ids) > max_length:
            input_ids, labels = input_ids[:max_length], labels[:max_length]
        if all(label == IGNORE_INDEX for label in labels):
            report.note("too_long", sample_id)
            continue
        if row not in aux_cache:
            aux_cache[row] = tokenizer(texts[row] or "", add_special_tokens=False)["input_ids"]
        samples.append({"sample_id": sample_id, "row": row, "image_id": table.column("image_id")[row].as_py(),
                        "input_ids": input_ids, "labels": labels, "aux_input_ids": aux_cache[row]})
    report.samples = len(samples)
    report.unused_annotations = table.num_rows - len(used)
    return samples, report


def load_image(source: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """The photo at `source` as the pipeline annotated it (the contract's decoder: EXIF orientation,
    16-bit, alpha, local path or URI), squashed to (size, size, 3) uint8 as MoAI does."""
    return load_working_image(source, size)


def load_ps_ids(png: bytes, size: int = IMAGE_SIZE) -> np.ndarray:
    """Segment ids (size, size) uint8 from the `ps_map` PNG; nearest resize keeps ids intact."""
    with Image.open(io.BytesIO(png)) as im:
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.NEAREST)
        return np.asarray(im)


def drop_unreadable(samples: list[dict], table, report: JoinReport, size: int = IMAGE_SIZE) -> list[dict]:
    """The samples whose photo and ps_map both decode; the rest are counted as `unreadable_image`
    (a source deleted after annotation, a 0-byte or corrupt file), as `trainer cache` counts them.
    Online training checks each image once here, so a bad file never stops a run mid-way."""
    sources, ps_maps = table.column("source"), table.column("ps_map")
    bad: dict[int, str] = {}
    for row in sorted({s["row"] for s in samples}):
        try:
            load_image(sources[row].as_py(), size)
            load_ps_ids(ps_maps[row].as_py(), size)
        except Exception as exc:  # noqa: BLE001 - counted and shown, never a crash
            bad[row] = f"{sources[row].as_py()}: {type(exc).__name__}: {exc}"
    return report.drop(samples, bad, "unreadable_image")


class OnlineDataset(torch.utils.data.Dataset):
    """Samples with the raw photo and segment-id map; the model runs the frozen CLIP each step."""

    def __init__(self, samples: list[dict], table, image_size: int = IMAGE_SIZE):
        self.samples, self.image_size = samples, image_size
        self.lengths, self.answer_tokens = sample_lengths(samples), answer_tokens(samples)
        self.sources = table.column("source").to_pylist()
        self.ps_maps = table.column("ps_map")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        s = self.samples[i]
        return {**_text_tensors(s),
                "image": torch.from_numpy(load_image(self.sources[s["row"]], self.image_size).copy()),
                "ps_ids": torch.from_numpy(load_ps_ids(self.ps_maps[s["row"]].as_py(), self.image_size).copy())}


def _text_tensors(sample: dict) -> dict:
    return {"input_ids": torch.tensor(sample["input_ids"]), "labels": torch.tensor(sample["labels"]),
            "aux_input_ids": torch.tensor(sample["aux_input_ids"], dtype=torch.long)}


def sample_lengths(samples: list[dict]) -> list[int]:
    """Tokens a sample costs: its text plus its auxiliary text (both attend in every step)."""
    return [len(s["input_ids"]) + len(s["aux_input_ids"]) for s in samples]


def answer_tokens(samples: list[dict]) -> list[int]:
    return [sum(label != IGNORE_INDEX for label in s["labels"]) for s in samples]


def plan_batches(lengths: list[int], micro_batch_size: int, world_size: int, grad_accum: int,
                 seed: int, epoch: int, megabatch_steps: int = 8) -> list[list[list[int]]]:
    """Length-grouped plan of one epoch: plan[step][micro] = sample indices, micro = accum * world + rank.

    A seeded shuffle, then megabatches of `megabatch_steps` optimizer steps sorted by length so a
    micro-batch holds similar lengths (less padding). Every rank computes the same plan, so the
    same global batch gives the same optimizer step on 1 process or N. A tail shorter than one
    global batch is left out of this epoch (the trainer logs how many samples that is).
    """
    global_batch = micro_batch_size * world_size * grad_accum
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    steps_total = len(order) // global_batch
    order = order[:steps_total * global_batch]
    plan = []
    mega = global_batch * megabatch_steps
    for start in range(0, len(order), mega):
        chunk = sorted(order[start:start + mega], key=lambda i: -lengths[i])
        steps = [chunk[j:j + global_batch] for j in range(0, len(chunk), global_batch)]
        # shuffle steps inside the megabatch so the longest batch is not always first
        perm = torch.randperm(len(steps), generator=generator).tolist()
        for p in perm:
            step = steps[p]
            plan.append([step[m * micro_batch_size:(m + 1) * micro_batch_size]
                         for m in range(world_size * grad_accum)])
    return plan


def collate(items: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad text to the longest in the batch; stack images/features.

    Returns input_ids/attention_mask/labels (B, L), aux_input_ids/aux_attention_mask (B, A), and
    either image (B, 490, 490, 3) + ps_ids (B, 490, 490) or image_features/ps_features (B, N, Dv).
    """
    def pad(key: str, value: int) -> tuple[torch.Tensor, torch.Tensor]:
        length = max(max(len(it[key]) for it in items), 1)
        out = torch.full((len(items), length), value, dtype=torch.long)
        mask = torch.zeros((len(items), length), dtype=torch.long)
        for b, it in enumerate(items):
            out[b, :len(it[key])] = it[key]
            mask[b, :len(it[key])] = 1
        return out, mask

    input_ids, attention_mask = pad("input_ids", pad_token_id)
    labels, _ = pad("labels", IGNORE_INDEX)
    aux_input_ids, aux_attention_mask = pad("aux_input_ids", pad_token_id)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
             "aux_input_ids": aux_input_ids, "aux_attention_mask": aux_attention_mask}
    for key in ("image", "ps_ids", "image_features", "ps_features"):
        if key in items[0]:
            batch[key] = torch.stack([it[key] for it in items])
    return batch
