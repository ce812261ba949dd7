"""The driver does no per-image work: manifests read in Ray tasks, resume and duplicate checks as
passes over the inputs, blocks of bounded rows, lost rows written by tasks (pipeline/plan.py)."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.inputs import input_dataset, list_inputs
from pipeline.plan import (INDEX_SCHEMA, block_rows_for, count_inputs, id_hashes, pending, write_lost_rows,
                           written_index, written_mask)
from pipeline.resume import may_hold_errors
from pipeline.run import main, run
from schemas import read_annotations
from schemas.schema import empty_row, error_row, rows_to_table

from .hostile import write_hostile
from .test_run import toy_config
from .toy_annotator import toy_stage


def write_manifest(path, ids, paths=None):
    pq.write_table(pa.table({"id": ids, "path": paths or [f"images/{i}.jpg" for i in ids]}), path)


def test_written_mask_is_exact_even_when_hashes_collide():
    ids = pa.array(["a", "b", "c", "d"])
    hashes = id_hashes(ids)
    # "x" and "y" are made to share b's hash: only the id itself decides
    index = pa.table({"hash": np.array([hashes[1], hashes[1], hashes[1], hashes[3]], np.uint64),
                      "image_id": ["x", "y", "b", "d"]}, schema=INDEX_SCHEMA)
    index = index.take(pa.array(np.argsort(index.column("hash").to_numpy(), kind="stable")))  # as written_index
    assert written_mask(ids, index).tolist() == [False, True, False, True]
    assert written_mask(ids, None).tolist() == [False] * 4


def test_blocks_are_bounded_by_rows(ray_local, tmp_path):
    write_manifest(tmp_path / "m.parquet", [f"{i:05d}" for i in range(2500)])
    ds = pending(input_dataset(ray_local, str(tmp_path / "m.parquet"), num_cpus=0.25), None, 100, 0.25)
    sizes = [pq_rows for pq_rows in (ray_local.get(ref).num_rows for ref in ds.to_arrow_refs())]
    assert sum(sizes) == 2500 and max(sizes) <= 100
    assert block_rows_for(10**8, 16, 1000) == 1000 and block_rows_for(40, 16, 1000) == 16
    assert block_rows_for(665_000, 16, 1000) == 665


def test_manifest_dataset_matches_the_listing(ray_local, tmp_path):
    write_manifest(tmp_path / "m.parquet", ["k1", "k2", "k3"], ["imgs/a.jpg", "/abs/c.jpg", "s3://b/d.jpg"])
    (tmp_path / "m.csv").write_text("id,path,extra\nk1,imgs/a.jpg,1\nk2,/abs/c.jpg,2\nk3,s3://b/d.jpg,3\n")
    for name in ("m.parquet", "m.csv"):
        rows = input_dataset(ray_local, str(tmp_path / name), "/root").take_all()
        listed = list_inputs(str(tmp_path / name), "/root")
        assert sorted((r["image_id"], r["source"]) for r in rows) == [(i.image_id, i.source) for i in listed]
        assert listed[0].source == "/root/imgs/a.jpg"


def test_repeated_id_across_manifest_files_is_refused_by_name(ray_local, tmp_path):
    (tmp_path / "m.parquet").mkdir()  # a manifest in shards: the repeat is in two files
    write_manifest(tmp_path / "m.parquet" / "a.parquet", [f"{i}" for i in range(500)])
    write_manifest(tmp_path / "m.parquet" / "b.parquet", ["7", "x"], ["other.jpg", "x.jpg"])
    with pytest.raises(ValueError, match=r"image_id '7' appears twice \(.*7.jpg and .*other.jpg\)|"
                                         r"image_id '7' appears twice \(.*other.jpg and .*7.jpg\)"):
        count_inputs(ray_local, input_dataset(ray_local, str(tmp_path / "m.parquet")), None)
    assert not (tmp_path / "out").exists()


def test_malformed_csv_manifest_is_one_error_line(ray_local, tmp_path, capsys):
    write_hostile(tmp_path / "images")
    (tmp_path / "m.csv").write_text("id,path\na,images/normal.jpg\nb,images/cmyk.jpg,surplus\n")
    toy = [arg for value in toy_stage() for arg in ("--set", value)]
    ray_local.data.DataContext.get_current().max_errored_blocks = 1000  # as an earlier run leaves it
    code = main(["--config", "tiny", "--input", str(tmp_path / "m.csv"), "--output", str(tmp_path / "out"), *toy])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: reading ") and "column" in lines[0], lines
    (tmp_path / "m2.csv").write_text("name,file\na,b\n")
    assert main(["--config", "tiny", "--input", str(tmp_path / "m2.csv"), "--output", str(tmp_path / "out"), *toy]) == 2
    assert "needs the columns 'id,path'" in capsys.readouterr().err


def test_resume_from_a_manifest_reads_no_row_on_the_driver(ray_local, tmp_path, monkeypatch):
    images = tmp_path / "images"
    expected = write_hostile(images)
    names = sorted(expected)
    write_manifest(tmp_path / "m.parquet", names, [f"images/{n}" for n in names])
    out = tmp_path / "out"
    first = run(toy_config(tmp_path / "m.parquet", out, "rows_per_file=3", fail_below_mean=-1))
    assert first["ok"] + first["error"] == len(names) and first["skipped"] == 0
    # more inputs; from here on the driver process may not read a table (its tasks may)
    write_manifest(tmp_path / "m.parquet", names + ["extra"], [f"images/{n}" for n in names] + ["images/normal.jpg"])

    def refuse(*args, **kwargs):
        raise AssertionError("the driver read rows")
    monkeypatch.setattr(pq, "read_table", refuse)
    monkeypatch.setattr(pq.ParquetFile, "read", refuse)
    again = run(toy_config(tmp_path / "m.parquet", out, "rows_per_file=3", fail_below_mean=-1))
    monkeypatch.undo()
    assert again["skipped"] == len(names) and again["ok"] == 1
    assert read_annotations(out).num_rows == len(names) + 1  # unique ids, one row each


def test_lost_inputs_become_worker_error_rows(ray_local, tmp_path):
    write_manifest(tmp_path / "m.parquet", [f"{i:03d}" for i in range(40)])
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.table({"image_id": [f"{i:03d}" for i in range(0, 40, 2)], "status": ["ok"] * 20}),
                   out / "part-old.parquet")
    ds = input_dataset(ray_local, str(tmp_path / "m.parquet"))
    assert write_lost_rows(ray_local, ds, str(out), {}, "gone", "r1") == 20
    lost = pq.read_table(sorted(out.glob("part-lost-r1-*.parquet")))
    assert sorted(lost.column("image_id").to_pylist()) == [f"{i:03d}" for i in range(1, 40, 2)]
    assert set(lost.column("status").to_pylist()) == {"error"}
    assert {e["stage"] for e in lost.column("error").to_pylist()} == {"worker"}
    index = ray_local.get(written_index(ray_local, str(out), skip_errors=True))
    assert index.num_rows == 20  # error rows left out when they are to be retried


def test_footer_says_which_files_can_hold_errors(tmp_path):
    pq.write_table(pa.table({"image_id": ["a", "b"], "status": ["ok", "ok"]}), tmp_path / "ok.parquet")
    pq.write_table(pa.table({"image_id": ["c", "d"], "status": ["ok", "error"]}), tmp_path / "err.parquet")
    assert not may_hold_errors(pq.ParquetFile(tmp_path / "ok.parquet").metadata)
    assert may_hold_errors(pq.ParquetFile(tmp_path / "err.parquet").metadata)
    # the contract's files: `status` found among nested leaf columns (error.stage, ...)
    pq.write_table(rows_to_table([empty_row("a", "x"), empty_row("b", "y")]), tmp_path / "c-ok.parquet")
    pq.write_table(rows_to_table([empty_row("a", "x"), error_row("b", "y", "decode", "bad")]), tmp_path / "c-err.parquet")
    assert not may_hold_errors(pq.ParquetFile(tmp_path / "c-ok.parquet").metadata)
    assert may_hold_errors(pq.ParquetFile(tmp_path / "c-err.parquet").metadata)
