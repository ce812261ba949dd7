"""`torchrun` with 2 CPU processes (gloo), stopped and resumed, takes the same steps as 1 process with the
same global batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from trainer.synthetic import tiny_recipe, write_corpus
from trainer.model.tiny import build_tiny_backbones
from trainer.train import run

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("distributed", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, distributed):
    write_corpus(tmp_path, n_images=4)
    build_tiny_backbones(tmp_path / "backbones")
    settings = dict(epochs=2, save_every=0, distributed=distributed)
    single = run(tiny_recipe(tmp_path, tmp_path / "backbones", micro_batch_size=4, **settings), 1)

    recipe = tiny_recipe(tmp_path, tmp_path / "backbones", micro_batch_size=2, **settings)
    recipe["train"]["output_dir"] = str(tmp_path / "two")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    def torchrun(*extra: str) -> list[float]:
        """Two processes; the first launch stops after one step, the second resumes it."""
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             "-m", "trainer.cli", "train", "--recipe", str(tmp_path / "recipe.yaml"), "--stage", "1",
             "--losses-json", str(tmp_path / "two.json"), *extra],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "on 2 x cpu" in proc.stderr
        return json.loads((tmp_path / "two.json").read_text()), proc.stdout

    first, out = torchrun("--set", "train.stop_after=1")
    assert "interrupted checkpoint (step 1):" in out
    second, out = torchrun("--resume")
    assert "final checkpoint (step 2):" in out
    two = first + second
    assert len(single["losses"]) == len(two) == 2
    torch.testing.assert_close(torch.tensor(two), torch.tensor(single["losses"]), rtol=1e-5, atol=1e-5)
    a = load_file(str(single["checkpoint"] / "trainable.safetensors"))
    b = load_file(str(tmp_path / "two" / "stage1" / "final" / "trainable.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)
