"""Read, validate and re-verbalize annotation tables."""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .schema import (
    ANNOTATION_SCHEMA, PROVENANCE_KEY, SCHEMA_VERSION, SCHEMA_VERSION_KEY, STATUS_ERROR, STATUS_OK,
    STATUSES, TEXT_COLUMNS, VERBALIZED_COLUMNS, annotation_schema,
)
from .verbalize import VerbalizeConfig, verbalize_row


class SchemaError(ValueError):
    """A file or table does not follow the annotation contract; the message says where."""


def parquet_files(path: str | os.PathLike) -> list[Path]:
    """The data files of an output: one file, or every visible *.parquet below a directory.

    Names starting with '.' or '_' (temporary and marker files of writers) are never data.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SchemaError(f"{path}: no such file or directory")
    files = sorted(p for p in path.rglob("*.parquet")
                   if not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))
    if not files:
        raise SchemaError(f"{path}: no .parquet files found")
    return files


def _check_type(where: str, actual: pa.DataType, expected: pa.DataType) -> list[str]:
    if actual.equals(expected):
        return []
    return [f"{where}: type {actual} but the contract says {expected}"]


def schema_problems(schema: pa.Schema) -> list[str]:
    """Every way `schema` differs from the contract (empty list = conforms)."""
    problems = []
    version = (schema.metadata or {}).get(SCHEMA_VERSION_KEY)
    if version is None:
        problems.append("file metadata lacks moai.schema_version: not an annotation table")
    elif version.decode() != SCHEMA_VERSION:
        problems.append(f"schema version {version.decode()!r}, this reader understands {SCHEMA_VERSION!r}")
    for field in ANNOTATION_SCHEMA:
        index = schema.get_field_index(field.name)
        if index < 0:
            problems.append(f"column {field.name!r} is missing")
            continue
        problems += _check_type(f"column {field.name!r}", schema.field(index).type, field.type)
    extra = set(schema.names) - set(ANNOTATION_SCHEMA.names)
    if extra:
        problems.append(f"unexpected columns {sorted(extra)}")
    return problems


def row_problems(table: pa.Table, limit: int = 10) -> list[str]:
    """Row-level rules: unique ids, known statuses, error present iff status is error."""
    problems = []
    status = table.column("status")
    unknown = pc.invert(pc.is_in(status, pa.array(STATUSES)))
    if pc.any(unknown).as_py():
        bad = pc.unique(pc.filter(status, unknown)).to_pylist()
        problems.append(f"status must be one of {STATUSES}, found {bad[:limit]}")
    has_error = pc.is_valid(table.column("error"))
    is_error = pc.equal(status, STATUS_ERROR)
    mismatch = pc.xor(has_error, is_error)
    if pc.any(mismatch).as_py():
        ids = pc.filter(table.column("image_id"), mismatch).to_pylist()[:limit]
        problems.append(f"'error' must be set exactly on rows with status 'error'; violated by {ids}")
    ids = table.column("image_id")
    if len(pc.unique(ids)) != len(ids):
        counts = pc.value_counts(ids)
        dup = [c["values"] for c in counts.to_pylist() if c["counts"] > 1][:limit]
        problems.append(f"image_id must be unique; duplicated: {dup}")
    return problems


def checked_files(path: str | os.PathLike) -> list[Path]:
    """The data files of `path`, each checked against the contract (schema, version, row rules,
    readable data pages) by reading one column; SchemaError otherwise."""
    read_annotations(path, columns=["status"])
    return parquet_files(path)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, for a command's `error:` line."""
    return " ".join(part.strip(" -") for part in str(exc).splitlines() if part.strip())


def read_provenance(path: str | os.PathLike) -> dict:
    """The provenance JSON of one annotation file (or of the first file of a directory)."""
    meta = pq.read_schema(parquet_files(path)[0]).metadata or {}
    if PROVENANCE_KEY not in meta:
        return {}
    return json.loads(meta[PROVENANCE_KEY])


ROW_RULE_COLUMNS = ("image_id", "status", "error")  # what `row_problems` reads


