"""A hand-counted annotation output: three ok rows and three error rows in two Parquet files."""
import numpy as np
import pyarrow.parquet as pq
import pytest

from schemas import encode_ps_map, error_row, rows_to_table, verbalize_row
from schemas.schema import empty_row

PROVENANCE = {
    "models": {"panoptic": "facebook/mask2former-swin-base-coco-panoptic", "owod": "google/owlv2-base"},
    "thresholds": {"owod": 0.1, "panoptic": 0.5},
    "vocabulary": {"name": "ade847+imagenet1k", "size": 1847, "sha256": "ab" * 32},
}


def seg(segment_id, label, box):
    return {"segment_id": segment_id, "label_id": 0, "label": label, "is_thing": True, "score": 0.9,
            "box": box, "area": 10}


def det(label, score, box=(0.1, 0.1, 0.2, 0.2)):
    return {"label": label, "query_index": 0, "score": score, "box": list(box)}


def obj(label, box=(0.0, 0.0, 0.5, 0.5)):
    return {"label": label, "label_id": 0, "score": 0.9, "box": list(box)}


def rel(subject, object_, predicate, score):
    return {"subject": subject, "object": object_, "predicate": predicate, "predicate_id": 1, "score": score}


def line(text, score, polygon=((0.1, 0.1), (0.3, 0.1), (0.3, 0.2), (0.1, 0.2))):
    return {"text": text, "score": score, "polygon": [list(p) for p in polygon]}


def finish(row):
    row.update(verbalize_row(row))
    return row


def hand_counted_rows() -> list[dict]:
    a = empty_row("a", "/nowhere/a.jpg", 64, 48)
    a.update(panoptic=[seg(1, "person", [0, 0, 0.5, 1]), seg(2, "sky-other-merged", [0, 0, 1, 0.5])],
             ps_map=encode_ps_map(np.ones((8, 8), np.uint8)),
             detections=[det("cat", 0.7), det("dog", 0.3), det("cat", 0.5)],
             scene_graph={"objects": [obj("person"), obj("person"), obj("sky-other-merged")],
                          "relations": [rel(0, 2, "beneath", 0.9), rel(1, 2, "beneath", 0.85),
                                        rel(0, 1, "beside", 0.5)]},
             ocr=[line("EXIT", 0.99), line("blur", 0.6)])
    b = empty_row("b", "/nowhere/b.jpg", 64, 48)
    # two objects -> only the top 2 relations are candidates: "on" (0.9) is cut although >= 0.8
    b.update(panoptic=[seg(1, "person", [0, 0, 1, 1])], detections=[det("dog", 0.95)],
             scene_graph={"objects": [obj("person"), obj("car")],
                          "relations": [rel(0, 1, "riding", 0.99), rel(1, 0, "beside", 0.95),
                                        rel(0, 1, "on", 0.9)]},
             ocr=[])
    c = empty_row("c", "/nowhere/c.jpg", 64, 48)
    c.update(panoptic=[], detections=[], ocr=[])  # nothing found: text_aux is three spaces
    errors = [error_row("bad1", "/data/bad1.jpg", "decode", "cannot identify image file /data/bad1.jpg"),
              error_row("bad2", "/x/y/bad2.png", "decode", "cannot identify image file /x/y/bad2.png"),
              error_row("oom", "/data/oom.jpg", "owod", "CUDA out of memory. Tried to allocate 20.00 MiB\nmore")]
    return [finish(a), finish(b), finish(c), *errors]


@pytest.fixture
def output_dir(tmp_path):
    rows = hand_counted_rows()
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(rows_to_table(rows[:2], PROVENANCE), out / "part-0.parquet")
    pq.write_table(rows_to_table(rows[2:], PROVENANCE), out / "part-1.parquet")
    return out


@pytest.fixture
def not_annotations(tmp_path):
    """Paths that are not annotation tables: another Parquet table, a text file, nothing."""
    import pyarrow as pa
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "other.parquet")
    (tmp_path / "notes.txt").write_text("hello")
    return [tmp_path / "other.parquet", tmp_path / "notes.txt", tmp_path / "missing"]
