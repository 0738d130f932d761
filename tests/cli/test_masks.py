"""cli/masks.py: ``repaint masks generate / list / preview``."""
from __future__ import annotations
from pathlib import Path
import cv2
import numpy as np
from typer.testing import CliRunner
from repaint_cli.images import masks as M
from repaint_cli.cli.masks import masks_app


def test_cli_generate_writes_files_and_prints_paths(tmp_path):
    out = tmp_path / "m"
    r = CliRunner().invoke(
        masks_app, ["generate", "--kind", "thick", "--count", "4", "--size", "64", "--seed", "1", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    expected = [str(out / f"thick_{i:05d}.png") for i in range(4)]
    assert lines == expected
    assert sorted(p.name for p in out.iterdir()) == [Path(p).name for p in expected]  # no temp files left
    for i, line in enumerate(lines):
        img = cv2.imread(line, cv2.IMREAD_UNCHANGED)
        assert img.shape == (64, 64) and img.dtype == np.uint8
        np.testing.assert_array_equal(img, M.generate_mask("thick", 64, 64, 1, i))
    assert "Wrote 4 thick" in r.stderr


def test_cli_generate_hole_convention_and_non_square(tmp_path):
    out = tmp_path / "m"
    r = CliRunner().invoke(
        masks_app,
        ["generate", "--kind", "genhalf", "--count", "1", "--height", "40", "--width", "60",
         "--convention", "hole", "--start", "7", "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    img = cv2.imread(str(out / "genhalf_00007.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (40, 60)
    assert img[:, :30].max() == 0 and img[:, 30:].min() == 255  # white = hole on the right


def test_cli_generate_with_preset(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("kind: box\nmin_frac: 0.5\nmax_frac: 0.5\n")
    out = tmp_path / "m"
    r = CliRunner().invoke(masks_app, ["generate", "--preset", str(preset), "--count", "2", "--size", "64", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [str(out / "box_00000.png"), str(out / "box_00001.png")]
    img = cv2.imread(str(out / "box_00000.png"), cv2.IMREAD_UNCHANGED)
    assert (img == 0).sum() == 32 * 32


def test_cli_unknown_kind_exits_2(tmp_path):
    runner = CliRunner()
    for args in (
        ["generate", "--kind", "nope", "--count", "1", "--out", str(tmp_path)],
        ["preview", "--kind", "nope", "--out", str(tmp_path / "x.png")],
    ):
        r = runner.invoke(masks_app, args)
        assert r.exit_code == 2
        err_lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(err_lines) == 1
        assert "nope" in err_lines[0] and "thick" in err_lines[0] and "ev2li" in err_lines[0]
        assert r.stdout == ""


def test_cli_list():
    r = CliRunner().invoke(masks_app, ["list"])
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == list(M.MASK_KINDS)


def test_cli_preview_single_kind(tmp_path):
    out = tmp_path / "sheet.png"
    r = CliRunner().invoke(masks_app, ["preview", "--kind", "thin", "--count", "4", "--size", "64", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [str(out)]
    img = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert img is not None
    assert img.shape[1] == 2 * 64 + 3 * 2  # 2x2 grid with 2-px separators


def test_cli_preview_all_kinds(tmp_path):
    out = tmp_path / "all.png"
    r = CliRunner().invoke(masks_app, ["preview", "--kind", "all", "--count", "3", "--size", "48", "--out", str(out)])
    assert r.exit_code == 0, r.output
    img = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert img is not None
    assert img.shape[0] == len(M.MASK_KINDS) * (48 + 2) + 2  # one row per kind


def test_cli_preview_default_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(masks_app, ["preview", "--kind", "ex64", "--count", "2", "--size", "32"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "masks_preview_ex64.png").is_file()


def _one_error_line(r, *words):
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.exit_code, r.stderr)
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in r.output and r.stdout == ""


def test_cli_generate_refuses_to_overwrite_masks_without_overwrite(tmp_path):
    out, runner = tmp_path / "m", CliRunner()
    assert runner.invoke(masks_app, ["generate", "-k", "box", "-n", "3", "-s", "32", "-o", str(out)]).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = runner.invoke(masks_app, ["generate", "-k", "box", "-n", "2", "-s", "64", "-o", str(out)])
    _one_error_line(r, str(out / "box_00000.png"), "2 mask(s)", "--overwrite", "--start 3")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing replaced, nothing added
    r = runner.invoke(masks_app, ["generate", "-k", "box", "-n", "2", "-s", "64", "-o", str(out), "--start", "3"])
    assert r.exit_code == 0, r.output  # extending the run is fine
    r = runner.invoke(masks_app, ["generate", "-k", "box", "-n", "2", "-s", "64", "-o", str(out), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert cv2.imread(str(out / "box_00000.png"), cv2.IMREAD_UNCHANGED).shape == (64, 64)


def test_cli_masks_usage_errors_are_one_line_exit_2(tmp_path):
    runner = CliRunner()
    r = runner.invoke(masks_app, ["generate", "--kind", "thik", "--out", str(tmp_path / "m")])
    _one_error_line(r, "thik", "did you mean 'thick'?")
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    r = runner.invoke(masks_app, ["generate", "--count", "2", "--out", str(a_file)])  # no --kind: no note either
    _one_error_line(r, str(a_file), "a file", "--out")
    r = runner.invoke(masks_app, ["generate", "--convention", "white", "--out", str(tmp_path / "m")])
    _one_error_line(r, "white", "keep")
    r = runner.invoke(masks_app, ["generate", "--count", "0", "--out", str(tmp_path / "m")])
    _one_error_line(r, "--count 0")
    r = runner.invoke(masks_app, ["preview", "--kind", "thinn", "--out", str(tmp_path / "p.png")])
    _one_error_line(r, "did you mean 'thin'?")
    assert not (tmp_path / "m").exists()
