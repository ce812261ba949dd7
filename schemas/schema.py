"""The annotation contract: one Parquet row per input image.

Pipeline writes it, trainer and inspection read it. Every nested field is a plain Arrow
struct/list so Polars reads the file without help (`pl.scan_parquet`), and boxes are
fixed-size lists of 4 (Polars `Array(Float32, 4)`).

Raw model outputs are stored above each model's *low* threshold; MoAI's keep-thresholds
are applied only by the verbalizer (`schemas.verbalize`), so texts can be recomputed
with other thresholds without rerunning a model (`schemas.reverbalize`).
"""
from __future__ import annotations

import json

import pyarrow as pa

SCHEMA_VERSION = "1.0"
PROVENANCE_KEY = b"moai.provenance"
SCHEMA_VERSION_KEY = b"moai.schema_version"

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUSES = (STATUS_OK, STATUS_ERROR)

# Normalized [x0, y0, x1, y1] in 0..1 of the original image (MoAI squashes, so this equals
# pixel coordinates at the working resolution divided by its size).
BOX = pa.list_(pa.float32(), 4)

ERROR = pa.struct([
    pa.field("stage", pa.string(), nullable=False),    # decode | panoptic | owod | sgg | ocr | ...
    pa.field("message", pa.string(), nullable=False),
])

SEGMENT = pa.struct([
    pa.field("segment_id", pa.int32(), nullable=False),  # id used in ps_map (1..N; 0 = no segment)
    pa.field("label_id", pa.int32(), nullable=False),    # COCO panoptic contiguous id (0..132)
    pa.field("label", pa.string(), nullable=False),      # raw name, e.g. "sky-other-merged"
    pa.field("is_thing", pa.bool_(), nullable=False),
    pa.field("score", pa.float32(), nullable=False),
    pa.field("box", BOX, nullable=False),
    pa.field("area", pa.int64(), nullable=False),        # pixels at the working resolution
])

DETECTION = pa.struct([
    pa.field("label", pa.string(), nullable=False),
    pa.field("query_index", pa.int32(), nullable=False),  # index into the run's query vocabulary
    pa.field("score", pa.float32(), nullable=False),
    pa.field("box", BOX, nullable=False),                 # not clipped, as MoAI
])

SG_OBJECT = pa.struct([
    pa.field("label", pa.string(), nullable=False),
    pa.field("label_id", pa.int32(), nullable=False),     # 0-based COCO panoptic id
    pa.field("score", pa.float32(), nullable=False),
    pa.field("box", BOX, nullable=False),
])

SG_RELATION = pa.struct([
    pa.field("subject", pa.int32(), nullable=False),      # index into objects
    pa.field("object", pa.int32(), nullable=False),
    pa.field("predicate", pa.string(), nullable=False),
    pa.field("predicate_id", pa.int32(), nullable=False),  # 1-based (0 = no relation)
    pa.field("score", pa.float32(), nullable=False),      # max predicate probability, bg excluded
])

SCENE_GRAPH = pa.struct([
    pa.field("objects", pa.list_(SG_OBJECT), nullable=False),
    pa.field("relations", pa.list_(SG_RELATION), nullable=False),
])

OCR_LINE = pa.struct([
    pa.field("text", pa.string(), nullable=False),
    pa.field("score", pa.float32(), nullable=False),
    pa.field("polygon", pa.list_(pa.list_(pa.float32(), 2)), nullable=False),  # normalized (x, y)
])

TEXT_COLUMNS = ("text_ps", "text_owod", "text_sgg", "text_ocr", "text_aux")
ANNOTATOR_COLUMNS = ("panoptic", "ps_map", "detections", "scene_graph", "ocr")  # what the models write
VERBALIZED_COLUMNS = ("status", "panoptic", "detections", "scene_graph", "ocr")  # what verbalize_row reads

ANNOTATION_SCHEMA = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("width", pa.int32()),       # original size; null when the image could not be read
    pa.field("height", pa.int32()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", ERROR),            # null iff status == "ok"
    # Annotator columns are null when that annotator is switched off or the row is an error.
    pa.field("panoptic", pa.list_(SEGMENT)),
    pa.field("ps_map", pa.binary()),     # PNG, 8-bit grey, segment ids at the working size
    pa.field("detections", pa.list_(DETECTION)),
    pa.field("scene_graph", SCENE_GRAPH),
    pa.field("ocr", pa.list_(OCR_LINE)),
    *[pa.field(name, pa.string()) for name in TEXT_COLUMNS],
])


def annotation_schema(provenance: dict | None = None) -> pa.Schema:
    """The contract schema, with the provenance (JSON) in its metadata when given."""
    meta = {SCHEMA_VERSION_KEY: SCHEMA_VERSION.encode()}
    if provenance is not None:
        meta[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True).encode()
    return ANNOTATION_SCHEMA.with_metadata(meta)


def error_row(image_id: str, source: str, stage: str, message: str,
              width: int | None = None, height: int | None = None) -> dict:
    """A schema row for an image that could not be annotated. Never drop an input: emit this."""
    row = empty_row(image_id, source, width, height)
    row.update(status=STATUS_ERROR, error={"stage": stage, "message": str(message)[:2000]})
    return row


def empty_row(image_id: str, source: str, width: int | None = None,
              height: int | None = None) -> dict:
    row = {f.name: None for f in ANNOTATION_SCHEMA}
    row.update(image_id=image_id, source=source, width=width, height=height, status=STATUS_OK)
    return row


def rows_to_table(rows: list[dict], provenance: dict | None = None) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=annotation_schema(provenance))
