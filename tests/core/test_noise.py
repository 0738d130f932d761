"""The draw's fused formulation gives the same bits as the original one; nothing is compiled on the CPU."""
import math

import pytest
import torch

from repaint_cli.core import noise
from repaint_cli.core.noise import (check_fused, draw_noise, gaussian, image_key, keys_tensor, mix32, prepare_fused_noise,
                               uniform_pairs)
import numpy as np

_M32 = 0xFFFFFFFF


def reference_gaussian(keys, counter, shape, index=None):
    """The draw as it was before fusing (two passes over (B, N)), kept here as the reference."""
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
    u1 = ((b1 >> 8).float() + 0.5) * (1.0 / 16777216.0)
    u2 = ((b2 >> 8).float() + 0.5) * (1.0 / 16777216.0)
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
    return z.reshape(len(keys), *shape)


@pytest.mark.parametrize("shape", [(3, 16, 16), (3, 5, 7), (1,)])
def test_pair_formulation_equals_the_reference_bit_for_bit(shape):
    keys = keys_tensor([image_key(s, stem) for s, stem in ((0, "a"), (1, "b"), (7, "zz"))] + [(0, 0), (_M32, _M32)])
    for draw in (0, 1, 4, 12345, 2**31 - 1, 2**32 + 9):
        counter = torch.tensor(draw)
        want = reference_gaussian(keys, counter, shape)
        assert torch.equal(gaussian(keys, counter, shape), want)
        index = torch.arange(math.prod(shape))
        assert torch.equal(gaussian(keys, counter, shape, index), want)
    per_image = torch.tensor([3, 4, 5, 6, 7])  # a (B,) counter, as the graph path may pass
    assert torch.equal(gaussian(keys, per_image, shape), reference_gaussian(keys, per_image, shape))


def test_a_fused_uniforms_function_is_used_and_checked_bit_for_bit():
    keys = keys_tensor([image_key(0, "a"), image_key(0, "b")])
    calls = []

    def fused(*args):
        calls.append(1)
        return uniform_pairs(*args)

    z = gaussian(keys, torch.tensor(9), (3, 4, 4), uniforms=fused)
    assert calls and torch.equal(z, reference_gaussian(keys, torch.tensor(9), (3, 4, 4)))
    assert check_fused(uniform_pairs, torch.device("cpu")) is None

    def one_bit_off(*args):
        u = uniform_pairs(*args).clone()
        u.view(-1)[17] = torch.nextafter(u.view(-1)[17], torch.tensor(2.0))
        return u

    assert "differs" in check_fused(one_bit_off, torch.device("cpu"))


def test_nothing_is_compiled_on_the_cpu(monkeypatch):
    def no_compile(*a, **k):
        raise AssertionError("torch.compile called on the CPU path")

    monkeypatch.setattr(torch, "compile", no_compile)
    assert prepare_fused_noise(torch.device("cpu")) is None
    keys = keys_tensor([image_key(0, "a")])
    draw_noise(keys, 3, (3, 8, 8))  # seeded generators on the CPU
    assert torch.device("cpu") not in noise._FUSED


def test_a_failed_or_different_compile_falls_back_with_a_warning(monkeypatch):
    """fuse_checked (what prepare_fused_noise runs once per CUDA device) with fake compilers, on the CPU."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: (lambda *a: fn(*a) * 1.0000001))
    with pytest.warns(UserWarning, match="differs .*unfused draw"):
        assert noise.fuse_checked(cpu) is None

    def broken(fn, **kw):
        raise RuntimeError("no triton")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(UserWarning, match="could not be compiled"):
        assert noise.fuse_checked(cpu) is None
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # a compiler that keeps the bits
    assert noise.fuse_checked(cpu) is uniform_pairs


def _eager_backend_compile(monkeypatch):
    """torch.compile with the eager backend: dynamo's tracing, guards and recompile limit, no C++ compiler."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, **{**kw, "backend": "eager"}))


