"""Issue 32, item 3: every option's value checked once, from one declared table (repaint_cli/constraints.py) that the
CLI and the Python API share; an option a saved model fixes refused by name."""

import pytest
import typer
from typer.testing import CliRunner

from conftest import ROOT, make_images
from repaint_cli.cli.app import app
from repaint_cli.constraints import COMMANDS, IMPUTE, INPAINT, OptionError, api_name

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def _command(name):
    group = typer.main.get_command(app)
    return group.commands[name]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_of_the_command_has_a_declared_constraint(command):
    """A new option of inpaint or impute without a constraint fails here: none can skip validation."""
    table = COMMANDS[command]
    params = {p.name: p for p in _command(command).params if p.name not in ("help",)}
    undeclared = sorted(set(params) - set(table))
    assert not undeclared, f"options of 'repaint {command}' with no declared constraint: {undeclared}"
    stale = sorted(set(table) - set(params))
    assert not stale, f"constraints of 'repaint {command}' for options it does not have: {stale}"
    for name, p in params.items():  # the table names each option as the CLI spells it
        spelled = list(p.opts) + [s.split("/")[0] for s in p.secondary_opts]
        if isinstance(p, typer.core.TyperArgument):
            spelled = [p.name.upper(), (p.metavar or "").upper()]
        assert table[name].flag in spelled, (name, table[name].flag, spelled)


def test_each_declared_option_has_its_python_api_field():
    """The table's api names are the fields of the Python API's option classes (a renamed field would skip its check)."""
    from repaint_cli.images.options import ReadOptions, SampleOptions, WriteOptions
    from repaint_cli.runtime.device import EngineOptions

    fields = set()
    for cls in (ReadOptions, SampleOptions, WriteOptions, EngineOptions):
        fields |= set(cls.__dataclass_fields__)
    for name, o in INPAINT.items():
        if api_name(name, o):
            assert api_name(name, o) in fields, name


# (option, a value it refuses) for the inpaint options the Python API has too
INPAINT_BAD = [("t_T", 0), ("t_T", 50.9), ("jump_length", 0), ("jump_n_sample", -1), ("n_sample", 0),
               ("eta", 2.0), ("guidance", -1.0), ("guidance", float("nan")), ("context", -0.5), ("context", float("inf")),
               ("classifier_scale", -1.0), ("fit", "crp"), ("method", "ddpm"), ("mask_convention", "white"),
               ("preset", "fastt"), ("precision", "fp8"), ("threads", 0), ("batch_size", "0"), ("batch_size", "x"),
               ("device", "gpu"), ("shard", "3/2"), ("shard", "a")]


@pytest.mark.parametrize("name,bad", INPAINT_BAD)
def test_inpaint_cli_and_python_api_say_the_same_line(tmp_path, name, bad):
    from repaint_cli.images.options import InpaintOptions, RunError

    o = INPAINT[name]
    make_images(tmp_path / "in", 1)
    with pytest.raises((RunError, OptionError)) as api:
        InpaintOptions(**{api_name(name, o): bad})
    message = str(api.value)
    assert "\n" not in message and o.flag in message
    if not (o.kind == "int" and not isinstance(bad, int)):  # (Typer itself refuses a decimal for a whole number)
        cli = invoke("inpaint", tmp_path / "in", o.flag, str(bad), "--out", tmp_path / "o")
        assert cli.exit_code == 2 and cli.stderr.strip() == f"error: {message}", (cli.stderr, message)
    assert not (tmp_path / "o").exists()


IMPUTE_BAD = [("width", 0), ("width", -5), ("blocks", -3), ("threads", -1), ("members", 0), ("train_steps", 0),
              ("rounds", 0), ("samples", 0), ("combine", "avg"), ("method", "repaint2"), ("preset", "fastt"),
              ("t_T", 0), ("jump_length", 0), ("eta", 1.5), ("guidance", -2.0)]


def _impute_options(name, value):
    from repaint_cli.tables.model_config import TableModelConfig, TrainSettings
    from repaint_cli.tables.impute import ImputeOptions

    if name in ("width", "blocks", "members", "gaussian_base"):
        return ImputeOptions(model=TableModelConfig(**{name: value}))
    if name == "train_steps":
        return ImputeOptions(train=TrainSettings(steps=value))
    return ImputeOptions(**{name: value})


