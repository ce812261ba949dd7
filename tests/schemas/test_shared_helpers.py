"""Shared helpers in schemas/: replaced_atomically (readers see the old target or the new one, whole; a
failed write leaves the old) and the one list of dtype names."""
import pytest

from schemas.files import replaced_atomically


def test_folder_replaced_whole_and_failure_keeps_the_old(tmp_path):
    target = tmp_path / "model"
    with replaced_atomically(target) as tmp:
        (tmp / "weights").write_text("v1")
        assert not target.exists()  # nothing visible until the block ends
    assert (target / "weights").read_text() == "v1"
    with replaced_atomically(target) as tmp:  # over an existing, non-empty folder
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
    with pytest.raises(RuntimeError), replaced_atomically(target) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (target / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary left behind


def test_keep_existing_first_builder_wins(tmp_path):
    target = tmp_path / "tiny"
    with replaced_atomically(target, keep_existing=True) as first, \
            replaced_atomically(target, keep_existing=True) as second:
        (first / "config.json").write_text("first")
        (second / "config.json").write_text("second")
    # the inner block (second) finished first and stays; the other identical build is dropped
    assert (target / "config.json").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_file(tmp_path):
    target = tmp_path / "cache" / "q.safetensors"
    with replaced_atomically(target, folder=False) as tmp:
        tmp.write_bytes(b"abc")
        assert tmp.parent == target.parent and not target.exists()
    assert target.read_bytes() == b"abc"
    assert sorted(p.name for p in target.parent.iterdir()) == ["q.safetensors"]


def test_dtype_names_one_list():
    import torch

    from schemas.dtypes import DTYPE_NAMES, check_dtype, torch_dtype
    assert torch_dtype("bfloat16") is torch.bfloat16 and torch_dtype("float16", "cuda:1") is torch.float16
    with pytest.raises(ValueError, match="needs device 'cuda'"):
        torch_dtype("float16", "cpu")
    with pytest.raises(ValueError, match="is not one of"):
        check_dtype("float16", ("float32", "bfloat16"))
    from pipeline.config import GPU_DTYPES
    from trainer.model.config import TORCH_DTYPES
    assert TORCH_DTYPES == DTYPE_NAMES and GPU_DTYPES[1:] == DTYPE_NAMES
