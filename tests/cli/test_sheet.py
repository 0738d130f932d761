"""cli/sheet.py: ``repaint sheet``, a contact sheet of a folder's results."""
import numpy as np
from typer.testing import CliRunner
from conftest import write_png
from repaint_cli.cli.app import app
import typer
from repaint_cli.cli.sheet import register
from cli_helpers import invoke, one_line_exit_2, photo


runner = CliRunner()


def test_sheet_command_never_writes_over_a_result(tmp_path):
    out = tmp_path / "out"
    photo(out / "a.png")
    photo(out / "b.png", seed=1)
    before = (out / "a.png").read_bytes()
    one_line_exit_2(invoke("sheet", out, "--out", out / "a.png"), str(out / "a.png"))
    assert (out / "a.png").read_bytes() == before
    assert invoke("sheet", out, "--out", out / "contact.png").exit_code == 0
    assert invoke("sheet", out, "--out", out / "contact.png").exit_code == 0  # its own sheet: replaced on a rerun


def test_sheet_command(tmp_path):
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop():  # a second command so Typer keeps the sub-command names
        pass

    out = tmp_path / "out"
    out.mkdir()
    write_png(out / "a.png", np.zeros((16, 16, 3)))
    r = CliRunner().invoke(app, ["sheet", str(out), "--out", str(tmp_path / "x.png"), "--cols", "2", "--cell", "64"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(tmp_path / "x.png") and (tmp_path / "x.png").is_file()
    r = CliRunner().invoke(app, ["sheet", str(tmp_path / "empty")])
    assert r.exit_code == 2
