"""`repaint inpaint` end to end on a small random model: pairing, exact known pixels, determinism, errors."""
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import FIXTURES, ROOT, needs_fixtures, write_png
from repaint_cli.cli.app import app
from repaint_cli.files import is_atomic_temp
from pathlib import Path
from conftest import make_images
from cli_helpers import photo

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    imgs, msks = tmp_path / "imgs", tmp_path / "masks"
    imgs.mkdir(), msks.mkdir()
    for i, (h, w) in enumerate([(16, 16), (16, 16), (23, 40), (40, 17)]):
        write_png(imgs / f"im{i}.png", rng.integers(0, 256, (h, w, 3)))
        keep = np.full((h, w), 255, np.uint8)
        keep[h // 4: h // 2 + 2, w // 4: w // 2 + 2] = 0
        write_png(msks / f"im{i}.png", keep)
    return tmp_path


def base_args(small_checkpoint, out):
    return ["--model", small_checkpoint, "--preset", "draft", "--out", out, "--quiet"]


def test_folder_of_images_and_masks_keeps_known_pixels_exact(folder, small_checkpoint):
    out = folder / "out"
    r = invoke("inpaint", folder / "imgs", "--mask", folder / "masks", *base_args(small_checkpoint, out))
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.glob("*.png")) == ["im0.png", "im1.png", "im2.png", "im3.png"]
    assert sorted(r.stdout.split()) == sorted(str(out / f"im{i}.png") for i in range(4))
    for i in range(4):
        src = np.asarray(Image.open(folder / "imgs" / f"im{i}.png"))
        keep = np.asarray(Image.open(folder / "masks" / f"im{i}.png")) > 127
        res = np.asarray(Image.open(out / f"im{i}.png"))
        assert res.shape == src.shape
        assert np.array_equal(res[keep], src[keep])
        assert not np.array_equal(res[~keep], src[~keep])


def test_hole_convention_and_no_paste(folder, small_checkpoint):
    holes = folder / "holes"
    holes.mkdir()
    for p in (folder / "masks").iterdir():
        write_png(holes / p.name, 255 - np.asarray(Image.open(p)))
    a, b, c = folder / "a", folder / "b", folder / "c"
    assert invoke("inpaint", folder / "imgs", "--mask", folder / "masks", *base_args(small_checkpoint, a)).exit_code == 0
    assert invoke("inpaint", folder / "imgs", "--mask", holes, "--mask-convention", "hole",
                  *base_args(small_checkpoint, b)).exit_code == 0
    # the same pixels (the files differ only in their recorded settings: mask folder and convention)
    assert all(np.array_equal(np.asarray(Image.open(a / n)), np.asarray(Image.open(b / n))) for n in ("im0.png", "im2.png"))
    assert invoke("inpaint", folder / "imgs", "--mask", folder / "masks", "--no-paste",
                  *base_args(small_checkpoint, c)).exit_code == 0
    src = np.asarray(Image.open(folder / "imgs" / "im0.png"))
    keep = np.asarray(Image.open(folder / "masks" / "im0.png")) > 127
    raw = np.asarray(Image.open(c / "im0.png"))
    assert not np.array_equal(raw[keep], src[keep])  # the raw sample is not pasted back


def test_json_lines_skip_and_overwrite(folder, small_checkpoint):
    out = folder / "out"
    r = invoke("inpaint", folder / "imgs", "--mask", folder / "masks", "--json", *base_args(small_checkpoint, out))
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [l["status"] for l in lines] == ["done"] * 4
    assert {"input", "mask", "output", "seed", "seconds"} <= set(lines[0])
    before = (out / "im0.png").stat().st_mtime_ns
    r = invoke("inpaint", folder / "imgs", "--mask", folder / "masks", "--json", *base_args(small_checkpoint, out))
    assert r.exit_code == 0 and [json.loads(l)["status"] for l in r.stdout.splitlines()] == ["skipped"] * 4
    assert (out / "im0.png").stat().st_mtime_ns == before
    r = invoke("inpaint", folder / "imgs/im0.png", "--mask", folder / "masks", "--overwrite", *base_args(small_checkpoint, out))
    assert r.exit_code == 0 and (out / "im0.png").stat().st_mtime_ns != before


