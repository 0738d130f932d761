"""The CUDA path's defects that the CPU can show (issue 14): attention layout, OOM recovery, graph guards,
fp16 weights, the meta-device step. Each test fails on the code before the fix."""
import gc
import weakref

import pytest
import torch
import torch.nn.functional as F

from conftest import randomize, small_unet_config
from repaint_cli.plain import explicit_attention
from repaint_cli.unet import AttentionBlock, AttentionPool2d, ClassifierConfig, EncoderUNetModel, UNetModel


@pytest.fixture
def sdpa_strides(monkeypatch):
    """Records q, k, v strides of every scaled_dot_product_attention call."""
    seen = []
    real = F.scaled_dot_product_attention

    def recording(q, k, v, *a, **kw):
        seen.append((q.stride(-1), k.stride(-1), v.stride(-1)))
        return real(q, k, v, *a, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    return seen


@pytest.mark.parametrize("new_order", [False, True])
def test_attention_gives_sdpa_head_contiguous_qkv_and_the_same_output(sdpa_strides, new_order):
    block = randomize(AttentionBlock(64, 4, -1, new_order))
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        out = block(x)
        assert sdpa_strides == [(1, 1, 1)]
        assert torch.allclose(out, explicit_attention(block, x), atol=1e-5)


def test_whole_unet_and_classifier_reach_sdpa_with_stride_one(sdpa_strides):
    model = randomize(UNetModel(small_unet_config())).eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 16, 16), torch.tensor([1, 500]))
    clf = randomize(EncoderUNetModel(ClassifierConfig(image_size=16, classifier_width=64, classifier_depth=1,
                                                      classifier_attention_resolutions="8", classifier_channel_mult="1,2",
                                                      num_classes=5))).eval()
    with torch.no_grad():
        logits = clf(torch.randn(2, 3, 16, 16), torch.tensor([1, 500]))
    assert logits.shape == (2, 5)
    assert len(sdpa_strides) >= 3 and all(s == (1, 1, 1) for s in sdpa_strides)


def test_attention_pool_equals_the_conv_formulation():
    torch.manual_seed(0)
    pool = AttentionPool2d(4, 128, 64, 7)
    x = torch.randn(3, 128, 4, 4)
    with torch.no_grad():
        b, c = 3, 128
        h = x.reshape(b, c, -1)
        h = torch.cat([h.mean(dim=-1, keepdim=True), h], dim=-1) + pool.positional_embedding[None]
        qkv = pool.qkv_proj(h)
        q, k, v = qkv.reshape(b, 3, 2, 64, h.shape[-1]).unbind(1)
        a = torch.softmax(torch.einsum("bhct,bhcs->bhts", q, k) / 8.0, dim=-1)
        a = torch.einsum("bhts,bhcs->bhct", a, v).reshape(b, c, -1)
        want = pool.c_proj(a)[:, :, 0]
        assert torch.allclose(pool(x), want, atol=1e-5)
