"""`make demo` end to end on the session's Ray: corpus -> tiny profile with every real annotator -> inspect -> show."""
from pipeline.demo import main as demo_main
from pipeline.config import load_config
from schemas import read_annotations, read_provenance


def test_demo_annotates_the_corpus_with_every_tiny_annotator(ray_local, tmp_path, capsys):
    assert demo_main(["--workdir", str(tmp_path), "--sample", "3"]) == 0
    printed = capsys.readouterr().out
    output = tmp_path / "out" / "annotations"
    table = read_annotations(output)
    enabled = sorted(load_config("tiny").enabled)
    assert table.num_rows == len(list((tmp_path / "corpus").iterdir()))
    assert set(table.column("status").to_pylist()) == {"ok"}
    for column in ("panoptic", "ps_map", "detections", "scene_graph", "ocr", "text_aux"):
        assert table.column(column).null_count == 0, column  # every enabled annotator filled its columns
    # the tiny profile lowers the panoptic thresholds so the demo's ps_map and text_ps carry segments
    # (at MoAI's 0.5 / 0.95 a random-weight Mask2Former keeps none)
    rows = table.select(["panoptic", "text_ps"]).to_pylist()
    assert sum(len(row["panoptic"]) > 0 for row in rows) >= len(rows) // 2
    assert all(row["text_ps"].startswith("The image includes bounding box") for row in rows if row["panoptic"])
    assert sorted(read_provenance(output)["annotators"]) == enabled
    assert f"summary: ok={table.num_rows} error=0 skipped=0" in printed
    assert (tmp_path / "out" / "gallery" / "index.html").is_file()

    # the demo again: everything is already there, nothing is annotated twice
    assert demo_main(["--workdir", str(tmp_path), "--sample", "3"]) == 0
    assert f"skipped={table.num_rows}" in capsys.readouterr().out
    assert read_annotations(output).num_rows == table.num_rows
