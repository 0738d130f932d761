"""Per-image Gaussian noise, independent of batching.

Each image has a 64-bit key (from the run seed and its stem); every draw has
a number. The noise of draw ``d`` for an image is a function of (key, d) only,
so an image gets the same noise alone or in any batch position. Two sources:

- on CUDA, :func:`gaussian`: counter-based, integer hashing and Box-Muller in
  ordinary tensor ops, so a draw can live inside a captured CUDA graph (the draw
  number is a device tensor, no generator state to advance); its integer part is
  compiled into one kernel where that gives the same bits (:func:`prepare_fused_noise`);
- on the CPU, :func:`gaussian_seeded`: a generator per image seeded from
  (key, d); much cheaper there than the hashing, which would be a visible share
  of a small model's time (benchmarks/RESULTS.md#cpu-noise-share), and nothing
  to capture.

So results are reproducible per device type; CPU and CUDA runs draw different noise.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Optional

import torch

from .keys import key_digest, two_words

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


def image_key(seed: int, name: str) -> tuple[int, int]:
    """The noise key (two 32-bit words) of a name in a run seeded ``seed`` (an image's is in its job's keys)."""
    return two_words(key_digest(seed, name))


def keys_tensor(keys, device=None) -> torch.Tensor:
    return torch.tensor([list(k) for k in keys], dtype=torch.int64, device=device).reshape(-1, 2)


def uniform_pairs(keys: torch.Tensor, counter: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The integer part of a draw: (B, 2, N) float32 uniforms in (0, 1), the Box-Muller pair of each element.

    Element ``i`` hashes the two counters ``2i`` and ``2i + 1``; both go through
    one pass over a (B, 2, N) tensor, half the kernels of two passes over (B, N);
    each of the pair's (B, N) halves stays contiguous in N, as the two tensors were.
    Everything here is exact (integers below 2**48 in int64, and 24-bit integers
    scaled by a power of two in float32), so a compiled, fused version of this
    function gives the same bits as this one on any device.
    """
    counter = counter.to(keys.device)
    k = mix32(keys[:, 0] ^ mix32((keys[:, 1] ^ mix32(counter & _M32)) & _M32))
    k2 = mix32(k ^ 0x9E3779B9)
    pairs = torch.stack((index << 1, (index << 1) | 1))  # (2, N)
    bits = mix32(mix32(pairs[None] ^ k[:, None, None]) ^ k2[:, None, None])
    # 24 random bits -> uniforms in (0, 1), exact in float32
    return ((bits >> 8).float() + 0.5) * (1.0 / 16777216.0)


def box_muller(u: torch.Tensor) -> torch.Tensor:
    """Standard normals from (B, 2, N) uniforms: sqrt(-2 log u1) cos(2 pi u2), in plain float32 tensor ops.

    Kept out of the fused part: a compiler may use other log/cos approximations
    than PyTorch's kernels, which would change the noise in its last bits.
    """
    u1, u2 = u[:, 0], u[:, 1]
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)


def gaussian(keys: torch.Tensor, counter: torch.Tensor, shape: tuple, index: torch.Tensor | None = None,
             uniforms=None) -> torch.Tensor:
    """Standard normal noise of ``(len(keys), *shape)``.

    ``keys``: int64 (B, 2) of 32-bit words; ``counter``: an int64 tensor (0-dim
    or (B,)) naming the draw; ``index``: optional precomputed ``arange(numel)``
    (kept as a static buffer by the CUDA-graph path); ``uniforms``: a fused
    (compiled) :func:`uniform_pairs`, which gives the same bits.
    """
    n = math.prod(shape)
    if index is None:
        index = torch.arange(n, dtype=torch.int64, device=keys.device)
    z = box_muller((uniforms if uniforms is not None else uniform_pairs)(keys, counter, index))
    return z.reshape(len(keys), *shape)


# device -> the compiled uniform_pairs where it compiled and matched the eager one bit for bit, else None
_FUSED: dict = {}