def test_bad_inputs_fail_alone(folder, small_checkpoint):
    (folder / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    write_png(folder / "imgs" / "nomask.png", np.zeros((16, 16, 3)))
    out = folder / "out"
    r = invoke("inpaint", folder / "imgs", "--mask", folder / "masks", *base_args(small_checkpoint, out))
    assert r.exit_code == 1
    assert "broken.png" in r.stderr and "nomask" in r.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["im0.png", "im1.png", "im2.png", "im3.png"]
    assert not any(is_atomic_temp(p) for p in out.iterdir())  # no temp files left


def test_generated_masks_stdin_and_save_mask(folder, small_checkpoint):
    out = folder / "out"
    paths = "\n".join(str(folder / "imgs" / f"im{i}.png") for i in (1, 2)) + "\n"
    r = invoke("inpaint", "-", "--mask", "box", "--save-mask", *base_args(small_checkpoint, out), input=paths)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.glob("*.png")) == ["im1.png", "im1_mask.png", "im2.png", "im2_mask.png"]
    src = np.asarray(Image.open(folder / "imgs" / "im2.png"))
    keep = np.asarray(Image.open(out / "im2_mask.png")) > 127
    res = np.asarray(Image.open(out / "im2.png"))
    assert 0 < (~keep).sum() < keep.size and np.array_equal(res[keep], src[keep])
    again = folder / "again"
    invoke("inpaint", "-", "--mask", "box", "--save-mask", *base_args(small_checkpoint, again), input=paths)
    assert (again / "im2_mask.png").read_bytes() == (out / "im2_mask.png").read_bytes()  # seeded by stem


