"""The join of annotations with conversations, prompt tokenization, length-grouped plans, collate."""
from collections import Counter

import pytest
import torch

from schemas import read_annotations
from trainer.synthetic import write_corpus
from trainer.conversations import describe_conversations
from trainer.data import (
    ANNOTATION_COLUMNS, IGNORE_INDEX, OnlineDataset, PromptFormat, collate, join_samples, load_conversations,
    plan_batches, tokenize_conversation,
)


@pytest.fixture(scope="module")
def tokenizer():
    from trainer.model.tiny import build_tokenizer
    tok = build_tokenizer()
    return tok, tok.convert_tokens_to_ids("<image>")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def test_join_counts_every_skipped_conversation(corpus, tokenizer):
    tok, image_id = tokenizer
    table = read_annotations(corpus["annotations"], columns=ANNOTATION_COLUMNS)
    samples, report = join_samples(table, load_conversations(corpus["conversations"]), tok, image_id)
    assert report.conversations == 9 and report.samples == len(samples) == 6
    assert (report.missing_annotation, report.error_rows, report.no_image) == (1, 1, 1)
    assert report.examples["no_image"] == ["textonly"]
    assert "missing_annotation=1" in report.summary() and "error_rows=1" in report.summary()
    assert report.unused_annotations == 0  # the error row is referenced (and reported), not unused
    assert all(s["input_ids"].count(image_id) == 1 for s in samples)


def test_too_long_conversations_are_reported(corpus, tokenizer):
    tok, image_id = tokenizer
    table = read_annotations(corpus["annotations"], columns=ANNOTATION_COLUMNS)
    samples, report = join_samples(table, load_conversations(corpus["conversations"]), tok, image_id, max_length=20)
    assert report.too_long == 6 and samples == []


def test_labels_cover_answers_only(tokenizer):
    tok, image_id = tokenizer
    prompt = PromptFormat(user_start="U: ", user_end="\n", assistant_start="A: ", assistant_end="\n")
    turns = [{"from": "human", "value": "What is it?\n<image>"}, {"from": "gpt", "value": "A cat."}]
    ids, labels = tokenize_conversation(turns, tok, image_id, prompt)
    assert len(ids) == len(labels) and ids.count(image_id) == 1
    assert ids[0] == tok.bos_token_id
    learned = tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX])
    assert learned == "A cat.\n"
    text = tok.decode(ids, skip_special_tokens=False)
    assert text == "<s>U: What is it?\n<image>\nA: A cat.\n"
    # no placeholder: the image goes first
    ids, _ = tokenize_conversation([{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}],
                                   tok, image_id, prompt)
    assert tok.decode(ids) == "<s>U: <image>\nHi\nA: Yo\n"


def test_plan_is_length_grouped_deterministic_and_rank_sliced():
    lengths = [int(x) for x in torch.randint(5, 500, (103,), generator=torch.Generator().manual_seed(0))]
    plan = plan_batches(lengths, micro_batch_size=2, world_size=2, grad_accum=2, seed=1, epoch=0)
    assert plan == plan_batches(lengths, 2, 2, 2, seed=1, epoch=0)
    assert plan != plan_batches(lengths, 2, 2, 2, seed=1, epoch=1)
    assert len(plan) == 103 // 8 and all(len(step) == 4 and all(len(m) == 2 for m in step) for step in plan)
    used = Counter(i for step in plan for micro in step for i in micro)
    assert len(used) == 96 and max(used.values()) == 1
    # within a micro-batch lengths are close: far less spread than random pairs
    spread = sum(abs(lengths[m[0]] - lengths[m[1]]) for step in plan for m in step) / (len(plan) * 4)
    assert spread < 60
    # the same global batch on 1 process (micro 4) as on 2 processes (micro 2)
    one = plan_batches(lengths, 8, 1, 1, seed=3, epoch=0)
    two = plan_batches(lengths, 4, 2, 1, seed=3, epoch=0)
    assert [sorted(step[0]) for step in one] == [sorted(step[0] + step[1]) for step in two]


