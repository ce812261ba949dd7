import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import (
    SchemaError, VerbalizeConfig, annotation_schema, colorize, count_by_status, decode_ps_map,
    encode_ps_map, read_annotations, read_provenance, reverbalize, voc_colormap,
)
from schemas.__main__ import main as schemas_cli


def test_round_trip_through_parquet_with_provenance(tmp_path, table):
    pq.write_table(table, tmp_path / "part-0.parquet")
    back = read_annotations(tmp_path)
    assert back.num_rows == 3
    assert back.schema.remove_metadata().equals(annotation_schema().remove_metadata())
    assert count_by_status(back) == {"ok": 2, "error": 1}
    assert read_provenance(tmp_path)["models"] == {"panoptic": "tiny"}
    row = back.to_pylist()[0]
    assert row["text_ocr"] == "The image includes text descriptions: EXIT."
    assert row["scene_graph"]["relations"][0]["predicate"] == "beneath"


def test_reader_ignores_hidden_and_underscore_files(tmp_path, table):
    pq.write_table(table, tmp_path / "part-0.parquet")
    (tmp_path / "_tmp").mkdir()
    pq.write_table(table, tmp_path / "_tmp" / "half.parquet")
    (tmp_path / ".part-1.parquet").write_bytes(b"PAR1 half written")
    assert read_annotations(tmp_path).num_rows == 3


def test_reader_names_every_problem(tmp_path, table):
    broken = table.drop_columns(["ocr"]).set_column(
        table.schema.get_field_index("width"), "width", pa.array(["640"] * 3))
    pq.write_table(broken.replace_schema_metadata(table.schema.metadata), tmp_path / "x.parquet")
    with pytest.raises(SchemaError) as err:
        read_annotations(tmp_path / "x.parquet")
    message = str(err.value)
    assert "column 'ocr' is missing" in message and "column 'width': type string" in message


def test_reader_rejects_non_annotation_tables(tmp_path):
    pq.write_table(pa.table({"a": [1]}), tmp_path / "other.parquet")
    with pytest.raises(SchemaError, match="not an annotation table"):
        read_annotations(tmp_path / "other.parquet")
    (tmp_path / "junk.parquet").write_text("hello")
    with pytest.raises(SchemaError, match="not a readable Parquet"):
        read_annotations(tmp_path / "junk.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SchemaError, match="no .parquet files"):
        read_annotations(tmp_path / "empty")
    with pytest.raises(SchemaError, match="no such file"):
        read_annotations(tmp_path / "nowhere")


def test_reader_checks_row_rules(tmp_path, table):
    rows = table.to_pylist()
    rows[1]["image_id"] = rows[0]["image_id"]
    rows[2]["error"] = None
    bad = pa.Table.from_pylist(rows, schema=table.schema)
    pq.write_table(bad, tmp_path / "dup.parquet")
    with pytest.raises(SchemaError) as err:
        read_annotations(tmp_path / "dup.parquet")
    assert "duplicated: ['a.jpg']" in str(err.value) and "violated by ['bad.jpg']" in str(err.value)


def test_reverbalize_with_other_thresholds_without_models(tmp_path, table):
    lower = reverbalize(table, VerbalizeConfig(owod_min_score=0.2, ocr_min_score=0.5, sgg_min_score=0.9))
    row = lower.to_pylist()[0]
    assert row["text_owod"].endswith("[0.10, 0.20, 0.30, 0.40] cat, and [0.50, 0.50, 0.60, 0.60] dog.")
    assert row["text_ocr"] == "The image includes text descriptions: EXIT, and blur."
    assert row["text_sgg"] == ""
    assert row["text_aux"] == " ".join([row["text_ps"], row["text_owod"], "", row["text_ocr"]])
    assert lower.to_pylist()[2]["text_aux"] is None
    prov = json.loads(lower.schema.metadata[b"moai.provenance"])
    assert prov["verbalization"]["owod_min_score"] == 0.2 and prov["models"] == {"panoptic": "tiny"}
    # the same thresholds reproduce the stored texts byte for byte
    assert reverbalize(table).column("text_aux").equals(table.column("text_aux"))


def test_cli_validate_and_reverbalize(tmp_path, table, capsys):
    pq.write_table(table, tmp_path / "part-0.parquet")
    assert schemas_cli(["validate", str(tmp_path)]) == 0
    assert "3 rows" in capsys.readouterr().out
    assert schemas_cli(["reverbalize", str(tmp_path), str(tmp_path / "out"), "--ocr-min-score", "0.5"]) == 0
    assert "blur" in read_annotations(tmp_path / "out").column("text_ocr")[0].as_py()
    pq.write_table(pa.table({"a": [1]}), tmp_path / "bad.parquet")
    assert schemas_cli(["validate", str(tmp_path / "bad.parquet")]) == 2


def test_ps_map_png_is_lossless_and_coloured_by_segment_id():
    ids = np.random.default_rng(0).integers(-1, 134, size=(49, 37))
    back = decode_ps_map(encode_ps_map(ids))
    assert back.dtype == np.uint8 and np.array_equal(back, np.clip(ids, 0, None))
    cmap = voc_colormap()
    assert cmap.shape == (134, 3)
    assert cmap[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert cmap[133].tolist() == [128, 32, 128]  # 0b10000101: bits 0,2 -> top of R,B; bit 7 -> G>>2
    assert np.array_equal(colorize(back)[3, 5], cmap[back[3, 5]])
    with pytest.raises(ValueError, match="at most 255"):
        encode_ps_map(np.full((2, 2), 300))


def test_polars_reads_the_layout(tmp_path, table):
    pq.write_table(table, tmp_path / "part-0.parquet")
    lf = pl.scan_parquet(tmp_path / "*.parquet")
    by_status = lf.group_by("status").len().collect().sort("status")
    assert by_status.rows() == [("error", 1), ("ok", 2)]
    labels = (lf.select("image_id", "detections").explode("detections").unnest("detections")
              .filter(pl.col("score") >= 0.5).group_by("label").len().collect())
    assert labels.rows() == [("cat", 2)]
    boxes = lf.select(pl.col("panoptic").list.first().struct.field("box")).collect()
    assert boxes.schema["box"] == pl.Array(pl.Float32, 4)
