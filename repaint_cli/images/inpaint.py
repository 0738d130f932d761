"""``inpaint()``: the orchestration behind ``repaint inpaint``.

jobs -> load + fit -> batches -> sampler -> unfit + paste -> atomic writes.
Bad input costs only its own image: each problem is one line naming the file
and the fix, the rest of the run goes on, and the summary says what failed.
Mistakes that concern the whole run (a missing input, a mask taken for an image,
an output onto an input, an unknown conf key) stop it before the model loads
(:func:`setup.resolve_jobs`). Each output records what made it (``provenance.py``).

The run's parts each go where they are used: ``opts.read`` to reading and fitting
(:mod:`prepare`), ``opts.sample`` to the model and schedule (:mod:`setup`) and the
sampler (:mod:`sampling`), ``opts.engine`` to the device, ``opts.write`` to the files.
"""
from __future__ import annotations

import gc
import json
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from ..runtime.cuda_graphs import GraphCache
from ..runtime.device import EngineOptions, describe_engine, engine_facts, prepare_model
from ..runtime.memory import auto_batch_size, empty_device_cache
from ..core.schedule import schedule_summary
from ..files import InputError
from . import fit, image_files, masks
from .hooks import Prepared
from .jobs import Job
from .options import Heard, ImageResult, InpaintOptions, Reporter, RunError, RunSummary, StopFlag  # noqa: F401 (RunError: the API raises it)
from .prepare import fill_colour_note, prefetched, upscale_warning
from .provenance import SETTINGS_KEY, append_run_record, job_settings
from .resume import OutputLocks, files_on_disk, mask_output, skip_finished
from .sampling import SplitState, fp32_fits_beside, split_retry, non_finite_rows, sample_batch, step_probe, to_uint8
from .setup import RunPlan, check_out, plan_run


def inpaint(inputs, opts: InpaintOptions, reporter: Optional[Reporter] = None, stdin=None,
            stop: Optional[StopFlag] = None) -> RunSummary:
    """Inpaint every input, as ``repaint inpaint`` does: a problem with one image costs only that image.

    Parameters
    ----------
    inputs : list of str or Path
        Image files, folders (searched below too with ``opts.read.recursive``) and globs; ``"-"`` reads
        paths from ``stdin``.
    opts : InpaintOptions
        The run's options, in four parts, each checked when it was made.
    reporter : Reporter, optional
        Receives progress lines, warnings and each image's result; by default warnings and errors go to
        the ``repaint_cli`` logger.
    stdin : file object, optional
        Where ``"-"`` reads paths from, one a line (NUL-separated with ``opts.read.null``); default
        ``sys.stdin``.
    stop : StopFlag, optional
        Set its ``requested`` (from a signal handler or another thread) to stop after the current batch.

    Returns
    -------
    RunSummary
        How many images were done, failed and skipped, each image's result, the run's warnings and its
        wall time.

    Raises
    ------
    RunError
        Only for a problem of the whole run, before any image is sampled (one line): a missing input, an
        output onto an input, a model that does not load, options that cannot work together.
    """
    t_start = time.time()
    reporter = Heard(reporter or Reporter())  # the run's warnings also come back in the summary
    run = _Run(plan_run(inputs, opts, stdin, reporter), reporter, stop or StopFlag())
    run.go()
    run.summary.seconds = time.time() - t_start
    run.summary.warnings = reporter.warnings
    return run.summary


