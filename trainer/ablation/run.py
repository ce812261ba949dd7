"""The ablation: does MoAI's auxiliary information reach the answers of a frozen LM that reads?

    trainer ablation --out runs/ablation            # phase 0 + every arm (see docs/ablation.md for times)
    trainer ablation --out runs/ablation --quick    # a ~2-minute smoke run, numbers meaningless
    trainer ablation --out runs/ablation --arms moai no-aux   # some arms; results merge
    trainer ablation --out runs/ablation --arms moai --tag=-text --question-types text   # a diagnostic
    trainer ablation --out runs/ablation --arms moai no-aux --tag=-recipe --text-warmup-steps 0   # MoAI's recipe as is

Phase 0 pretrains a small word-level LM as a text model with the verbalized aux text in its
prompt (`textlm.py`; cached under OUT/lm); then it is frozen and every arm trains on it with the
same seed, initial weights, batches, expert draws, steps and learning rates (arms run side by
side, one process each, `--jobs`); the first steps of each stage ask only the text question, in
every arm (`--text-warmup-steps`, not MoAI's recipe: docs/ablation.md, "Reading"):
  moai           aux text and ps_map through the Compressor and the Mixers only (not in the prompt)
  no-aux         the same model, aux removed: empty aux text and an all-zero ps_map
  no-mixer       no Compressor and no Mixer: CLIP -> connector -> frozen LM
  aux-in-prompt  no Compressor and no Mixer, the aux text in the prompt: the information's upper bound
Held-out scenes are disjoint from training scenes. Output: exact-match accuracy per question type
x arm (+ the answer prior and phase 0's text-only LM), a plot, and probes of where the aux
information goes (`probes.py`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .questions import QUESTION_TYPES
from .textlm import LMShape

ARMS = ("moai", "no-aux", "no-mixer", "aux-in-prompt")
ARMS_BY_COST = ("aux-in-prompt", "moai", "no-aux", "no-mixer")  # slowest first (aux-in-prompt: longest prompts)
# which cache each arm trains and answers on: annotations x conversations
ARM_DATA = {"moai": "oracle", "no-aux": "blank", "no-mixer": "oracle", "aux-in-prompt": "prompt"}


@dataclass(frozen=True)
class AblationConfig:
    out: str = "runs/ablation"
    seed: int = 0
    train_scenes: int = 2000
    heldout_scenes: int = 200
    # 6 x 6 CLIP patches (2 x 2 per grid cell); MoAI's 490 is 1,225 tokens. The image tokens are most
    # of an arm's sequence: 126 px (81 tokens) made every arm ~1.5x slower (docs/ablation.md, "Time")
    image_size: int = 84
    batch_size: int = 16
    # 3 + 3: with 1 + 1 (and 3 + 1, 1 + 3) the aux path never carried the sign word (docs/ablation.md, "Measured")
    stage1_epochs: float = 3.0
    stage2_epochs: float = 3.0
    arms: tuple[str, ...] = ARMS
    threads: int = 1               # per arm; on a busy shared CPU, more torch threads were ~20x slower, not faster
    jobs: int = 0                  # arms trained at once, one process each (0: one per CPU core, at most one per arm)
    # phase 0: the LM that reads
    lm_width: int = LMShape.width
    lm_layers: int = LMShape.layers
    lm_steps: int = LMShape.steps
    lm_lr: float = LMShape.lr
    # MoAI's parts and their training (the fixes to try within MoAI)
    lr: float = 1e-3
    expert_lr_scale: float = 1.0
    # MoAI spaces its Mixers evenly (every 8th of 32 layers); at depth 4 that is every other layer,
    # from the first: the phase-0 LM reads the OCR word in layer 0 (probes.reading_layers), and
    # with Mixers at (1, 3) the aux path never reaches that reading (docs/ablation.md, "Reading")
    mixer_layers: tuple[int, ...] = (0, 2)
    compressor_depth: int = 2
    num_latents: int = 64          # MoAI's 64
    expert_output_scale: bool = False  # NOT MoAI: a zero-initialised learnable gain per expert (arm.ExpertOutputGain)
    # NOT MoAI's recipe, the same batches in every arm: the first 500 steps of each stage ask only the
    # text question; without it the aux path did not carry the sign word at 84 px (docs/ablation.md, "Reading")
    text_warmup_steps: int = 500
    tag: str = ""                  # results of this run are stored as "<arm><tag>", so variants sit side by side
    question_types: tuple[str, ...] = QUESTION_TYPES  # a diagnostic: train and score on these types only
    probes: bool = True

    def __post_init__(self):
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"arms must be a non-empty subset of {ARMS}, got {self.arms!r}")
        if not self.question_types or any(t not in QUESTION_TYPES for t in self.question_types):
            raise ValueError(f"question_types must be a non-empty subset of {QUESTION_TYPES}, got "
                             f"{self.question_types!r}")
        bad = [i for i in self.mixer_layers if not 0 <= i < self.lm_layers]
        if bad or not self.mixer_layers:
            raise ValueError(f"mixer_layers must be non-empty and lie in [0, {self.lm_layers}), got "
                             f"{self.mixer_layers!r}")


# The chat markup of the word-level tokenizer (punctuation and line breaks are dropped, so this
# is `USER` ... `ASSISTANT` ... `</s>`); `</s>` ends the answer, so greedy decoding stops there.
PROMPT = dict(user_start="USER: ", user_end="\n", assistant_start="ASSISTANT: ", assistant_end="</s>")
QUICK = dict(train_scenes=60, heldout_scenes=20, stage1_epochs=1.0, stage2_epochs=1.0, batch_size=8,
             lm_width=32, lm_layers=2, lm_steps=30, num_latents=8,
             mixer_layers=(0, 1), text_warmup_steps=5)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def lm_shape(cfg: AblationConfig):
    return LMShape(width=cfg.lm_width, layers=cfg.lm_layers, heads=max(1, cfg.lm_width // 32),
                   steps=cfg.lm_steps, lr=cfg.lm_lr, seed=cfg.seed, copy_warmup_steps=min(300, cfg.lm_steps // 5))


def build_model(cfg: AblationConfig):
    """MoAI's parts (sized to the LM) around the phase-0 LM and a random frozen tiny CLIP."""
    from trainer.model import MoAIConfig, MoAIModel
    from trainer.model.tiny import build_tiny_backbones

    out = Path(cfg.out)
    vision = build_tiny_backbones(out / "backbones")["vision"]
    heads = max(1, cfg.lm_width // 32)
    return MoAIModel.from_config(MoAIConfig(
        lm=str(out / "lm"), vision=vision, num_latents=cfg.num_latents, compressor_depth=cfg.compressor_depth,
        compressor_heads=heads, compressor_head_dim=cfg.lm_width // heads, ff_mult=1,
        expert_rank=max(8, cfg.lm_width // 4), expert_heads=heads, mixer_layers=cfg.mixer_layers,
        image_size=cfg.image_size))


def with_aux_in_prompt(entries: list[dict], aux: dict[str, str]) -> list[dict]:
    """The same conversations with the scene's aux text before the question (LLaVA-style)."""
    out = []
    for e in entries:
        question = e["conversations"][0]["value"].replace("<image>", "").strip()
        human = {"from": "human", "value": f"<image>\n{aux[e['image']]}\n{question}"}
        out.append({**e, "conversations": [human, *e["conversations"][1:]]})
    return out


def prepare(cfg: AblationConfig, quiet: bool = False) -> dict:
    """Corpus, phase-0 LM, tiny CLIP and the six feature caches (each reused when already there)."""
    import torch

    from schemas import read_annotations
    from trainer.cache import INDEX_FILE, CachedDataset, build_cache
    from trainer.data import ANNOTATION_COLUMNS, PromptFormat

    from . import probes
    from .corpus import CorpusConfig, corpus_paths, write_corpus
    from .textlm import aux_texts, pretrained_lm

    out = Path(cfg.out)
    corpus_cfg = CorpusConfig(seed=cfg.seed, train_scenes=cfg.train_scenes, heldout_scenes=cfg.heldout_scenes)
    stamp = out / "corpus" / "config.json"
    wanted = json.dumps({**asdict(corpus_cfg), "prompt": PROMPT}, sort_keys=True)
    if not stamp.is_file() or stamp.read_text() != wanted:
        started = time.monotonic()
        write_corpus(out / "corpus", corpus_cfg)
        stamp.write_text(wanted)
        log(f"corpus: {cfg.train_scenes} + {cfg.heldout_scenes} scenes in {time.monotonic() - started:.0f}s")
        for stale in [*(out / "cache").glob(f"*/{INDEX_FILE}"), out / "lm" / "phase0.json"]:
            stale.unlink(missing_ok=True)
    paths = corpus_paths(out / "corpus")
    prompt = PromptFormat(**PROMPT)
    aux = aux_texts(paths.oracle)
    train, heldout = json.loads(paths.train.read_text()), json.loads(paths.heldout.read_text())
    started = time.monotonic()
    _, phase0 = pretrained_lm(out / "lm", lm_shape(cfg), train, heldout, aux, prompt, log=log)
    if not quiet:
        log(f"phase 0 (text LM, aux in the prompt): held-out {100 * phase0['heldout_with_aux']['all']:.1f} % "
            f"with aux, {100 * phase0['heldout_without_aux']['all']:.1f} % without ({time.monotonic() - started:.0f}s)")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    reading = probes.reading_layers(model.lm, model.tokenizer, heldout, aux, prompt)
    if not quiet:
        log("phase 0 reads the sign word at: " + ", ".join(f"layer {k} {v:.2f}" for k, v in reading.items()) +
            " (attention from the answer position to the word)")
    datasets = {}
    for split, entries in (("train", train), ("heldout", heldout)):
        for name, source, conversations in (("oracle", paths.oracle, entries), ("blank", paths.blank, entries),
                                            ("prompt", paths.blank, with_aux_in_prompt(entries, aux))):
            cache = out / "cache" / f"{split}-{name}"
            if not cache_fits(cache, model):
                started = time.monotonic()
                table = read_annotations(source, columns=ANNOTATION_COLUMNS)
                report = build_cache(model, table, conversations, cache, dtype="float32", prompt=prompt,
                                     progress=False)
                log(f"cache {split}-{name}: {report.summary()} ({time.monotonic() - started:.0f}s)")
            datasets[f"{split}-{name}"] = CachedDataset(cache)
        ids = [[s["sample_id"] for s in datasets[f"{split}-{name}"].samples] for name in ("oracle", "blank", "prompt")]
        if ids[0] != ids[1] or ids[0] != ids[2] or [s["input_ids"] for s in datasets[f"{split}-oracle"].samples] != \
                [s["input_ids"] for s in datasets[f"{split}-blank"].samples]:
            raise RuntimeError(f"{split}: the caches disagree on samples; delete {out / 'cache'}")
    return {"paths": paths, "datasets": datasets, "phase0": phase0, "train": train, "heldout": heldout,
            "reading": reading}


def cache_fits(cache: Path, model) -> bool:
    """A finished cache made for this model (vision tower, LM, image size: `trainer.cache.check_compatible`)."""
    from trainer.cache import INDEX_FILE, META_FILE, check_compatible

    try:
        check_compatible(json.loads((cache / META_FILE).read_text()), model.config.to_dict())
    except (OSError, ValueError, KeyError):
        return False
    return (cache / INDEX_FILE).is_file()


def run_arm(arm: str, cfg: AblationConfig, prepared: dict, budget) -> dict:
    import torch

    def log(message: str) -> None:  # arms may run side by side: say whose line it is
        print(message if message.startswith("[") else f"[{arm}{cfg.tag}] {message.strip()}", file=sys.stderr,
              flush=True)

    from . import arm as arm_lib
    from . import probes
    from .evaluate import write_answers

    datasets, types = prepared["datasets"], cfg.question_types
    def asked(split: str, data: str):  # the split's questions of the types asked, on one cache
        return arm_lib.of_types(datasets[f"{split}-{data}"], prepared[split], types)

    train, heldout = asked("train", ARM_DATA[arm]), asked("heldout", ARM_DATA[arm])
    # every arm's batches come from the same lengths: the conversation without aux text
    samples = asked("train", "oracle").samples
    lengths = [len(s["input_ids"]) for s in samples]
    kind_of = {e["id"]: e["question_type"] for e in prepared["train"]}
    text_questions = [i for i, s in enumerate(samples) if kind_of[s["sample_id"]] == "text"]
    torch.manual_seed(cfg.seed)  # identical initial weights (connector first) in every arm
    moai = build_model(cfg)
    with_mixers = arm in ("moai", "no-aux")
    if cfg.expert_output_scale and with_mixers:  # a labelled departure from MoAI, off by default
        arm_lib.add_expert_output_gains(moai)
    model = moai if with_mixers else arm_lib.WithoutMixers(moai)
    pad = model.tokenizer.pad_token_id
    started = time.monotonic()
    result: dict = {"name": arm + cfg.tag, "arm": arm}
    if with_mixers:
        result["mixer_effect_before"] = arm_lib.mixer_effect(model, heldout, pad)
        if cfg.probes:  # the untrained Compressor: is the sign word there to begin with?
            result["probes_before"] = probes.sign_word_probe(model, train, heldout, pad, prepared["train"],
                                                             prepared["heldout"], log=log)
    losses = {}
    for stage in (1, 2):
        log(f"[{arm}{cfg.tag}] stage {stage}")
        losses[stage] = arm_lib.train_stage(model, train, stage, budget, pad, lengths, log=log,
                                            text_questions=text_questions)
    answers = arm_lib.answer(model, heldout, pad, budget)
    write_answers(answers, Path(cfg.out) / "answers" / f"{arm}{cfg.tag}.jsonl")
    result["final_loss"] = {s: sum(v[-50:]) / max(1, len(v[-50:])) for s, v in losses.items()}
    result["answer_loss"] = probes.answer_loss(model, heldout, pad, prepared["heldout"])
    result["answer_lens"] = probes.answer_lens(model, heldout, pad, prepared["heldout"])
    if with_mixers:
        result["gates"] = arm_lib.gate_weights(model, heldout, pad)
        result["mixer_effect"] = arm_lib.mixer_effect(model, heldout, pad)
        if cfg.probes:
            result["probes"] = probes.sign_word_probe(model, train, heldout, pad, prepared["train"],
                                                      prepared["heldout"], log=log)
    result["seconds"] = time.monotonic() - started
    log(f"[{arm}{cfg.tag}] done in {result['seconds']:.0f}s; final losses {result['final_loss']}")
    return {**result, "answers": answers}


def budget_of(cfg: AblationConfig):
    from .arm import TrainBudget

    return TrainBudget(seed=cfg.seed, batch_size=cfg.batch_size, stage1_epochs=cfg.stage1_epochs,
                       stage2_epochs=cfg.stage2_epochs, lr=cfg.lr, stage2_lr=cfg.lr / 2,
                       expert_lr_scale=cfg.expert_lr_scale, text_warmup_steps=cfg.text_warmup_steps)


def train_and_save(cfg: AblationConfig, arm: str, prepared: dict | None = None) -> str:
    """One arm, start to finish, its result merged into OUT/results.json; runs in a worker process
    too (then it loads the corpus, LM and caches that the parent prepared)."""
    import torch

    from .report import save_result

    torch.set_num_threads(cfg.threads)
    prepared = prepared or prepare(cfg, quiet=True)
    budget = budget_of(cfg)
    result = run_arm(arm, cfg, prepared, budget)
    result.pop("answers")
    save_result(Path(cfg.out), result, {"config": asdict(cfg), "budget": asdict(budget),
                                        "training_questions": len(prepared["datasets"]["train-oracle"]),
                                        "phase0": prepared["phase0"], "phase0_reading": prepared["reading"]})
    return arm


def jobs_for(cfg: AblationConfig) -> int:
    import os

    return max(1, min(len(cfg.arms), cfg.jobs or os.cpu_count() or 1))


def run(cfg: AblationConfig) -> str:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch

    from .report import report

    torch.set_num_threads(cfg.threads)
    prepared = prepare(cfg)  # phase 0 and the caches, once, before any arm
    jobs = jobs_for(cfg)
    if jobs == 1:
        for arm in cfg.arms:
            train_and_save(cfg, arm, prepared)
    else:
        # the slowest arms first, so that two workers finish together; spawn: no forked torch state
        order = sorted(cfg.arms, key=lambda a: ARMS_BY_COST.index(a))
        log(f"training {len(order)} arms, {jobs} at a time (one process each, --jobs)")
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for done in as_completed([pool.submit(train_and_save, cfg, arm) for arm in order]):
                done.result()
    return report(cfg.out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainer ablation", description=__doc__.splitlines()[0],
                                     epilog="Arms: " + ", ".join(ARMS))
    parser.add_argument("--out", default=AblationConfig.out, help="working directory (corpus, LM, caches, results)")
    parser.add_argument("--quick", action="store_true", help="a ~2-minute smoke run on a tiny corpus and LM")
    parser.add_argument("--seed", type=int, default=AblationConfig.seed)
    parser.add_argument("--train-scenes", type=int)
    parser.add_argument("--heldout-scenes", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--image-size", type=int, help="CLIP input size, a multiple of 14 (default 126)")
    parser.add_argument("--stage1-epochs", type=float)
    parser.add_argument("--stage2-epochs", type=float)
    parser.add_argument("--lm-width", type=int, help="phase-0 LM width (default 128)")
    parser.add_argument("--lm-layers", type=int, help="phase-0 LM layers (default 4)")
    parser.add_argument("--lm-steps", type=int, help="phase-0 pretraining steps (default 2000)")
    parser.add_argument("--lm-lr", type=float, help="phase-0 peak learning rate (default 3e-3)")
    parser.add_argument("--lr", type=float, help="stage-1 peak learning rate of MoAI's parts (stage 2: half)")
    parser.add_argument("--expert-lr-scale", type=float, help="the Mixers' learning rate relative to --lr")
    parser.add_argument("--mixer-layers", type=int, nargs="+", help="0-based LM layers with a Mixer")
    parser.add_argument("--compressor-depth", type=int)
    parser.add_argument("--num-latents", type=int)
    parser.add_argument("--expert-output-scale", action="store_true", default=None,
                        help="NOT MoAI: a learnable output gain per Mixer expert, initialised at 0 (off by default)")
    parser.add_argument("--text-warmup-steps", type=int,
                        help="NOT MoAI's recipe: the first steps of each stage ask only the text question, in every arm")
    parser.add_argument("--tag", help="suffix of this run's arm names in the results (variants side by side)")
    parser.add_argument("--no-probes", dest="probes", action="store_false", help="skip the sign-word probe")
    parser.add_argument("--threads", type=int, default=AblationConfig.threads, help="torch CPU threads per arm")
    parser.add_argument("--jobs", type=int, default=AblationConfig.jobs,
                        help="arms trained at once, one process each (default: one per CPU core)")
    parser.add_argument("--report", action="store_true", help="only print the table of a finished run in --out")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--question-types", nargs="+", choices=QUESTION_TYPES,
                        help="a diagnostic: train and score on these question types only (default: all)")
    args = parser.parse_args(argv)
    cfg = AblationConfig(out=args.out, seed=args.seed, arms=tuple(args.arms), threads=args.threads,
                         jobs=args.jobs, probes=args.probes)
    if args.quick:
        cfg = replace(cfg, **QUICK)
    names = ("train_scenes", "heldout_scenes", "batch_size", "image_size", "stage1_epochs", "stage2_epochs",
             "lm_width", "lm_layers", "lm_steps", "lm_lr", "lr", "expert_lr_scale", "compressor_depth",
             "num_latents", "expert_output_scale", "text_warmup_steps", "tag")
    overrides = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if args.mixer_layers:
        overrides["mixer_layers"] = tuple(args.mixer_layers)
    if args.question_types:
        overrides["question_types"] = tuple(args.question_types)
    try:
        cfg = replace(cfg, **overrides)
        if args.report:
            from .report import report
            print(report(cfg.out))
        else:
            print(run(cfg))
    except (RuntimeError, NotImplementedError, ValueError) as exc:
        print(f"trainer ablation: {exc}", file=sys.stderr)
        return 2
    return 0