@pytest.mark.parametrize("name,bad", IMPUTE_BAD)
def test_impute_cli_and_python_api_say_the_same_line(tmp_path, name, bad):
    from repaint_cli.cli.impute import flag_words
    from repaint_cli.tables.impute import check_options
    from repaint_cli.tables.messages import TableError

    o = IMPUTE[name]
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n,3\n4,\n5,6\n")
    cli = invoke("impute", table, o.flag, str(bad), "--out", tmp_path / "o.csv")
    with pytest.raises(TableError) as api:
        check_options(_impute_options(name, bad))
    message = str(api.value)  # the library names the parameter, the command its flag: the same line
    assert "\n" not in message and o.flag not in message and name in message
    assert cli.exit_code == 2 and cli.stderr.strip() == f"error: {flag_words(api.value)}", (cli.stderr, message)
    assert not (tmp_path / "o.csv").exists()


def test_impute_refuses_negative_and_zero_sizes_before_training(tmp_path):
    """T6: --threads -1 and --width -5 were tracebacks; --width 0 and --blocks -3 were accepted (0 became the default)."""
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n,3\n4,\n5,6\n")
    for flag, value in (("--threads", -1), ("--width", -5), ("--width", 0), ("--blocks", -3)):
        r = invoke("impute", table, flag, value, "--train-steps", 2)
        assert r.exit_code == 2, (flag, value, r.output)
        assert r.stderr.strip() == f"error: {flag} {value}: must be a whole number, 1 or more"
        assert "Traceback" not in r.output and r.stdout == ""


@pytest.mark.parametrize("flag,value", [("--members", 3), ("--width", 64), ("--blocks", 2), ("--train-steps", 10),
                                        ("--gaussian-base", None), ("--no-gaussian-base", None), ("--rounds", 2)])
def test_an_option_a_saved_model_fixes_is_refused_by_name(tmp_path, flag, value):
    """S8: with --model these were dropped without a word."""
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n,3\n4,\n5,6\n")
    extra = [flag] + ([value] if value is not None else [])
    r = invoke("impute", table, "--model", tmp_path / "m", *extra)
    shown = flag.replace("--no-", "--")
    assert r.exit_code == 2 and r.stderr.startswith(f"error: {shown}: the saved model"), r.output
    assert "\n" not in r.stderr.strip()


def test_the_python_api_refuses_what_a_saved_model_fixes(tmp_path):
    from repaint_cli.tables.messages import TableError
    from repaint_cli.tables.table_files import read_table
    from repaint_cli.tables.model_config import TableModelConfig
    from repaint_cli.tables.impute import ImputeOptions, impute_table

    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n,3\n4,\n5,6\n")
    with pytest.raises(TableError, match=r"^width: the saved model .* fixes it"):
        impute_table(read_table(path), ImputeOptions(model=TableModelConfig(width=64)), model_path=tmp_path / "m")


def test_t_T_beyond_the_models_steps_is_one_line_for_inpaint_too(tmp_path, small_checkpoint):
    """T2: impute checked it; inpaint went on to a traceback in the respacing."""
    make_images(tmp_path / "in", 1)
    r = invoke("inpaint", tmp_path / "in", "--model", small_checkpoint, "--t-T", 2000, "--out", tmp_path / "o", "-q")
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == "error: --t-T 2000: more than the 1000 diffusion steps of this model; give --t-T 1000 or fewer"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value,shown", [("null", "null"), ("50.9", "50.9"), ("fifty", "fifty"), ("[1]", "[1]")])
def test_a_config_step_count_that_is_no_whole_number_is_refused(tmp_path, small_checkpoint, value, shown):
    """T4: t_T: null was a traceback, t_T: 50.9 ran silently with 50."""
    make_images(tmp_path / "in", 1)
    conf = tmp_path / "c.yaml"
    conf.write_text(f"schedule_jump_params:\n  t_T: {value}\n  jump_length: 2\n  jump_n_sample: 1\n")
    r = invoke("inpaint", tmp_path / "in", "--model", small_checkpoint, "--config", conf, "--out", tmp_path / "o")
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == f"error: {conf}: schedule_jump_params.t_T: {shown}: must be a whole number"
    assert not (tmp_path / "o").exists()


def test_a_whole_float_step_count_in_a_config_is_read_as_that_number():
    from repaint_cli.core.schedule import JumpParams

    assert JumpParams.from_dict({"t_T": 50.0, "jump_length": 5}).t_T == 50
    with pytest.raises(ValueError, match="jump_length: 2.5: must be a whole number"):
        JumpParams.from_dict({"jump_length": 2.5})


