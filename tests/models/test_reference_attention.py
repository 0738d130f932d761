"""models/reference_attention.py: attention written out as softmax(QK^T)V, the reference the UNet's SDPA attention is checked against."""
import pytest
import torch
from conftest import randomize
from repaint_cli.models.reference_attention import explicit_attention
from repaint_cli.models.unet import AttentionBlock


@pytest.mark.parametrize("new_order", [False, True])
@pytest.mark.parametrize("heads,head_channels", [(4, -1), (1, 16)])
def test_sdpa_attention_equals_explicit_softmax(new_order, heads, head_channels):
    torch.manual_seed(0)
    block = randomize(AttentionBlock(64, heads, head_channels, new_order))
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        assert torch.allclose(block(x), explicit_attention(block, x), atol=1e-5)
    assert block.num_heads == (heads if head_channels == -1 else 64 // head_channels)


def test_attention_orders_differ_on_the_same_weights():
    a, b = randomize(AttentionBlock(64, 4, -1, False)), AttentionBlock(64, 4, -1, True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 64, 4, 4)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x), atol=1e-4)
