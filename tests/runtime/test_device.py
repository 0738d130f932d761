"""runtime/device.py: the device and precision chosen, the model prepared for it (layouts, compile, the
invariance self-check, fp32 layers under half precision, TF32 settings restored). Devices beyond CUDA and bf16
on the CPU (issue 34): MPS and ROCm are mocked; bf16 runs for real where this CPU has bf16 instructions."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import randomize, small_unet_config, write_png
from repaint_cli.runtime import device as dev
from repaint_cli.runtime import memory
from repaint_cli.runtime.device import EngineOptions, pick_device, prepare_model, resolve_precision
from repaint_cli.models.unet import UNetModel
from conftest import ROOT
from repaint_cli.runtime.device import PrecisionModel, default_channels_last, low_precision_copy


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


@pytest.fixture(scope="module")
def model():
    return randomize(UNetModel(small_unet_config())).eval()


def test_precision_and_device_fallbacks():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == torch.float32
    with pytest.warns(UserWarning, match="CUDA"):
        assert resolve_precision("fp16", cpu) == torch.float32
    from repaint_cli.runtime.device import cpu_has_bf16

    if cpu_has_bf16():  # issue 34: bf16 on CPUs with its instructions (tests/test_devices.py)
        assert resolve_precision("bf16", cpu) == torch.bfloat16
    else:
        with pytest.warns(UserWarning):
            assert resolve_precision("bf16", cpu) == torch.float32
    with pytest.raises(ValueError):
        resolve_precision("fp8", cpu)
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            pick_device("cuda")


def test_prepare_model_layouts_give_the_same_output(model):
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    with torch.no_grad():
        ref = model(x, t)
        import copy
        cl = prepare_model(copy.deepcopy(model), torch.device("cpu"), EngineOptions(channels_last=True))
        assert torch.allclose(cl(x, t), ref, atol=1e-5)


def test_compile_that_fails_at_its_first_call_warns_once_and_runs_eager(model, monkeypatch):
    """torch.compile compiles at the first call (BackendCompilerFailed there, not at torch.compile):
    that call and every later one run eager, batch-invariant on the CPU as without --compile."""
    import copy
    import warnings
    from repaint_cli.models.batch_invariant import is_batch_invariant

    calls = []

    def broken_compile(fn, **kw):
        def compiled(*a, **k):
            calls.append(1)
            raise RuntimeError("BackendCompilerFailed: backend='inductor' raised: no C compiler here")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([3, 700, 999])
    run = prepare_model(copy.deepcopy(model), torch.device("cpu"), EngineOptions(device="cpu", compile=True))
    eager = prepare_model(copy.deepcopy(model), torch.device("cpu"), EngineOptions(device="cpu"))
    with torch.no_grad():
        with pytest.warns(UserWarning, match="torch.compile failed .*BackendCompilerFailed.*running eager"):
            out = run(x, t)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once
            again = run(x[:1], t[:1])
        assert torch.equal(out, eager(x, t)) and torch.equal(again, out[:1])
    assert calls == [1] and is_batch_invariant(run.inner)


def test_compile_out_of_memory_is_not_swallowed(model, monkeypatch):
    import copy

    def oom_compile(fn, **kw):
        def compiled(*a, **k):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return compiled

    monkeypatch.setattr(torch, "compile", oom_compile)
    run = prepare_model(copy.deepcopy(model), torch.device("cpu"), EngineOptions(device="cpu", compile=True))
    with pytest.raises(torch.cuda.OutOfMemoryError), torch.no_grad():
        run(torch.randn(1, 3, 16, 16), torch.tensor([3]))


def test_failed_invariance_self_check_calls_the_unet_image_by_image(model, monkeypatch):
    """A PyTorch whose kernels break the batch-invariant layers (here: GroupNorm32 made to depend on
    the batch size) is caught at start-up: a warning, plain layers, one UNet call per image."""
    import copy
    import repaint_cli.models.batch_invariant as inv

    monkeypatch.setattr(inv, "_SELF_CHECKED", {})
    monkeypatch.setattr(inv.InvariantGroupNorm32, "forward",
                        lambda self, x: inv.GroupNorm32.forward(self, x) + 1e-3 * x.shape[0])
    with pytest.warns(UserWarning, match=r"self-check .*GroupNorm32: image 0 alone differs .*one image at a time"):
        run = prepare_model(copy.deepcopy(model), torch.device("cpu"), EngineOptions(device="cpu"))
    assert run.per_image and not inv.is_batch_invariant(run.inner)
    x, t = torch.randn(4, 3, 16, 16), torch.tensor([3, 700, 999, 10])
    with torch.no_grad():
        out = run(x, t)
        assert all(torch.equal(out[i:i + 1], run(x[i:i + 1], t[i:i + 1])) for i in range(4))


def test_invariance_self_check_passes_on_this_cpu():
    import repaint_cli.models.batch_invariant as inv

    old = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            assert inv.self_check() is None, n
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="module")
def unet():
    return randomize(UNetModel(small_unet_config())).eval()


def test_picking_cuda_n_makes_it_the_current_device(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: chosen.append(i))
    assert pick_device("cuda:1") == torch.device("cuda", 1) and chosen == [1]
    assert pick_device("cuda") == torch.device("cuda", 0) and chosen == [1, 0]
    with pytest.raises(RuntimeError, match="cuda:0 to cuda:1"):
        pick_device("cuda:2")


def test_channels_last_defaults_on_for_cpu_off_for_cuda(unet):
    import copy

    assert default_channels_last(torch.device("cpu")) and not default_channels_last(torch.device("cuda", 0))
    m = prepare_model(copy.deepcopy(unet), torch.device("cpu"), EngineOptions())
    assert m.channels_last and m.inner.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_low_precision_weights_give_what_autocast_gives_and_keep_the_fp32_master(unet):
    """bf16 on the CPU stands in for fp16 on CUDA: autocast's casts of conv/linear weights are the same numbers."""
    import copy

    master = copy.deepcopy(unet)
    low = low_precision_copy(master, torch.bfloat16, torch.device("cpu"))
    assert all(p.dtype == torch.float32 for p in master.parameters())  # the NaN retry's weights are untouched
    kept = {id(k) for f in low.fp32_modules() for k in f.modules()}  # guided-diffusion's fp32 layers (issue 37.5)
    convs = [m for m in low.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv1d, torch.nn.Linear))
             and id(m) not in kept]
    norms = [m for m in low.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert convs and all(m.weight.dtype == torch.bfloat16 for m in convs)
    assert any(isinstance(m, torch.nn.Conv1d) for m in convs)  # attention's qkv and proj_out too
    assert all(m.weight.dtype == torch.float32 for m in norms)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    with torch.no_grad():
        cast_each_call = PrecisionModel(master, torch.bfloat16, torch.device("cpu"), False)(x, t)
        pre_converted = PrecisionModel(low, torch.bfloat16, torch.device("cpu"), False)(x, t)
    assert torch.equal(cast_each_call, pre_converted)


def test_fp32_on_cuda_runs_without_tf32_and_restores_the_process_settings():
    """Issue 37.6: cuDNN convolutions default to TF32; --precision fp32 (and the NaN retry) must be IEEE fp32.
    The flags are host settings read at kernel launch, so recording them inside the model's call checks it."""
    seen = []

    class Records(torch.nn.Module):
        def forward(self, x, t, **kw):
            seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
            return x

    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        PrecisionModel(Records(), torch.float32, torch.device("cuda"), False)(torch.zeros(1, 3, 2, 2), torch.zeros(1))
        assert seen == [(False, False)]
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (before[0], True)
        PrecisionModel(Records(), torch.float32, torch.device("cpu"), False)(torch.zeros(1, 3, 2, 2), torch.zeros(1))
        assert seen[-1] == (before[0], True)  # the CPU has no TF32: nothing changed there
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_fp32_uses_the_per_operator_tf32_settings_where_the_process_set_those_and_restores_them():
    """Where TF32 was set with PyTorch's newer per-operator API (reading the old flags then raises), those are
    set to IEEE and given back instead; in a child process, since the two APIs are not to be mixed in one."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import torch\n"
            "from repaint_cli.runtime.device import ieee_fp32\n"
            "conv, mm = torch.backends.cudnn.conv, torch.backends.cuda.matmul\n"
            "mm.fp32_precision = 'tf32'\n"
            "with ieee_fp32():\n"
            "    print(conv.fp32_precision, mm.fp32_precision)\n"
            "print(conv.fp32_precision, mm.fp32_precision)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ieee", "ieee", "tf32", "tf32"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_guided_diffusions_fp32_layers_stay_fp32_under_half_precision(unet, dtype):
    """Issue 37.5: guided-diffusion's use_fp16 keeps the timestep embedding, every emb_layers and the final out
    in fp32 (celeba256 / places256 were trained in fp32); autocast and the half copy ran them in fp16. CPU
    autocast stands in for CUDA's: the same dispatch decides which dtype each layer runs in."""
    import copy

    low = low_precision_copy(copy.deepcopy(unet), dtype, torch.device("cpu"))
    parts = {"time_embed": low.time_embed, "emb_layers": low.input_blocks[1][0].emb_layers, "out": low.out,
             "trunk conv": low.input_blocks[1][0].in_layers[2]}
    assert all(p.dtype == torch.float32 for name in ("time_embed", "emb_layers", "out")
               for p in parts[name].parameters())
    assert parts["trunk conv"].weight.dtype == dtype
    seen = {}
    for name, m in parts.items():
        m.register_forward_hook(lambda mod, args, out, name=name: seen.update({name: out.dtype}))
    with torch.no_grad():
        y = PrecisionModel(low, dtype, torch.device("cpu"), False)(torch.randn(2, 3, 16, 16), torch.tensor([3, 700]))
    assert seen == {"time_embed": torch.float32, "emb_layers": torch.float32, "out": torch.float32,
                    "trunk conv": dtype}
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    # the names are the checkpoint format: a half copy's state dict has the fp32 model's keys
    assert list(low.state_dict()) == list(unet.state_dict())