class _Run:
    """One run: the outputs a rerun finds done reported, then the rest sampled (:class:`_Sampler`) batch by batch
    and written (:class:`_Writer`); whatever stops it, the cleanup runs (:meth:`finish`)."""

    def __init__(self, plan: RunPlan, reporter: Reporter, stop: StopFlag):
        self.plan, self.reporter, self.stop = plan, reporter, stop
        self.opts = plan.opts
        self.S = plan.st.loaded.model.cfg.image_size
        self.summary = RunSummary(outputs=[str(j.output) for j in plan.joblist.all_jobs if j.error is None])
        self.writer = _Writer(plan, reporter, self.summary)
        self.engine_facts = None  # precision, threads and why (the run record), once the model is prepared
        self.upscale_warned = False

    def go(self) -> None:
        """Report the outputs a rerun finds done, then sample the rest (none where the plan is light)."""
        check_out(self.opts.write.out_dir)  # the folder is made only now that the model has loaded
        self.writer.open_manifest()
        done = self.plan.joblist.skipped_done
        try:
            skip_finished(done, self.opts.read, self.opts.write, self.S, self.plan.settings, self.writer.mask_hashes,
                          self.reporter, self.writer.record)
        except BaseException:
            self.writer.close_manifest()
            raise
        if self.plan.light:
            self.reporter.log(f"all {len(done)} outputs exist: nothing to do, the model was not loaded "
                              f"(--overwrite redoes them)")
            self.writer.close_manifest()
        else:
            self.sample_all(self.plan.joblist.jobs)

    def sample_all(self, jobs: list[Job]) -> None:
        """Sample the jobs batch by batch and write their files; closes the manifest and adds the run record."""
        sampler = _Sampler(self.plan, self.reporter)
        self.engine_facts = sampler.engine_facts
        bs = sampler.batch_size(len(jobs))
        items = self._prepared_items(jobs, bs)
        try:
            while True:
                batch = _take(items, sampler.next_size(bs))
                if not batch:
                    break
                t0 = time.time()
                x = sampler.sample(batch)
                self.writer.write(batch, x, (time.time() - t0) / len(batch))
                self.writer.collect(block=False)
                if self.stop.requested:
                    self.summary.interrupted = True
                    self.reporter.log("stopped after the current batch (Ctrl-C); rerun the same command to finish "
                                      "the rest", "warning")
                    break
        finally:
            self.finish(items)
        self.writer.report_run_notes()

    def _prepared_items(self, jobs: list[Job], bs: int) -> Iterator[Prepared]:
        """The images read and fitted ahead (a worker thread), those that cannot be read failed, those another run
        is making skipped."""
        for job, item, error in prefetched(jobs, self.opts.read, self.S, ahead=bs):
            if error is not None:
                self.writer.fail(job, error)
                continue
            if not self.writer.take_lock(job, item):
                continue
            note = None if self.upscale_warned else upscale_warning(item)
            if note:
                self.upscale_warned = True  # once per run
                self.reporter.log(note, "warning")
            yield item

    def finish(self, items) -> None:
        """The cleanup of a run, whatever stopped it: report what was written, stop the writer, release the locks,
        close the manifest, add the run record. Runs inside ``finally``: an error of its own must not hide the one
        on its way (if any), nor skip the rest of the cleanup; it is raised at the end when nothing else is."""
        late = None
        try:
            items.close()  # stops the prefetch thread (it reads no further than the next batch)
            self.writer.collect(block=True)
        except Exception as e:
            late = e
        self.writer.close()
        summary, read = self.summary, self.opts.read
        if summary.done:  # a run that wrote nothing leaves nothing
            append_run_record(Path(self.opts.write.out_dir), {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": self.plan.settings, "mask": read.mask,
                "shard": read.shard, "done": summary.done, "failed": summary.failed, "skipped": summary.skipped,
                "interrupted": summary.interrupted, "engine": self.engine_facts})
        if late is not None and sys.exc_info()[1] is None:
            raise late


