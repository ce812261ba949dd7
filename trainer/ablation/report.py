"""The ablation's results: merged per arm into OUT/results.json, printed as tables, plotted.

Arms can run in separate commands (`--arms moai`, then `--arms no-aux`, or variants with
`--tag`): each one's result is merged into results.json under a file lock, and the report is made
from whatever arms are there, from their answer files, so it can always be made again
(`trainer ablation --out DIR --report`).
"""
from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from pathlib import Path

RESULTS = "results.json"
PLOT = "accuracy.png"


@contextmanager
def locked(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def save_result(out: Path, result: dict, meta: dict) -> None:
    """Merge one arm's result (keyed by its name) and the run's settings into results.json."""
    out = Path(out)
    with locked(out):
        path = out / RESULTS
        saved = json.loads(path.read_text()) if path.is_file() else {"arms": {}}
        saved.update(meta)
        saved["arms"][result["name"]] = {**result, "config": meta.get("config")}
        saved["arms"] = dict(sorted(saved["arms"].items(), key=arm_order))  # arms finish in any order
        path.write_text(json.dumps(saved, indent=2, default=str) + "\n")


def arm_order(item: tuple[str, dict]) -> tuple:
    """The arms in their canonical order, each arm's tagged variants after it, by name."""
    from .run import ARMS

    name, result = item
    arm = result.get("arm", name)
    return (ARMS.index(arm) if arm in ARMS else len(ARMS), name)


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


def accuracy_columns(out: Path, saved: dict) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """column name -> {question type or 'all' -> accuracy}, and the held-out questions per type."""
    from .corpus import corpus_paths
    from .evaluate import read_answers, score
    from .questions import QUESTION_TYPES

    paths = corpus_paths(out / "corpus")
    heldout = json.loads(paths.heldout.read_text())
    columns: dict[str, dict[str, float]] = {}
    phase0 = saved.get("phase0") or {}
    if phase0:
        columns["text LM + aux (phase 0)"] = phase0["heldout_with_aux"]
        columns["text LM, no aux (phase 0)"] = phase0["heldout_without_aux"]
    for name, result in saved["arms"].items():
        types = (result.get("config") or {}).get("question_types") or QUESTION_TYPES  # a diagnostic asks fewer
        scores = score([e for e in heldout if e["question_type"] in types],
                       read_answers(out / "answers" / f"{name}.jsonl"))
        columns[name] = {k: s.accuracy for k, s in scores.items() if s.total}
    scores = score(heldout, prior_answers(json.loads(paths.train.read_text()), heldout))
    columns["answer prior"] = {k: s.accuracy for k, s in scores.items()}
    totals = {k: s.total for k, s in scores.items()}
    assert set(totals) == {*QUESTION_TYPES, "all"}
    return columns, totals


def format_table(columns: dict[str, dict[str, float]], totals: dict[str, int]) -> str:
    names = list(columns)
    lines = ["| question type | held-out questions | " + " | ".join(names) + " |", "|" + "---|" * (2 + len(names))]
    for kind in totals:
        cells = [f"{100 * columns[n][kind]:.1f} %" if kind in columns[n] else "–" for n in names]
        lines.append(f"| {kind} | {totals[kind]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_probes(arms: dict[str, dict]) -> str:
    """Per arm with Mixers: Mixer change per layer (before -> after training), text-answer loss,
    the sign-word probe on the compressed aux; per arm without: the text-answer loss."""
    lines = ["| arm | Mixer change per layer, before → after | loss on text answers | loss on all answers "
             "| sign-word probe on the Compressor's output, before → after (majority) |", "|---|---|---|---|---|"]
    for name, r in arms.items():
        before, after = r.get("mixer_effect_before") or {}, r.get("mixer_effect") or {}
        change = ", ".join(f"{layer}: {before.get(layer, float('nan')):.3f} → {after[layer]:.3f}"
                           for layer in after) or "–"
        loss = r.get("answer_loss") or {}
        probe, first = r.get("probes"), r.get("probes_before")
        probe_text = (f"{100 * first['heldout']:.1f} % → " if first else "") + \
            (f"{100 * probe['heldout']:.1f} % ({100 * probe['majority']:.1f} %)" if probe else "–")
        lines.append(f"| {name} | {change} | {loss.get('text', float('nan')):.3f} | "
                     f"{loss.get('all', float('nan')):.3f} | {probe_text} |")
    return "\n".join(lines)


def format_lens(arms: dict[str, dict]) -> str:
    """Per arm: the sign word read off the residual stream at the answer position after each LM
    layer (top-1 accuracy, mean rank of the right word), held-out text questions."""
    lensed = {name: r["answer_lens"] for name, r in arms.items() if r.get("answer_lens")}
    if not lensed:
        return "–"
    layers = sorted({int(k) for lens in lensed.values() for k in lens})
    lines = ["| arm | " + " | ".join(f"after layer {k}" for k in layers) + " |", "|---|" + "---|" * len(layers)]
    for name, lens in lensed.items():
        cells = [f"{100 * lens[str(k)]['top1']:.0f} % (rank {lens[str(k)]['mean_rank']:.1f})" if str(k) in lens
                 else "–" for k in layers]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_gates(gates: dict) -> str:
    lines = ["| Mixer layer | image tokens: aux / lang / self | language tokens: aux / img / self |", "|---|---|---|"]
    for layer, sides in gates.items():
        image, language = (" / ".join(f"{w:.3f}" for w in sides[s]) for s in ("image", "language"))
        lines.append(f"| {layer} | {image} | {language} |")
    return "\n".join(lines)


def plot(columns: dict[str, dict[str, float]], totals: dict[str, int], path: Path) -> Path:
    """Grouped bars: held-out accuracy per question type (groups) and arm (bars)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(totals)
    names = list(columns)
    fig, ax = plt.subplots(figsize=(11, 4.2), dpi=100)
    width = 0.8 / len(names)
    colors = plt.get_cmap("tab10" if len(names) <= 10 else "tab20").colors  # one colour per column
    for j, name in enumerate(names):
        values = [100 * columns[name].get(k, float("nan")) for k in kinds]
        ax.bar([i + (j - (len(names) - 1) / 2) * width for i in range(len(kinds))], values, width, label=name,
               color=colors[j % len(colors)])
    ax.set_xticks(range(len(kinds)), [f"{k}\n({totals[k]})" for k in kinds])
    ax.set_ylabel("held-out exact match (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    ax.set_title("Does the aux information reach the answers? (frozen phase-0 LM)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def text_warmup(cfg: dict) -> str:
    steps = cfg.get("text_warmup_steps", 0)
    return f" (the first {steps} steps of each on text questions only, not MoAI's recipe)" if steps else ""


def report(out: str | Path) -> str:
    """The tables of a finished run (from results.json and the answer files), and the plot."""
    out = Path(out)
    if not (out / RESULTS).is_file():
        raise RuntimeError(f"{out} holds no finished ablation ({RESULTS} missing); run it first")
    saved = json.loads((out / RESULTS).read_text())
    cfg, phase0 = saved["config"], saved.get("phase0") or {}
    columns, totals = accuracy_columns(out, saved)
    plot(columns, totals, out / PLOT)
    shape = phase0.get("shape", {})
    lines = [f"Ablation: {cfg['train_scenes']} training scenes ({saved.get('training_questions', '?')} questions), "
             f"{cfg['heldout_scenes']} held-out scenes, batch {cfg['batch_size']}, {cfg['stage1_epochs']:g} + "
             f"{cfg['stage2_epochs']:g} epochs{text_warmup(cfg)}, seed {cfg['seed']}, image size {cfg['image_size']}; "
             f"phase-0 LM width {shape.get('width')}, {shape.get('layers')} layers, {shape.get('steps')} steps "
             f"({phase0.get('seconds', 0):.0f}s), {phase0.get('tokens_per_aux_text', 0):.0f} tokens per aux text",
             "", "Exact-match accuracy on held-out scenes:", "", format_table(columns, totals), "",
             "`text LM + aux (phase 0)`: the frozen LM alone, the aux text in its prompt, no image (the ceiling); "
             "`answer prior`: no model; each question gets the training answer most frequent for the same "
             "question text.", "", "Where the aux information goes (held-out):", "", format_probes(saved["arms"])]
    reading = saved.get("phase0_reading") or {}
    if reading:
        lines += ["", "Where the frozen LM reads the sign word from the aux text in its prompt (attention from the "
                  "answer position to the word, its most attentive head): " +
                  ", ".join(f"layer {k} {v:.2f}" for k, v in reading.items()) + "; Mixers at layers " +
                  "; ".join(f"{name} {', '.join(str(k) for k in (r.get('config') or {}).get('mixer_layers', []))}"
                            for name, r in saved["arms"].items() if r.get("arm", name) in ("moai", "no-aux")) + "."]
    lines += ["", "How far the sign word gets inside the LM (logit lens at the answer position, held-out text "
              "questions; top-1, mean rank of the right word among the vocabulary):", "", format_lens(saved["arms"])]
    for name, r in saved["arms"].items():
        if r.get("gates"):
            lines += ["", f"Stage-2 gate weights of `{name}` (mean over held-out prompt tokens):", "",
                      format_gates(r["gates"])]
    lines += ["", f"Plot: {out / PLOT}"]
    text = "\n".join(lines)
    (out / "results.md").write_text(text + "\n")
    return text
