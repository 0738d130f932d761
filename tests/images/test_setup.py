"""images/setup.py: mistakes that concern the whole run stop it before the first batch (an unknown conf key
with the closest one, run-wide errors before the model loads and before --out exists), and the default model
says what it is for once. From issue 12 (safe by default) and issues 21 and 25."""

import pytest
import yaml
from typer.testing import CliRunner

from repaint_cli.models.checkpoints import ModelError, check_conf_keys
from PIL import Image
from repaint_cli.images.inpaint import InpaintOptions, Reporter, inpaint
from repaint_cli.images.provenance import recorded_settings
from cli_helpers import invoke, one_line_exit_2 as assert_one_line_exit_2, photo

runner = CliRunner()
FAST = ["--t-T", 6, "--jump-length", 2, "--jump-n-sample", 2, "--quiet"]


# ----------------------------------------------------------------------------- 1. inputs never overwritten


# ----------------------------------------------------------------------------- 2. LaMa-style folders


# ----------------------------------------------------------------------------- 3. -r with --out inside the tree


# ----------------------------------------------------------------------------- 4. a shell-expanded mask glob


# ----------------------------------------------------------------------------- 5. --config keys

def test_misspelled_config_key_is_refused_with_the_closest_key(tmp_path, small_checkpoint, no_model_load):
    photo(tmp_path / "a.png")
    conf = tmp_path / "conf.yml"
    conf.write_text(yaml.safe_dump({"schedule_jump_param": {"t_T": 6, "n_sample": 1, "jump_length": 2,
                                                            "jump_n_sample": 2}}))
    r = invoke("inpaint", tmp_path / "a.png", "--mask", "box", "--model", small_checkpoint, "--config", conf,
               "--out", tmp_path / "out", "--quiet")
    assert_one_line_exit_2(r, "'schedule_jump_param'", "'schedule_jump_params'")
    with pytest.raises(ModelError, match="schedule_jump_params.jump_length"):
        check_conf_keys({"schedule_jump_params": {"jump_lenght": 5}}, "conf.yml")


# ----------------------------------------------------------------------------- 6. validation before the model

def _case(tmp_path, name):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    photo(imgs / "a.png")
    if name == "missing":
        return [imgs / "a.png", tmp_path / "nope.png"], [], "nope.png"
    if name == "glob":
        return [str(tmp_path / "nothing" / "*.png")], [], "matches no file"
    if name == "empty":
        (tmp_path / "deep" / "sub").mkdir(parents=True)
        photo(tmp_path / "deep" / "sub" / "b.png")
        return [tmp_path / "deep"], [], "-r"
    if name == "kind":
        return [imgs], ["--mask", "thik"], "did you mean 'thick'"
    if name == "seed":
        return [imgs], ["--seed", "-1"], "--seed -1"
    if name == "mask-glob":
        return [imgs], ["--mask", str(tmp_path / "m" / "*.png")], "matches no file"
    raise ValueError(name)


@pytest.mark.parametrize("name", ["missing", "glob", "empty", "kind", "seed", "mask-glob"])
def test_run_wide_mistakes_stop_before_the_model_and_create_no_output_folder(tmp_path, small_checkpoint,
                                                                             no_model_load, name):
    inputs, extra, fragment = _case(tmp_path, name)
    out = tmp_path / "out"
    r = invoke("inpaint", *inputs, "--mask", "box", *extra, "--model", small_checkpoint, "--out", out, "--quiet")
    assert_one_line_exit_2(r, fragment)
    assert not out.exists()


# ----------------------------------------------------------------------------- 7. outputs record their settings


# ----------------------------------------------------------------------------- 8. stdout lists every result


# ----------------------------------------------------------------------------- 9. no silent quality loss


# ----------------------------------------------------------------------------- issue 21 D1, issue 25 D2/D5


FAST_RESUME = dict(mask="box", t_T=4, jump_length=2, jump_n_sample=1)


def test_the_default_model_says_what_it_is_for_once(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (230, 230, 250)).save(imgs / f"lavender{i}.png")
    rep = Reporter()
    summary = inpaint([str(imgs)], InpaintOptions(**FAST_RESUME, out_dir=tmp_path / "out"), rep)
    assert summary.done == 2
    notes = [line for line in rep.lines if "trained on 32x32 emoji only" in line]
    assert len(notes) == 1 and rep.lines.index(notes[0]) <= 1 and "--model celeba256" in notes[0]
    assert "preset" in recorded_settings(tmp_path / "out" / "lavender0.png")