def test_the_compiled_draw_serves_any_number_of_batch_sizes(monkeypatch):
    """Issue 37.1: compiled with static shapes, the 8th new (batch, C*H*W) raised FailOnRecompileLimitHit."""
    _eager_backend_compile(monkeypatch)
    fused = noise.fuse_checked(torch.device("cpu"))  # the real compiled function (eager backend)
    assert fused is not None
    for n in (3 * 5 * 5, 3 * 8 * 8):
        index = torch.arange(n)
        for b in range(1, 11):
            keys = keys_tensor([image_key(b, f"i{i}") for i in range(b)])
            with torch.no_grad():
                assert torch.equal(fused(keys, torch.tensor(7), index), uniform_pairs(keys, torch.tensor(7), index))


def test_a_failing_fused_draw_falls_back_for_good_with_the_same_bits(monkeypatch):
    """Issue 37.1: any failure of the fused draw gives the unfused draw (same bits) now and for every later call."""
    dev = torch.device("cpu")
    calls = []

    def failing(*args):
        calls.append(1)
        raise RuntimeError("FailOnRecompileLimitHit: Hard failure due to fullgraph=True")

    monkeypatch.setitem(noise._FUSED, dev, failing)
    keys = keys_tensor([image_key(0, "a"), image_key(0, "b"), image_key(3, "c")])
    want = gaussian(keys, torch.tensor(11), (3, 5, 5))
    with pytest.warns(UserWarning, match="unfused draw from now on"):
        got = gaussian(keys, torch.tensor(11), (3, 5, 5), uniforms=noise._guarded(failing, dev))
    assert torch.equal(got, want) and noise._FUSED[dev] is None and len(calls) == 1
    # a runner that still holds the old function does not try it again
    again = gaussian(keys, torch.tensor(11), (3, 5, 5), uniforms=noise._guarded(failing, dev))
    assert torch.equal(again, want) and len(calls) == 1

    def out_of_memory(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setitem(noise._FUSED, dev, out_of_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError):  # the caller splits the batch; the fused draw stays
        gaussian(keys, torch.tensor(1), (3, 5, 5), uniforms=noise._guarded(out_of_memory, dev))
    assert noise._FUSED[dev] is out_of_memory


def test_noise_is_standard_normal_and_independent():
    keys = keys_tensor([image_key(0, "a"), image_key(0, "b")])
    z = gaussian(keys, torch.tensor(7), (3, 64, 64))
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    assert abs((z[0] * z[1]).mean()) < 0.03
    z2 = gaussian(keys, torch.tensor(8), (3, 64, 64))
    assert abs((z * z2).mean()) < 0.03
    assert torch.equal(gaussian(keys[1:], torch.tensor(7), (3, 64, 64))[0], z[1])
    big = gaussian(keys[:1], torch.tensor(1), (200_000,)).numpy().ravel()
    assert abs((big ** 4).mean() - 3) < 0.1  # Gaussian kurtosis
    assert abs((np.abs(big) > 3).mean() - 0.0027) < 0.001


def test_cpu_noise_is_per_image_and_standard_normal():
    from repaint_cli.core.noise import draw_noise, gaussian_seeded
    keys = keys_tensor([image_key(0, "a"), image_key(0, "b"), image_key(3, "a")])
    z = gaussian_seeded(keys, 9, (3, 64, 64))
    assert torch.equal(gaussian_seeded(keys[2:], 9, (3, 64, 64))[0], z[2])  # independent of the batch
    assert torch.equal(draw_noise(keys, torch.tensor(9), (3, 64, 64)), z)  # the CPU path of the sampler
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    assert abs((z[0] * z[1]).mean()) < 0.03 and abs((z[0] * z[2]).mean()) < 0.03
    assert abs((z * gaussian_seeded(keys, 10, (3, 64, 64))).mean()) < 0.03
