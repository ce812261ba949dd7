"""`python -m pipeline inspect OUTPUT [--json]`: what is in an annotation output, in numbers.

Every figure comes from Polars lazy scans over the Parquet files (only the columns a figure
needs are read). Keep-thresholds are MoAI's (`schemas.VerbalizeConfig`) unless the output was
re-verbalized, in which case the thresholds recorded in its provenance are used.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from schemas import Compat, SchemaError, VerbalizeConfig, read_provenance
from schemas.io import checked_files, one_line, unreadable_file
from schemas.schema import PROVENANCE_KEY, STATUS_ERROR, STATUS_OK

ERROR_PREFIX_CHARS = 60


def error_kind() -> pl.Expr:
    """`stage: message prefix` with paths and numbers blanked, so one cause is one kind."""
    message = (pl.col("error").struct.field("message").str.split("\n").list.first()
               .str.replace_all(r"\S*[/\\]\S*", "<path>")
               .str.replace_all(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?", "<n>")
               .str.strip_chars().str.slice(0, ERROR_PREFIX_CHARS))
    return pl.concat_str(pl.col("error").struct.field("stage"), pl.lit(": "), message).alias("kind")


def counts(frame: pl.LazyFrame, key: str) -> dict[str, int]:
    """{value: rows}, most frequent first, ties by name."""
    table = frame.group_by(key).len().sort(["len", key], descending=[True, False]).collect()
    return dict(zip(table[key].to_list(), table["len"].to_list()))


def exploded(lf: pl.LazyFrame, column: pl.Expr, name: str) -> pl.LazyFrame:
    """One row per list element of `column` (ok rows only), its struct fields as columns."""
    return (lf.filter(pl.col("status") == STATUS_OK).select(column.alias(name))
            .explode(name).drop_nulls(name).unnest(name))


def verbalized_relations(lf: pl.LazyFrame, cfg: VerbalizeConfig) -> pl.LazyFrame:
    """The relations MoAI writes: top min(k, #objects) by score (ties by index), then >= threshold."""
    graph = pl.col("scene_graph")
    per_image = (lf.filter(pl.col("status") == STATUS_OK)
                 .select("image_id", n_objects=graph.struct.field("objects").list.len(),
                         relation=graph.struct.field("relations"))
                 .drop_nulls("relation")
                 .with_columns(n_relations=pl.col("relation").list.len(),
                               position=pl.int_ranges(pl.col("relation").list.len())))
    ranked = (per_image.explode("relation", "position").drop_nulls("relation").unnest("relation")
              .sort(["image_id", "score", "position"], descending=[False, True, False])
              .with_columns(rank=pl.int_range(pl.len()).over("image_id")))
    k = pl.min_horizontal(pl.lit(cfg.sgg_max_relations), pl.col("n_objects"))
    kept = ranked.filter((pl.col("rank") < k) & (pl.col("score") >= cfg.sgg_min_score))
    if cfg.compat == Compat.MOAI:  # published bare except: too few relations -> none written
        kept = kept.filter(pl.col("n_relations") >= k)
    return kept


def annotator_enabled(lf: pl.LazyFrame, column: str) -> bool:
    """False when no ok row carries the column (annotator switched off)."""
    ok = lf.filter(pl.col("status") == STATUS_OK)
    return ok.select(pl.col(column).is_not_null().any()).collect().item() is True


def label_histograms(lf: pl.LazyFrame, cfg: VerbalizeConfig) -> dict[str, dict | None]:
    """Per annotator: label counts (None when that annotator produced nothing, i.e. was off)."""
    out: dict[str, dict | None] = {}
    if annotator_enabled(lf, "panoptic"):
        out["panoptic"] = {"labels": counts(exploded(lf, pl.col("panoptic"), "s"), "label")}
    else:
        out["panoptic"] = None
    if annotator_enabled(lf, "detections"):
        detections = exploded(lf, pl.col("detections"), "d")
        out["detections"] = {
            "keep_threshold": cfg.owod_min_score,
            "kept": counts(detections.filter(pl.col("score") >= cfg.owod_min_score), "label"),
            "all": counts(detections, "label"),
        }
    else:
        out["detections"] = None
    if annotator_enabled(lf, "scene_graph"):
        relations = pl.col("scene_graph").struct.field("relations")
        out["scene_graph"] = {
            "keep_threshold": cfg.sgg_min_score,
            "max_relations": cfg.sgg_max_relations,
            "verbalized_predicates": counts(verbalized_relations(lf, cfg), "predicate"),
            "all_predicates": counts(exploded(lf, relations, "r"), "predicate"),
        }
    else:
        out["scene_graph"] = None
    if annotator_enabled(lf, "ocr"):
        lines = exploded(lf, pl.col("ocr"), "o").filter(pl.col("score") >= cfg.ocr_min_score)
        out["ocr"] = {"keep_threshold": cfg.ocr_min_score, "kept_lines": counts(lines, "text")}
    else:
        out["ocr"] = None
    return out


def coverage(lf: pl.LazyFrame) -> dict[str, float | None]:
    """Fraction of ok images whose SGG / OCR text says something."""
    ok = lf.filter(pl.col("status") == STATUS_OK)
    row = ok.select(
        n=pl.len(),
        sgg=(pl.col("text_sgg").str.len_chars() > 0).sum(),
        ocr=(pl.col("text_ocr").str.len_chars() > 0).sum(),
    ).collect().row(0, named=True)
    if row["n"] == 0:
        return {"relation": None, "ocr": None}
    return {"relation": row["sgg"] / row["n"], "ocr": row["ocr"] / row["n"]}


def aux_lengths(lf: pl.LazyFrame) -> dict[str, float | int | None]:
    """Characters of text_aux over ok rows: min / median / p90 (nearest rank) / max."""
    chars = pl.col("text_aux").str.len_chars()
    row = (lf.filter((pl.col("status") == STATUS_OK) & pl.col("text_aux").is_not_null())
           .select(count=pl.len(), min=chars.min(), median=chars.median(),
                   p90=chars.quantile(0.9, interpolation="nearest").cast(pl.Int64), max=chars.max())
           .collect().row(0, named=True))
    return row


def provenance_report(files: list[Path]) -> dict:
    """The first file's provenance, and whether the other files agree with it."""
    blobs = {(pq.read_schema(f).metadata or {}).get(PROVENANCE_KEY) for f in files}
    return {"provenance": read_provenance(files[0]), "files": len(files),
            "provenance_variants": len(blobs)}


def summarize(path: str | Path) -> dict:
    """Everything `inspect` reports, as plain JSON-able data."""
    files = checked_files(path)
    prov = provenance_report(files)
    cfg = VerbalizeConfig.recorded(prov["provenance"])
    lf = pl.scan_parquet([str(f) for f in files])
    errors = lf.filter(pl.col("status") == STATUS_ERROR)
    try:
        status = counts(lf.select("status"), "status")
        return {
            "path": str(path),
            "rows": sum(status.values()),
            "status": {STATUS_OK: status.get(STATUS_OK, 0), STATUS_ERROR: status.get(STATUS_ERROR, 0)},
            "error_kinds": counts(errors.select(error_kind()), "kind"),
            "labels": label_histograms(lf, cfg),
            "coverage": coverage(lf),
            "aux_chars": aux_lengths(lf),
            **prov,
        }
    except (pl.exceptions.ComputeError, OSError) as exc:  # footers read, some data page does not
        raise SchemaError(f"{unreadable_file(files, None) or path}: data unreadable "
                          f"({type(exc).__name__}: {exc})") from exc


def _flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict) and value:
        return [item for key in sorted(value) for item in _flatten(value[key], f"{prefix}{key}.")]
    text = json.dumps(value) if not isinstance(value, str) else value
    return [(prefix.rstrip("."), text if len(text) <= 100 else text[:97] + "...")]


