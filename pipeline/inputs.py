"""What to annotate: (image_id, source) rows from a manifest, directory, glob or conversation JSON.

A manifest (Parquet or CSV: `id,path`) is the scalable input: `input_dataset` reads it with Ray Data
in parallel tasks, so the driver never holds a row of it. Directories, globs and conversation JSON
are listed on the driver (`list_inputs`), which is fine up to a few million images; beyond that,
write a manifest (docs/pipeline.md §Scale).

image_id is stable across runs and machines: the path relative to the directory / glob root, the
manifest's `id`, or the conversation JSON's `image` value. `source` is what decode opens: a local
path or a pyarrow filesystem URI (s3://, gs://, hdfs://, file://).
"""
from __future__ import annotations

import csv
import glob as globlib
import io
import json
from dataclasses import dataclass
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from schemas.image import filesystem_for

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
MANIFEST_SUFFIXES = (".parquet", ".csv")
CONVERSATION_SUFFIXES = (".json", ".jsonl")


@dataclass(frozen=True)
class Item:
    image_id: str
    source: str


def has_scheme(uri: str) -> bool:
    return "://" in uri


def join_source(root: str, relative: str) -> str:
    """root + relative, keeping a URI scheme; absolute paths and URIs in `relative` win."""
    if has_scheme(relative) or relative.startswith("/") or not root:
        return relative
    return root.rstrip("/") + "/" + relative


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_SUFFIXES)