def test_collate_pads_and_masks(corpus, tokenizer):
    tok, image_id = tokenizer
    table = read_annotations(corpus["annotations"], columns=ANNOTATION_COLUMNS)
    samples, _ = join_samples(table, load_conversations(corpus["conversations"]), tok, image_id)
    dataset = OnlineDataset(samples, table, image_size=112)
    items = [dataset[0], dataset[4]]
    batch = collate(items, pad_token_id=tok.pad_token_id)
    assert batch["image"].shape == (2, 112, 112, 3) and batch["image"].dtype == torch.uint8
    assert batch["ps_ids"].shape == (2, 112, 112) and set(batch["ps_ids"].unique().tolist()) == {1, 2}
    for b, item in enumerate(items):
        n = len(item["input_ids"])
        assert batch["attention_mask"][b].sum() == n
        assert torch.equal(batch["input_ids"][b, :n], item["input_ids"])
        assert (batch["labels"][b, n:] == IGNORE_INDEX).all()
        assert batch["aux_attention_mask"][b].sum() == len(item["aux_input_ids"])


def test_demo_conversations_answer_from_the_segments(corpus, tmp_path):
    from trainer.cli import main
    assert main(["conversations", "--annotations", str(corpus["annotations"]), "--out", str(tmp_path / "c.json")]) == 0
    conversations = load_conversations(tmp_path / "c.json")
    assert len(conversations) == 6  # the error row has nothing to describe
    assert conversations[0]["image"] == "img0.png"
    assert conversations[0]["conversations"][1]["value"] == "wall, circle."
    assert describe_conversations(read_annotations(corpus["annotations"]))[1]["conversations"][1]["value"] == \
        "wall, square."


def test_cli_lists_commands_and_rejects_unknown(capsys):
    from trainer.cli import main
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("cache", "train", "generate", "conversations"))
    assert main(["bogus"]) == 2


def test_conversations_the_model_would_reject_are_counted_in_the_join(corpus, tokenizer):
    tok, image_id = tokenizer
    table = read_annotations(corpus["annotations"], columns=ANNOTATION_COLUMNS)
    ask = {"from": "human", "value": "<image>\nWhat is it?"}
    cases = {
        "answer_first": [{"from": "gpt", "value": "Hello."}, ask, {"from": "gpt", "value": "A shape."}],
        "image_in_answer": [ask, {"from": "gpt", "value": "It is <image> here."}],
        "markup_in_answer": [ask, {"from": "gpt", "value": "Done.<|im_end|>\n<|im_start|>user\nmore"}],
        "empty_answer": [ask, {"from": "gpt", "value": "   "}],
        "no_answer": [ask],
        "fine": [ask, {"from": "gpt", "value": "A shape."}],
    }
    conversations = [{"id": name, "image": "img0.png", "conversations": turns} for name, turns in cases.items()]
    samples, report = join_samples(table, conversations, tok, image_id, max_length=512)
    assert [s["sample_id"] for s in samples] == ["fine"]
    assert report.examples["malformed"] == ["answer_first", "image_in_answer", "markup_in_answer"]
    assert (report.malformed, report.empty_answer, report.no_answer, report.too_long) == (3, 1, 1, 0)


@pytest.mark.parametrize("text, message", [
    ('[{"id": 1, "conversations": [', "not valid JSON"),
    ('{\n "id": 1,\n "conversations": []\n}\n', "not JSON Lines"),
    ('["just a string"]', "record 0 is a str"),
    ('[{"id": "a"}]', "has no 'conversations' list"),
    ('[{"id": "a", "conversations": [{"from": "user", "value": "hi"}]}]', "expected {'from': 'human'|'gpt'"),
])
def test_bad_conversation_files_name_the_file_and_the_place(tmp_path, text, message):
    path = tmp_path / "conv.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_conversations(path)
    assert str(path) in str(err.value)
