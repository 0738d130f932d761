"""choices.py: every choice list has one home, and a wrong choice names the closest one."""
from __future__ import annotations
import os
import subprocess
import sys
import pytest
from typer.testing import CliRunner
from repaint_cli import choices
from repaint_cli.cli.app import app
from conftest import ROOT


runner = CliRunner()


def test_every_choice_list_has_one_home():
    from repaint_cli.core import sampler
    from repaint_cli.images import frames, image_files, masks
    from repaint_cli.runtime import device

    assert device.PRECISIONS is choices.PRECISIONS and frames.ANIMATIONS is choices.ANIMATIONS
    assert tuple(sampler.METHODS) == choices.METHODS  # the step functions, keyed in the choice list's order
    assert masks.CONVENTIONS is choices.CONVENTIONS and not hasattr(image_files, "MASK_CONVENTIONS")
    assert not hasattr(image_files, "FIT_MODES")


def test_check_choice_names_the_closest_choice():
    assert choices.check_choice("fp16", choices.PRECISIONS, "--precision") == "fp16"
    with pytest.raises(choices.ChoiceError) as e:
        choices.check_choice("fp61", choices.PRECISIONS, "--precision")
    assert str(e.value) == "--precision fp61: use one of auto, fp32, fp16, bf16 (did you mean 'fp16'?)"
    with pytest.raises(ValueError, match="did you mean 'hole'"):
        from repaint_cli.images.image_files import read_mask

        read_mask("never-read.png", "holes")


@pytest.mark.parametrize("option,value,guess", [
    ("--precision", "bf61", "bf16"), ("--fit", "croop", "crop"), ("--animate", "gfi", "gif"),
    ("--method", "repiant", "repaint"), ("--mask-convention", "kept", "keep"), ("--preset", "fsat", "fast"),
])
def test_cli_choice_errors_are_one_line_with_the_closest_choice(tmp_path, option, value, guess):
    r = runner.invoke(app, ["inpaint", str(tmp_path / "x.png"), "--out", str(tmp_path / "o"), option, value])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert lines[0].startswith(f"error: {option} {value}: use one of") and f"did you mean '{guess}'?" in lines[0]


def test_choices_imports_nothing_heavy():
    code = ("import sys, repaint_cli.choices; "
            "print(sorted(m for m in ('numpy', 'torch', 'cv2', 'PIL', 'pandas') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"
