"""cli/output.py: one error exit, one reporter module, and the progress lines of both commands."""
from impute_cli import TINY, invoke, linear_table


def test_progress_lines_without_a_terminal(tmp_path):
    src = tmp_path / "t.csv"
    linear_table(src)
    r = invoke(src, "--out", tmp_path / "o.csv", *TINY)
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    assert any(line.startswith("training") and "50%" in line and "overall" in line for line in lines), r.stderr
    assert any(line.startswith("imputing") and "100%" in line for line in lines), r.stderr


def test_one_error_exit_and_one_reporter_module():
    from repaint_cli.cli import app as app_mod
    from repaint_cli.cli import impute, inpaint, masks, models, output, sheet

    for mod in (app_mod, impute, inpaint, masks, models, sheet):
        assert getattr(mod, "die", output.die) is output.die, mod
        assert not hasattr(mod, "_fail") and not hasattr(mod, "_RichProgress"), mod
    assert inpaint.rich_reporter is output.rich_reporter and impute.TableProgress is output.TableProgress
    assert app_mod.err is output.err is masks.err is impute.err is inpaint.err is models.err


def test_table_progress_log_lines(capsys):
    from rich.console import Console

    from repaint_cli.cli.output import TableProgress

    progress = TableProgress(Console(stderr=True, highlight=False), quiet=True)
    progress.log("a [b] note")  # info: hidden by --quiet
    progress.log("a [b] warning", "warning")
    progress.log("a [b] error", "error")
    assert capsys.readouterr().err.splitlines() == ["warning: a [b] warning", "error: a [b] error"]


def test_inpaints_progress_count_is_labelled_as_schedule_steps():
    """N9: '140/140' stood unlabelled beside '95 UNet calls per image'."""
    from rich.progress import TextColumn

    from repaint_cli.cli.output import STEPS_LABEL, rich_reporter

    reporter = rich_reporter(False, quiet=True)
    texts = [c.text_format for c in reporter.progress.columns if isinstance(c, TextColumn)]
    assert STEPS_LABEL == "schedule steps" and STEPS_LABEL in texts
