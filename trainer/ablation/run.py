"""The ablation: does MoAI's auxiliary information reach the answers?

    trainer ablation --out runs/ablation            # ~25 min on 2 shared CPU cores (measured)
    trainer ablation --out runs/ablation --quick    # a few minutes: smoke run, numbers meaningless

Three arms, trained with the same seed, initial weights, batches, expert draws and steps:
  moai      oracle annotations: verbalized ground truth + ps_map, Compressor and Mixer
  no-aux    the same model, aux removed: empty auxiliary text and an all-zero ps_map
  no-mixer  no Compressor and no Mixer at all: the LM reads image tokens and the question
The tiny LM is trained from scratch together with MoAI's parts (MoAI freezes a pretrained LM;
offline we have none). Held-out scenes are disjoint from training scenes. Output: exact-match
accuracy per question type x arm, and the stage-2 gate weights per Mixer layer of the moai arm.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ARMS = ("moai", "no-aux", "no-mixer")


@dataclass(frozen=True)
class AblationConfig:
    out: str = "runs/ablation"
    seed: int = 0
    train_scenes: int = 2000
    heldout_scenes: int = 200
    image_size: int = 126          # 9 x 9 CLIP patches (3 x 3 per grid cell); MoAI's 490 is 1,225 tokens
    batch_size: int = 16
    stage1_epochs: float = 1.0
    stage2_epochs: float = 1.0
    arms: tuple[str, ...] = ARMS
    threads: int = 1               # on a busy shared CPU, more torch threads were ~20x slower, not faster

    def __post_init__(self):
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"arms must be a non-empty subset of {ARMS}, got {self.arms!r}")


# The tiny tokenizer's own chat markup (byte-level: InternLM2's `<|im_start|>user\n` would cost
# ~40 tokens per sample); `</s>` ends the answer, so greedy decoding stops there.
PROMPT = dict(user_start="USER: ", user_end="\n", assistant_start="ASSISTANT: ", assistant_end="</s>")
QUICK = dict(train_scenes=60, heldout_scenes=20, stage1_epochs=1.0, stage2_epochs=1.0, batch_size=8)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_model(backbones: Path, image_size: int):
    from trainer.model import MoAIModel
    from trainer.model.tiny import build_tiny_backbones, tiny_config
    if not (backbones / "done").is_file():
        build_tiny_backbones(backbones)
        (backbones / "done").write_text("ok\n")
    return MoAIModel.from_config(tiny_config(backbones, image_size=image_size))


def prepare(cfg: AblationConfig) -> dict:
    """Corpus, tiny backbones and the three feature caches (reused when already there)."""
    import torch

    from schemas import read_annotations
    from trainer.cache import INDEX_FILE, CachedDataset, build_cache
    from trainer.data import ANNOTATION_COLUMNS, PromptFormat, load_conversations

    from .corpus import CorpusConfig, corpus_paths, write_corpus

    out = Path(cfg.out)
    corpus_cfg = CorpusConfig(seed=cfg.seed, train_scenes=cfg.train_scenes, heldout_scenes=cfg.heldout_scenes)
    stamp = out / "corpus" / "config.json"
    wanted = json.dumps({**asdict(corpus_cfg), "image_size": cfg.image_size, "prompt": PROMPT}, sort_keys=True)
    if not stamp.is_file() or stamp.read_text() != wanted:
        started = time.monotonic()
        paths = write_corpus(out / "corpus", corpus_cfg)
        stamp.write_text(wanted)
        log(f"corpus: {cfg.train_scenes} + {cfg.heldout_scenes} scenes in {time.monotonic() - started:.0f}s")
        for stale in (out / "cache").glob(f"*/{INDEX_FILE}"):
            stale.unlink()
    paths = corpus_paths(out / "corpus")
    torch.manual_seed(cfg.seed)
    model = build_model(out / "backbones", cfg.image_size)
    datasets = {}
    for name, annotations, conversations in (("train-oracle", paths.oracle, paths.train),
                                             ("train-blank", paths.blank, paths.train),
                                             ("heldout-oracle", paths.oracle, paths.heldout),
                                             ("heldout-blank", paths.blank, paths.heldout)):
        cache = out / "cache" / name
        if not (cache / INDEX_FILE).is_file():
            started = time.monotonic()
            table = read_annotations(annotations, columns=ANNOTATION_COLUMNS)
            report = build_cache(model, table, load_conversations(conversations), cache, dtype="float32",
                                 prompt=PromptFormat(**PROMPT), progress=False)
            log(f"cache {name}: {report.summary()} ({time.monotonic() - started:.0f}s)")
        datasets[name] = CachedDataset(cache)
    for split in ("train", "heldout"):
        a, b = datasets[f"{split}-oracle"].samples, datasets[f"{split}-blank"].samples
        if [s["sample_id"] for s in a] != [s["sample_id"] for s in b] or \
                [s["input_ids"] for s in a] != [s["input_ids"] for s in b]:
            raise RuntimeError(f"{split}: oracle and blank caches disagree on samples; delete {out / 'cache'}")
    return {"paths": paths, "datasets": datasets}


def run_arm(arm: str, cfg: AblationConfig, datasets: dict, budget) -> dict:
    import torch

    from . import arm as arm_lib
    from .evaluate import write_answers

    aux = "blank" if arm == "no-aux" else "oracle"
    torch.manual_seed(cfg.seed)  # identical initial weights in every arm
    moai = build_model(Path(cfg.out) / "backbones", cfg.image_size)
    model = arm_lib.WithoutMixers(moai) if arm == "no-mixer" else moai
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    started = time.monotonic()
    losses = {}
    for stage in (1, 2):
        log(f"[{arm}] stage {stage}")
        losses[stage] = arm_lib.train_stage(model, datasets[f"train-{aux}"], stage, budget, pad, log=log)
    answers = arm_lib.answer(model, datasets[f"heldout-{aux}"], pad, budget)
    write_answers(answers, Path(cfg.out) / "answers" / f"{arm}.jsonl")
    gates = arm_lib.gate_weights(model, datasets[f"heldout-{aux}"], pad) if model is moai else {}
    effect = arm_lib.mixer_effect(model, datasets[f"heldout-{aux}"], pad) if model is moai else {}
    result = {"answers": answers, "gates": gates, "mixer_effect": effect, "seconds": time.monotonic() - started,
              "final_loss": {s: sum(v[-50:]) / max(1, len(v[-50:])) for s, v in losses.items()}}
    log(f"[{arm}] done in {result['seconds']:.0f}s; final losses {result['final_loss']}")
    return result


def prior_answers(train: list[dict], heldout: list[dict]) -> dict[str, str]:
    """A blind reference: each held-out question gets the training answer most often given to
    the same question text (else to its type). No image, no aux: what answer priors alone give."""
    from collections import Counter

    from .questions import answer_of, question_of

    by_question, by_type = {}, {}
    for e in train:
        by_question.setdefault(question_of(e), Counter())[answer_of(e)] += 1
        by_type.setdefault(e["question_type"], Counter())[answer_of(e)] += 1
    return {e["id"]: (by_question.get(question_of(e)) or by_type[e["question_type"]]).most_common(1)[0][0]
            for e in heldout}


def format_table(heldout: list[dict], results: dict[str, dict], prior: dict[str, str] | None = None) -> str:
    from .evaluate import score
    from .questions import QUESTION_TYPES

    arms = list(results)
    scores = {arm: score(heldout, results[arm]["answers"]) for arm in arms}
    if prior is not None:
        arms.append("answer prior")
        scores["answer prior"] = score(heldout, prior)
    header = "| question type | held-out questions | " + " | ".join(arms) + " |"
    lines = [header, "|" + "---|" * (2 + len(arms))]
    for kind in (*QUESTION_TYPES, "all"):
        total = scores[arms[0]][kind].total
        cells = [f"{100 * scores[a][kind].accuracy:.1f} %" for a in arms]
        lines.append(f"| {kind} | {total} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_gates(gates: dict, effect: dict | None = None) -> str:
    effect = {str(k): v for k, v in (effect or {}).items()}
    lines = ["| Mixer layer | image tokens: aux / lang / self | language tokens: aux / img / self |"
             + (" Mixer's change of the normed states |" if effect else ""),
             "|---|---|---|" + ("---|" if effect else "")]
    for layer, sides in gates.items():
        image, language = (" / ".join(f"{w:.3f}" for w in sides[s]) for s in ("image", "language"))
        lines.append(f"| {layer} | {image} | {language} |" + (f" {effect[str(layer)]:.3f} |" if effect else ""))
    return "\n".join(lines)


def run(cfg: AblationConfig) -> str:
    import torch

    from .arm import TrainBudget

    torch.set_num_threads(cfg.threads)
    started = time.monotonic()
    prepared = prepare(cfg)
    budget = TrainBudget(seed=cfg.seed, batch_size=cfg.batch_size, stage1_epochs=cfg.stage1_epochs,
                         stage2_epochs=cfg.stage2_epochs)
    results = {arm: run_arm(arm, cfg, prepared["datasets"], budget) for arm in cfg.arms}
    out = Path(cfg.out)
    (out / "results.json").write_text(json.dumps(
        {"config": asdict(cfg), "budget": asdict(budget), "seconds": time.monotonic() - started,
         "training_questions": len(prepared["datasets"]["train-oracle"]),
         **{arm: {k: v for k, v in r.items() if k != "answers"} for arm, r in results.items()}},
        indent=2, default=str) + "\n")
    return report(out)


def report(out: str | Path) -> str:
    """The results table of a finished run, from its answers and results.json (no training)."""
    from .corpus import corpus_paths
    from .evaluate import read_answers

    out = Path(out)
    if not (out / "results.json").is_file():
        raise RuntimeError(f"{out} holds no finished ablation (results.json missing); run it first")
    saved = json.loads((out / "results.json").read_text())
    cfg = saved["config"]
    paths = corpus_paths(out / "corpus")
    heldout = json.loads(paths.heldout.read_text())
    prior = prior_answers(json.loads(paths.train.read_text()), heldout)
    arms = [arm for arm in ARMS if arm in saved]
    results = {arm: {"answers": read_answers(out / "answers" / f"{arm}.jsonl")} for arm in arms}
    lines = [f"Ablation: {cfg['train_scenes']} training scenes ({saved.get('training_questions', '?')} questions), "
             f"{cfg['heldout_scenes']} held-out scenes, batch {cfg['batch_size']}, {cfg['stage1_epochs']:g} + "
             f"{cfg['stage2_epochs']:g} epochs, seed {cfg['seed']}, image size {cfg['image_size']}"
             + (f"; {saved['seconds']:.0f}s in all" if "seconds" in saved else ""),
             "", "Exact-match accuracy on held-out scenes:", "", format_table(heldout, results, prior), "",
             "`answer prior`: no model; each question gets the training answer most frequent for the same "
             "question text."]
    if "moai" in saved:
        lines += ["", "Stage-2 gate weights of the moai arm (mean over held-out prompt tokens):", "",
                  format_gates(saved["moai"]["gates"], saved["moai"].get("mixer_effect"))]
    text = "\n".join(lines)
    (out / "results.md").write_text(text + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainer ablation", description=__doc__.splitlines()[0],
                                     epilog="Arms: " + ", ".join(ARMS))
    parser.add_argument("--out", default=AblationConfig.out, help="working directory (corpus, caches, results)")
    parser.add_argument("--quick", action="store_true", help="a few-minute smoke run on a tiny corpus")
    parser.add_argument("--seed", type=int, default=AblationConfig.seed)
    parser.add_argument("--train-scenes", type=int)
    parser.add_argument("--heldout-scenes", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--image-size", type=int, help="CLIP input size, a multiple of 14 (default 126)")
    parser.add_argument("--stage1-epochs", type=float)
    parser.add_argument("--stage2-epochs", type=float)
    parser.add_argument("--threads", type=int, default=AblationConfig.threads, help="torch CPU threads")
    parser.add_argument("--report", action="store_true", help="only print the table of a finished run in --out")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    args = parser.parse_args(argv)
    cfg = AblationConfig(out=args.out, seed=args.seed, arms=tuple(args.arms), threads=args.threads)
    if args.quick:
        cfg = replace(cfg, **QUICK)
    overrides = {k: getattr(args, k) for k in ("train_scenes", "heldout_scenes", "batch_size", "image_size",
                                              "stage1_epochs", "stage2_epochs") if getattr(args, k) is not None}
    cfg = replace(cfg, **overrides)
    try:
        print(report(cfg.out) if args.report else run(cfg))
    except (RuntimeError, NotImplementedError) as exc:
        print(f"trainer ablation: {exc}", file=sys.stderr)
        return 2
    return 0
