"""The CLI answers at once and teaches: no PyTorch/OpenCV for help, listings and usage
errors; -h, --version; help panels readable at 80 columns; consistent option words."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import ROOT, write_png
from repaint_cli.images import frames as fr
from repaint_cli.cli.app import app
import torch

runner = CliRunner()
HEAVY = ("torch", "cv2")

# Runs the CLI in a fresh interpreter and reports which heavy modules it imported.
DRIVER = """
import sys
from repaint_cli.cli.app import main
sys.argv = ["repaint"] + sys.argv[1:]
code = 0
try:
    main()
except SystemExit as e:
    code = e.code
print("\\nHEAVY=[" + ",".join(m for m in {heavy!r} if m in sys.modules) + "] CODE=" + str(code))
"""


def run_fresh(*args, cwd=None):
    r = subprocess.run([sys.executable, "-c", DRIVER.format(heavy=HEAVY), *args], capture_output=True, text=True,
                       cwd=cwd or ROOT, env={**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT)}, timeout=120)
    found = re.search(r"HEAVY=\[([^\]]*)\] CODE=(\S+)", r.stdout)
    assert found, (r.stdout[-500:], r.stderr[-500:])
    return [m for m in found.group(1).split(",") if m], int(found.group(2)), r


@pytest.mark.parametrize("args", [
    ["--help"], ["-h"], ["inpaint", "--help"], ["inpaint", "-h"], ["masks", "list"], ["masks", "generate", "-h"],
    ["schedule", "--t-T", "250", "--jump-length", "10", "--jump-n-sample", "10"], ["schedule", "--list"],
    ["models", "list"],
    ["inpaint"],  # missing argument
    ["inpaint", "x.png", "--precision", "fp8"], ["inpaint", "x.png", "--fit", "stretch"],
    ["inpaint", "x.png", "--batch-size", "0"], ["inpaint", "x.png", "--animate", "webm"],
    ["inpaint", "x.png", "--preset", "fastest"], ["inpaint", "x.png", "--no-such-option"],
    ["masks", "generate", "--count", "0", "--out", "never-made"],
])
def test_quick_commands_import_neither_torch_nor_opencv(args, tmp_path):
    heavy, code, r = run_fresh(*args, cwd=tmp_path)
    assert heavy == [], f"{args} imported {heavy}: {r.stderr[-500:]}"
    assert code in (0, 2), r.stderr
    assert not (tmp_path / "never-made").exists()


def test_schedule_lists_every_preset_with_its_cost():
    from repaint_cli.core.schedule import PRESETS

    r = runner.invoke(app, ["schedule", "--list"])
    assert r.exit_code == 0 and [ln.split("\t")[0] for ln in r.stdout.splitlines()] == list(PRESETS)
    assert "paper\tt_T 250, jump_length 10, jump_n_sample 10: 2410 UNet calls, 2160 undo steps" in r.stdout


def test_schedule_prints_cost_without_torch(tmp_path):
    heavy, code, r = run_fresh("schedule", "--t-T", "250", "--jump-length", "10", "--jump-n-sample", "10", cwd=tmp_path)
    assert heavy == [] and code == 0 and "2410 UNet calls, 2160 undo steps" in r.stdout


def test_usage_errors_are_one_line_before_any_work(tmp_path):
    for args, words in ((["--precision", "fp8"], "--precision fp8"), (["--fit", "stretch"], "--fit stretch"),
                        (["--animate", "webm"], "--animate webm"), (["--frames", "-2"], "--frames -2"),
                        (["--preset", "fastest"], "--preset fastest"), (["--batch-size", "many"], "--batch-size many")):
        r = runner.invoke(app, ["inpaint", str(tmp_path / "x.png"), "--out", str(tmp_path / "out"), *args])
        assert r.exit_code == 2, (args, r.output)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and words in lines[0], (args, r.stderr)
        assert not (tmp_path / "out").exists()


def test_version_names_repaint_and_torch():
    r = runner.invoke(app, ["--version"])
    import torch

    assert r.exit_code == 0
    assert r.stdout.startswith("repaint-cli 0.1.0 (torch " + torch.__version__)
    assert ("CUDA" in r.stdout)


def test_inpaint_help_at_80_columns_has_panels_flags_and_examples():
    r = runner.invoke(app, ["inpaint", "-h"], env={"COLUMNS": "80"}, terminal_width=80)
    assert r.exit_code == 0
    text = r.stdout
    assert all(len(line) <= 80 for line in text.splitlines()), max(text.splitlines(), key=len)
    for panel in ("Inputs", "Masks", "Model", "Sampling", "Outputs", "Speed"):
        assert f"─ {panel} ─" in text, panel
    assert "<bool>" not in text  # flags take no value: none is shown
    for default in ("[default: thick]", "[default: auto]", "[default: the model's]", "[default: the free cores]"):
        assert default in " ".join(text.replace("│", " ").split()), default
    assert text.count("repaint inpaint ") >= 3 and "Examples" in text
    assert "Quote globs" in " ".join(text.replace("│", " ").split())  # words may wrap


def test_json_is_a_flag_not_a_value(tmp_path):
    """'--json true' would take 'true' as an input; help must not suggest a value."""
    r = runner.invoke(app, ["inpaint", "-h"], terminal_width=200)
    line = next(ln for ln in r.stdout.splitlines() if "--json" in ln)
    assert "bool" not in line and "BOOLEAN" not in line


def test_masks_generate_words(tmp_path):
    r = runner.invoke(app, ["masks", "generate", "--count", "2", "--width", "40", "--height", "24",
                            "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert "no --kind given: drawing thick masks" in r.stderr
    assert "40x24" in r.stderr and "24x40" not in r.stderr  # WxH, as everywhere
    assert Image.open(tmp_path / "m" / "thick_00000.png").size == (40, 24)
    r = runner.invoke(app, ["masks", "generate", "--count", "0", "--out", str(tmp_path / "z")])
    assert r.exit_code == 2 and not (tmp_path / "z").exists()


def test_cli_and_engine_agree_on_option_values():
    from repaint_cli import choices
    from repaint_cli.runtime.device import PRECISIONS

    from repaint_cli.constraints import IMPUTE, INPAINT
    from repaint_cli.core.sampler import METHODS
    from repaint_cli.core.schedule import PRESETS

    assert INPAINT["precision"].choices == PRECISIONS == choices.PRECISIONS and fr.ANIMATIONS == choices.ANIMATIONS
    assert INPAINT["method"].choices == tuple(METHODS) == choices.METHODS
    assert INPAINT["preset"].choices == IMPUTE["preset"].choices == tuple(PRESETS) == choices.PRESET_NAMES


def test_mp4_codec_is_probed_once_and_named(tmp_path):
    codec = fr.mp4_codec()
    assert codec is None or codec[0] in dict(fr.MP4_CODECS)
    frames = [np.full((16, 24, 3), v, np.uint8) for v in (0, 120, 240)]
    path, warnings = fr.write_animation(tmp_path / "a", frames, "mp4")
    if codec is None:
        assert path.suffix == ".gif" and warnings
    else:  # the sample description box of the MP4 names the codec's fourcc
        assert path.suffix == ".mp4" and codec[0].encode() in path.read_bytes() and not warnings


def test_animate_without_frames_writes_no_frame_pngs(tmp_path, small_checkpoint):
    d = tmp_path / "imgs"
    d.mkdir()
    write_png(d / "a.png", np.random.default_rng(0).integers(0, 256, (16, 16, 3)))
    out = tmp_path / "out"
    r = runner.invoke(app, ["inpaint", str(d), "--model", str(small_checkpoint), "--preset", "draft", "--mask", "box",
                            "--out", str(out), "--animate", "gif", "--quiet"])
    assert r.exit_code == 0, r.output
    assert (out / "a.gif").is_file() and Image.open(out / "a.gif").n_frames == fr.DEFAULT_ANIMATION_FRAMES
    assert not (out / "frames").exists()
    r = runner.invoke(app, ["inpaint", str(d), "--model", str(small_checkpoint), "--preset", "draft", "--mask", "box",
                            "--out", str(out), "--animate", "gif", "--frames", "4", "--overwrite", "--quiet"])
    assert r.exit_code == 0, r.output
    assert len(list((out / "frames" / "a").glob("*_xt.png"))) == 4


# ----------------------------------------------------------------------------- issue 25

@pytest.mark.parametrize("inputs,words", [(["nope.png"], "nope.png: no such file or folder"),
                                          (["a.png", "gone/*.png"], "gone/*.png: the pattern matches no file")])
def test_a_missing_input_answers_before_torch_with_one_line(inputs, words, tmp_path):
    """D3: trivial path errors cost no PyTorch import (seconds under load) and start with 'error:'."""
    write_png(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    heavy, code, r = run_fresh("inpaint", *inputs, "--out", "o", cwd=tmp_path)
    assert code == 2 and "torch" not in heavy, (heavy, r.stderr)
    assert r.stderr.splitlines()[0].startswith("error: ") and words in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1 and not (tmp_path / "o").exists()


def test_run_wide_errors_found_by_the_pipeline_start_without_a_blank_line(tmp_path):
    (tmp_path / "imgs").mkdir()
    write_png(tmp_path / "imgs" / "a.png", np.zeros((8, 8, 3), np.uint8))
    r = runner.invoke(app, ["inpaint", str(tmp_path / "imgs"), "--mask", str(tmp_path / "none" / "*.png"),
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and r.stderr.startswith("error: "), repr(r.stderr[:200])


HELP_COMMANDS = [[], ["inpaint"], ["impute"], ["schedule"], ["train"], ["sheet"], ["merge-manifests"], ["masks"],
                 ["masks", "generate"], ["masks", "preview"], ["masks", "list"], ["models"], ["models", "list"]]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_reads_like_an_ordinary_cli(command):
    """D6: metavars such as PATH, DIR, N (not <list[str]>, {outdir}, <int range> [x>=1]); defaults without
    doubled parentheses."""
    r = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    text = r.stdout
    assert not re.search(r"<(int|float|str|path|Path|list\[\w+\]|int range|float range)>", text), text
    assert "[x>=" not in text and "[default: (" not in text and "((" not in text and "))" not in text, text
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "...." not in usage, usage


def test_top_level_help_names_images_and_tables():
    r = runner.invoke(app, ["--help"], terminal_width=200)
    first = r.stdout.split("Options")[0]
    assert "images" in first and "tables" in first, first
    assert "sheet [OPTIONS] OUTDIR" in runner.invoke(app, ["sheet", "-h"], terminal_width=200).stdout


CPU_TORCH = "pip install torch --index-url https://download.pytorch.org/whl/cpu"


@pytest.mark.parametrize("cuda_build,gpu,hint", [("12.4", False, True), (None, False, False), ("12.4", True, False)])
def test_version_suggests_the_cpu_torch_on_a_cuda_build_without_a_gpu(monkeypatch, cuda_build, gpu, hint):
    """D7: a plain pip install pulls PyTorch's CUDA build (GBs) onto machines without a GPU; --version says so."""
    import torch

    monkeypatch.setattr(torch.version, "cuda", cuda_build)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Some GPU")
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.startswith("repaint-cli ") and len(r.stdout.splitlines()) == 1
    assert (CPU_TORCH in r.stderr) == hint, r.stderr


def test_readme_install_section_gives_the_cpu_torch_line():
    readme = (ROOT / "README.md").read_text()
    install = readme.split("## Using it")[0]
    assert CPU_TORCH in install and "CUDA" in install


def test_version_names_rocm(monkeypatch, capsys):
    from repaint_cli.cli.app import version_text

    monkeypatch.setattr(torch.version, "hip", "6.2.41133", raising=False)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "AMD Instinct MI300X")
    assert "ROCm 6.2.41133, 1 GPU (AMD Instinct MI300X)" in version_text()
