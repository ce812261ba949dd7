"""Every command that reads an annotation output, fed the broken outputs a user will meet: a clear
one-line `error:` naming the file and exit 2, never a traceback; bad pictures become error tiles."""
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.inspect import main as inspect_main
from pipeline.show import main as show_main
from schemas import rows_to_table
from schemas.__main__ import main as schemas_main
from schemas.schema import empty_row

from .conftest import PROVENANCE, hand_counted_rows


def good(folder):
    folder.mkdir(parents=True)
    rows = hand_counted_rows()
    pq.write_table(rows_to_table(rows[:3], PROVENANCE), folder / "part-0.parquet")
    pq.write_table(rows_to_table(rows[3:], PROVENANCE), folder / "part-1.parquet")
    return folder


def truncated(folder):
    data = (folder / "part-1.parquet").read_bytes()
    (folder / "part-1.parquet").write_bytes(data[:len(data) // 2])  # killed mid-write, outside _tmp
    return "part-1.parquet", "not a readable Parquet file"


def other_schema(folder):
    pq.write_table(pa.table({"a": [1]}), folder / "part-1.parquet")
    return "part-1.parquet", "not an annotation table"


def older_version(folder):
    table = pq.read_table(folder / "part-1.parquet")
    meta = {**table.schema.metadata, b"moai.schema_version": b"0.9"}
    pq.write_table(table.replace_schema_metadata(meta), folder / "part-1.parquet")
    return "part-1.parquet", "schema version '0.9'"


def corrupt_pages(folder):
    """The footer intact, a data page of the biggest column garbled."""
    rows = []
    for i in range(300):
        row = dict(hand_counted_rows()[i % 3])
        row["image_id"] = f"x{i}"
        rows.append(row)
    path = folder / "part-1.parquet"
    pq.write_table(rows_to_table(rows, PROVENANCE), path, use_dictionary=False, write_statistics=False)
    meta = pq.ParquetFile(path).metadata
    chunk = max((meta.row_group(0).column(k) for k in range(meta.num_columns)), key=lambda c: c.total_compressed_size)
    data = bytearray(path.read_bytes())
    for i in range(chunk.data_page_offset + 64, chunk.data_page_offset + chunk.total_compressed_size // 2):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    return "part-1.parquet", "data unreadable"


def duplicate_ids(folder):
    pq.write_table(rows_to_table(hand_counted_rows()[:1], PROVENANCE), folder / "part-2.parquet")
    return "", "image_id must be unique"


COMMANDS = {
    "validate": lambda out, tmp: schemas_main(["validate", str(out)]),
    "reverbalize": lambda out, tmp: schemas_main(["reverbalize", str(out), str(tmp / "re")]),
    "inspect": lambda out, tmp: inspect_main([str(out)]),
    "show": lambda out, tmp: show_main([str(out), "--sample", "4", "--out", str(tmp / "gallery")]),
}


@pytest.mark.parametrize("breaks", [truncated, other_schema, older_version, corrupt_pages, duplicate_ids],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_broken_output_is_one_line_and_exit_2(tmp_path, capsys, breaks, command):
    out = good(tmp_path / "out")
    name, message = breaks(out)
    assert COMMANDS[command](out, tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and str(out / name) in err, err
    assert err.count("\n") == 1 or command in ("validate", "reverbalize")  # those list every problem
    assert not (tmp_path / "re").exists() or not list((tmp_path / "re").rglob("*.parquet"))


def test_show_draws_an_error_tile_for_every_bad_picture(tmp_path, capsys):
    Image.new("L", (30000, 30000)).save(tmp_path / "bomb.png")
    Image.new("RGB", (64, 48), "red").save(tmp_path / "ok.png")
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    Image.new("RGB", (64, 48), "blue").save(tmp_path / "deleted.png")
    rows = []
    for name in ("bomb.png", "truncated.jpg", "deleted.png", "ok.png"):
        row = empty_row(name, str(tmp_path / name), 64, 48)
        row.update(panoptic=[], detections=[], ocr=[])  # no ps_map: the panoptic stage was off
        rows.append(row)
    rows.append({**empty_row("remote", "s3://bucket/remote.jpg", 64, 48), "panoptic": [], "detections": [], "ocr": []})
    (tmp_path / "out").mkdir()
    pq.write_table(rows_to_table(rows, PROVENANCE), tmp_path / "out" / "part-0.parquet")
    (tmp_path / "deleted.png").unlink()
    assert show_main([str(tmp_path / "out"), "--sample", "5", "--out", str(tmp_path / "gallery")]) == 0
    assert "wrote 5 picture(s)" in capsys.readouterr().out
    page = (tmp_path / "gallery" / "index.html").read_text()
    for name, why in (("bomb.png", "over the pixel limit"), ("truncated.jpg", "truncated"),
                      ("deleted.png", "no such file")):
        assert f"source unreadable ({'DecodeError: ' if name != 'deleted.png' else ''}" in page and why in page
        assert f"{tmp_path / name}" in page
    assert "s3://bucket/remote.jpg is not a local file" in page
    assert len(list((tmp_path / "gallery" / "images").glob("*.png"))) == 5
