"""Devices beyond CUDA and bf16 on the CPU (issue 34). Apple's MPS and AMD's ROCm cannot run here: their
device checks are mocked, and what the code does with the answer is tested. bf16 runs for real where this
CPU has bf16 instructions."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import randomize, small_unet_config, write_png
from repaint_cli.runtime import device as dev
from repaint_cli.runtime import memory


@pytest.fixture
def no_cuda_but_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)


def test_auto_picks_mps_where_cuda_is_absent(no_cuda_but_mps):
    assert dev.pick_device("auto") == torch.device("mps")
    assert dev.pick_device("mps") == torch.device("mps")
    assert dev.pick_device("cpu") == torch.device("cpu")


def test_auto_prefers_cuda_and_falls_back_to_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # also what a ROCm build answers on AMD GPUs
    assert dev.pick_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert dev.pick_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="--device mps: Apple's Metal"):
        dev.pick_device("mps")
    with pytest.raises(RuntimeError, match="use auto, cpu, cuda, cuda:N or mps"):
        dev.pick_device("xpu")


def test_precision_on_mps_is_fp32_unless_fp16_is_asked_and_no_channels_last():
    mps = torch.device("mps")
    assert dev.resolve_precision("auto", mps) == torch.float32
    assert dev.resolve_precision("fp16", mps) == torch.float16
    with pytest.warns(UserWarning, match="not offered on MPS"):
        assert dev.resolve_precision("bf16", mps) == torch.float32
    assert dev.default_channels_last(mps) is False


def test_bf16_on_the_cpu_needs_the_instructions(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: True)
    assert dev.resolve_precision("bf16", cpu) == torch.bfloat16
    assert dev.resolve_precision("auto", cpu) == torch.float32  # offered, not chosen: see cpu_auto_precision
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no bf16 instructions"):
        assert dev.resolve_precision("bf16", cpu) == torch.float32
    with pytest.warns(UserWarning, match="on the CPU: bf16 or fp32"):
        assert dev.resolve_precision("fp16", cpu) == torch.float32


class FakeMPS:
    """Metal's memory counters: a step holds ``fixed`` plus ``per_image`` bytes per image in the driver's cache."""

    def __init__(self, fixed, per_image, budget, oom_from=None):
        self.fixed, self.per_image, self.budget, self.oom_from = fixed, per_image, budget, oom_from
        self.held, self.emptied = 0, 0

    def probe(self, b):
        if self.oom_from is not None and b >= self.oom_from:
            raise RuntimeError("MPS backend out of memory (MPS allocated: 9.00 GB, other allocations: 0 bytes)")
        self.held = self.fixed + b * self.per_image

    def empty_cache(self):
        self.emptied += 1
        self.held = 0


@pytest.fixture
def fake_mps(monkeypatch):
    def make(**kw):
        fake = FakeMPS(**kw)
        monkeypatch.setattr(torch.mps, "synchronize", lambda: None)
        monkeypatch.setattr(torch.mps, "empty_cache", fake.empty_cache)
        monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: fake.held)
        monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: fake.budget)
        return fake
    return make


def test_the_batch_size_probe_on_mps_sizes_from_metals_memory(fake_mps):
    gib = 1 << 30
    fake = fake_mps(fixed=gib // 2, per_image=gib // 4, budget=8 * gib)
    bs = memory.auto_batch_size(None, 256, torch.device("mps"), 100, probe=fake.probe)
    assert bs == memory.fit_batch(gib // 2 + gib // 4, gib // 2 + gib // 2, 8 * gib - gib, 100)
    assert 10 <= bs <= 25 and fake.emptied >= 2
    fake = fake_mps(fixed=gib, per_image=gib, budget=8 * gib, oom_from=2)
    assert memory.auto_batch_size(None, 256, torch.device("mps"), 100, probe=fake.probe) == 1


def test_the_oom_split_works_on_mps(fake_mps):
    from repaint_cli.images.options import Reporter
    from repaint_cli.images.sampling import SplitState, split_retry

    fake = fake_mps(fixed=0, per_image=1, budget=10)
    tried = []

    def run(idx):
        tried.append(len(idx))
        if len(idx) > 2:
            raise RuntimeError("MPS backend out of memory (MPS allocated: 17.9 GB)")
        return torch.tensor(idx, dtype=torch.float32)

    state = SplitState()
    out = split_retry(run, list(range(8)), Reporter(), state, lambda: memory.empty_device_cache(torch.device("mps")))
    assert out.tolist() == list(range(8)) and state.limit == 2 and fake.emptied >= 1


def test_version_names_rocm(monkeypatch, capsys):
    from repaint_cli.cli.app import version_text

    monkeypatch.setattr(torch.version, "hip", "6.2.41133", raising=False)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "AMD Instinct MI300X")
    assert "ROCm 6.2.41133, 1 GPU (AMD Instinct MI300X)" in version_text()


needs_bf16 = pytest.mark.skipif(not dev.cpu_has_bf16(), reason="this CPU has no bf16 instructions")


@needs_bf16
@pytest.mark.parametrize("threads", [1, 2])
def test_bf16_on_the_cpu_is_close_to_fp32_and_batch_invariant(threads):
    from repaint_cli.models.unet import UNetModel

    model = randomize(UNetModel(small_unet_config())).eval().requires_grad_(False)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([999, 500, 20, 0])
    cpu = torch.device("cpu")
    old = torch.get_num_threads()
    fp32 = dev.prepare_model(model, cpu, dev.EngineOptions(precision="fp32", threads=threads))
    bf16 = dev.prepare_model(model, cpu, dev.EngineOptions(precision="bf16", threads=threads))
    assert dev.engine_facts(bf16, cpu)["precision"] == "bf16"
    with torch.no_grad():
        ref, together = fp32(x, t), bf16(x, t)
        alone = torch.cat([bf16(x[i:i + 1].clone(), t[i:i + 1].clone()) for i in range(4)])
    assert together.dtype == torch.float32
    assert torch.equal(together, alone)  # the batch-invariance promise holds under bf16 too
    assert not torch.equal(together, ref)  # bf16 really ran
    assert (together - ref).abs().max() / ref.abs().max() < 0.05
    torch.set_num_threads(old)


@needs_bf16
def test_the_run_record_says_bf16(small_checkpoint, tmp_path):
    from repaint_cli.cli.app import app
    from repaint_cli.images.provenance import RUN_RECORD

    write_png(tmp_path / "a.png", np.random.default_rng(0).integers(0, 256, (16, 16, 3)))
    args = ["inpaint", tmp_path / "a.png", "--model", small_checkpoint, "--preset", "draft", "--out", tmp_path / "o",
            "--precision", "bf16", "--threads", "1"]
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    assert "; bf16; 1 thread" in r.stderr
    assert json.loads((tmp_path / "o" / RUN_RECORD).read_text().splitlines()[-1])["engine"]["precision"] == "bf16"


class FakeCuda:
    """CUDA's memory counters: a step peaks at ``fixed`` plus ``per_image`` bytes per image over what is held."""

    def __init__(self, fixed, per_image, free, oom_from=None):
        self.fixed, self.per_image, self.free, self.oom_from = fixed, per_image, free, oom_from
        self.held, self.peak, self.emptied = 1000, 1000, 0

    def probe(self, b):
        if self.oom_from is not None and b >= self.oom_from:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.peak = self.held + self.fixed + b * self.per_image

    def reset_peak(self, device=None):
        self.peak = self.held

    def empty_cache(self):
        self.emptied += 1


