"""What a run has to do, worked out in Ray tasks: the driver holds object references and counts,
never a row per image (docs/pipeline.md §Scale).

Image ids are hashed to 64 bits where they are read. The ids an output already holds become one
table in the object store, sorted by hash (`written_index`), which every task reading the inputs
probes: a broadcast join. Ray Data's own `join` / `groupby` are hash shuffles: nothing comes out of
them before every input has gone in (the first image would wait for a full pass over the corpus),
and their shuffle actors reserve CPUs the annotator pools then cannot get. Probing a broadcast
table needs neither.

Passes over the inputs:
- `count_inputs`: how many inputs, how many already written, and whether an id repeats (the ids
  are the resume key: a repeated id is refused, naming it and both sources);
- `pending`: the inputs not yet written, in blocks of a bounded number of rows;
- `write_lost_rows`: after a run, the inputs that reached no file become error rows, written by
  the tasks that find them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from schemas.schema import STATUS_ERROR, error_row, rows_to_table

from .inputs import filesystem_for
from .resume import data_files, may_hold_errors, write_atomic

INDEX_SCHEMA = pa.schema([("hash", pa.uint64()), ("image_id", pa.string())])
FILES_PER_TASK = 500  # output files one index task reads (two columns each, on threads)


def id_hashes(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(N,) uint64: a 64-bit hash of each id, on the Arrow strings (Polars, fixed seed: the same in
    every process of a run; the hashes are never stored, so a Polars upgrade cannot mix two kinds)."""
    return pl.from_arrow(ids.cast(pa.string())).hash(seed=0).to_numpy()


def written_mask(ids: pa.Array | pa.ChunkedArray, index: pa.Table | None) -> np.ndarray:
    """(N,) bool: which ids the index holds. Exact: a hash hit is confirmed on the id itself."""
    if index is None or index.num_rows == 0 or len(ids) == 0:
        return np.zeros(len(ids), bool)
    hashes, known = index.column("hash").to_numpy(), index.column("image_id")
    wanted = id_hashes(ids)
    order = np.argsort(wanted)  # sorted queries walk the index in order: ~3x faster than random probes
    low, high = np.empty(len(ids), np.int64), np.empty(len(ids), np.int64)
    low[order] = np.searchsorted(hashes, wanted[order], "left")
    high[order] = np.searchsorted(hashes, wanted[order], "right")
    hit = np.flatnonzero(high > low)
    mask = np.zeros(len(ids), bool)
    if len(hit) == 0:
        return mask
    ids = pa.chunked_array([ids]) if isinstance(ids, pa.Array) else ids
    same = pc.equal(ids.take(pa.array(hit)), known.take(pa.array(low[hit]))).to_numpy(zero_copy_only=False)
    mask[hit[same]] = True
    # Two written ids with one hash (about one in 10^11 at 10^8 ids): compare the rest one by one.
    for row in hit[~same & (high[hit] - low[hit] > 1)]:
        mask[row] = ids[int(row)].as_py() in known.slice(low[row] + 1, high[row] - low[row] - 1).to_pylist()
    return mask


def _index_part(paths: list[str], output: str, skip_errors: bool) -> pa.Table:
    """Ray task: (hash, image_id) of the rows in `paths`; with skip_errors, ok rows only."""
    fs, _ = filesystem_for(output)
    table = pads.dataset(paths, filesystem=fs, format="parquet").to_table(columns=["image_id", "status"])
    if skip_errors:
        table = table.filter(pc.not_equal(table.column("status"), STATUS_ERROR))
    ids = table.column("image_id").cast(pa.string())
    return pa.table({"hash": id_hashes(ids), "image_id": ids}, schema=INDEX_SCHEMA)


def _merge_index(*parts: pa.Table) -> pa.Table:
    """Ray task: one table sorted by hash (what `written_mask` searches)."""
    table = pa.concat_tables(parts)
    return table.take(pa.array(np.argsort(table.column("hash").to_numpy(), kind="stable")))


def written_index(ray, output: str, skip_errors: bool):
    """An ObjectRef to the sorted (hash, image_id) table of the ids the output holds, or None.

    The driver lists the files (one name each); tasks read the `image_id`/`status` columns."""
    fs, root = filesystem_for(output)
    files = data_files(fs, root)
    if not files:
        return None
    part = ray.remote(_index_part)
    parts = [part.remote(files[i:i + FILES_PER_TASK], output, skip_errors)
             for i in range(0, len(files), FILES_PER_TASK)]
    return ray.remote(_merge_index).remote(*parts)


def error_ids(output: str) -> pa.Array:
    """The ids of the output's error rows, reading only the files whose footer statistics for
    `status` allow an error (its min and max are both "ok" in a file without one)."""
    fs, root = filesystem_for(output)
    found = []
    for path in data_files(fs, root):
        if may_hold_errors(pq.ParquetFile(path, filesystem=fs).metadata):
            table = pq.read_table(path, filesystem=fs, columns=["image_id", "status"])
            found.append(table.filter(pc.equal(table.column("status"), STATUS_ERROR)).column("image_id"))
    return pa.chunked_array([c for part in found for c in part.chunks], pa.string()).combine_chunks()


def _probe(batch: pa.Table, index: list) -> pa.Table:
    """map_batches: per input row its id hash and whether the output already holds it."""
    import ray
    table = ray.get(index[0]) if index else None  # zero-copy from the object store
    return pa.table({"hash": id_hashes(batch.column("image_id")),
                     "written": written_mask(batch.column("image_id"), table)})


