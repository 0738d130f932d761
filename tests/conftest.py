import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

# Property-based tests (Hypothesis): a small profile for every test run, a long one for `make fuzz`
# (HYPOTHESIS_PROFILE=fuzz: rounds of 200 examples with fresh seeds until the time share is spent, see run_fuzz).
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("fuzz", max_examples=200, database=None, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("REPAINT_FIXTURES", ROOT.parent / "shared" / "fixtures"))
GD = FIXTURES / "guided_diffusion"

needs_fixtures = pytest.mark.skipif(
    not GD.is_dir(), reason=f"shared fixtures not found at {FIXTURES} (set REPAINT_FIXTURES); CI always has them")


@pytest.fixture(scope="session")
def tiny_paths():
    if not GD.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES} (set REPAINT_FIXTURES)")
    return GD / "tiny.pt", GD / "tiny.yaml"


def small_unet_config(**over):
    """A small random model of the guided-diffusion family for fast tests (16x16)."""
    from repaint_cli.models.unet import UNetConfig

    base = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
                num_heads=2, num_head_channels=-1, resblock_updown=True, use_scale_shift_norm=True,
                learn_sigma=True)
    base.update(over)
    return UNetConfig(**base)


def randomize(model, seed=0):
    """Every parameter random (the zero-initialised output layers would make tests trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


@pytest.fixture
def small_checkpoint(tmp_path):
    """A random 16x16 model saved as .pt with a sidecar YAML of RePaint conf keys."""
    import yaml
    from dataclasses import asdict
    from repaint_cli.models.unet import UNetModel

    cfg = small_unet_config()
    model = randomize(UNetModel(cfg))
    path = tmp_path / "small.pt"
    torch.save(model.state_dict(), path)
    hp = {**asdict(cfg), "diffusion_steps": 1000, "noise_schedule": "linear"}
    path.with_suffix(".yaml").write_text(yaml.safe_dump(hp))
    return path


def write_png(path, arr):
    from PIL import Image

    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)


def make_images(folder, n, size=16, seed=0):
    """n random RGB PNGs named img0000.png... in folder (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_png(folder / f"img{i:04d}.png", rng.integers(0, 256, (size, size, 3)))
    return folder


def oom_over_one_image(sample_batch):
    """Wraps pipeline.sample_batch so any batch of more than one image raises a simulated CUDA OOM."""
    def flaky(model, st, batch, *args, **kwargs):
        if len(batch) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return sample_batch(model, st, batch, *args, **kwargs)
    return flaky


def fuzz_seconds(share):
    """This fuzz test's share of `make fuzz`'s time (FUZZ_MINUTES in all); 0 outside the fuzz profile."""
    if os.environ.get("HYPOTHESIS_PROFILE") != "fuzz":
        return 0.0
    return float(os.environ.get("FUZZ_MINUTES", "10")) * 60.0 * share


def run_fuzz(property_test, share, examples):
    """Run a @given test once (the suite's 25 examples), or under `make fuzz` again and again with fresh
    seeds until its share of the time is spent. `examples` is a one-item list the test body increments,
    so the count tried can be printed (the closing figures of a fuzz run)."""
    import time

    from hypothesis import seed as with_seed

    deadline = time.monotonic() + fuzz_seconds(share)
    round_no = 0
    while True:
        with_seed(round_no)(property_test)() if round_no else property_test()
        round_no += 1
        if time.monotonic() >= deadline:
            break
    if fuzz_seconds(share):
        print(f"\n{property_test.__name__}: {examples[0]} generated examples in {round_no} rounds, no failure")


@pytest.fixture
def server():
    """The local HTTP server of http_server.py on 127.0.0.1 (tests/models/test_fetch.py, tests/cli/test_models.py)."""
    from http_server import start_server, stop_server
    srv = start_server()
    yield srv
    stop_server(srv)


@pytest.fixture
def weights(tmp_path, monkeypatch, small_checkpoint):
    """$REPAINT_WEIGHTS an empty folder; a card 'tiny' for the small checkpoint, served as /small.pt."""
    import yaml
    w = tmp_path / "w"
    w.mkdir()
    monkeypatch.setenv("REPAINT_WEIGHTS", str(w))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.cache/repaint/weights of the real user
    monkeypatch.chdir(tmp_path)
    cards = tmp_path / "cards"
    cards.mkdir()
    return w, cards, small_checkpoint.read_bytes(), yaml.safe_load(small_checkpoint.with_suffix(".yaml").read_text())


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if the model is loaded: run-wide mistakes must be found before."""
    from repaint_cli.models import checkpoints

    def refuse(*a, **k):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(checkpoints, "load", refuse)


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
    """make(fixed=, per_image=, budget=, oom_from=): a FakeMPS patched into torch.mps's memory counters."""
    def make(**kw):
        fake = FakeMPS(**kw)
        monkeypatch.setattr(torch.mps, "synchronize", lambda: None)
        monkeypatch.setattr(torch.mps, "empty_cache", fake.empty_cache)
        monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: fake.held)
        monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: fake.budget)
        return fake
    return make
