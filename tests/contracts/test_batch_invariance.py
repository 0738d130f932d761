"""Batch invariance end to end: the same output bytes at any batch size and shard."""
import numpy as np
from PIL import Image
from typer.testing import CliRunner
from conftest import make_images
from repaint_cli.cli.app import app
import pytest
from conftest import write_png


def test_cli_outputs_are_the_same_bytes_at_any_batch_size_and_shard(small_checkpoint, tmp_path):
    """`repaint inpaint` end to end: batch sizes 1, 3 and 8 and two shards write identical files."""
    imgs = make_images(tmp_path / "imgs", 8, size=16, seed=5)
    runner = CliRunner()

    def run(out, *extra):
        r = runner.invoke(app, [str(a) for a in ("inpaint", imgs, "--mask", "thick", "--seed", 7, "--model",
                                                 small_checkpoint, "--preset", "draft", "--out", out, "--quiet",
                                                 *extra)])
        assert r.exit_code == 0, r.output
        return {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}

    ref = run(tmp_path / "b1", "--batch-size", 1)
    assert len(ref) == 8
    for bs in (3, 8):
        assert run(tmp_path / f"b{bs}", "--batch-size", bs) == ref
    for i in range(2):
        run(tmp_path / "shards", "--batch-size", 4, "--shard", f"{i}/2")
    assert {p.name: p.read_bytes() for p in (tmp_path / "shards").glob("*.png")} == ref
    # and the outputs are real inpaintings, not copies of the inputs
    assert any(not np.array_equal(np.asarray(Image.open(imgs / n)), np.asarray(Image.open(tmp_path / "b1" / n)))
               for n in ref)


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


def test_same_bytes_at_batch_size_1_and_4(folder, small_checkpoint):
    outs = []
    for bs in (1, 4):
        out = folder / f"out{bs}"
        r = invoke("inpaint", folder / "imgs", "--mask", folder / "masks", "--batch-size", bs, "--seed", 3,
                   *base_args(small_checkpoint, out))
        assert r.exit_code == 0, r.output
        outs.append({p.name: p.read_bytes() for p in out.glob("*.png")})
    assert outs[0] == outs[1]
