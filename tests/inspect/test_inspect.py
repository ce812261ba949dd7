import json

import pyarrow.parquet as pq
import pytest

from pipeline.inspect import main as inspect_main
from pipeline.inspect import summarize
from pipeline.show import main as show_main
from schemas import rows_to_table

from .conftest import PROVENANCE, hand_counted_rows


def test_numbers_match_the_hand_count(output_dir):
    s = summarize(output_dir)
    assert s["files"] == 2 and s["rows"] == 6
    assert s["status"] == {"ok": 3, "error": 3}
    assert s["error_kinds"] == {"decode: cannot identify image file <path>": 2,
                                "owod: CUDA out of memory. Tried to allocate <n> MiB": 1}
    labels = s["labels"]
    assert labels["panoptic"]["labels"] == {"person": 2, "sky-other-merged": 1}
    assert labels["detections"]["kept"] == {"cat": 2, "dog": 1}      # 0.7, 0.5 and 0.95 are >= 0.5
    assert labels["detections"]["all"] == {"cat": 2, "dog": 2}
    sg = labels["scene_graph"]
    assert sg["verbalized_predicates"] == {"beneath": 2, "beside": 1, "riding": 1}  # "on" cut by top-2
    assert sg["all_predicates"] == {"beneath": 2, "beside": 2, "on": 1, "riding": 1}
    assert labels["ocr"]["kept_lines"] == {"EXIT": 1}
    assert s["coverage"] == {"relation": pytest.approx(2 / 3), "ocr": pytest.approx(1 / 3)}
    ok_lengths = sorted(len(r["text_aux"]) for r in hand_counted_rows() if r["status"] == "ok")
    assert ok_lengths[0] == 3  # row c: four empty parts joined by spaces
    assert s["aux_chars"] == {"count": 3, "min": 3, "median": ok_lengths[1], "p90": ok_lengths[2],
                              "max": ok_lengths[2]}
    assert s["provenance"] == PROVENANCE and s["provenance_variants"] == 1


def test_recorded_verbalization_thresholds_are_used(tmp_path):
    rows = hand_counted_rows()
    prov = {**PROVENANCE, "verbalization": {"owod_min_score": 0.6, "sgg_min_score": 0.8,
                                            "sgg_max_relations": 10, "ocr_min_score": 0.5,
                                            "ps_min_score": 0.0, "compat": "none"}}
    pq.write_table(rows_to_table(rows, prov), tmp_path / "r.parquet")
    labels = summarize(tmp_path / "r.parquet")["labels"]
    assert labels["detections"]["kept"] == {"cat": 1, "dog": 1}
    assert labels["ocr"]["kept_lines"] == {"EXIT": 1, "blur": 1}


def test_switched_off_annotator_is_reported_off(tmp_path):
    rows = hand_counted_rows()
    for row in rows:
        row["ocr"] = None
    pq.write_table(rows_to_table(rows, PROVENANCE), tmp_path / "r.parquet")
    assert summarize(tmp_path / "r.parquet")["labels"]["ocr"] is None


def test_text_and_json_reports(output_dir, capsys):
    assert inspect_main([str(output_dir)]) == 0
    text = capsys.readouterr().out
    assert "status: ok 3, error 3" in text
    assert "2  decode: cannot identify image file <path>" in text
    assert "models.panoptic = facebook/mask2former-swin-base-coco-panoptic" in text
    assert "vocabulary.size = 1847" in text
    assert ">=1 verbalized relation 66.7%, OCR text 33.3%" in text
    assert inspect_main([str(output_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(summarize(output_dir)))


@pytest.mark.parametrize("command", [inspect_main, show_main])
def test_both_commands_fail_clearly_on_non_annotation_paths(command, not_annotations, tmp_path, capsys):
    for path in not_annotations:
        extra = [] if command is inspect_main else ["--sample", "1", "--out", str(tmp_path / "g")]
        assert command([str(path), *extra]) == 2
        captured = capsys.readouterr()
        message = captured.err.strip()
        assert captured.out == "" and message.startswith("error: ") and "\n" not in message
        assert str(path) in message
    assert not (tmp_path / "g").exists()
