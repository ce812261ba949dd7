"""The Parquet contract shared by pipeline/ and trainer/: schema, verbalization, reader."""
from .io import (
    SchemaError, count_by_status, parquet_files, read_annotations, read_provenance, reverbalize,
    reverbalize_files, row_problems, schema_problems,
)
from .psmap import colorize, decode_ps_map, encode_ps_map, voc_colormap
from .schema import (
    ANNOTATION_SCHEMA, SCHEMA_VERSION, STATUS_ERROR, STATUS_OK, TEXT_COLUMNS, annotation_schema,
    empty_row, error_row, rows_to_table,
)
from .verbalize import Compat, VerbalizeConfig, verbalize_row

__all__ = [
    "ANNOTATION_SCHEMA", "SCHEMA_VERSION", "STATUS_ERROR", "STATUS_OK", "TEXT_COLUMNS", "Compat",
    "SchemaError", "VerbalizeConfig", "annotation_schema", "colorize", "count_by_status",
    "decode_ps_map", "empty_row", "encode_ps_map", "error_row", "parquet_files", "read_annotations",
    "read_provenance", "reverbalize", "reverbalize_files", "row_problems", "rows_to_table",
    "schema_problems", "verbalize_row", "voc_colormap",
]