def unreadable_file(files: list[Path], columns: list[str] | None) -> Path | None:
    """The first of `files` whose data (not just footer) cannot be read."""
    for f in files:
        try:
            pq.read_table(f, columns=columns)
        except (OSError, pa.ArrowException):
            return f
    return None


def read_annotations(path: str | os.PathLike, columns: list[str] | None = None,
                     validate_rows: bool = True) -> pa.Table:
    """Read an annotation file or output directory, checking it against the contract.

    The row rules (ids unique across every file, error iff status) hold whatever `columns` asks
    for: their three columns are read too, checked, then dropped. Raises SchemaError naming the
    file and every problem found.
    """
    files = parquet_files(path)
    for f in files:
        try:
            schema = pq.read_schema(f)
        except Exception as exc:  # not Parquet at all
            raise SchemaError(f"{f}: not a readable Parquet file ({exc})") from exc
        problems = schema_problems(schema)
        if problems:
            raise SchemaError(f"{f} does not follow the annotation schema v{SCHEMA_VERSION}:\n  - "
                              + "\n  - ".join(problems))
    dataset = ds.dataset([str(f) for f in files], format="parquet", schema=annotation_schema())
    wanted = columns if columns is None or not validate_rows else list(dict.fromkeys([*columns, *ROW_RULE_COLUMNS]))
    try:
        table = dataset.to_table(columns=wanted)
    except (OSError, pa.ArrowException) as exc:  # a footer that reads, data pages that do not
        raise SchemaError(f"{unreadable_file(files, wanted) or path}: data unreadable "
                          f"({type(exc).__name__}: {exc})") from exc
    if validate_rows:
        problems = row_problems(table)
        if problems:
            raise SchemaError(f"{path}: rows break the annotation contract:\n  - " + "\n  - ".join(problems))
    return table if columns is None else table.select(columns)


def reverbalize(table: pa.Table, cfg: VerbalizeConfig = VerbalizeConfig()) -> pa.Table:
    """The same table with the five text columns recomputed under `cfg` (no model runs)."""
    texts = {name: [] for name in TEXT_COLUMNS}
    for row in table.select(list(VERBALIZED_COLUMNS)).to_pylist():
        for name, value in verbalize_row(row, cfg).items():
            texts[name].append(value)
    for name in TEXT_COLUMNS:
        table = table.set_column(table.schema.get_field_index(name), table.schema.field(name),
                                 pa.array(texts[name], pa.string()))
    meta = dict(table.schema.metadata or {})
    prov = json.loads(meta.get(PROVENANCE_KEY, b"{}"))
    prov["verbalization"] = {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(cfg).items()}
    meta[PROVENANCE_KEY] = json.dumps(prov, sort_keys=True).encode()
    return table.replace_schema_metadata(meta)


def reverbalize_files(src: str | os.PathLike, dst: str | os.PathLike,
                      cfg: VerbalizeConfig = VerbalizeConfig()) -> int:
    """Re-verbalize every file of `src` into `dst` (same relative names). Returns rows written.

    All of `src` is checked first (schemas, and ids unique across its files); the files are written
    into a hidden folder of `dst` and moved into place only when every one is written, so a failure
    leaves `dst` as it was."""
    import shutil
    src, dst = Path(src), Path(dst)
    files = parquet_files(src)
    read_annotations(src, columns=["image_id"])  # every file's schema, and the row rules across files
    staging = dst / f".reverbalize-{os.getpid()}"
    names = [f.relative_to(src) if src.is_dir() else Path(f.name) for f in files]
    total = 0
    try:
        for f, name in zip(files, names):
            table = reverbalize(read_annotations(f), cfg)
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, staging / name)
            total += table.num_rows
        for name in names:
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, dst / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return total


def count_by_status(table: pa.Table) -> dict[str, int]:
    counts = {s: 0 for s in (STATUS_OK, STATUS_ERROR)}
    for item in pc.value_counts(table.column("status")).to_pylist():
        counts[item["values"]] = item["counts"]
    return counts
