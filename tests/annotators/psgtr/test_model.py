"""PSGTR model: the published architecture's parameters, padding masks, batching, chunking, bf16."""
import pytest
import torch

from annotators.psgtr.annotator import TINY_MODEL
from annotators.psgtr.model import PSGTR, sine_position_encoding
from annotators.psgtr.config import PSGTRConfig


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return PSGTR(TINY_MODEL).eval()


def forward(model, pixels, sizes, **kw):
    with torch.inference_mode():
        return model(pixels, torch.tensor(sizes), **kw)


def test_published_architecture_shapes():
    """ResNet-50 PSGTR: 585 tensors, 44,437,695 parameters (the published checkpoint); output shapes at a small input."""
    model = PSGTR(PSGTRConfig()).eval()
    state = model.state_dict()
    assert len(state) == 585
    assert sum(v.numel() for k, v in state.items() if "running_" not in k and "num_batches" not in k) == 44_437_695
    out = forward(model, torch.randn(1, 3, 64, 96), [[64, 96]], mask_chunk_size=50)
    assert out.sub_logits.shape == (1, 100, 134) and out.rel_logits.shape == (1, 100, 57)
    assert out.obj_boxes.shape == (1, 100, 4) and 0 <= out.obj_boxes.min() and out.obj_boxes.max() <= 1
    assert out.sub_masks.shape == out.obj_masks.shape == (1, 100, 16, 24)


def test_padding_mask_follows_spec():
    pixels = torch.zeros(2, 3, 64, 96)
    mask = PSGTR.padding_mask(pixels, torch.tensor([[50, 70], [32, 32]]), (2, 3))
    assert not mask[0].any()  # padded to a multiple of 32: no stride-32 cell is padding
    assert mask[1].tolist() == [[False, True, True], [True, True, True]]


def test_padded_cells_are_ignored_by_the_transformer(tiny):
    torch.manual_seed(1)
    d = TINY_MODEL.d_model
    single_src = torch.randn(1, d, 2, 3)
    batch_src = torch.randn(2, d, 3, 5) * 10  # garbage in the padding
    batch_src[1, :, :2, :3] = single_src[0]
    single_pad = torch.zeros(1, 2, 3, dtype=torch.bool)
    batch_pad = torch.ones(2, 3, 5, dtype=torch.bool)
    batch_pad[0] = False
    batch_pad[1, :2, :3] = False
    query_pos = tiny.query_embed.weight
    with torch.inference_mode():
        mem1, hs1 = tiny.transformer(single_src, single_pad, sine_position_encoding(single_pad, d // 2), query_pos)
        mem2, hs2 = tiny.transformer(batch_src, batch_pad, sine_position_encoding(batch_pad, d // 2), query_pos)
        torch.testing.assert_close(sine_position_encoding(batch_pad, d // 2)[1, :, :2, :3],
                                   sine_position_encoding(single_pad, d // 2)[0])
    torch.testing.assert_close(hs2[1], hs1[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mem2[1].view(3, 5, d)[:2, :3], mem1[0].view(2, 3, d), atol=1e-5, rtol=1e-5)


def test_batch_equals_single_images(tiny):
    """Two images of different size (both padded to 64x96) in one batch give the single-image outputs."""
    torch.manual_seed(2)
    a, b = torch.randn(3, 64, 96), torch.randn(3, 50, 70)
    batch = torch.zeros(2, 3, 64, 96)
    batch[0], batch[1, :, :50, :70] = a, b
    both = forward(tiny, batch, [[64, 96], [50, 70]])
    single_b = torch.zeros(1, 3, 64, 96)
    single_b[0, :, :50, :70] = b
    for i, out in enumerate((forward(tiny, a[None], [[64, 96]]), forward(tiny, single_b, [[50, 70]]))):
        for name, value in vars(out).items():
            torch.testing.assert_close(getattr(both, name)[i], value[0], atol=1e-4, rtol=1e-4, msg=name)


def test_mask_chunking_is_exact(tiny):
    pixels = torch.randn(1, 3, 64, 64)
    whole = forward(tiny, pixels, [[64, 64]], mask_chunk_size=100)
    chunked = forward(tiny, pixels, [[64, 64]], mask_chunk_size=3)
    torch.testing.assert_close(chunked.sub_masks, whole.sub_masks)
    torch.testing.assert_close(chunked.obj_masks, whole.obj_masks)


def _bf16_matches_fp32(model, device):
    pixels = torch.randn(1, 3, 128, 128, device=device)
    sizes = [[128, 128]]
    ref = forward(model, pixels, sizes)
    with torch.autocast(device, dtype=torch.bfloat16):
        low = forward(model, pixels, sizes, mask_chunk_size=7)
    assert low.sub_masks.dtype == torch.bfloat16
    for name in ("sub_logits", "obj_logits", "rel_logits"):
        diff = (getattr(low, name).float().softmax(-1) - getattr(ref, name).softmax(-1)).abs().max()
        assert diff < 0.05, (name, diff)
    assert torch.corrcoef(torch.stack([low.sub_masks.float().flatten(), ref.sub_masks.flatten()]))[0, 1] > 0.98


def test_bf16_autocast_cpu(tiny):
    _bf16_matches_fp32(tiny, "cpu")


@pytest.mark.gpu
def test_bf16_autocast_gpu():
    torch.manual_seed(0)
    _bf16_matches_fp32(PSGTR(PSGTRConfig()).eval().cuda(), "cuda")
