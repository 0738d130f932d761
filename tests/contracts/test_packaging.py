"""A wheel built from the sdist carries the embedded model, the cards and the mask presets,
and works offline from any folder; user checkpoints are searched in a documented order."""
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, write_png


def run(cmd, cwd, env=None, timeout=600):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r


def build(kind: str, source: Path, dest: Path) -> Path:
    """sdist or wheel with setuptools' PEP 517 backend, in-process of a child (no network, no isolation)."""
    code = f"from setuptools import build_meta as b; print(b.build_{kind}({str(dest)!r}))"
    r = run([sys.executable, "-c", code], cwd=source)
    return dest / r.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    sdist = build("sdist", ROOT, tmp / "sdist")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        # the "data" filter where this Python has it (3.11.4+), plain extraction of our own sdist otherwise
        tar.extractall(tmp / "src", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    top = sdist.name[:-len(".tar.gz")]
    for needed in ("weights/emoji32.safetensors", "weights/emoji32.yaml", "weights/celeba256.yaml", "masks/thick.yaml",
                   "repaint_cli/data/imagenet_classes.txt", "pyproject.toml"):
        assert f"{top}/{needed}" in names, needed
    assert not any("train-state" in n for n in names)  # 22 MB of training state stays in the repository
    # the wheel is built from the sdist, as pip does: both must be complete
    return build("wheel", tmp / "src" / top, tmp / "wheel")


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ["repaint_cli/_weights/emoji32.safetensors", "repaint_cli/data/imagenet_classes.txt"] + \
            [f"repaint_cli/_weights/{c.name}" for c in (ROOT / "weights").glob("*.yaml")] + \
            [f"repaint_cli/_masks/{m.name}" for m in (ROOT / "masks").glob("*.yaml")]:
        assert needed in names, needed
    assert not any("train-state" in n or n.endswith(".pt") for n in names)
    assert sum(zipfile.ZipFile(wheel).getinfo(n).file_size for n in names) < 8 << 20


def test_wheel_in_a_fresh_venv_inpaints_from_any_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    py = venv / "bin" / "python"
    # without PYTHONPATH: a checkout on it, with the egg-info the sdist build leaves there, reads to pip as
    # repaint-cli already installed, and pip would skip the wheel
    bare = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", wheel], cwd=tmp_path,
        env=bare)
    # The dependencies (torch, ...) come from this interpreter's site-packages, appended after the venv's
    # own: repaint_cli itself is imported from the wheel (checked below), never from the repository.
    site = run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).stdout.strip()
    deps = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]
    deps += [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    Path(site, "_repaint_test_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    home = tmp_path / "home"  # no ~/.cache/repaint/weights, no ./weights, no $REPAINT_WEIGHTS
    env = {k: v for k, v in os.environ.items() if k not in ("REPAINT_WEIGHTS", "PYTHONPATH")}
    env.update(HOME=str(home), COLUMNS="120")
    where = run([py, "-c", "import repaint_cli; print(repaint_cli.__file__)"], cwd=work, env=env).stdout.strip()
    assert where.startswith(site), where

    write_png(work / "x.png", np.random.default_rng(0).integers(0, 256, (32, 32, 3)))
    repaint = venv / "bin" / "repaint"
    r = run([repaint, "inpaint", "x.png", "--mask", "thick", "--preset", "draft", "--quiet"], cwd=work, env=env)
    assert r.stdout.strip() == "out/x.png" or r.stdout.strip().endswith("out/x.png"), r.stdout
    assert Image.open(work / "out" / "x.png").size == (32, 32)

    r = run([repaint, "models", "list"], cwd=work, env=env)
    assert "emoji32\t32px\tpresent (" + site in r.stdout
    assert "celeba256" in r.stdout and "looked for checkpoints in $REPAINT_WEIGHTS (unset)" in r.stderr
    r = run([repaint, "masks", "generate", "--kind", "thin", "--count", "1", "--out", "m"], cwd=work, env=env)
    assert (work / "m" / "thin_00000.png").is_file()
    r = run([repaint, "--version"], cwd=work, env=env)
    assert r.stdout.startswith("repaint-cli 0.1.0")
