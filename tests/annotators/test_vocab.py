"""Named, hashed vocabularies from installed packages, files and MoAI's shared lists."""
import hashlib
import json

import pytest

from annotators.vocab import Vocabulary, load_vocabulary, load_vocabulary_file, package_vocabulary


@pytest.mark.parametrize("spec, size, first", [
    ("ultralytics:coco", 80, "person"), ("ultralytics:lvis", 1203, "aerosol can/spray can"),
    ("ultralytics:imagenet", 1000, "tench"), ("ultralytics:objects365", 365, "Person"),
])
def test_package_vocabularies(spec, size, first):
    vocab = load_vocabulary(spec)
    assert (vocab.name, len(vocab), vocab.names[0]) == (spec, size, first)
    assert vocab.sha256 == hashlib.sha256("\n".join(vocab.names).encode()).hexdigest()


def test_specs_concatenate_in_order_with_a_combined_name_and_hash():
    both = load_vocabulary(("ultralytics:coco", "ultralytics:imagenet"))
    assert len(both) == 1080 and both.names[80] == "tench" and both.name == "ultralytics:coco+ultralytics:imagenet"
    assert both.sha256 != load_vocabulary(("ultralytics:imagenet", "ultralytics:coco")).sha256
    assert both.provenance() == {"name": both.name, "size": 1080, "sha256": both.sha256}


def test_moai_query_vocabulary_from_the_shared_files(shared_dir):
    vocab = load_vocabulary((str(shared_dir / "vocab" / "ade20k_847.json"),
                             str(shared_dir / "vocab" / "imagenet_1k.json")))
    assert len(vocab) == 1847 and vocab.name == "ade20k_847+imagenet_1k"
    assert vocab.names[:2] == ("wall", "building")


def test_files_text_json_list_and_id2label(tmp_path):
    (tmp_path / "a.txt").write_text("cat\n\n dog \n")
    (tmp_path / "b.json").write_text(json.dumps(["cat", "dog"]))
    (tmp_path / "c.json").write_text(json.dumps({"1": "dog", "0": "cat", "10": "eel"}))
    assert load_vocabulary(str(tmp_path / "a.txt")).names == ("cat", "dog")
    assert load_vocabulary(tmp_path / "b.json") == Vocabulary("b", ("cat", "dog"))
    assert load_vocabulary_file(tmp_path / "c.json").names == ("cat", "dog", "eel")
    assert load_vocabulary(str(tmp_path / "a.txt")).sha256 == load_vocabulary(tmp_path / "b.json").sha256


def test_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="ultralytics:coco"):
        package_vocabulary("ultralytics:cocoa")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_vocabulary(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="empty vocabulary spec"):
        load_vocabulary(())
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="non-empty list of non-empty strings"):
        load_vocabulary(str(tmp_path / "bad.json"))


def test_the_shipped_moai_queries_are_ade20k_then_imagenet_name_by_name(shared_dir):
    shipped = load_vocabulary("moai:owlv2")
    reference = [*json.loads((shared_dir / "vocab" / "ade20k_847.json").read_text()),
                 *json.loads((shared_dir / "vocab" / "imagenet_1k.json").read_text())]
    assert len(shipped) == 1847 and list(shipped.names) == reference
    assert shipped.name == "moai:owlv2"


@pytest.mark.parametrize("spec, reference", [("moai:coco_panoptic", "coco_panoptic_133.json"),
                                             ("moai:psg_predicates", "psg_predicates_56.json")])
def test_the_shipped_psgtr_vocabularies_are_the_reference(shared_dir, spec, reference):
    assert list(load_vocabulary(spec).names) == json.loads((shared_dir / "vocab" / reference).read_text())


def test_owlv2_defaults_to_moais_queries():
    from annotators.owlv2 import OWLv2Annotator
    assert OWLv2Annotator.Config().vocabulary == ("moai:owlv2",)
