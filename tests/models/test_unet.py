"""Our UNet against guided-diffusion: key lists, strict loading, and the reference output."""
import math

import numpy as np
import pytest
import torch
import yaml

from conftest import GD, needs_fixtures, randomize, small_unet_config
from repaint_cli.models.reference_attention import explicit_attention
from repaint_cli.models.unet import (AttentionBlock, ClassifierConfig, EncoderUNetModel, UNetConfig, UNetModel,
                              parse_channel_mult)
import torch.nn.functional as F
from repaint_cli.models.unet import AttentionPool2d


def read_keys(path):
    out = {}
    for line in open(path):
        name, shape = line.strip().split(" ", 1)
        out[name] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


def shapes_of(module_fn):
    with torch.device("meta"):
        m = module_fn()
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


PAPER = dict(image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8",
             num_head_channels=64, resblock_updown=True, use_scale_shift_norm=True, learn_sigma=True)


@needs_fixtures
@pytest.mark.parametrize("name,class_cond,n_tensors,n_params", [
    ("celeba256_keys.txt", False, 566, 552_814_086),
    ("imagenet256_keys.txt", True, 567, 553_838_086),
])
def test_paper_checkpoints_keys_and_shapes_match(name, class_cond, n_tensors, n_params):
    ref = read_keys(GD / name)
    ours = shapes_of(lambda: UNetModel(UNetConfig(**PAPER, class_cond=class_cond)))
    assert list(ours) == list(ref)  # same names in the same order
    assert ours == ref
    assert len(ours) == n_tensors
    assert sum(math.prod(s) for s in ours.values()) == n_params


@needs_fixtures
def test_classifier_keys_and_shapes_match():
    ref = read_keys(GD / "classifier256_keys.txt")
    ours = shapes_of(lambda: EncoderUNetModel(ClassifierConfig()))
    assert ours == ref
    assert sum(math.prod(s) for s in ours.values()) == 54_096_360


@needs_fixtures
def test_tiny_reference_output_within_1e4():
    cfg = UNetConfig.from_dict(yaml.safe_load((GD / "tiny.yaml").read_text()))
    model = UNetModel(cfg)
    state = torch.load(GD / "tiny.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    io = np.load(GD / "tiny_io.npz")
    with torch.no_grad():
        out = model(torch.from_numpy(io["x"]), torch.from_numpy(io["t"]))
    assert out.shape == (4, 6, 64, 64)
    assert np.abs(out.numpy() - io["out"]).max() < 1e-4


@needs_fixtures
def test_strict_loading_rejects_a_wrong_architecture():
    cfg = UNetConfig.from_dict({**yaml.safe_load((GD / "tiny.yaml").read_text()), "num_res_blocks": 1})
    state = torch.load(GD / "tiny.pt", map_location="cpu", weights_only=True)
    with pytest.raises(RuntimeError):
        UNetModel(cfg).load_state_dict(state, strict=True)


def test_hyper_parameters_are_honoured():
    assert parse_channel_mult("", 256) == (1, 1, 2, 2, 4, 4)
    assert parse_channel_mult("", 64) == (1, 2, 3, 4)
    assert parse_channel_mult("1,2,2", 32) == (1, 2, 2)
    m = UNetModel(small_unet_config(num_heads=2, num_heads_upsample=1, dropout=0.25))
    down_attn = [mod for mod in m.input_blocks.modules() if isinstance(mod, AttentionBlock)]
    up_attn = [mod for mod in m.output_blocks.modules() if isinstance(mod, AttentionBlock)]
    assert {a.num_heads for a in down_attn} == {2} and {a.num_heads for a in up_attn} == {1}
    assert {d.p for d in m.modules() if isinstance(d, torch.nn.Dropout)} == {0.25}
    fp16 = UNetModel(small_unet_config(use_fp16=True))
    assert fp16.input_blocks[0][0].weight.dtype == torch.float16
    assert fp16.out[2].weight.dtype == torch.float32  # guided-diffusion converts the trunk only
    assert fp16.input_blocks[1][0].in_layers[0].weight.dtype == torch.float32  # norms stay fp32
    no_updown = UNetModel(small_unet_config(resblock_updown=False, learn_sigma=False))
    assert no_updown.out_channels == 3
    assert "input_blocks.2.0.op.weight" in no_updown.state_dict()  # conv downsample


def test_class_conditional_needs_labels():
    m = randomize(UNetModel(small_unet_config(class_cond=True, num_classes=10)))
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    with torch.no_grad():
        a = m(x, t, y=torch.tensor([0, 0]))
        b = m(x, t, y=torch.tensor([3, 3]))
    assert not torch.allclose(a, b)
    with pytest.raises(AssertionError):
        m(x, t)


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


@pytest.fixture(scope="module")
def model():
    return randomize(UNetModel(small_unet_config())).eval()
