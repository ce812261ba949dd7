"""Every trainer input error is one `error:` line and exit 2, found before a model is built."""
import pytest
import yaml

from trainer.synthetic import tiny_recipe, write_corpus
from trainer.cli import main as trainer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    paths = write_corpus(root / "corpus")
    recipe = tiny_recipe(root / "corpus", root / "backbones", max_steps=1)
    recipe["train"]["output_dir"] = str(root / "runs")
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return root, paths, path


@pytest.mark.parametrize("args, message", [
    (["--recipe", "{root}/nowhere.yaml", "--stage", "1"], "recipe {root}/nowhere.yaml does not exist"),
    (["--recipe", "{recipe}", "--stage", "1", "--set", "train.speed=2"], "unknown train settings ['speed']"),
    (["--recipe", "{recipe}", "--stage", "1", "--set", "data.shuffle=true"], "unknown data keys ['shuffle']"),
    (["--recipe", "{recipe}", "--stage", "1", "--set", "train.lr=fast"], "train.lr must be a positive number"),
    (["--recipe", "{recipe}", "--stage", "1", "--set", "train.betas=0.9"], "train settings of stage 1"),
    (["--recipe", "{recipe}", "--stage", "1", "--set", "train.max_steps=0"], "train.max_steps must be an int >= 1"),
    (["--recipe", "{recipe}", "--stage", "1", "--set", "data.max_length=-1"], "data.max_length must be a positive int"),
    (["--recipe", "{recipe}", "--stage", "1", "--set", "data.conversations={root}/none.json"],
     "data.conversations: {root}/none.json does not exist"),
    (["--recipe", "{recipe}", "--stage", "2"], "stage 2 starts from the stage-1 weights at {root}/runs/stage1/final"),
])
def test_train_input_errors_are_one_line(setup, capsys, args, message):
    root, _, recipe = setup
    fill = lambda s: s.format(root=root, recipe=recipe)  # noqa: E731
    assert trainer(["train", *map(fill, args)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainer train: error: ") and fill(message) in err
    assert "Traceback" not in err
    assert not (root / "runs").exists()  # nothing started


def test_bad_conversation_json_is_one_line(setup, capsys, tmp_path):
    root, paths, recipe = setup
    (tmp_path / "conv.json").write_text('{"id": 1,\n "conversations": []}\n')
    code = trainer(["train", "--recipe", str(recipe), "--stage", "1", "--set", f"data.conversations={tmp_path / 'conv.json'}"])
    err = capsys.readouterr().err
    assert code == 2 and "not JSON Lines" in err and str(tmp_path / "conv.json") in err
