"""bench/bench_moai_vs_backbone.py: the tiny CPU path runs every variant, the 7B shapes build on meta."""
import importlib.util
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_moai_vs_backbone.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_moai_vs_backbone", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_cpu_step_of_each_variant(bench, tmp_path_factory):
    backbones = tmp_path_factory.getbasetemp() / "moai-tiny"  # shared with the other trainer tests
    results = {r["variant"]: r for r in bench.measure("tiny", "cpu", steps=1, warmup=0, backbones=backbones)}
    assert set(results) == {"bare", "stage1", "stage2"}
    for result in results.values():
        assert all(math.isfinite(x) for x in result["losses"])
        assert result["seconds"] > 0 and result["step_rss_mib"] >= 0
        assert result["tokens"] == 2 * (96 - 1 + 1225)
    # bare trains the connector only; MoAI adds Compressor + experts, stage 2 the gates too
    assert results["bare"]["trainable"] < results["stage1"]["trainable"] < results["stage2"]["trainable"]
    assert results["bare"]["model"] < results["stage1"]["model"] < results["stage2"]["model"]


def test_7b_shapes_on_meta(bench):
    report = bench.dry_run("7b")
    params, shapes = report["params"], report["shapes"]
    assert 7.0e9 < params["lm"] < 8.0e9  # InternLM2-7B-shaped Llama
    assert 0.29e9 < params["vision"] < 0.32e9  # CLIP ViT-L/14
    assert shapes["I"] == 1225 and shapes["S"] == 1500 - 1 + 1225 and shapes["mixers"] == 4
    assert params["moai_total"] > params["bare_total"]
    flops = report["flops"]
    # 4 * N * tokens dominates: frozen LM forward + activation-gradient backward
    lower = 4 * shapes["lm_matmul"] * shapes["S"]
    assert lower < flops["bare"]["model"] < flops["stage1"]["model"] < flops["stage2"]["model"] < 1.2 * lower
    assert flops["bare"]["recompute"] == pytest.approx(flops["bare"]["model"] / 2, rel=0.1)