def list_directory(uri: str) -> list[Item]:
    fs, root = filesystem_for(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    items = []
    for info in infos:
        if info.type != pafs.FileType.File or not _is_image(info.path):
            continue
        relative = PurePosixPath(info.path).relative_to(PurePosixPath(root.rstrip("/") or "/")).as_posix()
        items.append(Item(relative, join_source(uri, relative)))
    return items


def list_glob(pattern: str) -> list[Item]:
    """Local glob (`**` allowed); image_id is relative to the part before the first wildcard."""
    if has_scheme(pattern):
        raise ValueError(f"globs work on local paths only; for {pattern!r} name the directory instead")
    root = pattern
    while any(ch in PurePosixPath(root).name for ch in "*?["):
        root = str(PurePosixPath(root).parent)
    paths = sorted(p for p in globlib.glob(pattern, recursive=True) if _is_image(p))
    return [Item(PurePosixPath(p).relative_to(root).as_posix() if root not in ("", ".") else p, p)
            for p in paths]


def _read_text(uri: str) -> str:
    fs, path = filesystem_for(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read().decode("utf-8")


def read_manifest(uri: str, image_root: str = "") -> list[Item]:
    """A Parquet or CSV table with columns `id` and `path` (relative paths resolve against image_root)."""
    if uri.lower().endswith(".parquet"):
        fs, path = filesystem_for(uri)
        rows = pq.read_table(path, filesystem=fs, columns=["id", "path"]).to_pylist()
    else:
        rows = list(csv.DictReader(io.StringIO(_read_text(uri))))
        if rows and not {"id", "path"} <= set(rows[0]):
            raise ValueError(f"{uri}: a CSV manifest needs the header 'id,path', got {sorted(rows[0])}")
    return [Item(str(row["id"]), join_source(image_root, str(row["path"]))) for row in rows]


def read_conversations(uri: str, image_root: str = "") -> list[Item]:
    """A LLaVA / ShareGPT4V conversation file: each distinct `image` value once, in first-seen order."""
    text = _read_text(uri)
    if uri.lower().endswith(".jsonl"):
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        records = json.loads(text)
    if not isinstance(records, list):
        raise ValueError(f"{uri}: expected a JSON list of conversation records")
    seen: dict[str, None] = {}
    for record in records:
        image = record.get("image") if isinstance(record, dict) else None
        for name in image if isinstance(image, list) else [image]:
            if isinstance(name, str) and name:
                seen.setdefault(name, None)
    return [Item(name, join_source(image_root, name)) for name in seen]


def _default_root(uri: str) -> str:
    return uri.rsplit("/", 1)[0] if "/" in uri else ""


def list_inputs(uri: str, image_root: str = "") -> list[Item]:
    """Every image to annotate, sorted by image_id; duplicate ids are an error (ids are the resume key)."""
    lower = uri.lower()
    if any(ch in uri for ch in "*?["):
        items = list_glob(uri)
    elif lower.endswith(MANIFEST_SUFFIXES):
        items = read_manifest(uri, image_root or _default_root(uri))
    elif lower.endswith(CONVERSATION_SUFFIXES):
        items = read_conversations(uri, image_root or _default_root(uri))
    else:
        fs, path = filesystem_for(uri)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            items = list_directory(uri)
        elif info.type == pafs.FileType.File and _is_image(path):
            items = [Item(PurePosixPath(path).name, uri)]
        else:
            raise ValueError(f"input {uri!r} is not a directory, glob, image, manifest (.parquet/.csv) "
                             f"or conversation JSON")
    ids: dict[str, str] = {}
    for item in items:
        if item.image_id in ids:
            raise ValueError(f"image_id {item.image_id!r} appears twice ({ids[item.image_id]} and {item.source})")
        ids[item.image_id] = item.source
    return sorted(items, key=lambda item: item.image_id)


def is_manifest(uri: str) -> bool:
    return uri.lower().endswith(MANIFEST_SUFFIXES) and not any(ch in uri for ch in "*?[")


def check_manifest_header(uri: str) -> None:
    """The manifest's columns, from its footer or first line: a one-line error before any Ray work."""
    fs, path = filesystem_for(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        raise ValueError(f"manifest {uri!r} does not exist")
    if uri.lower().endswith(".parquet"):
        names = pq.ParquetDataset(path, filesystem=fs).schema.names
    else:
        with fs.open_input_stream(path) as stream:
            names = next(csv.reader(io.StringIO(stream.read(1 << 16).decode("utf-8", "replace"))), [])
    if not {"id", "path"} <= set(names):
        raise ValueError(f"{uri}: a manifest needs the columns 'id,path', got {sorted(names)}")


def resolve_sources(batch: pa.Table, image_root: str, uri: str) -> pa.Table:
    """map_batches: manifest (id, path) -> (image_id, source), paths resolved against image_root."""
    ids, paths = batch.column("id").cast(pa.string()), batch.column("path").cast(pa.string())
    if ids.null_count or paths.null_count:
        raise ValueError(f"{uri}: a manifest row has an empty id or path")
    if image_root:
        keep = pc.or_(pc.match_substring(paths, "://"), pc.starts_with(paths, "/"))
        paths = pc.if_else(keep, paths, pc.binary_join_element_wise(image_root.rstrip("/"), paths, "/"))
    return pa.table({"image_id": ids, "source": paths})


def read_csv_manifest(batch: pa.Table, uri: str):
    """map_batches over one row (the file): the CSV's `id,path` columns, streamed in record batches.
    A malformed row stops the run with pyarrow's one-line reason (Ray's read_csv replaces it with a
    generic message)."""
    fs, path = filesystem_for(uri)
    convert = pacsv.ConvertOptions(include_columns=["id", "path"], strings_can_be_null=False,
                                   column_types={"id": pa.string(), "path": pa.string()})
    try:
        with fs.open_input_stream(path) as stream:
            reader = pacsv.open_csv(stream, parse_options=pacsv.ParseOptions(newlines_in_values=True),
                                    convert_options=convert)
            for record_batch in reader:
                yield pa.Table.from_batches([record_batch])
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{uri}: {str(exc).splitlines()[0]}") from None


def input_dataset(ray, uri: str, image_root: str = "", listed: list[Item] | None = None, num_cpus: float = 1.0):
    """A Ray Data dataset of (image_id, source): a manifest is read in Ray tasks (only its `id` and
    `path` columns), anything else is listed here first. Duplicate ids are checked by the caller's
    pass over the dataset (pipeline/plan.py), a listing's here (or by whoever passes `listed`).
    `num_cpus` per read task: the run's input side takes the decode budget (pipeline/plan.py `pending`)."""
    if not is_manifest(uri):
        items = list_inputs(uri, image_root) if listed is None else listed
        return ray.data.from_arrow(pa.table({"image_id": pa.array([i.image_id for i in items], pa.string()),
                                             "source": pa.array([i.source for i in items], pa.string())}))
    fs, path = filesystem_for(uri)
    if uri.lower().endswith(".parquet"):
        ds = ray.data.read_parquet(path, filesystem=fs, columns=["id", "path"], num_cpus=num_cpus)
    else:
        ds = ray.data.from_items([{"file": uri}]).map_batches(
            read_csv_manifest, batch_format="pyarrow", fn_kwargs={"uri": uri}, num_cpus=num_cpus)
    return ds.map_batches(resolve_sources, batch_format="pyarrow", num_cpus=num_cpus,
                          fn_kwargs={"image_root": image_root or _default_root(uri), "uri": uri})
