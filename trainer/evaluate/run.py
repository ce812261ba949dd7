"""`trainer evaluate run`: answer a prepared benchmark with a trained model, in batches, resumably.

Each question's image is looked up in the pipeline's annotations by `image_id` (the manifest's id);
its photo, `ps_map` and `text_aux` are MoAI's inputs exactly as in `trainer generate`. Answers are
appended to RESULTS/predictions.jsonl as each batch finishes, so a rerun skips answered ids.
Questions whose image has an error row, no row or no `ps_map` are counted in RESULTS/run_report.json
and printed; they stay unanswered (a rerun after fixing the annotations answers them) and are scored
as empty answers. With `--cache DIR` (a `trainer cache` folder made with the checkpoint's vision
tower) the frozen CLIP features of the images it holds are read from it instead of recomputed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from schemas.schema import STATUS_OK

from . import BENCHMARKS, benchmark
from .common import read_jsonl
from ..generate import answer_batch

PREDICTIONS = "predictions.jsonl"
REPORT = "run_report.json"


def plan(questions: list[dict], table, done: set[str]) -> tuple[list[dict], dict[str, list[str]]]:
    """The questions still to answer, joined with their annotation row, and the skipped ones by reason."""
    from trainer.data import match_rows
    by_id, by_source = match_rows(table)
    status, ps_map = table.column("status").to_pylist(), table.column("ps_map")
    source, text_aux = table.column("source").to_pylist(), table.column("text_aux").to_pylist()
    annotation_ids = table.column("image_id").to_pylist()
    todo, skipped = [], {"error_row": [], "missing_annotation": [], "missing_ps_map": []}
    for q in questions:
        if q["question_id"] in done:
            continue
        row = by_id.get(q["image_id"], by_source.get(q["image_id"]))
        reason = ("missing_annotation" if row is None else "error_row" if status[row] != STATUS_OK
                  else "missing_ps_map" if not ps_map[row].is_valid else None)
        if reason:
            skipped[reason].append(f"{q['question_id']}:{q['image_id']}")
            continue
        todo.append({"question_id": q["question_id"], "image_id": q["image_id"], "prompt": q["prompt"],
                     "annotation_id": annotation_ids[row],
                     "source": source[row], "ps_map": ps_map[row].as_py(), "text_aux": text_aux[row]})
    return todo, skipped


class CachedFeatures:
    """The (image, ps) CLIP features of the images a `trainer cache` folder holds, by annotation id."""

    def __init__(self, cache_dir: str, model_config: dict):
        from trainer.cache import CachedDataset, check_compatible
        self.cache = CachedDataset(cache_dir)
        check_compatible(self.cache.meta, model_config)
        self.where = self.cache.image_slots()

    def __contains__(self, annotation_id: str) -> bool:
        return annotation_id in self.where

    def batch(self, annotation_ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> image and ps features, each (B, N, Dv), in the cache's dtype."""
        image, ps = zip(*(self.cache.features(*self.where[a]) for a in annotation_ids))
        return torch.stack(image), torch.stack(ps)