def _repeats(*parts: pa.Table) -> tuple[int, int, np.ndarray]:
    """Ray task: (inputs, already written, hashes seen more than once)."""
    hashes = np.sort(np.concatenate([p.column("hash").to_numpy() for p in parts] or [np.zeros(0, np.uint64)]))
    written = sum(int(pc.sum(p.column("written")).as_py() or 0) for p in parts)
    return len(hashes), written, np.unique(hashes[1:][hashes[1:] == hashes[:-1]])


@dataclass(frozen=True)
class Counts:
    inputs: int
    written: int   # inputs whose id the output already holds

    @property
    def todo(self) -> int:
        return self.inputs - self.written


def count_inputs(ray, ds, index) -> Counts:
    """One pass over the inputs (ds: image_id, source): counts, and a ValueError on a repeated id."""
    probed = ds.map_batches(_probe, batch_format="pyarrow", fn_kwargs={"index": [index] if index else []})
    total, written, repeated = ray.get(ray.remote(_repeats).remote(*probed.to_arrow_refs()))
    message = repeat_message(ds, repeated) if len(repeated) else None
    if message:
        raise ValueError(message)
    return Counts(total, written)


def repeat_message(ds, repeated: np.ndarray) -> str | None:
    """Reads the rows whose hash repeats (of the first 100 such hashes) to name a repeated id and
    its two sources; None when they are two different ids with one hash (a collision, no repeat)."""
    hits = ds.map_batches(_rows_with_hashes, batch_format="pyarrow", fn_kwargs={"hashes": repeated[:100]}).take_all()
    first: dict[str, str] = {}
    for row in hits:
        if row["image_id"] in first:
            return f"image_id {row['image_id']!r} appears twice ({first[row['image_id']]} and {row['source']})"
        first[row["image_id"]] = row["source"]
    return None


def _rows_with_hashes(batch: pa.Table, hashes: np.ndarray) -> pa.Table:
    return batch.filter(pa.array(np.isin(id_hashes(batch.column("image_id")), hashes)))


def _drop_written(batch: pa.Table, index: list) -> pa.Table:
    import ray
    return batch.filter(pa.array(~written_mask(batch.column("image_id"), ray.get(index[0]))))


def _among(batch: pa.Table, ids: pa.Array) -> pa.Table:
    return batch.select(["image_id"]).filter(pc.is_in(batch.column("image_id"), value_set=ids))


def inputs_among(ds, ids: pa.Array) -> set:
    """Which of a few ids (error rows to retry) are inputs."""
    if len(ids) == 0:
        return set()
    return {row["image_id"] for row in ds.map_batches(_among, batch_format="pyarrow",
                                                       fn_kwargs={"ids": ids}).take_all()}


def block_rows_for(todo: int, decode_batch_size: int, block_rows: int) -> int:
    """Rows per block: about a thousand blocks of a small run (many tasks to spread), never more than
    `block_rows` (what Ray giving up on one block costs), never fewer than a decode batch."""
    return max(1, min(block_rows, max(decode_batch_size, -(-todo // 1000))))


def pending(ds, index, rows_per_block: int, num_cpus: float):
    """The inputs the output does not hold yet, in blocks of at most rows_per_block rows, on tasks
    of `num_cpus` (the decode budget: the annotator pools may hold every other CPU)."""
    if index is not None:
        ds = ds.map_batches(_drop_written, batch_format="pyarrow", fn_kwargs={"index": [index]}, num_cpus=num_cpus)
    return bounded_blocks(ds, rows_per_block, num_cpus)


def bounded_blocks(ds, rows_per_block: int, num_cpus: float):
    """`ds.repartition(target_num_rows_per_block=...)` (a streaming split, no shuffle) on tasks of
    `num_cpus`. Dataset.repartition gives its tasks one CPU and no way to ask for less; on a machine
    whose CPUs the actor pools and decode share exactly (placement.fit_to_machine) such a task is
    never scheduled and the run waits forever. Same logical operator, with the resources set."""
    import dataclasses
    from ray.data._internal.logical.interfaces import LogicalPlan
    split = ds.repartition(target_num_rows_per_block=rows_per_block)
    op = dataclasses.replace(split._logical_plan.dag, ray_remote_args={"num_cpus": num_cpus})
    return type(ds)._from_parent(ds, LogicalPlan(op, ds.context))


def _write_lost(batch: pa.Table, index: list, output: str, provenance: dict, reason: str, run_id: str,
                ) -> pa.Table:
    """map_batches: this batch's inputs that no file holds, written as `worker` error rows."""
    import ray
    import uuid
    lost = batch.filter(pa.array(~written_mask(batch.column("image_id"), ray.get(index[0]) if index else None)))
    if lost.num_rows:
        rows = [error_row(i, s, "worker", reason) for i, s in
                zip(lost.column("image_id").to_pylist(), lost.column("source").to_pylist())]
        fs, root = filesystem_for(output)
        write_atomic(fs, root, f"part-lost-{run_id}-{uuid.uuid4().hex[:8]}.parquet", rows_to_table(rows, provenance))
    return pa.table({"lost": [lost.num_rows]})


def write_lost_rows(ray, ds, output: str, provenance: dict, reason: str, run_id: str) -> int:
    """Images of this run that reached no file (Ray Data gave up on their block) become error rows."""
    index = written_index(ray, output, skip_errors=False)
    counted = ds.map_batches(_write_lost, batch_format="pyarrow", fn_kwargs={
        "index": [index] if index else [], "output": output, "provenance": provenance, "reason": reason,
        "run_id": run_id})
    return sum(int(pc.sum(batch["lost"]).as_py() or 0) for batch in counted.iter_batches(batch_format="pyarrow"))
