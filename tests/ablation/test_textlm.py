"""Phase 0 of the ablation: the word-level tokenizer, the text conversations, the reading score,
the cache of the pretrained LM, and the probes and report built on top."""
import json
from types import SimpleNamespace

import pytest
import torch

from trainer.ablation import textlm
from trainer.ablation.oracle import oracle_row
from trainer.ablation.questions import scene_conversations
from trainer.ablation.run import PROMPT, with_aux_in_prompt
from trainer.ablation.scenes import SIGN_WORDS, make_scene, render
from trainer.data import IGNORE_INDEX, PromptFormat, tokenize_conversation


@pytest.fixture(scope="module")
def tokenizer():
    return textlm.build_word_tokenizer()


def scenes(n, start=0):
    rows, entries = {}, []
    for index in range(start, start + n):
        scene = make_scene(0, index)
        image, id_map = render(scene)
        rows[f"{scene.scene_id}.png"] = oracle_row(scene, id_map, "x")["text_aux"]
        entries += scene_conversations(scene, 0)
    return rows, entries


def test_word_tokenizer_knows_every_word_of_the_domain(tokenizer):
    aux, entries = scenes(12)
    unk = tokenizer.unk_token_id
    for text in [*aux.values(), *(t["value"] for e in entries for t in e["conversations"])]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert unk not in ids, (text, tokenizer.convert_ids_to_tokens(ids))
    for word in [*SIGN_WORDS, "0.43", "1.00", "#2", "sports"]:
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word
    # one token per word, punctuation dropped: a box entry is four numbers and a name
    ids = tokenizer("[0.43, 0.08, 0.66, 0.30] sports ball, and", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["0.43", "0.08", "0.66", "0.30", "sports", "ball", "and"]
    assert tokenizer.decode(tokenizer("top left</s>", add_special_tokens=False)["input_ids"]) == "top left </s>"
    assert max(len(tokenizer(t)["input_ids"]) for t in aux.values()) < 200


def test_text_sequence_is_the_arms_prompt_without_the_image(tokenizer):
    aux, entries = scenes(2)
    prompt = PromptFormat(**PROMPT)
    entry = with_aux_in_prompt(entries[:1], aux)[0]
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    arm_ids, arm_labels = tokenize_conversation(entry["conversations"], tokenizer, image_id, prompt)
    question, answer = entries[0]["conversations"][0]["value"].split("\n", 1)[1], entries[0]["conversations"][1]["value"]
    ids, labels = textlm.text_sequence(aux[entries[0]["image"]], [(question, answer)], tokenizer, prompt)
    assert [t for t in arm_ids if t != image_id] == ids
    learned = [t for t in labels if t != IGNORE_INDEX]
    assert tokenizer.decode(learned) == f"{answer} </s>"
    # several questions: every answer is learned, the aux text only once, at the start
    qas = [(e["conversations"][0]["value"].split("\n", 1)[1], e["conversations"][1]["value"]) for e in entries[:3]]
    ids, labels = textlm.text_sequence(aux[entries[0]["image"]], qas, tokenizer, prompt)
    assert sum(t == tokenizer.eos_token_id for t in labels) == 3
    assert ids.count(tokenizer.convert_tokens_to_ids("descriptions")) == 1


class SaysYes(torch.nn.Module):
    """A rule for an LM: 'yes' right after ASSISTANT, then the end of answer."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tok = tokenizer

    def forward(self, input_ids, attention_mask):
        logits = torch.zeros(*input_ids.shape, len(self.tok))
        after_assistant = input_ids == self.tok.convert_tokens_to_ids("ASSISTANT")
        logits[..., self.tok.eos_token_id] = 1.0
        logits[after_assistant, self.tok.convert_tokens_to_ids("yes")] = 2.0
        return SimpleNamespace(logits=logits)


def test_reading_accuracy_is_greedy_exact_match(tokenizer):
    """Right exactly when every answer token and the end of answer are the argmax: this rule gets
    the 'yes' existence questions right and nothing else."""
    aux, entries = scenes(6)
    acc = textlm.reading_accuracy(SaysYes(tokenizer), tokenizer, entries, aux, PromptFormat(**PROMPT))
    existence = [e["conversations"][1]["value"] == "yes" for e in entries if e["question_type"] == "existence"]
    assert acc["existence"] == pytest.approx(sum(existence) / len(existence))
    assert 0 < acc["existence"] < 1 and acc["text"] == acc["counting"] == 0.0
    assert acc["all"] == pytest.approx(sum(existence) / len(entries))


def test_phase0_learns_and_is_cached(tmp_path, tokenizer, monkeypatch):
    """A few steps lower the loss; the folder loads as an LM + tokenizer; a rerun does not train."""
    aux, entries = scenes(8)
    prompt = PromptFormat(**PROMPT)
    shape = textlm.LMShape(width=32, layers=1, heads=1, steps=40, batch_size=8, lr=1e-2, warmup=5,
                           copy_warmup_steps=10)
    folder, report = textlm.pretrained_lm(tmp_path / "lm", shape, entries[:30], entries[30:], aux, prompt, log=lambda m: None)
    assert report["final_loss"] < report["first_loss"] - 2
    assert set(report["heldout_with_aux"]) >= {"existence", "text", "all"}
    from transformers import AutoModelForCausalLM, AutoTokenizer
    assert AutoModelForCausalLM.from_pretrained(folder).config.hidden_size == 32
    assert AutoTokenizer.from_pretrained(folder)("CAFE", add_special_tokens=False)["input_ids"] == \
        tokenizer("CAFE", add_special_tokens=False)["input_ids"]
    monkeypatch.setattr(textlm, "pretrain", lambda *a, **k: pytest.fail("phase 0 ran again"))
    assert textlm.pretrained_lm(tmp_path / "lm", shape, entries, entries, aux, prompt)[1] == report


def test_linear_probe_reads_a_linear_code_and_not_noise():
    from trainer.ablation.probes import fit_linear_probe

    g = torch.Generator().manual_seed(0)
    y = torch.randint(4, (200,), generator=g)
    code = torch.randn(4, 16, generator=g)
    x = code[y] + 0.3 * torch.randn(200, 16, generator=g)
    probe = fit_linear_probe(x[:150], y[:150], 4)
    assert (probe(x[150:]).argmax(-1) == y[150:]).float().mean() > 0.9
    noise = torch.randn(200, 16, generator=g)
    probe = fit_linear_probe(noise[:150], y[:150], 4)
    assert (probe(noise[150:]).argmax(-1) == y[150:]).float().mean() < 0.6


def test_results_merge_per_arm_and_plot(tmp_path):
    from trainer.ablation.report import plot, save_result

    save_result(tmp_path, {"name": "moai", "answer_loss": {"all": 1.0}}, {"config": {"seed": 0}})
    save_result(tmp_path, {"name": "no-aux", "answer_loss": {"all": 2.0}}, {"config": {"seed": 0}})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert list(saved["arms"]) == ["moai", "no-aux"] and saved["arms"]["moai"]["answer_loss"] == {"all": 1.0}
    path = plot({"moai": {"text": 0.5, "all": 0.4}, "no-aux": {"text": 0.1, "all": 0.3}}, {"text": 10, "all": 20},
                tmp_path / "a.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_copy_warmup_asks_only_the_text_question(tokenizer):
    import random

    aux, entries = scenes(6)
    shape = textlm.LMShape(width=32, layers=1, heads=1, steps=10, batch_size=6, copy_warmup_steps=5,
                           no_aux_fraction=0.0)
    scene_list = sorted(textlm.by_image(entries).items())
    prompt = PromptFormat(**PROMPT)
    rng = random.Random(0)
    sign = {tokenizer.convert_tokens_to_ids(w) for w in SIGN_WORDS}
    batch = textlm.sample_batch(rng, scene_list, aux, shape, tokenizer, prompt, only="text")
    answers = batch["labels"][batch["labels"] != IGNORE_INDEX].tolist()
    assert set(answers) <= sign | {tokenizer.eos_token_id} and len(answers) == 2 * 6
    batch = textlm.sample_batch(rng, scene_list, aux, shape, tokenizer, prompt)
    assert not set(batch["labels"][batch["labels"] != IGNORE_INDEX].tolist()) <= sign | {tokenizer.eos_token_id}
    with pytest.raises(ValueError, match="copy_warmup_steps"):
        textlm.LMShape(steps=100, copy_warmup_steps=100)


def test_reading_layers_finds_the_layer_whose_head_reads_the_sign_word(tokenizer):
    """A 2-layer LM whose second layer has a head built to attend to sign words: the probe says
    layer 1 reads (weight ~1) and layer 0, whose attention is zeroed (uniform), does not."""
    import transformers

    from trainer.ablation.probes import reading_layers

    aux, entries = scenes(4)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=8, intermediate_size=16,
                                      num_hidden_layers=2, num_attention_heads=1, num_key_value_heads=1,
                                      head_dim=8, rope_theta=1e16, tie_word_embeddings=False)
    torch.manual_seed(0)
    lm = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        embed = lm.get_input_embeddings().weight  # (V, 8): every token has 1 on dim 1, sign words 3 on dim 0
        embed.normal_(std=0.05)
        embed[:, 1] = 1.0
        embed[tokenizer.convert_tokens_to_ids(list(SIGN_WORDS)), 0] = 3.0
        for layer in lm.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.mlp.down_proj, layer.self_attn.o_proj):
                proj.weight.zero_()
        # layer 1: query dim 1 <- input dim 1 (every token), key dim 1 <- input dim 0 (sign words);
        # RoPE barely turns dim pair (1, 5) at this theta, so the match does not depend on position
        lm.model.layers[1].self_attn.q_proj.weight[1, 1] = 30.0
        lm.model.layers[1].self_attn.k_proj.weight[1, 0] = 30.0
    implementation = lm.config._attn_implementation
    reading = reading_layers(lm, tokenizer, entries, aux, PromptFormat(**PROMPT))
    assert set(reading) == {0, 1}
    assert reading[1] > 0.95 and reading[0] < 0.1
    assert lm.config._attn_implementation == implementation  # the LM's own kernel is restored
