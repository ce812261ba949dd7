"""Resume: the output is its own checkpoint, and a visible file is always a complete file.

Every Parquet file is written under `OUTPUT/_tmp/` and renamed into `OUTPUT/` when complete, so a
killed run leaves only whole files (plus `_tmp/` debris, which readers skip: names starting with
'_' or '.' are never data, as in `schemas.parquet_files`). A re-run reads the image_ids of the
visible files and annotates only the rest; a write task that Ray retries rewrites the same file
name, so no row is doubled.

Ray Data's own `DataContext.checkpoint_config` is not used: it records ids in a separate
checkpoint store after each block is written, so a driver killed between the data write and the
checkpoint write doubles rows on resume, and it needs a cluster-shared checkpoint path besides the
output. Here the data files are the only record.
"""
from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.data import Datasink

from schemas.schema import STATUS_ERROR, STATUS_OK, annotation_schema

from .inputs import filesystem_for
from .stages import PROVENANCE_PREFIX

TMP_DIR = "_tmp"


def data_files(fs: pafs.FileSystem, root: str) -> list[str]:
    """The visible *.parquet files below root (no part of the relative path starts with '_' or '.')."""
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        return []
    files = []
    for entry in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        relative = PurePosixPath(entry.path).relative_to(PurePosixPath(root)).parts
        if entry.type == pafs.FileType.File and entry.path.endswith(".parquet") \
                and not any(part.startswith(("_", ".")) for part in relative):
            files.append(entry.path)
    return sorted(files)


def write_atomic(fs: pafs.FileSystem, root: str, name: str, table: pa.Table) -> str:
    """Write `table` to root/_tmp/name, then move it to root/name. Returns the final path."""
    tmp = f"{root}/{TMP_DIR}/{name}"
    final = f"{root}/{name}"
    fs.create_dir(f"{root}/{TMP_DIR}", recursive=True)
    pq.write_table(table, tmp, filesystem=fs)
    fs.move(tmp, final)
    return final


@dataclass(frozen=True)
class Done:
    """What an output already holds: image_id -> status."""
    status: dict

    def ids(self, retry_errors: bool) -> set:
        return {i for i, s in self.status.items() if not (retry_errors and s == STATUS_ERROR)}


def read_done(output: str) -> Done:
    fs, root = filesystem_for(output)
    status = {}
    for path in data_files(fs, root):
        table = pq.read_table(path, filesystem=fs, columns=["image_id", "status"])
        status.update(zip(table.column("image_id").to_pylist(), table.column("status").to_pylist()))
    return Done(status)


def drop_rows(output: str, image_ids: set) -> int:
    """Rewrite (atomically) every file holding one of image_ids without those rows; returns rows dropped.

    Used before retrying errors: the old error rows go first, so an interrupted retry leaves the
    images missing (and so retried next time), never doubled. Only files whose footer allows an
    error row are opened (`may_hold_errors`).
    """
    if not image_ids:
        return 0
    fs, root = filesystem_for(output)
    wanted = pa.array(sorted(image_ids), pa.string())
    dropped = 0
    for path in data_files(fs, root):
        if not may_hold_errors(pq.ParquetFile(path, filesystem=fs).metadata):
            continue
        table = pq.read_table(path, filesystem=fs)
        hit = pc.is_in(table.column("image_id"), wanted)
        count = pc.sum(hit).as_py() or 0
        if not count:
            continue
        kept = table.filter(pc.invert(hit))
        name = PurePosixPath(path).relative_to(PurePosixPath(root)).as_posix()
        if kept.num_rows:
            write_atomic(fs, root, name, kept)
        else:
            fs.delete_file(path)
        dropped += count
    return dropped


def may_hold_errors(metadata: pq.FileMetaData) -> bool:
    """False when the footer's `status` statistics say every row is ok (min and max both "ok")."""
    paths = [metadata.schema.column(i).path for i in range(metadata.num_columns)]  # leaf columns
    if "status" not in paths:
        return True
    column = paths.index("status")
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max or stats.min != STATUS_OK or stats.max != STATUS_OK:
            return True
    return False


def clear_tmp(output: str) -> None:
    """Remove what a killed run left behind: half-written files and its in-flight markers (never
    read as data, but they take space)."""
    from .inflight import INFLIGHT_DIR
    fs, root = filesystem_for(output)
    for debris in (TMP_DIR, INFLIGHT_DIR):
        if fs.get_file_info(f"{root}/{debris}").type == pafs.FileType.Directory:
            fs.delete_dir(f"{root}/{debris}")


class AnnotationDatasink(Datasink):
    """Contract rows -> Parquet files of at most rows_per_file rows, written atomically.

    Each file's schema metadata is `schemas.annotation_schema(provenance)`, where provenance is the
    run's (config, versions) plus the provenance the annotator actors reported for those rows.
    Each write task reports what it wrote (rows by status, errors by stage): the run's summary is
    the sum of those reports (`written`), so nothing is read back.
    """

    def __init__(self, output: str, provenance: dict, rows_per_file: int):
        self.output = output
        self.provenance = provenance
        self.rows_per_file = rows_per_file
        self.run_id = uuid.uuid4().hex[:12]
        self.written = Counter()  # "ok", "error", "stage:<name>"; filled when the write completes

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def file_provenance(self, table: pa.Table) -> dict:
        annotators = {}
        for name in table.schema.names:
            if name.startswith(PROVENANCE_PREFIX):
                values = pc.drop_null(table.column(name))
                if len(values):
                    annotators[name[len(PROVENANCE_PREFIX):]] = json.loads(values[0].as_py())
        return {**self.provenance, "annotators": annotators}

    def on_write_complete(self, write_result) -> None:
        for counts in write_result.write_returns:
            self.written.update(counts)

    def write(self, blocks, ctx) -> dict:
        tables = [pa.table(b) if not isinstance(b, pa.Table) else b for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return {}
        table = pa.concat_tables(tables, promote_options="permissive")
        schema = annotation_schema(self.file_provenance(table))
        table = table.select(schema.names)
        if not table.schema.equals(schema, check_metadata=False):
            table = table.cast(schema)
        table = table.replace_schema_metadata(schema.metadata)
        fs, root = filesystem_for(self.output)
        # The name depends only on this run and the task index: a retried task overwrites its own files.
        for part, start in enumerate(range(0, table.num_rows, self.rows_per_file)):
            name = f"part-{self.run_id}-{ctx.task_idx:05d}-{part:03d}.parquet"
            write_atomic(fs, root, name, table.slice(start, self.rows_per_file))
        return written_counts(table)


def written_counts(table: pa.Table) -> dict:
    """{"ok": n, "error": n, "stage:<name>": n} of contract rows, counted by Arrow."""
    counts = {s["values"]: s["counts"] for s in pc.value_counts(table.column("status")).to_pylist()}
    errors = table.filter(pc.equal(table.column("status"), STATUS_ERROR)).column("error")
    for item in pc.value_counts(pc.struct_field(errors, "stage")).to_pylist():
        counts[f"stage:{item['values']}"] = item["counts"]
    return counts