def test_engine_options_are_checked_from_the_table():
    from repaint_cli.runtime.device import EngineOptions

    with pytest.raises(OptionError, match=r"^--threads 0: must be a whole number, 1 or more$"):
        EngineOptions(threads=0)
    assert EngineOptions(batch_size=4, device="cuda:1").batch_size == 4


def test_every_declared_option_refuses_a_value_of_the_wrong_type():
    """Each kind of the table checks its type (a float for a whole number, a number for a choice, text for a flag)."""
    from repaint_cli.constraints import check_value

    wrong = {"int": 2.5, "float": "x", "choice": 3, "bool": "yes", "list": "abc"}
    for table in COMMANDS.values():
        for name, o in table.items():
            if o.kind in wrong:
                with pytest.raises(OptionError) as e:
                    check_value(o, wrong[o.kind], name)
                assert str(e.value).startswith(o.flag) and "\n" not in str(e.value)


# --- T3, N8: model names and cards -------------------------------------------------------------------

def test_a_stray_non_utf8_yaml_in_a_weights_folder_is_skipped_with_one_line(tmp_path, monkeypatch):
    """T3: any non-UTF-8 *.yaml in a weights folder (./weights included) broke every inpaint and 'models list'."""
    (tmp_path / "notes.yaml").write_bytes(b"name: x\n\xff\xfe caf\xe9\n")
    (tmp_path / "folder.yaml").mkdir()
    monkeypatch.setenv("REPAINT_WEIGHTS", str(tmp_path))
    r = invoke("models", "list")
    assert r.exit_code == 0, r.output
    assert "emoji32" in r.stdout
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warned == [f"warning: {tmp_path / 'folder.yaml'}: cannot be read (Is a directory); skipped as a model card",
                      f"warning: {tmp_path / 'notes.yaml'}: not UTF-8 text; skipped as a model card"]
    assert "Traceback" not in r.output


def test_a_stray_non_utf8_yaml_does_not_stop_inpaint(tmp_path, monkeypatch):
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "notes.yaml").write_bytes(b"\xff\xfe\x00\x01")
    monkeypatch.setenv("REPAINT_WEIGHTS", str(weights))
    make_images(tmp_path / "in", 1, size=32)
    r = invoke("inpaint", tmp_path / "in", "--preset", "draft", "--jump-n-sample", 1, "--t-T", 5,
               "--out", tmp_path / "o", "--threads", 1)
    assert r.exit_code == 0, r.output
    assert f"warning: {weights / 'notes.yaml'}: not UTF-8 text; skipped as a model card" in r.stderr


def test_a_misspelled_model_name_gets_did_you_mean(tmp_path):
    """N8: '--model celba256' said 'neither a checkpoint file nor a known model', with no guess."""
    make_images(tmp_path / "in", 1)
    r = invoke("inpaint", tmp_path / "in", "--model", "celba256", "--out", tmp_path / "o")
    assert r.exit_code == 2
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: celba256: no known model of this name (did you mean 'celeba256'?); known: ")


@pytest.mark.parametrize("name", ["nodir/model.pt", "model.safetensors", "model.yml"])
def test_a_missing_checkpoint_path_says_no_such_file(tmp_path, name):
    make_images(tmp_path / "in", 1)
    r = invoke("inpaint", tmp_path / "in", "--model", name, "--out", tmp_path / "o")
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {name}: no such file; give a checkpoint file")


def test_constraints_import_nothing_heavy():
    """The CLI checks every value against the table before PyTorch, numpy or OpenCV are imported."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, repaint_cli.constraints; "
            "print(sorted(m for m in ('numpy', 'torch', 'cv2', 'PIL', 'pandas') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_an_animate_typo_gets_did_you_mean(tmp_path):
    make_images(tmp_path / "in", 1)
    r = invoke("inpaint", tmp_path / "in", "--animate", "gfi", "--out", tmp_path / "o")
    assert r.exit_code == 2 and r.stderr.strip() == "error: --animate gfi: use one of gif, mp4 (did you mean 'gif'?)"


def test_eta_has_one_default_in_both_commands():
    from repaint_cli.tables.impute import ImputeOptions
    from repaint_cli.images.options import InpaintOptions

    assert ImputeOptions().eta == InpaintOptions().sample.eta == 0.0
    r = runner.invoke(app, ["impute", "--help"], env={"COLUMNS": "200"})
    assert "--eta" in r.stdout