def run(name: str, questions_file: Path, annotations: str, model_dir: str, out: Path, batch_size: int = 8,
        max_new_tokens: int | None = None, device: str = "cpu", cache: str | None = None) -> dict:
    from tqdm import tqdm

    from schemas import read_annotations
    from trainer.data import ANNOTATION_COLUMNS, PromptFormat
    from trainer.model import MoAIModel

    plugin = benchmark(name)
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    questions = read_jsonl(questions_file)
    other = {q.get("benchmark", name) for q in questions} - {name}
    if other:
        raise ValueError(f"{questions_file} was prepared for {sorted(other)}, not {name!r}")
    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"--model {model_dir} is not a folder written by `trainer train`")
    table = read_annotations(annotations, columns=ANNOTATION_COLUMNS)
    out.mkdir(parents=True, exist_ok=True)
    predictions = out / PREDICTIONS
    done = {str(r["question_id"]) for r in read_jsonl(predictions)} if predictions.is_file() else set()
    todo, skipped = plan(questions, table, done)
    features = None
    if cache is not None:  # checked before the (big) model is built
        from trainer.model import MoAIConfig
        from trainer.model.moai import CONFIG_FILE
        features = CachedFeatures(cache, MoAIConfig.load(Path(model_dir) / CONFIG_FILE).to_dict())
    # Cached and online questions in separate batches; similar lengths together: less padding.
    todo.sort(key=lambda it: (features is not None and it["annotation_id"] in features, len(it["prompt"])))
    from_cache = sum(it["annotation_id"] in features for it in todo) if features is not None else 0
    n_skipped = sum(map(len, skipped.values()))
    print(f"{name}: {len(questions)} questions, {len(done)} answered before, {len(todo)} to answer, "
          f"{n_skipped} without a usable annotation" + (f", {from_cache} with cached features" if cache else ""))
    max_new = max_new_tokens or plugin.MAX_NEW_TOKENS
    start = time.time()
    if todo:
        model = MoAIModel.from_pretrained(model_dir).to(device).eval()
        state_file = Path(model_dir) / "state.json"
        recipe = json.loads(state_file.read_text())["recipe"] if state_file.is_file() else {}
        prompt = PromptFormat.from_dict(recipe.get("data", {}).get("prompt"))
        with open(predictions, "a") as f, tqdm(total=len(todo), unit="q", desc=name, file=sys.stderr) as bar:
            for batch in batches(todo, batch_size, features):
                cached = features is not None and batch[0]["annotation_id"] in features
                vision = features.batch([it["annotation_id"] for it in batch]) if cached else None
                for it, text in zip(batch, answer_batch(model, batch, prompt, max_new, vision)):
                    f.write(json.dumps({"question_id": it["question_id"], "text": text, "prompt": it["prompt"],
                                        "image_id": it["image_id"]}, ensure_ascii=False) + "\n")
                f.flush()
                bar.update(len(batch))
    seconds = time.time() - start
    report = {"questions": len(questions), "answered_before": len(done), "answered_now": len(todo),
              "seconds": round(seconds, 2), "questions_per_second": round(len(todo) / seconds, 3) if todo else None,
              "max_new_tokens": max_new, "batch_size": batch_size, "features_from_cache": from_cache,
              "skipped": {k: len(v) for k, v in skipped.items()},
              "skipped_examples": {k: v[:10] for k, v in skipped.items() if v}}
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    if n_skipped:
        print(f"{n_skipped} questions not answered (scored as empty answers): "
              + ", ".join(f"{k}={len(v)} (e.g. {v[:3]})" for k, v in skipped.items() if v))
    return report


def batches(todo: list[dict], batch_size: int, features: CachedFeatures | None):
    """Consecutive batches of at most batch_size questions, never mixing cached and online ones."""
    batch = []
    for it in todo:
        if batch and (len(batch) == batch_size or (features is not None and (
                it["annotation_id"] in features) != (batch[0]["annotation_id"] in features))):
            yield batch
            batch = []
        batch.append(it)
    if batch:
        yield batch


def main(argv: list[str] | None = None) -> int:
    from .score import write_scores
    parser = argparse.ArgumentParser(prog="trainer evaluate run", description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    parser.add_argument("--questions", required=True, help="questions.jsonl written by `prepare`")
    parser.add_argument("--annotations", required=True, help="the pipeline's output for the manifest")
    parser.add_argument("--model", required=True, help="a `final` folder written by `trainer train`")
    parser.add_argument("--out", required=True, help="folder for predictions.jsonl, run_report.json, scores.json")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, help="default: the benchmark's (MoAI's setting)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cache", help="a `trainer cache` folder holding the images' CLIP features")
    args = parser.parse_args(argv)
    out = Path(args.out)
    run(args.benchmark, Path(args.questions), args.annotations, args.model, out, args.batch_size,
        args.max_new_tokens, args.device, args.cache)
    print(f"predictions: {out / PREDICTIONS}")
    write_scores(args.benchmark, Path(args.questions), out / PREDICTIONS, out)
    return 0
