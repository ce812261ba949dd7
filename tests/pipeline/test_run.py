"""The job on the session's local Ray: contract output, provenance, hostile inputs, resume, faults."""
import json
import shutil

import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.resume import data_files, read_done
from pipeline.run import run
from pipeline.inputs import filesystem_for
from schemas import read_annotations, read_provenance
from schemas.schema import ANNOTATION_SCHEMA

from .hostile import PIXEL_LIMIT, write_hostile
from .toy_annotator import toy_stage


def toy_config(input, output, *extra, **options):
    sets = toy_stage(**options) + ["working_size=64", "decode_batch_size=4", "annotators.owod.batch_size=3",
                                   "decode_num_cpus=0.5", "annotators.owod.num_cpus=0.5", f"max_pixels={PIXEL_LIMIT}", *extra]
    return load_config("tiny", sets, input=str(input), output=str(output))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    expected = write_hostile(folder / "images")
    manifest = folder / "manifest.csv"
    lines = ["id,path"] + [f"{i},images/{i}" for i in sorted(expected)] + ["gone,images/does/not/exist.jpg"]
    manifest.write_text("\n".join(lines) + "\n")
    expected["gone"] = ("error", "read")
    return manifest, expected


def test_hostile_manifest_every_image_one_row(ray_local, hostile, tmp_path):
    manifest, expected = hostile
    cfg = toy_config(manifest, tmp_path / "out", "rows_per_file=5",
                     fail_below_mean=-1)
    summary = run(cfg)
    table = read_annotations(tmp_path / "out")  # validates schema, unique ids, error iff status error
    rows = {r["image_id"]: r for r in table.to_pylist()}
    assert sorted(rows) == sorted(expected)
    for image_id, (status, stage) in expected.items():
        assert rows[image_id]["status"] == status, (image_id, rows[image_id]["error"])
        assert (rows[image_id]["error"] or {}).get("stage") == stage
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert all(len(r["detections"]) == 1 and r["text_owod"] is not None for r in ok)
    assert all(r["detections"] is None and r["text_aux"] is None for r in rows.values() if r["status"] == "error")
    assert summary["ok"] == len(ok) and summary["error"] == len(rows) - len(ok)
    # sized files, each carrying the exact contract schema and the provenance of the actors
    files = data_files(*filesystem_for(str(tmp_path / "out")))
    sizes = [pq.ParquetFile(f).metadata.num_rows for f in files]
    assert len(files) >= 3 and max(sizes) <= 5 and sum(sizes) == 12
    assert all(pq.read_schema(f).remove_metadata().equals(ANNOTATION_SCHEMA) for f in files)
    provenance = read_provenance(files[0])
    assert provenance["annotators"]["owod"] == {"kind": "tests.pipeline.toy_annotator:ToyDetector",
                                                "model": "toy-conv", "seed": 0}
    assert provenance["working_size"] == 64 and "ray" in provenance["packages"]


def test_resume_skips_done_and_retries_errors(ray_local, tmp_path):
    images = tmp_path / "images"
    write_hostile(images)
    shutil.copy(images / "normal.jpg", images / "dark.jpg")
    from PIL import Image
    Image.new("RGB", (20, 20), (3, 3, 3)).save(images / "dark.jpg")
    out = tmp_path / "out"
    first = run(toy_config(images, out, fail_below_mean=10))
    done = read_done(str(out)).status
    assert done["dark.jpg"] == "error" and first["errors_by_stage"]["owod"] == 1
    files_before = data_files(*filesystem_for(str(out)))

    again = run(toy_config(images, out, fail_below_mean=10))  # nothing left to do
    assert again["skipped"] == len(done) and data_files(*filesystem_for(str(out))) == files_before

    # a newly added image is annotated alone
    Image.new("RGB", (30, 30), (90, 90, 90)).save(images / "new.png")
    added = run(toy_config(images, out, fail_below_mean=10))
    assert added["skipped"] == len(done) and added["ok"] == 1

    # retry errors with the fault gone: the old error row is replaced, never doubled
    retried = run(toy_config(images, out, "retry_errors=true", fail_below_mean=-1))
    table = read_annotations(out)
    rows = {r["image_id"]: r for r in table.to_pylist()}
    assert rows["dark.jpg"]["status"] == "ok" and table.num_rows == len(done) + 1
    assert retried["skipped"] == len(done) + 1 - sum(s == "error" for s in done.values()), (retried, done)


def test_crashed_worker_is_restarted(ray_local, tmp_path):
    """The restarted actor is rebuilt from the constructor arguments Ray Data keeps in the object store
    (the source of Ray's "constructor arguments in the object store" line, ray#53727): the restart works."""
    images = tmp_path / "images"
    write_hostile(images)
    marker = tmp_path / "crashed-once"
    summary = run(toy_config(images, tmp_path / "out", crash_once_marker=str(marker)))
    assert marker.exists()  # the actor process did die once ...
    table = read_annotations(tmp_path / "out")
    ok_expected = sum(status == "ok" for status, _ in write_hostile(images).values())
    assert summary["ok"] == ok_expected  # ... and its batch was retried on the restarted actor
    assert "worker" not in summary["errors_by_stage"] and table.num_rows == 11


def test_half_written_file_is_never_read(ray_local, tmp_path):
    images = tmp_path / "images"
    write_hostile(images)
    out = tmp_path / "out"
    (out / "_tmp").mkdir(parents=True)
    (out / "_tmp" / "part-dead-00000-000.parquet").write_bytes(b"PAR1 half a file")
    run(toy_config(images, out))
    assert not (out / "_tmp" / "part-dead-00000-000.parquet").exists()
    assert read_annotations(out).num_rows == 11


def test_two_annotators_filling_one_column_is_refused(tmp_path):
    cfg = toy_config(tmp_path, tmp_path / "out", "annotators.owod_yolo.enabled=true",
                     "annotators.owod_yolo.kind=tests.pipeline.toy_annotator:ToyDetector")
    with pytest.raises(ValueError, match="both fill 'detections'"):
        run(cfg)
