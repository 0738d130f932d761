"""``inpaint()``: the orchestration behind ``repaint inpaint``.

jobs -> load + fit -> batches -> sampler -> unfit + paste -> atomic writes.
Bad input costs only its own image: each problem is one line naming the file
and the fix, the rest of the run goes on, and the summary says what failed.
Mistakes that concern the whole run (a missing input, a mask taken for an image,
an output onto an input, an unknown conf key) stop it before the model loads
(:func:`resolve_jobs`). Each output records what made it (``records.py``).
"""
from __future__ import annotations

import gc
import json
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from . import image_files
from . import masks
from ..runtime.device import EngineOptions, GraphCache, auto_batch_size, prepare_model
from .guidance import Guidance
from .jobs import Job, JobList, check_out_dir
from .provenance import (SETTINGS_KEY, append_run_record, job_settings)
from ..core.schedule import schedule_summary
from .options import RunError, InpaintOptions, ImageResult, RunSummary, Reporter, StopFlag
from .hooks import Prepared
from .setup import Setup, setup, setup_without_weights, make_guidance, resolve_jobs, describe_masks, run_settings, DEFAULT_MODEL_NOTE
from .prepare import prefetched, upscale_warning, fill_colour_note
from .sampling import to_uint8, sample_batch, SplitState, _split_retry, step_probe, _fp32_fits_beside, non_finite_rows
from .resume import mask_output, files_on_disk, skip_finished, OutputLocks


# ----------------------------------------------------------------------------- before the model loads


# ----------------------------------------------------------------------------- what made an output


def inpaint(inputs, opts: InpaintOptions, reporter: Optional[Reporter] = None, stdin=None,
            stop: Optional[StopFlag] = None) -> RunSummary:
    """Inpaint every input; returns a summary. Raises RunError only for run-wide problems."""
    t_start = time.time()
    reporter = reporter or Reporter()
    stop = stop or StopFlag()
    # everything that can be checked without the model first: a mistake costs no model load and no --out folder
    conf, joblist = resolve_jobs(inputs, opts, stdin, reporter)
    reporter.log(describe_masks(opts))
    if opts.model is None and not conf.get("model_path"):
        reporter.log(DEFAULT_MODEL_NOTE)
    problem = check_out_dir(Path(opts.out_dir), create=False)
    if problem:
        raise RunError(problem)
    # a rerun whose outputs all exist compares their settings, which needs the model's card, not its weights
    light = setup_without_weights(opts, conf) if joblist.skipped_done and not joblist.jobs else None
    st = light or setup(opts, conf)
    guidance = make_guidance(st, opts, with_classifier=light is None)
    if opts.method == "ddim" and guidance is not None and guidance.cond_fn is not None:
        raise RunError("--method ddim takes no classifier guidance: pass --classifier-scale 0, or use --method repaint or ddnm")
    S = st.loaded.model.cfg.image_size
    problem = check_out_dir(Path(opts.out_dir))
    if problem:
        raise RunError(problem)
    settings = run_settings(st, opts, guidance, reporter)
    mask_hashes: dict = {}
    summary = RunSummary()
    manifest = open(opts.manifest, "a", encoding="utf-8") if opts.manifest else None

    def record(res: ImageResult):
        if res.status == "done":
            summary.done += 1
        elif res.status == "failed":
            summary.failed += 1
        else:
            summary.skipped += 1
        summary.results.append(res)
        reporter.image_done(res)
        if manifest is not None:
            manifest.write(res.json() + "\n")
            manifest.flush()

    for note in joblist.ignored:
        reporter.log(note, "warning")
    for note in joblist.notes:
        reporter.log(note)
    skip_finished(joblist.skipped_done, opts, S, settings, mask_hashes, reporter, record)
    if light is not None:
        reporter.log(f"all {len(joblist.skipped_done)} outputs exist: nothing to do, the model was not loaded "
                     f"(--overwrite redoes them)")
        if manifest is not None:
            manifest.close()
        summary.seconds = time.time() - t_start
        return summary
    _sample_all(st, opts, guidance, joblist, S, settings, mask_hashes, reporter, record, summary, stop, manifest)
    summary.seconds = time.time() - t_start
    return summary


