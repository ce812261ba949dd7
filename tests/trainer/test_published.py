"""The published MoAI-7B on our backbone: InternLM2 with PLoRA, the published computation, compat quirks,
batching (converters: test_published_convert.py).

A random-weight checkpoint in the published layout (built from its key list at a tiny size) is
converted and run against an independent re-implementation of the published computation
(tests/trainer/published_reference.py).
"""
import json

import pytest
import torch
from torch.testing import assert_close

from tests.trainer import published_reference as ref
from trainer.model import MoAIModel
from trainer.model.internlm2 import InternLM2PLoRAConfig, InternLM2PLoRAForCausalLM, PLoRALinear
from trainer.published.convert import lm_state

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = ["AI assistant. <image> What is on the table? ASSISTANT:", "<image> Colour? ASSISTANT:",
           "Look: <image> Describe the scene in one long sentence. ASSISTANT:"]
AUX = ["The image includes bounding box coordinates and their objects: [0.10, 0.20, 0.50, 0.90] cup.", "",
       "The image includes text descriptions: STOP."]


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_root):
    """(random published tensors, the published folder, our converted folder)."""
    return ref.converted_tiny(tmp_path_factory.mktemp("published"), tiny_root)


def load(folder, compat="none"):
    return MoAIModel.from_pretrained(folder, torch_dtype="float32", compat=compat).eval()


def features(rows, seed=0):
    return torch.stack([torch.randn(1225, 32, generator=torch.Generator().manual_seed(seed + r)) for r in rows])


def sample(model, rows=(0,), padding="left"):
    """Prompts (BOS first) padded on `padding`, aux text right-padded, features per row."""
    tok = model.tokenizer
    ids = [[tok.bos_token_id] + tok(PROMPTS[r], add_special_tokens=False)["input_ids"] for r in rows]
    aux = [tok(AUX[r], add_special_tokens=False)["input_ids"] or [tok.pad_token_id] for r in rows]
    T, A = max(map(len, ids)), max(map(len, aux))
    batch = dict(input_ids=torch.full((len(rows), T), tok.pad_token_id),
                 attention_mask=torch.zeros(len(rows), T, dtype=torch.long),
                 aux_input_ids=torch.full((len(rows), A), tok.pad_token_id),
                 aux_attention_mask=torch.zeros(len(rows), A, dtype=torch.long),
                 image_features=features(rows), ps_features=features(rows, seed=100))
    for b, (x, a) in enumerate(zip(ids, aux)):
        span = slice(T - len(x), T) if padding == "left" else slice(0, len(x))
        batch["input_ids"][b, span], batch["attention_mask"][b, span] = torch.tensor(x), 1
        batch["aux_input_ids"][b, :len(a)] = torch.tensor(a)
        batch["aux_attention_mask"][b, :len(a)] = int(AUX[rows[b]] != "")  # an empty text: one masked pad
    return batch


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


# ---- the published computation -------------------------------------------------------------------
def test_compat_moai_reproduces_the_published_computation(published):
    tensors, _, ours = published
    model = load(ours, compat="moai")
    batch = sample(model, rows=(0,))
    ids, aux = batch["input_ids"][0], batch["aux_input_ids"][0]
    expected, tokens = ref.run(tensors, ids, model.image_token_id, batch["image_features"][0], aux,
                               batch["ps_features"][0], model.tokenizer.bos_token_id, new_tokens=5)
    # float16 gates: a 1e-6 difference in a gate's input (another kernel order) can flip a float16 rounding,
    # so a few logits move by up to ~3e-4; everything else agrees to float32 rounding.
    diff = (logits(model, batch)[0] - expected).abs()
    assert diff.max() < 1e-3 and (diff > 1e-4).float().mean() < 0.005
    generated = model.generate(**batch, max_new_tokens=5)
    assert generated[0].tolist() == tokens
    # Teeth: without the quirks (our default), or with only one of the two that matter here, it differs widely.
    for compat in ("none", "gate_half", "aux_bos_nomask"):
        assert ((logits(load(ours, compat), batch)[0] - expected).abs() > 1e-4).float().mean() > 0.3, compat


def test_plora_only_on_image_rows_and_not_for_text_only_input(published):
    _, _, ours = published
    model = load(ours)
    lm = model.lm
    layer = lm.model.layers[0].self_attn.qkv_proj
    assert isinstance(layer, PLoRALinear)
    x = torch.randn(1, 5, 64)
    im = torch.tensor([[False, True, True, False, False]])
    with torch.no_grad():
        y, y_text = layer(x, im), layer(x, None)
        lora = layer.lora_B(layer.lora_A(x))
    assert torch.equal(y[~im], y_text[~im])
    assert_close(y[im], y_text[im] + lora[im])
    ids = torch.randint(4, 200, (1, 12))
    with torch.no_grad():
        plain = lm(input_ids=ids).logits
        no_image = lm(input_ids=ids, im_mask=torch.zeros(1, 12, dtype=torch.bool)).logits
        for name, p in lm.named_parameters():  # no image tokens: the LoRA path must not matter at all
            if "lora_B" in name:
                p.add_(1.0)
        changed = lm(input_ids=ids).logits
        image = lm(input_ids=ids, im_mask=torch.arange(12)[None] >= 6).logits
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.sub_(1.0)
    assert torch.equal(plain, no_image) and torch.equal(plain, changed)
    assert torch.equal(image[:, :6], plain[:, :6]) and not torch.allclose(image[:, 6:], plain[:, 6:])


