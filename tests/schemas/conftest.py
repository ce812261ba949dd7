import numpy as np
import pytest

from schemas import encode_ps_map, error_row, rows_to_table
from schemas.schema import empty_row
from schemas.verbalize import verbalize_row


def ok_row(image_id="a.jpg"):
    ps = np.zeros((8, 8), np.uint8)
    ps[:4] = 1
    ps[4:, :4] = 2
    row = empty_row(image_id, f"/data/{image_id}", 640, 480)
    row.update(
        panoptic=[{"segment_id": 1, "label_id": 119, "label": "sky-other-merged", "is_thing": False,
                   "score": 0.97, "box": [0.0, 0.0, 1.0, 0.5], "area": 32},
                  {"segment_id": 2, "label_id": 0, "label": "person", "is_thing": True,
                   "score": 0.91, "box": [0.0, 0.5, 0.5, 1.0], "area": 16}],
        ps_map=encode_ps_map(ps),
        detections=[{"label": "cat", "query_index": 3, "score": 0.7, "box": [0.1, 0.2, 0.3, 0.4]},
                    {"label": "dog", "query_index": 5, "score": 0.3, "box": [0.5, 0.5, 0.6, 0.6]}],
        scene_graph={"objects": [{"label": "person", "label_id": 0, "score": 0.9, "box": [0, 0.5, 0.5, 1]},
                                 {"label": "sky-other-merged", "label_id": 119, "score": 0.8,
                                  "box": [0, 0, 1, 0.5]}],
                     "relations": [{"subject": 0, "object": 1, "predicate": "beneath", "predicate_id": 9,
                                    "score": 0.875}]},
        ocr=[{"text": "EXIT", "score": 0.99, "polygon": [[0.1, 0.1], [0.2, 0.1], [0.2, 0.2], [0.1, 0.2]]},
             {"text": "blur", "score": 0.6, "polygon": [[0.3, 0.3], [0.4, 0.3], [0.4, 0.4], [0.3, 0.4]]}],
    )
    row.update(verbalize_row(row))
    return row


@pytest.fixture
def table():
    rows = [ok_row("a.jpg"), ok_row("b/c.jpg"),
            error_row("bad.jpg", "/data/bad.jpg", "decode", "cannot identify image file")]
    return rows_to_table(rows, provenance={"models": {"panoptic": "tiny"}, "thresholds": {"owod": 0.1}})
