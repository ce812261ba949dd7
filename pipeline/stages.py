"""Ray Data stage functions around the annotators (which know nothing of Ray).

`AnnotateStage` is the callable class one actor pool runs: it builds its annotator once, maps a
decoded batch to the annotator's schema columns, and turns per-image failures (a `Failed`, an
exception on that image, a result that does not fit the schema) into error rows. `finalize` makes
the rows the contract says: verbalized text, null annotator columns on error rows.

Crash loops: an image that kills the worker process (a segfault in the model) becomes its own
error row instead of killing every restarted actor (in-flight markers under the output, seen by
every node: pipeline/inflight.py).
"""
from __future__ import annotations

import importlib
import json

import pyarrow as pa
import pyarrow.compute as pc

from annotators.base import Failed, run_isolating, run_one, set_offline
from schemas.schema import (ANNOTATION_SCHEMA, ANNOTATOR_COLUMNS, ERROR, STATUS_ERROR, STATUS_OK, TEXT_COLUMNS,
                            VERBALIZED_COLUMNS)
from schemas.verbalize import VerbalizeConfig, verbalize_row

from .decode import images_of
from .inflight import BatchRecord, BatchState, Markers
from .placement import placed_options

PROVENANCE_PREFIX = "__provenance__"  # per-row provenance JSON, folded into file metadata by the sink


def annotator_class(kind: str) -> type:
    """A registry name ('panoptic') or an importable 'package.module:Class'."""
    if ":" in kind:
        module, name = kind.split(":", 1)
        return getattr(importlib.import_module(module), name)
    from annotators.registry import annotator_class as registered
    return registered(kind)


def build_annotator(kind: str, options: dict, placement=None):
    """The annotator; with `placement` (its AnnotatorStage, inside a Ray actor) on the actor's device."""
    cls = annotator_class(kind)
    if placement is not None:
        gpu_ids = []
        if placement.num_gpus > 0:
            import ray
            gpu_ids = ray.get_gpu_ids()
        options = placed_options(options, cls, placement, gpu_ids)
    return cls(cls.Config(**options))


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    index = table.schema.get_field_index(name)
    if index < 0:
        return table.append_column(name, values)
    return table.set_column(index, name, values)


class AnnotateStage:
    """One actor of an annotator's pool: `__init__` loads the model, `__call__` maps a batch."""

    def __init__(self, stage: str, kind: str, options: dict, working_size: int, inflight_dir: str = "",
                 placement=None):
        set_offline()
        self.stage = stage
        self.working_size = working_size
        self.markers = Markers(f"{inflight_dir}/{stage}") if inflight_dir else None
        self.annotator = build_annotator(kind, options, placement)
        self.columns = tuple(self.annotator.columns)
        self.provenance = json.dumps({"kind": kind, **self.annotator.provenance()}, sort_keys=True, default=str)

    def _annotate_guarded(self, images, ids: list[str]) -> list:
        """`run_isolating` on the annotator, with markers so a batch whose earlier attempt killed the
        worker cannot loop: its retry runs image by image and skips the image that was in flight."""
        if self.markers is None:
            return run_isolating(self.annotator, images)
        record = self.markers.batch(ids)
        if record is None:
            self.markers.set_batch(ids, BatchRecord(BatchState.NEW))
            try:
                return run_isolating(self.annotator, images)
            finally:  # not reached when the process dies: that is what leaves the marker
                self.markers.clear_batch(ids)
        # an ISOLATED batch already finished image by image; its task is retried for a later crash
        deaths = record.deaths + (0 if record.state is BatchState.ISOLATED else 1)
        self.markers.set_batch(ids, BatchRecord(BatchState.CRASHED, deaths))
        results = []
        for image, image_id in zip(images, ids):
            if self.markers.image_in_flight(image_id):
                results.append(Failed(f"worker process died while annotating this image "
                                      f"(crashed {deaths} times)"))
                continue
            self.markers.mark_image(image_id)
            try:
                results.append(run_one(self.annotator, image))
            finally:
                self.markers.clear_image(image_id)
        self.markers.set_batch(ids, BatchRecord(BatchState.ISOLATED, deaths))
        return results

    def _typed(self, result: dict) -> dict | Failed:
        """The result's columns as Arrow values, or Failed when they do not fit the contract."""
        try:
            return {c: pa.array([result.get(c)], ANNOTATION_SCHEMA.field(c).type) for c in self.columns}
        except Exception as exc:
            return Failed(f"result does not fit the schema: {type(exc).__name__}: {exc}")

    def __call__(self, batch: pa.Table) -> pa.Table:
        status = batch.column("status").to_pylist()
        errors = batch.column("error").to_pylist()
        ok_rows = [i for i, s in enumerate(status) if s == STATUS_OK]
        results: dict[int, dict | Failed] = {}
        if ok_rows:
            ok_batch = batch.take(ok_rows)
            images = images_of(ok_batch, self.working_size)  # (B, S, S, 3)
            try:
                raw = self._annotate_guarded(images, [str(i) for i in ok_batch.column("image_id").to_pylist()])
            except Exception as exc:
                raw = [Failed(f"{type(exc).__name__}: {exc}")]
            for row, result in zip(ok_rows, raw):
                results[row] = result if isinstance(result, Failed) else self._typed(result)
        cells: dict[str, list] = {c: [] for c in self.columns}
        for row in range(batch.num_rows):
            result = results.get(row)
            if isinstance(result, Failed):
                status[row] = STATUS_ERROR
                errors[row] = {"stage": self.stage, "message": result.message[:2000]}
            for column in self.columns:
                cells[column].append(result[column] if isinstance(result, dict) else
                                     pa.nulls(1, ANNOTATION_SCHEMA.field(column).type))
        batch = _set_column(batch, "status", pa.array(status, pa.string()))
        batch = _set_column(batch, "error", pa.array(errors, ERROR))
        for column in self.columns:
            batch = _set_column(batch, column, pa.concat_arrays(cells[column]) if cells[column]
                                else pa.nulls(0, ANNOTATION_SCHEMA.field(column).type))
        return _set_column(batch, PROVENANCE_PREFIX + self.stage,
                           pa.array([self.provenance] * batch.num_rows, pa.string()))


def finalize(batch: pa.Table, verbalize: VerbalizeConfig) -> pa.Table:
    """Decoded + annotated rows -> contract rows (+ provenance columns): verbalize, clear error rows."""
    is_error = pc.equal(batch.column("status"), STATUS_ERROR)
    columns = {}
    for field in ANNOTATION_SCHEMA:
        if field.name in batch.schema.names:
            values = batch.column(field.name)
        else:
            values = pa.nulls(batch.num_rows, field.type)
        if field.name in ANNOTATOR_COLUMNS:
            values = pc.if_else(is_error, pa.nulls(batch.num_rows, field.type), values)
        columns[field.name] = values
    table = pa.table(columns, schema=ANNOTATION_SCHEMA)
    texts = [verbalize_row(row, verbalize) for row in
             table.select(list(VERBALIZED_COLUMNS)).to_pylist()]
    for name in TEXT_COLUMNS:
        table = _set_column(table, name, pa.array([t[name] for t in texts], pa.string()))
    for name in batch.schema.names:
        if name.startswith(PROVENANCE_PREFIX):
            table = table.append_column(name, batch.column(name))
    return table
