"""`make bench-gpu` (benchmarks/gpu_check.py) dry-run on the CPU, and the GPU table's honesty (issue 37.6, 37.7)."""
import json
import sys
from pathlib import Path

import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402
import speed  # noqa: E402


def test_the_gpu_check_dry_runs_on_the_cpu_through_every_section(tmp_path, capsys):
    """The script make bench-gpu runs, on the same code path: captures stood in for by eager replays."""
    real_compile = torch.compile
    out = tmp_path / "check.json"
    status = gpu_check.main(["--dry-run", "--guided", "--auto-batch", "--batch-sizes", "2", "--json-out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert torch.compile is real_compile  # the dry run's eager-backend compile does not leak
    result = json.loads(out.read_text())
    r = result["results"]
    assert r["post_capture_check_max_diff"] == 0.0 and r["graph_vs_eager_final_x_max_diff"] == 0.0
    assert r["guided_graph_vs_eager_final_x_max_diff"] == 0.0 and r["guided_fp16"]["graphs"]["graphs"]
    assert r["auto_batch"]["captured"] and r["auto_batch"]["timed_choice"] in (1, 2)
    row = result["table"][0]
    assert row["batch"] == 2 and row["bound_kind"] == "eager"  # labelled: no graph-replayed bound on a CPU
    assert all(row[v]["s_per_image_call"] > 0 for v in ("eager fp32", "eager fp16", "graphs fp16"))
    assert row["graphs fp16"]["graphs"] and not row["eager fp16"]["graphs"]
    assert "| batch | UNet alone fp16 (bound)" in printed and "all checks passed" in printed
    assert result["failed"] == []


def test_the_gpu_table_defaults_to_batches_1_4_16_and_no_weight_is_zero():
    """Issue 37.6: the table's default batch sizes were 1 and 4, and its zero-initialised layers made the UNet
    output exactly 0."""
    assert speed.parser().parse_args([]).batch_sizes == [1, 4, 16]
    assert gpu_check.parser().parse_args([]).batch_sizes == [1, 4, 16]
    model = speed.bench_unet("tiny")
    assert all(p.any() for p in model.parameters() if p.dim() > 1)  # every weight matrix and kernel
    with torch.no_grad():
        out = model(torch.randn(2, 3, 16, 16), torch.tensor([10, 900]))
    assert out.abs().min() > 0 or out.abs().mean() > 1e-3


def test_the_bound_is_the_unet_alone_and_says_how_it_ran():
    model = speed.bench_unet("tiny")
    seconds, kind = speed.time_unet_graph(model, torch.randn(1, 3, 16, 16), torch.tensor([5]), torch.device("cpu"), 2)
    assert seconds > 0 and kind == "eager"  # graph-replayed on CUDA (the engine's own loop); eager elsewhere
