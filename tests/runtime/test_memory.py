"""runtime/memory.py: the batch size that fits the device, what counts as out of memory, and the batch fit from probes."""
import pytest
import torch
from conftest import randomize, small_unet_config
from repaint_cli.runtime.memory import auto_batch_size, is_oom
from repaint_cli.models.unet import UNetModel
from repaint_cli.runtime.memory import fit_batch
from repaint_cli.runtime import memory


@pytest.fixture(scope="module")
def model():
    return randomize(UNetModel(small_unet_config())).eval()


def test_auto_batch_size_and_oom_detection(model):
    cpu = torch.device("cpu")
    assert auto_batch_size(model, 32, cpu, 100) == 16 and auto_batch_size(model, 32, cpu, 3) == 3
    assert auto_batch_size(model, 128, cpu, 100) == 4 and auto_batch_size(model, 256, cpu, 100) == 1
    assert is_oom(torch.cuda.OutOfMemoryError("x")) and is_oom(RuntimeError("CUDA out of memory. Tried"))
    assert not is_oom(RuntimeError("shape mismatch"))


def test_cuda_library_allocation_failures_count_as_out_of_memory():
    assert is_oom(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    assert is_oom(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert is_oom(RuntimeError("CUDA driver error: cudaErrorMemoryAllocation"))
    assert not is_oom(RuntimeError("CUDNN_STATUS_BAD_PARAM")) and not is_oom(ValueError("out of memory"))


def test_batch_fit_from_two_probes_and_no_64_cap():
    mib = 2 ** 20
    # small model on a big GPU: 10 MiB per image, 100 MiB fixed, 80 GiB free
    assert fit_batch(110 * mib, 120 * mib, 80 * 1024 * mib, 10_000) == 512
    assert fit_batch(110 * mib, 120 * mib, 80 * 1024 * mib, 10_000, cap=4096) > 64 * 40
    # big model: 1 GiB per image, 3 GiB fixed, 12 GiB free -> (9.6 - 3.3) / 1.1: what a capture holds (issue 37.2)
    assert fit_batch(4 * 1024 * mib, 5 * 1024 * mib, 12 * 1024 * mib, 100) == 5
    assert fit_batch(4 * 1024 * mib, 5 * 1024 * mib, 12 * 1024 * mib, 100, state_per_image=300 * mib) == 4
    assert fit_batch(10 * mib, 5 * mib, mib, 100) == 1  # never below 1


def test_the_timed_batch_choice_takes_the_smallest_batch_near_the_best_time():
    from repaint_cli.runtime.memory import timed_batch_choice

    # per image: launch-bound at 1-4, the GPU full from 16 on (64 no faster than 16)
    assert timed_batch_choice({1: 0.040, 2: 0.021, 4: 0.012, 8: 0.0075, 16: 0.0061, 32: 0.0060, 64: 0.0059}) == 16
    assert timed_batch_choice({1: 0.01}) == 1
    with pytest.raises(ValueError):
        timed_batch_choice({})


def test_the_batch_size_probe_on_mps_sizes_from_metals_memory(fake_mps):
    gib = 1 << 30
    fake = fake_mps(fixed=gib // 2, per_image=gib // 4, budget=8 * gib)
    bs = memory.auto_batch_size(None, 256, torch.device("mps"), 100, probe=fake.probe)
    assert bs == memory.fit_batch(gib // 2 + gib // 4, gib // 2 + gib // 2, 8 * gib - gib, 100)
    assert 10 <= bs <= 25 and fake.emptied >= 2
    fake = fake_mps(fixed=gib, per_image=gib, budget=8 * gib, oom_from=2)
    assert memory.auto_batch_size(None, 256, torch.device("mps"), 100, probe=fake.probe) == 1


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
