import re

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from pipeline.render import GREY, OCR_KEPT, SGG_EDGE, RenderConfig, Renderer, label_colour, load_photo
from pipeline.show import main as show_main
from schemas import encode_ps_map, error_row, rows_to_table, voc_colormap
from schemas.schema import empty_row

from .conftest import PROVENANCE, det, finish, line, obj, rel

BACKGROUND = (20, 20, 20)


def photo_row(tmp_path):
    """A 400x200 plain photo, a kept and a dropped detection, segment 3 in the right quarter."""
    Image.new("RGB", (400, 200), BACKGROUND).save(tmp_path / "photo.png")
    ps = np.zeros((490, 490), np.uint8)  # squashed to the working size, as MoAI does
    ps[:, 367:] = 3
    row = empty_row("photo", str(tmp_path / "photo.png"), 400, 200)
    row.update(ps_map=encode_ps_map(ps),
               detections=[det("cat", 0.9, (0.25, 0.25, 0.75, 0.75)), det("dog", 0.3, (0.05, 0.05, 0.15, 0.2))],
               panoptic=[], ocr=[])
    return finish(row)


def graph_row():
    """No readable photo; a 300x600 PS map of zeros; one kept relation and one kept OCR line."""
    row = empty_row("graph", "/nowhere/graph.jpg", 1200, 600)
    row.update(ps_map=encode_ps_map(np.zeros((300, 600), np.uint8)), panoptic=[], detections=[],
               scene_graph={"objects": [obj("person", (0.0, 0.1, 0.2, 0.2)), obj("kite", (0.6, 0.6, 0.8, 0.8))],
                            "relations": [rel(0, 1, "flying", 0.9)]},
               ocr=[line("EXIT", 0.95, ((0.1, 0.7), (0.4, 0.7), (0.4, 0.9), (0.1, 0.9)))])
    return finish(row)


def test_boxes_and_ps_map_are_drawn_where_they_are(tmp_path):
    row = photo_row(tmp_path)
    photo, note = load_photo(row["source"])
    assert note is None
    image = np.asarray(Renderer(RenderConfig(max_side=400))(row, photo, note))
    assert image.shape == (200, 400, 3)
    px = lambda x, y: tuple(int(v) for v in image[y, x])  # noqa: E731
    cat = label_colour("cat")
    for x, y in [(100, 100), (299, 100), (200, 50), (200, 149)]:  # the cat box (100, 50)-(300, 150)
        assert px(x, y) == cat, (x, y)
    for x, y in [(200, 100), (150, 120), (30, 180), (250, 10)]:   # inside, and far from any box
        assert px(x, y) == BACKGROUND, (x, y)
    assert px(20, 10) == BACKGROUND    # the dog (score 0.3 < 0.5) is not drawn: (20, 10)-(60, 40)
    # segment 3 covers columns >= 367/490 of the squashed map -> x >= 300 on the 400-wide photo
    expected = tuple(round(0.55 * b + 0.45 * c) for b, c in zip(BACKGROUND, voc_colormap()[3]))
    assert px(310, 190) == expected and px(395, 5) == expected
    assert px(290, 190) == BACKGROUND


def test_unreadable_source_gets_a_grey_canvas_with_edges_and_ocr(tmp_path):
    row = graph_row()
    photo, note = load_photo(row["source"])
    assert photo is None and "unreadable" in note
    image = np.asarray(Renderer()(row, photo, note))
    assert image.shape == (300, 600, 3)  # the PS map's size
    px = lambda x, y: tuple(int(v) for v in image[y, x])  # noqa: E731
    # person centre (60, 45) -> kite centre (420, 210): a quarter along the edge is (150, 86)
    assert px(150, 86) == SGG_EDGE and px(60, 45) == SGG_EDGE
    assert px(120, 50) == SGG_EDGE                          # person box, right side
    assert px(150, 210) == OCR_KEPT and px(240, 240) == OCR_KEPT   # OCR polygon top and right
    assert px(150, 240) == GREY                             # inside the polygon
    assert px(550, 150) == GREY and px(300, 280) == GREY    # far away
    assert px(5, 5) != GREY                                 # the banner saying the source is unreadable


def test_gallery_references_files_that_exist(tmp_path, capsys):
    rows = [photo_row(tmp_path), graph_row(),
            error_row("bad <1>.jpg", "/nowhere/bad.jpg", "decode", "cannot identify image file")]
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(rows_to_table(rows, PROVENANCE), out / "part-0.parquet")
    gallery = tmp_path / "gallery"
    assert show_main([str(out), "--sample", "10", "--out", str(gallery)]) == 0
    page = (gallery / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 3
    for src in sources:
        assert (gallery / src).is_file()
        Image.open(gallery / src).verify()
    assert sorted(p.name for p in (gallery / "images").iterdir()) == sorted(s.split("/")[-1] for s in sources)
    assert "The image includes relationships between objects: person is flying kite." in page
    assert "bad &lt;1&gt;.jpg" in page and "cannot identify image file" in page
    single = tmp_path / "single"
    assert show_main([str(out), "--id", "photo", "--out", str(single)]) == 0
    assert len(re.findall(r'<img src="([^"]+)"', (single / "index.html").read_text())) == 1
    assert Image.open(next((single / "images").iterdir())).size == (640, 320)
    assert show_main([str(out), "--id", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "nope" in capsys.readouterr().err


def test_relative_sources_resolve_under_source_root(tmp_path):
    row = photo_row(tmp_path)
    row["source"] = "photo.png"  # relative to the corpus folder, not to the working directory
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(rows_to_table([row], PROVENANCE), out / "part-0.parquet")
    assert show_main([str(out), "--id", "photo", "--out", str(tmp_path / "g"),
                      "--source-root", str(tmp_path), "--max-side", "400"]) == 0
    picture = np.asarray(Image.open(next((tmp_path / "g" / "images").iterdir())).convert("RGB"))
    assert tuple(int(v) for v in picture[180, 30]) == BACKGROUND  # the photo, not a grey canvas
    assert "unreadable" not in (tmp_path / "g" / "index.html").read_text()