def check_fused(fused, device: torch.device) -> Optional[str]:
    """None if ``fused`` gives the same bits as :func:`uniform_pairs` on a sample draw, else what went wrong."""
    keys = keys_tensor([(0x12345678, 0x9ABCDEF0), (7, 0xFFFFFFFF), (0, 1)], device)
    index = torch.arange(3 * 17 * 19, dtype=torch.int64, device=device)
    for draw in (0, 5, 2**31 + 3):
        counter = torch.tensor(draw, dtype=torch.int64, device=device)
        with torch.no_grad():  # as the sampler calls it (a compiled function recompiles on a change of grad mode)
            want = uniform_pairs(keys, counter, index)
            got = fused(keys, counter, index)
        if got.shape != want.shape or got.dtype != want.dtype or not torch.equal(got, want):
            return f"it differs from the reference draw at draw {draw}"
    return None


def prepare_fused_noise(device: torch.device):
    """Compile the draw's integer part for ``device`` (CUDA only) and check it bit for bit; once per device.

    About 80 int64 kernels per draw become one. Never on the CPU: compiling is
    slow there and the CPU draws from seeded generators anyway. Must run outside
    any CUDA graph capture (the check synchronises): the graph runner calls it
    before its warm-up. ``REPAINT_FUSED_NOISE=0`` keeps the unfused draw.
    Returns the fused function, or None (the unfused draw, same bits, slower).
    """
    device = torch.device(device)
    if device.type != "cuda" or os.environ.get("REPAINT_FUSED_NOISE", "1") == "0":
        return None
    if device not in _FUSED:
        _FUSED[device] = fuse_checked(device)
    return _FUSED[device]


def fuse_checked(device: torch.device):
    """:func:`uniform_pairs` compiled, if it compiles and gives the same bits on ``device``; else None, with a warning.

    Compiled with dynamic shapes: with static ones every new (batch, C*H*W) compiled again, and the
    8th (two out-of-memory splits and a partial last batch, or a notebook's image counts) hit
    torch's recompile limit, which ``fullgraph`` makes an error. Sizes 0 and 1 are still
    specialised, so a few compiles serve every batch.
    """
    try:
        compiled = torch.compile(uniform_pairs, dynamic=True, fullgraph=True)
        problem = check_fused(compiled, device)
    except Exception as e:  # no Triton, no compiler...: an optimisation, never fatal
        problem = f"it could not be compiled ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    if problem is None:
        return compiled
    warnings.warn(f"fused noise draw not used on {device}: {problem}; using the unfused draw (same noise, slower)")
    return None


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
    """The sampler's noise: counter-based on CUDA (capturable), seeded generators on the CPU.

    On CUDA the draw's integer part is fused where :func:`prepare_fused_noise` has
    checked it for this device (never prepared here during a capture: the check syncs).
    """
    if keys.device.type == "cpu":
        return gaussian_seeded(keys, int(draw), shape)
    fused = _FUSED.get(keys.device)
    if fused is None and keys.is_cuda and keys.device not in _FUSED and not torch.cuda.is_current_stream_capturing():
        fused = prepare_fused_noise(keys.device)
    uniforms = None if fused is None else _guarded(fused, keys.device)
    return gaussian(keys, torch.as_tensor(draw, device=keys.device), shape, index, uniforms=uniforms)


def _guarded(fused, device: torch.device):
    """``fused`` where it works; on any failure (a recompile limit, a compiler error at a new shape) the unfused
    draw, which gives the same bits, for this call and for good on ``device``, said once. Out of memory is
    passed on: the batch is too big, not the compiler, and the caller splits it."""
    def uniforms(keys, counter, index):
        if _FUSED.get(device) is not fused:  # already given up on (by an earlier call)
            return uniform_pairs(keys, counter, index)
        try:
            return fused(keys, counter, index)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:
            _FUSED[device] = None
            first = (str(e).splitlines() or [""])[0][:200]
            warnings.warn(f"fused noise draw failed on {device} ({type(e).__name__}: {first}); using the unfused "
                          f"draw from now on (same noise, slower)")
            return uniform_pairs(keys, counter, index)

    return uniforms


def per_image_noise(keys: torch.Tensor, draw, shape: tuple, index: torch.Tensor | None = None) -> torch.Tensor:
    """The images' noise source (the sampler's default): draw ``draw`` of shape ``shape`` = (B, ...),
    one key per image, so an image gets the same noise alone or in any batch position.

    A noise source is any function ``(keys, draw, shape, index) -> tensor of shape``: the sampler
    calls it for every draw (the start x_T, then each step's), with ``draw`` a number or an int64
    device tensor and ``index`` the Conditioning's ``noise_index`` (or None)."""
    return draw_noise(keys, draw, tuple(shape[1:]), index)