def _sample_all(st: Setup, opts: InpaintOptions, guidance: Optional[Guidance], joblist: JobList, S: int,
                settings: dict, mask_hashes: dict, reporter: Reporter, record: Callable[[ImageResult], None],
                summary: RunSummary, stop: StopFlag, manifest) -> None:
    """Sample the jobs batch by batch and write their files; closes ``manifest`` and adds the run record."""
    summ = schedule_summary(st.times)
    model = prepare_model(st.loaded.model, st.device, opts.engine)
    n = len(joblist.jobs)
    if opts.batch_size == "auto":
        bs = auto_batch_size(model, S, st.device, max(n, 1),
                             probe=step_probe(model, st, guidance.cond_fn if guidance else None))
    else:
        bs = max(1, int(opts.batch_size))
    reporter.log(f"model {st.loaded.card.name if st.loaded.card else st.loaded.path.name} ({S}x{S}) on {st.device}; "
                 f"schedule t_T={st.jump.t_T} jump_length={st.jump.jump_length} jump_n_sample={st.jump.jump_n_sample}: "
                 f"{summ['unet_calls']} UNet calls per image; batch {bs}")
    reporter.start(n, -(-n // bs) * (len(st.times) - 1))  # schedule steps over all batches
    locks = OutputLocks()

    def fail(job: Job, message: str):
        locks.release(job)
        reporter.log(message, "error")
        record(ImageResult(str(job.image), str(job.mask_file or job.mask_kind or ""), None, opts.seed, "failed",
                           error=message))

    upscale_warned: list = []
    busy: list = []  # images another run on this --out is making

    def prepared_items() -> Iterator[Prepared]:
        for job, item, error in prefetched(joblist.jobs, opts, S, ahead=bs):
            if error is not None:
                fail(job, error)
                continue
            why = locks.take(job, opts.overwrite)
            if why is not None:
                busy.append(job.image)
                record(ImageResult(str(job.image), item.mask_label, str(job.output), opts.seed, "skipped",
                                   warnings=[why], files=files_on_disk(job, opts)))
                continue
            note = None if upscale_warned else upscale_warning(item)
            if note:
                upscale_warned.append(note)  # once per run
                reporter.log(note, "warning")
            yield item

    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="repaint-writer")
    pending: list[tuple[Prepared, float, list[Future]]] = []
    fill_notes: dict = {}  # output -> a note on its fill's colour (fill_colour_note)
    far_fills: list = []

    def collect(block: bool):
        """Report images whose files are written (in order); a writer's error fails its image only."""
        while pending and (block or all(f.done() for f in pending[0][2])):
            item, secs, futs = pending.pop(0)
            errors, warns = [], list(item.warnings)
            for f in futs:
                try:
                    warns += f.result() or []
                except image_files.InputError as e:
                    errors.append(str(e))
                except OSError as e:
                    errors.append(f"{item.job.output}: cannot write ({e.strerror or e}); free space or choose another --out")
                except Exception as e:  # a bug in a writer: named, and the other images go on
                    errors.append(f"{item.job.output}: cannot write ({type(e).__name__}: {e})")
            note = fill_notes.pop(str(item.job.output), None)
            if errors:
                fail(item.job, errors[0])
                continue
            locks.release(item.job)
            for w in warns:
                reporter.log(f"{item.job.image}: {w}" if not str(w).startswith(str(item.job.image)) else w, "warning")
            if note:
                far_fills.append(item.job.image)
            record(ImageResult(str(item.job.image), item.mask_label, str(item.job.output), opts.seed, "done",
                               round(secs, 3), warnings=warns + ([note] if note else []),
                               label=guidance.label_for(item.job.stem) if guidance else None,
                               files=files_on_disk(item.job, opts)))

    model_fp32 = None
    graph_cache = GraphCache()  # CUDA graph captures per model and batch shape, reused across batches
    split = SplitState()  # after an out-of-memory, later batches start at the size that worked

    def free_after_oom():
        graph_cache.clear()  # their private pools hold a step's activations each
        gc.collect()
        if st.device.type == "cuda":
            torch.cuda.empty_cache()

    batch: list[Prepared] = []
    items = prepared_items()
    try:
        while True:
            batch = []
            size = bs if split.limit is None else min(bs, split.limit)
            for item in items:
                batch.append(item)
                if len(batch) == size:
                    break
            if not batch:
                break
            t0 = time.time()
            kwargs = guidance.model_kwargs(batch, st.device) if guidance else None
            cond_fn = guidance.cond_fn if guidance else None
            callbacks = [h.step_callback(batch) for h in opts.extras]

            def run(idx: list[int], m=model):  # idx: positions in the batch (all, or a split part)
                sub_kw = {k: v[idx] for k, v in (kwargs or {}).items()}
                sub_cbs = callbacks if len(idx) == len(batch) else []  # frames only for whole batches
                return sample_batch(m, st, [batch[i] for i in idx], opts, reporter, sub_cbs, sub_kw, cond_fn,
                                    graph_cache)

            x = _split_retry(run, list(range(len(batch))), reporter, split, free_after_oom)
            if not torch.isfinite(x).all() and getattr(model, "dtype", torch.float32) != torch.float32:
                reporter.log(f"NaN/Inf under {model.dtype} in the batch starting {batch[0].job.image}; retrying it in fp32",
                             "warning")
                if model_fp32 is None:  # the fp32 master, kept on the host until a batch needs it
                    model_fp32 = prepare_model(st.loaded.model, st.device,
                                               EngineOptions(**{**asdict(opts.engine), "precision": "fp32"}))
                x = _split_retry(lambda idx: run(idx, model_fp32), list(range(len(batch))), reporter, split,
                                 free_after_oom)
                if not _fp32_fits_beside(model_fp32, st.device):  # memory is short: back to the host
                    graph_cache.clear()  # its graphs read the weights about to move
                    model_fp32.inner.to("cpu")
                    model_fp32 = None
                    free_after_oom()
            # a sample still not finite (also in fp32) would be written as black pixels: its image fails alone
            bad = non_finite_rows(x)
            samples = to_uint8(x)
            secs = (time.time() - t0) / len(batch)
            for item, sample, is_bad in zip(batch, samples, bad):
                if is_bad:
                    fail(item.job, f"{item.job.image}: the model's sample holds NaN/Inf (in fp32); nothing written; "
                                   f"try another --seed, or check the model's weights")
                    continue
                out_rgb = image_files.unfit(item.plan, sample, item.image.rgb, item.keep, paste=opts.paste)
                note = fill_colour_note(item, out_rgb)
                if note:
                    fill_notes[str(item.job.output)] = note
                text = {SETTINGS_KEY: json.dumps(job_settings(settings, item.job, mask_hashes), separators=(",", ":"))}
                futs = [writer.submit(image_files.write_image_atomic, item.job.output, out_rgb, item.image.alpha,
                                      gray=item.image.gray, text=text, icc_profile=item.image.icc_profile,
                                      dpi=item.image.dpi)]
                if opts.save_mask:
                    mask_out = mask_output(item.job)
                    mask_img = masks.to_convention(np.where(item.keep, 255, 0).astype(np.uint8), opts.mask_convention)
                    futs.append(writer.submit(image_files.write_image_atomic, mask_out,
                                              np.repeat(mask_img[..., None], 3, axis=2), None, gray=True))
                for hook in opts.extras:
                    hook.finish(item, sample, out_rgb, lambda fn, *a, **k: futs.append(writer.submit(fn, *a, **k)))
                pending.append((item, secs, futs))
            collect(block=False)
            if stop.requested:
                summary.interrupted = True
                reporter.log("stopped after the current batch (Ctrl-C); rerun the same command to finish the rest", "warning")
                break
    finally:
        _finish_run(items, collect, writer, locks, manifest, summary, settings, opts)
    _report_run_notes(busy, far_fills, reporter)


def _finish_run(items, collect, writer, locks: OutputLocks, manifest, summary: RunSummary, settings: dict,
                opts: InpaintOptions) -> None:
    """The cleanup of a run, whatever stopped it: report what was written, stop the writer, release the locks, close
    the manifest, add the run record. Runs inside ``finally``: an error of its own must not hide the one on its
    way (if any), nor skip the rest of the cleanup; it is raised at the end when nothing else is."""
    late = None
    try:
        items.close()  # stops the prefetch thread (it reads no further than the next batch)
        collect(block=True)
    except Exception as e:
        late = e
    writer.shutdown(wait=True)
    locks.release_all()
    if manifest is not None:
        manifest.close()
    if summary.done:  # a run that wrote nothing leaves nothing
        append_run_record(Path(opts.out_dir), {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings, "mask": opts.mask,
            "shard": opts.shard, "done": summary.done, "failed": summary.failed, "skipped": summary.skipped,
            "interrupted": summary.interrupted})
    if late is not None and sys.exc_info()[1] is None:
        raise late


def _report_run_notes(busy: list, far_fills: list, reporter: Reporter) -> None:
    """One line each, per run: images left to another run, fills far in colour from their holes' borders."""
    if busy:
        reporter.log(f"{len(busy)} image(s) skipped, in progress by another run on this --out (first: {busy[0]}); "
                     f"that run writes them", "warning")
    if far_fills:
        reporter.log(f"{len(far_fills)} image(s) filled far from their hole border's colour (first: {far_fills[0]}; "
                     f"each image's --json or --manifest line has both colours): this model may not suit these images; "
                    f"see README, Models",
                     "warning")