@pytest.mark.parametrize("padding", ["left", "right"])
def test_batch_of_three_with_padding_equals_three_batch_one_runs(published, padding):
    _, _, ours = published
    model = load(ours)
    model.set_stage(2)
    batch = sample(model, rows=(0, 1, 2), padding=padding)
    assert (batch["attention_mask"] == 0).any()
    with torch.no_grad():
        out = model(**batch)
    for r in range(3):
        single = logits(model, sample(model, rows=(r,)))
        assert_close(out.logits[r, out.attention_mask[r].bool()], single[0], atol=1e-4, rtol=1e-4)
    answers = model.generate(**batch, max_new_tokens=4)
    for r in range(3):
        assert answers[r].tolist() == model.generate(**sample(model, rows=(r,)), max_new_tokens=4)[0].tolist()


def test_greedy_kv_cached_generation_equals_teacher_forcing(published):
    _, _, ours = published
    model = load(ours)
    batch = sample(model, rows=(0, 2))
    generated = model.generate(**batch, max_new_tokens=6)
    assert generated.shape == (2, 6)
    full = dict(batch, input_ids=torch.cat([batch["input_ids"], generated], 1),
                attention_mask=torch.cat([batch["attention_mask"], torch.ones_like(generated)], 1))
    labels = torch.full_like(full["input_ids"], -100)
    labels[:, -6:] = generated  # answers: the Mixer sees only the prompt, as in generation
    with torch.no_grad():
        out = model(**full, labels=labels)
    assert out.logits[:, -7:-1].argmax(-1).tolist() == generated.tolist()


def test_plora_is_frozen_in_both_stages(published):
    model = load(published[2])
    for stage in (1, 2):
        model.set_stage(stage)
        assert not any(p.requires_grad for p in model.lm.parameters())
        assert all(p.requires_grad for p in model.compressor.parameters())


# ---- compat quirks, each alone -------------------------------------------------------------------
def test_quirk_gate_half(published):
    _, _, ours = published
    batch = sample(load(ours), rows=(0,))
    base, quirk = load(ours), load(ours, "gate_half")
    with torch.no_grad():
        a, b = base(**batch), quirk(**batch)
    sums = b.gate_weights[3].image.sum(-1)
    assert (sums - 1).abs().max() > 0 and torch.allclose(sums, torch.ones_like(sums), atol=2e-3)
    assert torch.equal(a.gate_weights[3].image.sum(-1).round(decimals=5), torch.ones_like(sums))
    assert 0 < (a.logits - b.logits).abs().max() < 1e-2
    quirk.train()  # stage-2 training: bfloat16 weights, coarser still
    with torch.no_grad():
        trained = quirk(**batch).gate_weights[3].image.sum(-1)
    assert (trained - 1).abs().max() > (sums - 1).abs().max() and torch.allclose(trained, sums, atol=1e-2)


def test_quirk_aux_bos_nomask(published):
    _, _, ours = published
    base, quirk = load(ours), load(ours, "aux_bos_nomask")
    batch = sample(base, rows=(1,))  # an empty aux text: our default masks its pad, published sees BOS only
    ids, mask = quirk._published_aux_text(batch["aux_input_ids"], batch["aux_attention_mask"])
    assert ids.tolist() == [[base.tokenizer.bos_token_id]] and mask.tolist() == [[1]]
    assert not torch.allclose(logits(base, batch), logits(quirk, batch))


def test_quirk_buffer_positions(published):
    _, _, ours = published
    base, quirk = load(ours), load(ours, "buffer_positions")
    padded = sample(base, rows=(0, 1), padding="left")
    seen = {}
    for name, model in (("base", base), ("quirk", quirk)):
        model.lm.register_forward_pre_hook(lambda m, a, kw, name=name: seen.__setitem__(name, kw["position_ids"]),
                                           with_kwargs=True)
        logits(model, padded)
    pads = int((padded["attention_mask"][1] == 0).sum())
    assert seen["base"][1, -1] == seen["base"][0, -1] - pads  # ours: positions count real tokens only
    assert torch.equal(seen["quirk"][1], seen["quirk"][0])  # published: the buffer index, padding included
    # RoPE is relative, so a common shift moves the logits by rounding only.
    with torch.no_grad():
        out = base(**padded)
    real = out.attention_mask.bool()
    assert_close(out.logits[real], logits(quirk, padded)[real], atol=1e-4, rtol=1e-4)