def test_run_wide_errors_are_one_line(folder, small_checkpoint, tmp_path):
    r = invoke("inpaint", tmp_path / "nothing", "--mask", "thick", *base_args(small_checkpoint, tmp_path / "o"))
    assert r.exit_code == 2 and "no such file or folder" in r.stderr  # run-wide since issue 12: before the model
    assert not (tmp_path / "o").exists()
    r = invoke("inpaint", folder / "imgs", "--model", "no-such-model", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "no-such-model" in r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = invoke("inpaint", folder / "imgs", "--mask", "thick", *base_args(small_checkpoint, blocker / "sub"))
    assert r.exit_code == 2 and "output folder" in r.stderr


def test_schedule_command():
    r = invoke("schedule", "--t-T", 250, "--jump-length", 10, "--jump-n-sample", 10)
    assert r.exit_code == 0 and "2410 UNet calls" in r.stdout and "2160 undo steps" in r.stdout
    r = invoke("schedule", "--t-T", 50, "--jump-length", 5, "--jump-n-sample", 2, "--json")
    times = json.loads(r.stdout)["times"]
    if (FIXTURES / "schedules.json").is_file():
        ref = next(c for c in json.loads((FIXTURES / "schedules.json").read_text()) if c["params"]["t_T"] == 50)
        assert times == ref["times"]
    assert times[0] == 49 and times[-1] == -1


@needs_fixtures
def test_inpaint_with_repaint_conf_and_reference_tiny_model(folder, tmp_path):
    import yaml
    conf = yaml.safe_load((FIXTURES / "guided_diffusion" / "tiny.yaml").read_text())
    conf.update(model_path=str(FIXTURES / "guided_diffusion" / "tiny.pt"), timestep_respacing="20",
                schedule_jump_params={"t_T": 20, "n_sample": 1, "jump_length": 5, "jump_n_sample": 2})
    path = tmp_path / "conf.yml"
    path.write_text(yaml.safe_dump(conf))
    r = invoke("inpaint", folder / "imgs" / "im2.png", "--mask", "genhalf", "--config", path, "--out", tmp_path / "o", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["status"] == "done"
    assert "t_T=20" in r.stderr


def test_bad_input_matrix_one_line_each(folder, small_checkpoint, tmp_path):
    """Issue 7's cases through the CLI: one line naming the file and the fix, the rest still done."""
    imgs, masks_dir = folder / "imgs", folder / "masks"
    (imgs / "empty.png").write_bytes(b"")
    (masks_dir / "empty.png").write_bytes((masks_dir / "im0.png").read_bytes())
    (imgs / "adir.png").mkdir()
    (imgs / "notes.txt").write_text("not an image")
    write_png(imgs / "tiny.png", np.zeros((1, 1, 3)))
    write_png(masks_dir / "tiny.png", np.zeros((1, 1)))  # keeps no pixel
    other = folder / "other"
    other.mkdir()
    write_png(other / "im0.png", np.zeros((16, 16, 3)))  # same stem as imgs/im0.png
    big_mask = np.full((32, 32), 255, np.uint8)
    big_mask[8:20, 8:20] = 0
    write_png(masks_dir / "im1.png", big_mask)  # another size than its image: resized with a warning
    soft = np.asarray(Image.open(masks_dir / "im2.png")).copy()
    soft[::2] = 128  # non-binary
    write_png(masks_dir / "im2.png", soft)
    out = folder / "out"
    r = invoke("inpaint", imgs, other, "--mask", masks_dir, *base_args(small_checkpoint, out))
    assert r.exit_code == 1
    err = r.stderr
    assert "empty.png: empty file (0 bytes)" in err
    assert "adir.png: a folder, not an image" in err
    assert "notes.txt: not an image file" in err
    assert "tiny.png" in err and "keeps no pixel" in err
    assert err.count("same name stem") == 2
    assert "im1.png" in err and "32x32" in err  # resize warning names both sizes
    assert "non-binary" in err or "thresholded" in err
    assert "Traceback" not in r.output
    assert sorted(p.name for p in out.glob("*.png")) == ["im1.png", "im2.png", "im3.png"]
    for line in err.splitlines():
        if line.startswith("error:"):
            assert len(line) < 400


@pytest.mark.parametrize("option,value,message", [
    ("--precision", "fp64", "--precision fp64"),
    ("--device", "tpu9", "--device tpu9"),
    ("--context", "-1", "--context"),
    ("--threads", "0", "--threads"),
    ("--batch-size", "0", "--batch-size"),
    ("--shard", "5/2", "--shard 5/2"),
    ("--preset", "turbo", "turbo"),
    ("--fit", "stretch", "--fit stretch"),
    ("--animate", "webm", "webm"),
    ("--config", "/nonexistent.yml", "/nonexistent.yml"),
])
def test_bad_options_are_one_line_usage_errors(folder, small_checkpoint, option, value, message):
    r = invoke("inpaint", folder / "imgs", "--mask", "thick", *base_args(small_checkpoint, folder / "o"), option, value)
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "Traceback" not in r.output


def test_empty_folder_and_generated_mask_on_a_tiny_image(folder, small_checkpoint, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = invoke("inpaint", empty, "--mask", "thick", *base_args(small_checkpoint, tmp_path / "o"))
    assert r.exit_code == 2 and "no images in this folder" in r.stderr
    one = tmp_path / "one"
    one.mkdir()
    write_png(one / "dot.png", np.zeros((1, 1, 3)))
    r = invoke("inpaint", one, "--mask", "genhalf", *base_args(small_checkpoint, tmp_path / "o"))
    assert r.exit_code == 1 and "dot.png" in r.stderr and "mask kind" in r.stderr


def test_mask_preset_file_as_mask(folder, small_checkpoint, tmp_path):
    preset = tmp_path / "bigbox.yaml"
    preset.write_text((ROOT / "masks" / "box.yaml").read_text())
    out = tmp_path / "o"
    r = invoke("inpaint", folder / "imgs" / "im2.png", "--mask", preset, "--save-mask", *base_args(small_checkpoint, out))
    assert r.exit_code == 0, r.output
    keep = np.asarray(Image.open(out / "im2_mask.png")) > 127
    assert keep.shape == (23, 40) and 0 < (~keep).sum() < keep.size


def test_cli_methods(tmp_path, small_checkpoint):
    d = tmp_path / "imgs"
    d.mkdir()
    write_png(d / "a.png", np.random.default_rng(0).integers(0, 256, (16, 16, 3)))
    runner = CliRunner()
    results = {}
    for method, extra in (("repaint", []), ("ddnm", []), ("ddim", ["--eta", "0.5"])):
        out = tmp_path / method
        r = runner.invoke(app, ["inpaint", str(d), "--model", str(small_checkpoint), "--preset", "draft", "--mask", "box",
                                "--seed", "1", "--out", str(out), "--method", method, "--quiet", *extra])
        assert r.exit_code == 0, r.output
        results[method] = np.asarray(Image.open(out / "a.png"))
        assert json.loads(Image.open(out / "a.png").info["repaint"])["method"] == method
    assert not np.array_equal(results["repaint"], results["ddnm"])
    assert not np.array_equal(results["repaint"], results["ddim"])
    for bad in (["--method", "ddpm"], ["--eta", "0.5"], ["--method", "ddim", "--eta", "2"]):
        r = runner.invoke(app, ["inpaint", str(d), "--model", str(small_checkpoint), "--out", str(tmp_path / "x"), *bad])
        assert r.exit_code == 2 and len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1, (bad, r.stderr)
    # a rerun with another method says so instead of skipping silently
    r = runner.invoke(app, ["inpaint", str(d), "--model", str(small_checkpoint), "--preset", "draft", "--mask", "box",
                            "--seed", "1", "--out", str(tmp_path / "ddnm"), "--method", "repaint"])
    assert r.exit_code == 0 and "method ddnm -> repaint" in r.stderr, r.stderr


FAST = ["--t-T", 6, "--jump-length", 2, "--jump-n-sample", 2, "--quiet"]


def test_stdout_lists_skipped_outputs_and_json_lists_every_file(tmp_path, small_checkpoint):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(2):
        photo(imgs / f"im{i}.png", seed=i)
    out = tmp_path / "out"
    base = ["inpaint", imgs, "--mask", "box", "--model", small_checkpoint, "--out", out, *FAST]
    r = invoke(*base, "--json", "--save-mask", "--concat")
    assert r.exit_code == 0, r.output
    for line in r.stdout.splitlines():
        rec = json.loads(line)
        stem = Path(rec["input"]).stem
        assert sorted(Path(f).name for f in rec["files"]) == sorted([f"{stem}.png", f"{stem}_mask.png",
                                                                     f"{stem}_concat.png"])
        assert all(Path(f).is_file() for f in rec["files"])
    photo(imgs / "im2.png", seed=2)
    r = invoke(*base)
    assert r.exit_code == 0
    assert sorted(r.stdout.split()) == sorted(str(out / f"im{i}.png") for i in range(3))  # 2 skipped + 1 done


FAST_PLAN = ["--t-T", 4, "--jump-length", 2, "--jump-n-sample", 1, "--quiet"]


def inpaint_args(ckpt, out, *more):
    return ["--mask", "box", "--model", ckpt, "--out", out, *FAST_PLAN, *more]


def test_json_lines_come_in_input_order(tmp_path, small_checkpoint):
    """N9: skipped images' lines came first, then the sampled ones."""
    imgs = make_images(tmp_path / "imgs", 4)
    out = tmp_path / "out"
    assert invoke("inpaint", imgs / "img0001.png", imgs / "img0003.png", *inpaint_args(small_checkpoint, out)).exit_code == 0
    r = invoke("inpaint", imgs, *inpaint_args(small_checkpoint, out, "--json", "--batch-size", 1))
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(l["input"]).name for l in lines] == [f"img000{i}.png" for i in range(4)]
    assert [l["status"] for l in lines] == ["done", "skipped", "done", "skipped"]
