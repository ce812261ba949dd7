"""Golden tests: expected strings are written by hand from docs/moai.md §3."""
import pytest

from schemas.verbalize import (
    Compat, VerbalizeConfig, clean_name, combine, format_box, numbered_object_names,
    verbalize_detections, verbalize_ocr, verbalize_panoptic, verbalize_row, verbalize_scene_graph,
)

PS = "The image includes bounding box coordinates and their objects: "


def seg(box, label, score=0.9):
    return {"box": box, "label": label, "score": score}


def rel(s, o, predicate, score):
    return {"subject": s, "object": o, "predicate": predicate, "predicate_id": 1, "score": score}


def test_box_format_rounds_to_two_decimals_and_keeps_edges():
    assert format_box([0.0, 0.1, 0.52, 0.98]) == "[0.00, 0.10, 0.52, 0.98]"
    assert format_box([0, 0, 1, 1]) == "[0.00, 0.00, 1.00, 1.00]"
    assert format_box([0.004, 0.996, 0.256, 0.3333]) == "[0.00, 1.00, 0.26, 0.33]"
    # OWOD boxes are not clipped: negative and > 1 coordinates print as they are
    assert format_box([-0.02, 0.5, 1.03, 0.9]) == "[-0.02, 0.50, 1.03, 0.90]"


def test_suffixes_are_stripped():
    assert clean_name("sky-other-merged") == "sky"
    assert clean_name("wall-other-merged") == "wall"
    assert clean_name("door-stuff") == "door"
    assert clean_name("water-other") == "water"
    assert clean_name("tree-merged") == "tree"
    assert clean_name("wall-brick") == "wall-brick"
    assert clean_name("traffic light") == "traffic light"


def test_panoptic_text():
    segments = [seg([0.0, 0.1, 0.52, 0.98], "sky-other-merged"), seg([0.5, 0.256, 1.0, 1.0], "person")]
    assert verbalize_panoptic(segments) == (
        PS + "[0.00, 0.10, 0.52, 0.98] sky, and [0.50, 0.26, 1.00, 1.00] person.")
    assert verbalize_panoptic([seg([0, 0, 1, 1], "grass-merged")]) == PS + "[0.00, 0.00, 1.00, 1.00] grass."
    assert verbalize_panoptic([]) == ""
    assert verbalize_panoptic(None) == ""


def test_detection_text_applies_keep_threshold_inclusive():
    dets = [
        {"box": [0.1, 0.2, 0.3, 0.4], "label": "cat", "score": 0.5},
        {"box": [0.5, 0.5, 0.6, 0.6], "label": "dog", "score": 0.49},
        {"box": [-0.02, 0.5, 1.03, 0.9], "label": "sofa-merged", "score": 0.93},
    ]
    # OWLv2 names are printed as they are (no suffix stripping)
    assert verbalize_detections(dets) == (
        PS + "[0.10, 0.20, 0.30, 0.40] cat, and [-0.02, 0.50, 1.03, 0.90] sofa-merged.")
    assert verbalize_detections(dets, VerbalizeConfig(owod_min_score=0.4)).count(", and ") == 2
    assert verbalize_detections(dets[1:2]) == ""


def test_duplicate_names_are_numbered_in_order_of_appearance():
    assert numbered_object_names(["person", "horse", "person-merged", "tree-merged", "tree"]) == [
        "person (#1)", "horse", "person (#2)", "tree (#1)", "tree (#2)"]


def scene():
    objects = [{"label": "person", "score": 0.9, "box": [0, 0, 1, 1], "label_id": 0}] * 2 + [
        {"label": "horse", "score": 0.9, "box": [0, 0, 1, 1], "label_id": 17},
        {"label": "grass-merged", "score": 0.9, "box": [0, 0, 1, 1], "label_id": 125}]
    relations = [rel(0, 2, "riding", 0.95), rel(1, 3, "standing on", 0.85),
                 rel(2, 3, "standing on", 0.79), rel(0, 1, "beside", 0.95)]
    return {"objects": objects, "relations": relations}


