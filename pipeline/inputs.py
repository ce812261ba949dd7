"""What to annotate: a list of (image_id, source) from a directory, glob, manifest or conversation JSON.

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
