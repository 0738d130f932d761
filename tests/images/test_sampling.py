"""images/sampling.py: the batch loop's GPU-facing behaviour on the CPU (issue 14): OOM recovery frees the failed
attempt first and remembers the size that fit, progress counts finished steps, batch sizing measures the step
that runs."""
import types
import weakref

import torch

from conftest import make_images, randomize, small_unet_config
from repaint_cli.images import inpaint as pipeline
from repaint_cli.images.inpaint import inpaint
from repaint_cli.images.options import InpaintOptions, Reporter
from repaint_cli.images.sampling import DeviceProgress, SplitState, split_retry, has_undo, step_probe


def opts(ckpt, out, **kw):
    base = dict(mask="box", model=str(ckpt), t_T=6, jump_length=2, jump_n_sample=2, out_dir=out)
    base.update(kw)
    return InpaintOptions(**base)


class AllocatingModel:
    """Allocates an activation-sized tensor per call (tracked by weakrefs), then runs out of memory above batch 1."""

    def __init__(self):
        self.refs = []
        self.alive_at_retry = []

    def __call__(self, idx):
        self.alive_at_retry.append(sum(r() is not None for r in self.refs))
        activations = torch.empty(len(idx), 1 << 16)  # held by this frame when the error is raised
        self.refs.append(weakref.ref(activations))
        if len(idx) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return torch.full((1, 3, 2, 2), float(idx[0]))


def test_oom_retry_starts_after_the_failed_attempt_is_freed():
    model, state, freed_before_retry = AllocatingModel(), SplitState(), []

    def on_oom():  # what the pipeline does between the failure and the retry
        freed_before_retry.append(all(r() is None for r in model.refs))

    x = split_retry(model, [0, 1, 2, 3], Reporter(), state, on_oom)
    assert x[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert freed_before_retry and all(freed_before_retry)
    assert model.alive_at_retry == [0] * len(model.alive_at_retry)  # no earlier attempt alive at any call
    assert state.limit == 1


def test_after_an_oom_later_batches_start_at_the_size_that_worked(tmp_path, small_checkpoint, monkeypatch):
    imgs = make_images(tmp_path / "imgs", 8)
    inpaint([str(imgs)], opts(small_checkpoint, tmp_path / "ref", batch_size=1))
    tried = []
    real = pipeline.sample_batch

    def flaky(model, st, batch, *a, **k):
        tried.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
        return real(model, st, batch, *a, **k)

    monkeypatch.setattr(pipeline, "sample_batch", flaky)
    summary = inpaint([str(imgs)], opts(small_checkpoint, tmp_path / "out", batch_size=4))
    assert summary.done == 8
    assert tried == [4, 2, 2, 2, 2]  # only the first batch tries 4
    ref = {p.name: p.read_bytes() for p in (tmp_path / "ref").glob("*.png")}
    assert ref == {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.png")}


class FakeEvent:
    def __init__(self):
        self.done = False
        self.waited = False

    def query(self):
        return self.done

    def synchronize(self):
        self.waited = True
        self.done = True


def test_progress_counts_steps_the_device_finished():
    events, advanced = [], []
    progress = DeviceProgress(advanced.append, torch.device("cuda"), every=4,
                              new_event=lambda: events.append(FakeEvent()) or events[-1])
    for _ in range(10):
        progress.step()
    assert sum(advanced) == 0 and len(events) == 2  # queued, nothing finished yet
    events[0].done = True
    progress.step()
    assert sum(advanced) == 4
    progress.finish()
    assert sum(advanced) == 11 and events[-1].waited
    cpu = []
    p = DeviceProgress(cpu.append, torch.device("cpu"))
    p.step(), p.step(), p.finish()
    assert sum(cpu) == 2


def test_schedules_without_an_undo_capture_no_undo_graph():
    from repaint_cli.core.schedule import JumpParams, jump_schedule

    assert not has_undo(jump_schedule(JumpParams(t_T=1, jump_length=1, jump_n_sample=1)))
    assert has_undo(jump_schedule(JumpParams(t_T=10, jump_length=3, jump_n_sample=2)))


def test_batch_sizing_probe_runs_the_classifier_forward_and_backward():
    from repaint_cli.core.diffusion import Diffusion
    from repaint_cli.images.guidance import Guidance
    from repaint_cli.models.unet import ClassifierConfig, EncoderUNetModel, UNetModel

    model = randomize(UNetModel(small_unet_config(class_cond=True, num_classes=5))).eval()
    clf = randomize(EncoderUNetModel(ClassifierConfig(image_size=16, classifier_width=64, classifier_depth=1,
                                                      classifier_attention_resolutions="8",
                                                      classifier_channel_mult="1,2", num_classes=5))).eval()
    grads = []
    clf.input_blocks[0].register_full_backward_hook(lambda m, gi, go: grads.append(go[0].shape[0]))
    st = types.SimpleNamespace(device=torch.device("cpu"), guidance=0.0, diffusion=Diffusion.create(1000, "linear", "10"),
                               loaded=types.SimpleNamespace(model=model))
    guidance = Guidance(5, None, clf, 1.0)
    with torch.no_grad():
        x, x0 = step_probe(model, st, guidance.cond_fn)(3)
    assert x.shape == (3, 3, 16, 16) and grads == [3]
