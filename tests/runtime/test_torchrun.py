"""Shards, manifests and torchrun: every input done exactly once, same bytes however split."""
import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from conftest import make_images
from repaint_cli.cli.app import app
from repaint_cli.runtime.torchrun import Rank, manifest_path, merge_manifests
from repaint_cli.images.jobs import parse_shard, take_shard
import textwrap
from datetime import timedelta
from conftest import ROOT
from repaint_cli.runtime import torchrun as dist
import stat
from cli_helpers import invoke, one_line_exit_2

runner = CliRunner()


@pytest.fixture
def imgs(tmp_path):
    return make_images(tmp_path / "imgs", 5, seed=5)


def args(ckpt, out, imgs, *extra):
    return [str(a) for a in ("inpaint", imgs, "--mask", "box", "--model", ckpt, "--t-T", 10, "--jump-length", 3,
                             "--jump-n-sample", 2, "--out", out, "--quiet", *extra)]


def test_shards_are_disjoint_and_cover():
    items = list(range(11))
    parts = [take_shard(items, parse_shard(f"{i}/3")) for i in range(3)]
    assert sorted(sum(parts, [])) == items and all(parts)
    for bad in ("3/3", "-1/2", "1/0", "x"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_shard_runs_equal_one_run_and_manifests_merge(imgs, small_checkpoint, tmp_path):
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert runner.invoke(app, args(small_checkpoint, whole, imgs)).exit_code == 0
    for i in range(2):
        r = runner.invoke(app, args(small_checkpoint, sharded, imgs, "--shard", f"{i}/2",
                                                 "--manifest", tmp_path / f"m{i}.jsonl"))
        assert r.exit_code == 0, r.output
    assert {p.name: p.read_bytes() for p in whole.glob("*.png")} == {p.name: p.read_bytes() for p in sharded.glob("*.png")}
    recs = merge_manifests([tmp_path / "m0.jsonl", tmp_path / "m1.jsonl"])
    assert [r["status"] for r in recs] == ["done"] * 5
    assert {"input", "mask", "seed", "output", "status", "seconds"} <= set(recs[0])
    r = runner.invoke(app, ["merge-manifests", str(tmp_path / "m0.jsonl"), str(tmp_path / "m1.jsonl")])
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 5


def test_manifest_path_per_rank():
    assert str(manifest_path("m.jsonl", Rank(1, 2, 1))) == "m.rank1.jsonl"
    assert str(manifest_path("m-{rank}.jsonl", Rank(1, 2, 1))) == "m-1.jsonl"
    assert str(manifest_path("m.jsonl", Rank())) == "m.jsonl"


def test_torchrun_two_processes_gloo(imgs, small_checkpoint, tmp_path):
    single = tmp_path / "single"
    assert runner.invoke(app, args(small_checkpoint, single, imgs)).exit_code == 0
    out = tmp_path / "tr"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "repaint_cli", *args(small_checkpoint, out, imgs, "--device", "cpu",
                                                 "--manifest", tmp_path / "man.jsonl")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = [json.loads(l) for f in (tmp_path / "man.rank0.jsonl", tmp_path / "man.rank1.jsonl")
            for l in f.read_text().splitlines()]
    inputs = [r["input"] for r in recs]
    assert sorted(inputs) == sorted(str(p) for p in imgs.iterdir()) and len(set(inputs)) == 5  # exactly once
    assert {p.name: p.read_bytes() for p in single.glob("*.png")} == {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert "over 2 ranks" in p.stderr and "done 5" in p.stderr


def test_ranks_exchange_the_summary_over_gloo_with_a_long_timeout_also_on_gpus(monkeypatch):
    """nccl's 10-minute watchdog would kill a job whose ranks finish more than 10 minutes apart."""
    import datetime

    import torch
    import torch.distributed as tdist

    from repaint_cli.runtime import torchrun as dist

    calls, bound = [], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: bound.append(i))
    monkeypatch.setattr(tdist, "is_initialized", lambda: False)
    monkeypatch.setattr(tdist, "init_process_group", lambda backend=None, **kw: calls.append((backend, kw)))
    assert dist.init(Rank(1, 2, 1), "auto") == "cuda:1"  # made current by pick_device, as every --device is
    assert [c[0] for c in calls] == ["gloo"]
    assert calls[0][1]["timeout"] >= datetime.timedelta(hours=24)


@pytest.mark.parametrize("visible,local_rank,device,want", [
    (1, 3, "auto", "cuda:0"),  # each rank sees only its own GPU (CUDA_VISIBLE_DEVICES per rank)
    (1, 3, "cuda", "cuda:0"),
    (4, 3, "auto", "cuda:3"),  # every rank sees the node's GPUs: LOCAL_RANK's
    (2, 3, "auto", "cuda:1"),  # more ranks than GPUs: shared round-robin
    (4, 3, "cuda:1", "cuda:1"),  # an explicit --device cuda:N is kept
    (4, 3, "cpu", "cpu"),
])
def test_a_rank_gets_a_gpu_it_can_see_and_an_explicit_device_is_kept(monkeypatch, visible, local_rank, device, want):
    """Issue 37.6: torchrun's set_device(LOCAL_RANK) failed where each rank sees one GPU and overrode --device cuda:N."""
    import torch
    import torch.distributed as tdist

    from repaint_cli.runtime import torchrun as dist

    bound = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)

    def set_device(i):
        if i >= visible:
            raise RuntimeError("CUDA error: invalid device ordinal")
        bound.append(i)

    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    monkeypatch.setattr(tdist, "is_initialized", lambda: True)
    assert dist.init(Rank(local_rank, 4, local_rank), device) == want


