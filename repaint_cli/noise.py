"""Per-image Gaussian noise, independent of batching.

Each image has a 64-bit key (from the run seed and its stem); every draw has
a number. The noise of draw ``d`` for an image is a function of (key, d) only,
so an image gets the same noise alone or in any batch position. Two sources:

- on CUDA, :func:`gaussian`: counter-based, integer hashing and Box-Muller in
  ordinary tensor ops, so a draw can live inside a captured CUDA graph (the draw
  number is a device tensor, no generator state to advance);
- on the CPU, :func:`gaussian_seeded`: a generator per image seeded from
  (key, d); about 6x cheaper there than the hashing (which would cost ~5% of a
  small model's time), and nothing to capture.

So results are reproducible per device type; CPU and CUDA runs draw different noise.
"""
from __future__ import annotations

import hashlib
import math

import torch

_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """Low 32 bits of x*c for x < 2**32 held in int64, without int64 overflow."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser with full avalanche (Wellons' lowbias32 constants)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def image_key(seed: int, stem: str) -> tuple[int, int]:
    """A stable 64-bit key (two 32-bit words) from the run seed and an image's stem."""
    digest = hashlib.sha256(f"{int(seed)}\0{stem}".encode()).digest()
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:8], "little")


def keys_tensor(keys, device=None) -> torch.Tensor:
    return torch.tensor([list(k) for k in keys], dtype=torch.int64, device=device).reshape(-1, 2)


def gaussian(keys: torch.Tensor, counter: torch.Tensor, shape: tuple, index: torch.Tensor | None = None) -> torch.Tensor:
    """Standard normal noise of ``(len(keys), *shape)``.

    ``keys``: int64 (B, 2) of 32-bit words; ``counter``: an int64 tensor (0-dim
    or (B,)) naming the draw; ``index``: optional precomputed ``arange(numel)``
    (kept as a static buffer by the CUDA-graph path).
    """
    n = math.prod(shape)
    if index is None:
        index = torch.arange(n, dtype=torch.int64, device=keys.device)
    counter = counter.to(keys.device)
    k = mix32(keys[:, 0] ^ mix32((keys[:, 1] ^ mix32(counter & _M32)) & _M32))
    k2 = mix32(k ^ 0x9E3779B9)
    k, k2 = k[:, None], k2[:, None]
    i2 = index[None] << 1
    b1 = mix32(mix32(i2 ^ k) ^ k2)
    b2 = mix32(mix32((i2 | 1) ^ k) ^ k2)
    # 24 random bits -> uniforms in (0, 1), exact in float32
    u1 = ((b1 >> 8).float() + 0.5) * (1.0 / 16777216.0)
    u2 = ((b2 >> 8).float() + 0.5) * (1.0 / 16777216.0)
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
    return z.reshape(len(keys), *shape)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def draw_seed(key: tuple[int, int], draw: int) -> int:
    """A 63-bit generator seed from an image key and a draw number."""
    return _splitmix64(_splitmix64((key[0] << 32) | key[1]) ^ int(draw)) >> 1


def gaussian_seeded(keys: torch.Tensor, draw: int, shape: tuple) -> torch.Tensor:
    """Standard normal noise ``(len(keys), *shape)`` from one CPU generator per image."""
    out = torch.empty((len(keys), *shape))
    g = torch.Generator()
    for b, key in enumerate(keys.tolist()):
        g.manual_seed(draw_seed(tuple(key), draw))
        torch.randn(shape, generator=g, out=out[b])
    return out


def draw_noise(keys: torch.Tensor, draw, shape: tuple, index: torch.Tensor | None = None) -> torch.Tensor:
    """The sampler's noise: counter-based on CUDA (capturable), seeded generators on the CPU."""
    if keys.is_cuda:
        return gaussian(keys, torch.as_tensor(draw, device=keys.device), shape, index)
    return gaussian_seeded(keys, int(draw), shape)
