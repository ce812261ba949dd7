"""`python -m pipeline show OUTPUT (--id ID ... | --sample N) [--out DIR]`: pictures of annotations.

Writes one PNG per chosen image into DIR/images/ (the photo with the PS map in MoAI's colours,
detection boxes, scene-graph edges and OCR polygons drawn over it) and DIR/index.html, a static
gallery with the verbalized text under each picture. Everything is local; nothing downloads.
"""
from __future__ import annotations

import argparse
import hashlib
import html
import random
import re
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from schemas import STATUS_OK, SchemaError, VerbalizeConfig, annotation_schema, read_provenance
from schemas.io import checked_files, one_line, unreadable_file

from .render import RenderConfig, Renderer, load_photo

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; background: #fafafa; }}
figure {{ display: inline-block; vertical-align: top; width: {width}px; margin: 0 1em 2em 0; }}
img {{ max-width: 100%; border: 1px solid #ccc; }}
figcaption {{ font-size: 13px; }}
.aux {{ white-space: pre-wrap; font-family: monospace; font-size: 12px; }}
.error {{ color: #b00; }} .note {{ color: #a60; }}
</style></head>
<body><h1>{title}</h1><p>{summary}</p>
{figures}
</body></html>
"""

FIGURE = """<figure id="{anchor}"><a href="{src}"><img src="{src}" alt="{alt}"></a>
<figcaption><b>{image_id}</b> &middot; {status}{extra}<div class="aux">{text}</div></figcaption></figure>"""


def picture_name(image_id: str) -> str:
    """A file name safe on every OS, unique per id (ids may be paths or contain odd characters)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("._")[:80] or "image"
    return f"{stem}-{hashlib.sha1(image_id.encode()).hexdigest()[:8]}.png"


def choose_ids(files: list[Path], ids: list[str] | None, sample: int | None, seed: int) -> list[str]:
    """The requested ids (each must exist) or a seeded sample of all ids, in a stable order."""
    known = pl.scan_parquet([str(f) for f in files]).select("image_id").collect()["image_id"].to_list()
    if ids:
        missing = [i for i in ids if i not in set(known)]
        if missing:
            raise LookupError(f"image id(s) not in the output: {missing[:10]}")
        return list(dict.fromkeys(ids))
    return sorted(random.Random(seed).sample(sorted(known), min(sample, len(known))))


def read_rows(files: list[Path], ids: list[str]) -> list[dict]:
    """Full rows for `ids` only (filter pushed into the Parquet scan), in the order of `ids`."""
    dataset = ds.dataset([str(f) for f in files], format="parquet", schema=annotation_schema())
    try:
        rows = dataset.to_table(filter=pc.field("image_id").isin(ids)).to_pylist()
    except (OSError, pa.ArrowException) as exc:  # footers read, some data page does not
        raise SchemaError(f"{unreadable_file(files, None) or files[0].parent}: data unreadable "
                          f"({type(exc).__name__}: {exc})") from exc
    by_id = {row["image_id"]: row for row in rows}
    return [by_id[i] for i in ids]


def figure_html(row: dict, src: str, note: str | None) -> str:
    extra = ""
    if row["status"] != STATUS_OK and row.get("error"):
        extra += f'<div class="error">error [{html.escape(row["error"]["stage"])}]: ' \
                 f'{html.escape(row["error"]["message"])}</div>'
    if note:
        extra += f'<div class="note">{html.escape(note)}</div>'
    text = row.get("text_aux")
    return FIGURE.format(anchor=html.escape(picture_name(row["image_id"])[:-4]), src=html.escape(src),
                         alt=html.escape(row["image_id"]), image_id=html.escape(row["image_id"]),
                         status=html.escape(row["status"]), extra=extra,
                         text=html.escape(text) if text else "<i>(no verbalized text)</i>")


def local_source(source: str, root: Path | None) -> str:
    """`source` itself, or joined to `root` when it is a relative path and a root is given."""
    if root is None or "://" in source or Path(source).is_absolute():
        return source
    return str(root / source)


def write_gallery(rows: list[dict], out: Path, renderer: Renderer, title: str,
                  source_root: Path | None = None) -> Path:
    """Render every row into out/images/ and write out/index.html; returns the page's path."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    figures, unreadable = [], 0
    for row in rows:
        photo, note = load_photo(local_source(row["source"], source_root))
        unreadable += photo is None
        name = picture_name(row["image_id"])
        renderer(row, photo, note).save(out / "images" / name)
        figures.append(figure_html(row, f"images/{name}", note))
    summary = f"{len(rows)} image(s)" + (f", {unreadable} drawn on grey (source unreadable)" if unreadable else "")
    page = PAGE.format(title=html.escape(title), summary=html.escape(summary), figures="\n".join(figures),
                       width=renderer.config.max_side)
    (out / "index.html").write_text(page, encoding="utf-8")
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline show", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="annotation output: a directory of Parquet files or one file")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", action="append", dest="ids", metavar="ID", help="image id (repeatable)")
    which.add_argument("--sample", type=int, metavar="N", help="N images drawn at random (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="gallery", help="folder for images/ and index.html")
    parser.add_argument("--source-root", type=Path, help="folder that relative `source` paths are under")
    parser.add_argument("--max-side", type=int, default=RenderConfig.max_side, help="longer side in pixels")
    args = parser.parse_args(argv)
    if args.sample is not None and args.sample < 1:
        parser.error(f"--sample must be >= 1, got {args.sample}")
    if args.max_side < 32:
        parser.error(f"--max-side must be >= 32 pixels, got {args.max_side}")
    try:
        files = checked_files(args.output)
        ids = choose_ids(files, args.ids, args.sample, args.seed)
        rows = read_rows(files, ids)
    except (SchemaError, LookupError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    config = RenderConfig(max_side=args.max_side, verbalize=VerbalizeConfig.recorded(read_provenance(files[0])))
    page = write_gallery(rows, Path(args.out), Renderer(config),
                         title=f"{args.output}: {len(ids)} image(s)", source_root=args.source_root)
    print(f"wrote {len(ids)} picture(s) to {Path(args.out) / 'images'} and the gallery {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