def test_rank_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(dist.TIMEOUT_ENV, raising=False)
    assert timedelta(hours=1) <= dist.summary_timeout() <= timedelta(days=1)
    for text, seconds in (("90", 90), ("90m", 5400), ("12h", 43200), ("1.5d", 129600)):
        monkeypatch.setenv(dist.TIMEOUT_ENV, text)
        assert dist.summary_timeout() == timedelta(seconds=seconds)
    for bad in ("soon", "-5", "0", "5 weeks"):
        monkeypatch.setenv(dist.TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=dist.TIMEOUT_ENV):
            dist.summary_timeout()


RANK_SCRIPT = textwrap.dedent("""
    import sys, time
    from repaint_cli.runtime import torchrun as dist
    rank = dist.from_env()
    dist.init(rank, "cpu")
    if rank.rank == 1:  # outside torchrun no agent ends the job when a rank dies or hangs
        sys.exit(0) if sys.argv[1] == "dies" else time.sleep(600)
    t = time.time()
    parts = dist.gather(("summary", rank.rank), rank)
    dist.finish(rank)
    print(len(parts), round(time.time() - t))
""")


@pytest.mark.parametrize("other", ["dies", "hangs"])
def test_a_rank_that_dies_or_hangs_is_not_waited_for_for_days(tmp_path, other):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": "2", "REPAINT_DIST_TIMEOUT": "5", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, other], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        out, err = procs[0].communicate(timeout=60)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert procs[0].returncode == 0, err
    assert out.split()[0] == "1"  # its own summary only
    assert "no summary from the other ranks" in err and "REPAINT_DIST_TIMEOUT" in err


def test_merge_manifests_given_the_run_record_is_one_line(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"input": "a.png", "status": "done"}) + "\n")
    record = tmp_path / ".repaint-run.jsonl"
    record.write_text(json.dumps({"done": 1, "failed": 0, "settings": {}}) + "\n")
    r = invoke("merge-manifests", m, record)
    one_line_exit_2(r, str(record), "run record")


def test_merge_manifests_never_writes_over_a_fifo_or_an_input(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"input": "a.png", "status": "done"}) + "\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    one_line_exit_2(invoke("merge-manifests", m, "--out", fifo), str(fifo), "not a regular file")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    before = m.read_bytes()
    one_line_exit_2(invoke("merge-manifests", m, "--out", m), str(m), "input")
    assert m.read_bytes() == before
