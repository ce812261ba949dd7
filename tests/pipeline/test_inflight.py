"""The in-flight markers' states, without Ray (pipeline/inflight.py)."""
from pipeline.inflight import BatchRecord, BatchState, Markers, remove_run_folder, run_folder


def test_batch_and_image_markers_round_trip_on_the_output_filesystem(tmp_path):
    folder = run_folder(str(tmp_path / "out"), "run1")
    assert folder == f"{tmp_path}/out/_inflight/run1"
    markers = Markers(f"{folder}/owod")
    ids = ["a.jpg", "b.jpg"]
    assert markers.batch(ids) is None
    markers.set_batch(ids, BatchRecord(BatchState.NEW))
    assert Markers(f"{folder}/owod").batch(ids) == BatchRecord(BatchState.NEW, 0)  # another worker sees it
    markers.set_batch(ids, BatchRecord(BatchState.CRASHED, 2))
    assert markers.batch(ids) == BatchRecord(BatchState.CRASHED, 2)
    assert markers.batch(["a.jpg"]) is None  # a different batch
    markers.mark_image("a.jpg")
    assert markers.image_in_flight("a.jpg") and not markers.image_in_flight("b.jpg")
    markers.clear_image("a.jpg")
    markers.clear_image("a.jpg")  # twice is fine
    assert not markers.image_in_flight("a.jpg")
    markers.clear_batch(ids)
    assert markers.batch(ids) is None
    remove_run_folder(str(tmp_path / "out"), "run1")
    assert not (tmp_path / "out" / "_inflight" / "run1").exists()


def test_records_parse_their_own_text():
    for record in (BatchRecord(BatchState.NEW), BatchRecord(BatchState.CRASHED, 3), BatchRecord(BatchState.ISOLATED, 1)):
        assert BatchRecord.parse(record.text()) == record