def test_scene_graph_text_sorted_by_score_ties_by_index_threshold_inclusive():
    assert verbalize_scene_graph(scene()) == (
        "The image includes relationships between objects: person (#1) is riding horse, and "
        "person (#1) is beside person (#2), and person (#2) is standing on grass.")


def test_scene_graph_top_k_is_min_of_ten_and_object_count():
    objects = [{"label": "a", "score": 1.0, "box": [0, 0, 1, 1], "label_id": 0},
               {"label": "b", "score": 1.0, "box": [0, 0, 1, 1], "label_id": 1}]
    graph = {"objects": objects, "relations": [rel(0, 1, "on", 0.9), rel(1, 0, "under", 0.95),
                                               rel(0, 1, "near", 0.99)]}
    assert verbalize_scene_graph(graph) == (
        "The image includes relationships between objects: a is near b, and b is under a.")
    many = {"objects": objects * 6, "relations": [rel(0, 1, f"p{i}", 0.9) for i in range(12)]}
    assert verbalize_scene_graph(many).count(" is p") == 10


def test_scene_graph_with_fewer_relations_than_k_kept_by_default_empty_in_moai_compat():
    graph = scene()
    graph["relations"] = graph["relations"][:2]  # 2 relations < min(10, 4 objects)
    assert verbalize_scene_graph(graph) == (
        "The image includes relationships between objects: person (#1) is riding horse, and "
        "person (#2) is standing on grass.")
    assert verbalize_scene_graph(graph, VerbalizeConfig(compat=Compat.MOAI)) == ""
    assert verbalize_scene_graph(scene(), VerbalizeConfig(compat="moai")) == verbalize_scene_graph(scene())


def test_scene_graph_empty():
    assert verbalize_scene_graph({"objects": [], "relations": []}) == ""
    assert verbalize_scene_graph(None) == ""
    only_low = scene()
    only_low["relations"] = [rel(0, 2, "riding", 0.5)]
    assert verbalize_scene_graph(only_low) == ""


def test_ocr_text():
    lines = [{"text": "HELLO", "score": 0.9}, {"text": "low", "score": 0.84},
             {"text": "WORLD", "score": 0.85}]
    assert verbalize_ocr(lines) == "The image includes text descriptions: HELLO, and WORLD."
    assert verbalize_ocr(lines[1:2]) == ""


def test_combined_text_keeps_spaces_of_empty_parts():
    assert combine("A.", "B.", "C.", "D.") == "A. B. C. D."
    assert combine("A.", "", "", "D.") == "A.   D."
    assert combine("", "", "", "") == "   "


def test_verbalize_row_full_and_error():
    row = {"status": "ok",
           "panoptic": [seg([0, 0, 1, 0.5], "sky-other-merged")],
           "detections": [],
           "scene_graph": scene(),
           "ocr": [{"text": "EXIT", "score": 0.99}]}
    texts = verbalize_row(row)
    assert texts["text_ps"] == PS + "[0.00, 0.00, 1.00, 0.50] sky."
    assert texts["text_owod"] == ""
    assert texts["text_ocr"] == "The image includes text descriptions: EXIT."
    assert texts["text_aux"] == (
        PS + "[0.00, 0.00, 1.00, 0.50] sky.  The image includes relationships between objects: "
        "person (#1) is riding horse, and person (#1) is beside person (#2), and person (#2) is "
        "standing on grass. The image includes text descriptions: EXIT.")
    assert set(verbalize_row({"status": "error"}).values()) == {None}


@pytest.mark.parametrize("kwargs", [{"owod_min_score": 1.5}, {"sgg_max_relations": -1},
                                    {"compat": "published"}])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        VerbalizeConfig(**kwargs)


def test_fresh_float64_values_verbalize_as_their_stored_float32():
    # 0.725 is 0.72499999... in float64 but 0.72500002 in float32, the column type
    assert format_box([0.725, 0.0, 1.0, 1.0]) == "[0.73, 0.00, 1.00, 1.00]"
    # a score just under the threshold in float64 that float32 storage rounds up to it
    just_under = 0.85 - 1e-9
    assert verbalize_ocr([{"text": "EXIT", "score": just_under}]) == (
        "The image includes text descriptions: EXIT.")