class _Sampler:
    """The sampling half of a run: the model prepared for the engine, batches through it; on out-of-memory a
    batch is split (and later batches start at the size that worked), and the images not finite under fp16/bf16
    are redone in fp32."""

    def __init__(self, plan: RunPlan, reporter: Reporter):
        self.st, self.opts, self.guidance, self.reporter = plan.st, plan.opts, plan.guidance, reporter
        self.S = plan.st.loaded.model.cfg.image_size
        self.model = prepare_model(self.st.loaded.model, self.st.device, self.opts.engine)
        self.engine_facts = engine_facts(self.model, self.st.device)  # precision, threads and why
        self.model_fp32 = None  # made from the fp32 master when a batch is not finite under fp16/bf16
        self.graph_cache = GraphCache()  # CUDA graph captures per model and batch shape, reused across batches
        self.split = SplitState()  # after an out-of-memory, later batches start at the size that worked

    def next_size(self, bs: int) -> int:
        """The size of the next batch: ``bs``, or less after an out-of-memory."""
        return bs if self.split.limit is None else min(bs, self.split.limit)

    def batch_size(self, n: int) -> int:
        """The run's batch size (measured where --batch-size is auto); says it with the model and the schedule."""
        st, guidance = self.st, self.guidance
        if self.opts.engine.batch_size == "auto":
            bs = auto_batch_size(self.model, self.S, st.device, max(n, 1),
                                 probe=step_probe(self.model, st, guidance.cond_fn if guidance else None))
        else:
            bs = max(1, int(self.opts.engine.batch_size))
        summ = schedule_summary(st.times)
        self.reporter.log(
            f"model {st.loaded.card.name if st.loaded.card else st.loaded.path.name} ({self.S}x{self.S}) on "
            f"{st.device}; schedule t_T={st.jump.t_T} jump_length={st.jump.jump_length} "
            f"jump_n_sample={st.jump.jump_n_sample}: {summ['unet_calls']} UNet calls and {summ['undo_steps']} undo "
            f"steps per image; batch {bs}; "
            f"{describe_engine(self.engine_facts)}")
        self.reporter.start(n, -(-n // bs) * (len(st.times) - 1))  # schedule steps over all batches
        return bs

    def sample(self, batch: list[Prepared]) -> torch.Tensor:
        """x_0 of a batch; on out-of-memory it is split and retried; the images not finite under fp16/bf16 are
        redone in fp32."""
        kwargs = self.guidance.model_kwargs(batch, self.st.device) if self.guidance else None
        cond_fn = self.guidance.cond_fn if self.guidance else None
        callbacks = [h.step_callback(batch) for h in self.opts.write.extras]

        def run(idx: list[int], m=self.model, engine=self.opts.engine):  # idx: positions in the batch
            sub_kw = {k: v[idx] for k, v in (kwargs or {}).items()}
            sub_cbs = callbacks if len(idx) == len(batch) else []  # frames only for whole batches
            return sample_batch(m, self.st, [batch[i] for i in idx], self.opts.sample, engine,
                                self.reporter, sub_cbs, sub_kw, cond_fn, self.graph_cache)

        everything = list(range(len(batch)))
        x = split_retry(run, everything, self.reporter, self.split, self._free_after_oom)
        bad = [i for i, is_bad in enumerate(non_finite_rows(x)) if is_bad]
        if not bad or getattr(self.model, "dtype", torch.float32) == torch.float32:
            return x
        return self._redo_in_fp32(batch, x, bad, run, any(cb is not None for cb in callbacks))

    def _redo_in_fp32(self, batch: list[Prepared], x: torch.Tensor, bad: list[int], run, frames: bool) -> torch.Tensor:
        """The images of ``bad`` redone in fp32, alone: each image's noise is keyed to it, so its result is the
        one it would have in any batch. Eager (a rare retry is not worth a capture and its pool), with a split
        state of its own: an fp32 retry that runs out of memory must not shrink the run's fp16 batches. Where a
        hook records frames of the whole batch (``--frames``), the whole batch, so that they show the fp32 run."""
        rows = list(range(len(batch))) if frames else bad
        self.reporter.log(f"NaN/Inf under {self.model.dtype} in {len(bad)} image(s) of the batch (first: "
                          f"{batch[bad[0]].job.image}); retrying {'the batch' if frames else 'them'} in fp32",
                          "warning")
        if self.model_fp32 is None:  # the fp32 master, kept on the host until a batch needs it
            self.model_fp32 = prepare_model(self.st.loaded.model, self.st.device,
                                            EngineOptions(**{**asdict(self.opts.engine), "precision": "fp32"}))
        eager = EngineOptions(**{**asdict(self.opts.engine), "precision": "fp32", "cuda_graphs": False})
        redone = split_retry(lambda idx: run([rows[i] for i in idx], self.model_fp32, eager), list(range(len(rows))),
                              self.reporter, SplitState(), self._free_after_oom)
        x = x.clone()
        x[rows] = redone.to(x.dtype)
        if not fp32_fits_beside(self.model_fp32, self.st.device):  # memory is short: back to the host
            self.model_fp32.inner.to("cpu")  # no graph reads these weights: the retry runs eager
            self.model_fp32 = None
            gc.collect()
            if self.st.device.type == "cuda":
                torch.cuda.empty_cache()
        return x

    def _free_after_oom(self) -> None:
        self.graph_cache.clear()  # their private pools hold a step's activations each
        gc.collect()
        empty_device_cache(self.st.device)


class _Writer:
    """The writing half of a run: each image's files written on one thread, its output locked while it is made,
    its result reported in input order (stdout, --json, --manifest lines: a result waits for those before it)."""

    def __init__(self, plan: RunPlan, reporter: Reporter, summary: RunSummary):
        self.opts, self.settings, self.guidance, self.reporter = plan.opts, plan.settings, plan.guidance, reporter
        self.summary = summary
        self.mask_hashes: dict = {}  # mask file -> its hash, for each output's recorded settings
        self.manifest = None  # opened by open_manifest(), once --out exists
        mine = plan.joblist.skipped_done + plan.joblist.jobs
        self.position = {str(j.image): i for i, j in enumerate(plan.joblist.all_jobs)}
        self.expected = sorted(self.position[str(j.image)] for j in mine)
        self.next_result = 0  # the index in self.expected of the next result to report
        self.held: dict = {}  # position -> a result that waits for earlier ones
        self.locks = OutputLocks()
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="repaint-writer")  # started on first use
        self.pending: list[tuple[Prepared, float, list[Future]]] = []  # sampled, files being written
        self.fill_notes: dict = {}  # output -> a note on its fill's colour (prepare.fill_colour_note)
        self.far_fills: list = []  # images whose fill is far in colour from the hole's border
        self.busy: list = []  # images another run on this --out is making

    def open_manifest(self) -> None:
        if self.opts.write.manifest:
            self.manifest = _open_manifest(Path(self.opts.write.manifest))

    def take_lock(self, job: Job, item: Prepared) -> bool:
        """Lock ``job``'s output for this run; False (the image reported skipped) when another run makes it."""
        why = self.locks.take(job, self.opts.write.overwrite)
        if why is None:
            return True
        self.busy.append(job.image)
        self.record(ImageResult(str(job.image), item.mask_label, str(job.output), job.keys.seed, "skipped",
                                warnings=[why], files=files_on_disk(job, self.opts.write)))
        return False

    def record(self, res: ImageResult) -> None:
        if res.status == "done":
            self.summary.done += 1
        elif res.status == "failed":
            self.summary.failed += 1
        else:
            self.summary.skipped += 1
        self.held[self.position.get(res.input, -1)] = res
        while self.next_result < len(self.expected) and self.expected[self.next_result] in self.held:
            self._report(self.held.pop(self.expected[self.next_result]))
            self.next_result += 1

    def _report(self, res: ImageResult) -> None:
        self.summary.results.append(res)
        self.reporter.image_done(res)
        if self.manifest is not None:
            self.manifest.write(res.json() + "\n")
            self.manifest.flush()

    def report_held(self) -> None:
        """The results still waiting (the run stopped before an earlier image was made), in input order."""
        for pos in sorted(self.held):
            self._report(self.held.pop(pos))

    def fail(self, job: Job, message: str) -> None:
        self.locks.release(job)
        self.reporter.log(message, "error")
        self.record(ImageResult(str(job.image), str(job.mask_file or job.mask_kind or ""), None, job.keys.seed,
                                "failed", error=message))

    def close_manifest(self) -> None:
        self.report_held()
        if self.manifest is not None:
            self.manifest.close()
            self.manifest = None

    def write(self, batch: list[Prepared], x: torch.Tensor, secs: float) -> None:
        """Hand each image's files to the writer thread; an image whose sample is not finite (also in fp32: it
        would be written as black pixels) fails alone."""
        write = self.opts.write
        for item, sample, is_bad in zip(batch, to_uint8(x), non_finite_rows(x)):
            if is_bad:
                self.fail(item.job, f"{item.job.image}: the model's sample holds NaN/Inf (in fp32); nothing written; "
                                    f"try another --seed, or check the model's weights")
                continue
            out_rgb = fit.unfit(item.plan, sample, item.image.rgb, item.keep, paste=write.paste)
            note = fill_colour_note(item, out_rgb)
            if note:
                self.fill_notes[str(item.job.output)] = note
            text = {SETTINGS_KEY: json.dumps(job_settings(self.settings, item.job, self.mask_hashes),
                                             separators=(",", ":"))}
            futs = [self.thread.submit(image_files.write_like, item.job.output, out_rgb, item.image, text=text)]
            if write.save_mask:
                mask_img = masks.to_convention(np.where(item.keep, 255, 0).astype(np.uint8),
                                               self.opts.read.mask_convention)
                futs.append(self.thread.submit(image_files.write_image_atomic, mask_output(item.job),
                                               np.repeat(mask_img[..., None], 3, axis=2), None, gray=True))
            for hook in write.extras:
                hook.finish(item, sample, out_rgb, lambda fn, *a, **k: futs.append(self.thread.submit(fn, *a, **k)))
            self.pending.append((item, secs, futs))

    def collect(self, block: bool) -> None:
        """Report images whose files are written (in order); a writer's error fails its image only."""
        while self.pending and (block or all(f.done() for f in self.pending[0][2])):
            item, secs, futs = self.pending.pop(0)
            errors, warns = [], list(item.warnings)
            for f in futs:
                try:
                    warns += f.result() or []
                except InputError as e:
                    errors.append(str(e))
                except OSError as e:
                    errors.append(f"{item.job.output}: cannot write ({e.strerror or e}); free space or choose another "
                                  f"--out")
                except Exception as e:  # a bug in a writer: named, and the other images go on
                    errors.append(f"{item.job.output}: cannot write ({type(e).__name__}: {e})")
            note = self.fill_notes.pop(str(item.job.output), None)
            if errors:
                self.fail(item.job, errors[0])
                continue
            self._done(item, secs, warns, note)

    def _done(self, item: Prepared, secs: float, warns: list, note: Optional[str]) -> None:
        job = item.job
        self.locks.release(job)
        for w in warns:
            self.reporter.log(f"{job.image}: {w}" if not str(w).startswith(str(job.image)) else w, "warning")
        if note:
            self.far_fills.append(job.image)
        self.record(ImageResult(str(job.image), item.mask_label, str(job.output), job.keys.seed, "done",
                                round(secs, 3), warnings=warns + ([note] if note else []),
                                label=self.guidance.label_for(job) if self.guidance else None,
                                files=files_on_disk(job, self.opts.write)))

    def close(self) -> None:
        """Stop the writer thread (its files written), release the locks, close the manifest."""
        self.thread.shutdown(wait=True)
        self.locks.release_all()
        self.close_manifest()

    def report_run_notes(self) -> None:
        """One line each, per run: images left to another run, fills far in colour from their holes' borders."""
        if self.busy:
            self.reporter.log(f"{len(self.busy)} image(s) skipped, in progress by another run on this --out (first: "
                              f"{self.busy[0]}); that run writes them", "warning")
        if self.far_fills:
            self.reporter.log(f"{len(self.far_fills)} image(s) filled far from their hole border's colour (first: "
                              f"{self.far_fills[0]}; each image's --json or --manifest line has both colours): this "
                              f"model may not suit these images; see README, Models", "warning")


def _open_manifest(path: Path):
    """--manifest, opened to append (its folder made, as --out's is)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a", encoding="utf-8")
    except OSError as e:
        raise RunError(f"--manifest {path}: cannot open it to append ({e.strerror or e}); choose another path") from None


def _take(items: Iterator[Prepared], size: int) -> list[Prepared]:
    """The next batch: up to ``size`` items."""
    batch: list[Prepared] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            break
    return batch
