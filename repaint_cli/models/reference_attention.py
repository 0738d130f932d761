"""The paper code's attention, written out (softmax(QK^T/sqrt(d))V as explicit matmuls): the reference our
fused attention is checked and timed against (tests, benchmarks/speed.py)."""
from __future__ import annotations

import contextlib
import math
import torch
from .unet import AttentionBlock


def explicit_attention(block: AttentionBlock, x):
    """guided-diffusion's attention as the paper's code computes it: einsum and an explicit softmax."""
    b, c, *spatial = x.shape
    x = x.reshape(b, c, -1)
    qkv = block.qkv(block.norm(x))
    heads, length = block.num_heads, qkv.shape[-1]
    ch = c // heads
    if block.new_order:
        q, k, v = (part.reshape(b * heads, ch, length) for part in qkv.chunk(3, dim=1))
    else:
        q, k, v = qkv.reshape(b * heads, 3 * ch, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale).float(), dim=-1).type(q.dtype)
    a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, length)
    return (x + block.proj_out(a)).reshape(b, c, *spatial)


@contextlib.contextmanager
def paper_attention():
    """Temporarily run every AttentionBlock with the explicit attention above (baseline timings)."""
    fused = AttentionBlock.forward
    AttentionBlock.forward = explicit_attention
    try:
        yield
    finally:
        AttentionBlock.forward = fused