def test_quirk_clip_fp16_positions_and_ps_range(published, tiny_root):
    _, _, ours = published
    base, fp16, ps = load(ours), load(ours, "clip_fp16_positions"), load(ours, "ps_range")
    table = base.vision.embeddings.position_embedding.weight
    rounded = fp16.vision.embeddings.position_embedding.weight
    assert torch.equal(rounded, table.half().float()) and not torch.equal(rounded, table)
    ps_ids = torch.randint(0, 5, (1, 490, 490), dtype=torch.uint8)
    assert torch.equal(base.ps_pixel_values(ps_ids), fp16.ps_pixel_values(ps_ids))
    assert not torch.allclose(base.ps_pixel_values(ps_ids), ps.ps_pixel_values(ps_ids))
    assert torch.equal(base.vision.embeddings.position_embedding.weight, ps.vision.embeddings.position_embedding.weight)


def test_backbone_loads_natively_by_its_model_type(tmp_path):
    from transformers import AutoModelForCausalLM

    config = InternLM2PLoRAConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=1, plora_rank=2, plora_alpha=4)
    lm = InternLM2PLoRAForCausalLM(config)
    lm.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True)
    assert type(again) is InternLM2PLoRAForCausalLM and again.model.layers[0].mlp.up_proj.scaling == 2.0
    assert lm_state(ref.random_published(), ref.TINY)["lm_head.weight"].shape == (260, 64)


def test_cli_entry_and_generation_bench_smoke(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    from trainer.cli import main as cli_main

    path = Path(__file__).resolve().parents[2] / "bench" / "bench_generate.py"
    spec = importlib.util.spec_from_file_location("bench_generate", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench_main = bench.main

    assert cli_main(["published", "convert", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    assert "no published checkpoint folder at" in capsys.readouterr().err
    assert bench_main(["--batch-sizes", "1,2", "--new-tokens", "3", "--repeats", "1",
                       "--json", str(tmp_path / "g.json")]) == 0
    rows = json.loads((tmp_path / "g.json").read_text())["results"]
    assert [r["batch"] for r in rows] == [1, 2]
    assert all(r["prompt_tokens_per_s"] > 0 and r["generated_tokens_per_s"] > 0 and r["steps"] == 3 for r in rows)


def test_converted_model_answers_batched_as_trainer_generate_does(published, tmp_path):
    """`trainer generate` / `trainer evaluate run` (answer_batch) on the converted folder, with the prompt
    format the converter wrote: a batch answers as its rows do alone."""
    from schemas import encode_ps_map
    from trainer.data import PromptFormat
    from trainer.generate import answer_batch
    from trainer.synthetic import render

    ours = published[2]
    model = load(ours)
    prompt = PromptFormat.from_dict(json.loads((ours / "state.json").read_text())["recipe"]["data"]["prompt"])
    items = []
    for i, (shape, colour, aux) in enumerate([("circle", "red", AUX[0]), ("square", "blue", ""),
                                              ("triangle", "green", AUX[2])]):
        image, segments = render(shape, colour)
        image.save(tmp_path / f"{i}.png")
        items.append({"prompt": f"What is the {shape}'s colour?" + " Answer briefly." * i,
                      "source": str(tmp_path / f"{i}.png"), "ps_map": encode_ps_map(segments), "text_aux": aux})
    batched = answer_batch(model, items, prompt, max_new_tokens=4)
    assert batched == [answer_batch(model, [item], prompt, max_new_tokens=4)[0] for item in items]


@pytest.mark.parametrize("stage", [1, 2])
def test_training_step_on_the_backbone_with_gradient_checkpointing(published, stage):
    """MoAI's parts get the same gradients with the LM's layers checkpointed; PLoRA and the LM get none."""
    model = load(published[2]).train()
    model.set_stage(stage)
    batch = sample(model, rows=(0, 2), padding="right")
    labels = batch["input_ids"].clone()
    labels[:, :-4] = -100  # the last tokens play the answer
    labels[batch["attention_mask"] == 0] = -100
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            model.lm.activation_checkpointing_enable({"use_reentrant": False})  # as trainer/train.py does
        model.zero_grad()
        loss = model(**batch, labels=labels, generator=torch.Generator().manual_seed(5)).loss
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    assert not any(n.startswith(("lm.", "vision.")) for n in grads[0])
    assert any(n.startswith("mixers.") for n in grads[0]) and any(n.startswith("compressor.") for n in grads[0])
    for name in grads[0]:
        assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4)


def test_a_feature_cache_follows_only_the_quirks_that_change_features():
    from trainer.cache import check_compatible

    meta = {"model": {"vision": "clip", "compat": "none"}}
    check_compatible(meta, {"vision": "clip", "compat": "gate_half,aux_bos_nomask,buffer_positions"})
    for compat in ("moai", "ps_range", "clip_fp16_positions"):
        with pytest.raises(ValueError, match="feature cache was made with compat='none'"):
            check_compatible(meta, {"vision": "clip", "compat": compat})
    check_compatible({"model": {"compat": "moai"}}, {"compat": "ps_range,clip_fp16_positions"})