def _histogram(title: str, histogram: dict[str, int], top: int) -> list[str]:
    lines = [f"  {title} ({sum(histogram.values())} total, {len(histogram)} distinct)"]
    width = max((len(k) for k in list(histogram)[:top]), default=0)
    lines += [f"    {label:<{width}}  {n}" for label, n in list(histogram.items())[:top]]
    if len(histogram) > top:
        lines.append(f"    ... and {len(histogram) - top} more")
    return lines


def _percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{fraction:.1%}"


def format_report(summary: dict, top: int = 15) -> str:
    s = summary["status"]
    lines = [f"{summary['path']}: {summary['rows']} rows in {summary['files']} file(s)",
             f"status: ok {s['ok']}, error {s['error']}"]
    if summary["error_kinds"]:
        lines += ["errors by kind:"] + [f"  {n:>6}  {k}" for k, n in summary["error_kinds"].items()]
    lines.append("labels:")
    labels = summary["labels"]
    for name, part in labels.items():
        if part is None:
            lines.append(f"  {name}: off (no ok row has it)")
    if labels["panoptic"]:
        lines += _histogram("panoptic segments", labels["panoptic"]["labels"], top)
    if labels["detections"]:
        d = labels["detections"]
        lines += _histogram(f"detections, score >= {d['keep_threshold']} (verbalized)", d["kept"], top)
        lines += _histogram("detections, all stored", d["all"], top)
    if labels["scene_graph"]:
        g = labels["scene_graph"]
        lines += _histogram(f"scene-graph predicates, verbalized (top min({g['max_relations']}, #objects), "
                            f"score >= {g['keep_threshold']})", g["verbalized_predicates"], top)
        lines += _histogram("scene-graph predicates, all stored", g["all_predicates"], top)
    if labels["ocr"]:
        lines += _histogram(f"OCR lines kept (score >= {labels['ocr']['keep_threshold']})",
                            labels["ocr"]["kept_lines"], top)
    c, a = summary["coverage"], summary["aux_chars"]
    lines.append(f"coverage of ok images: >=1 verbalized relation {_percent(c['relation'])}, "
                 f"OCR text {_percent(c['ocr'])}")
    lines.append(f"text_aux chars over {a['count']} ok rows: min {a['min']}, median {a['median']}, "
                 f"p90 {a['p90']}, max {a['max']}")
    lines.append("provenance" + (f" (WARNING: {summary['provenance_variants']} different ones across files;"
                                 " first file shown)" if summary["provenance_variants"] > 1 else "") + ":")
    prov = summary["provenance"]
    lines += [f"  {k} = {v}" for k, v in _flatten(prov)] if prov else ["  (none recorded)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline inspect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="annotation output: a directory of Parquet files or one file")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--top", type=int, default=15, help="labels shown per histogram (text mode)")
    args = parser.parse_args(argv)
    try:
        summary = summarize(args.output)
    except SchemaError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, sort_keys=False) if args.json else format_report(summary, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