@pytest.fixture
def fake_cuda(monkeypatch):
    def make(**kw):
        fake = FakeCuda(**kw)
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", fake.reset_peak)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: fake.held)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: fake.peak)
        monkeypatch.setattr(torch.cuda, "empty_cache", fake.empty_cache)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (fake.free, 2 * fake.free))
        return fake
    return make


def test_the_batch_size_probe_on_cuda_sizes_from_the_peaks_at_one_and_two_images(fake_cuda):
    """The peaks over what was held before, at batch 1 and 2, and the capture state per image; an out of
    memory at batch 2 gives 1, its cache emptied."""
    gib = 1 << 30
    fake = fake_cuda(fixed=gib // 2, per_image=gib // 4, free=8 * gib)
    bs = memory.auto_batch_size(None, 64, torch.device("cuda"), 100, probe=fake.probe)
    state = memory.STATE_BYTES_PER_VALUE * 3 * 64 ** 2
    assert bs == memory.fit_batch(gib // 2 + gib // 4, gib // 2 + gib // 2, 8 * gib, 100, 512, state)
    assert 10 <= bs <= 30 and fake.emptied == 0
    fake = fake_cuda(fixed=gib, per_image=gib, free=8 * gib, oom_from=2)
    assert memory.auto_batch_size(None, 64, torch.device("cuda"), 100, probe=fake.probe) == 1 and fake.emptied == 1
    fake = fake_cuda(fixed=gib, per_image=gib, free=8 * gib, oom_from=1)
    assert memory.auto_batch_size(None, 64, torch.device("cuda"), 100, probe=fake.probe) == 1 and fake.emptied == 1
