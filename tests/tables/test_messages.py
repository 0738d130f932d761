"""tables/messages.py: messages of the tables wing name parameters, which the command writes as its flags; a
table's problems are ValueErrors."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from repaint_cli.tables import impute
from repaint_cli.tables.messages import Message, TableError, parameter_words, said
from repaint_cli.tables.model_config import TableModelConfig, TrainSettings
from repaint_cli.tables.table_files import read_table
from conftest import ROOT
from impute_cli import mixed_table

PACKAGE = ROOT / "repaint_cli"
REPAINT = dict(method="repaint", t_T=10, jump_length=5, jump_n_sample=2, samples=2, guidance=0.0)


def tiny(**kw) -> impute.ImputeOptions:
    return impute.ImputeOptions(train=TrainSettings(steps=20), model=TableModelConfig(width=16, blocks=1),
                                threads=1, **kw)


def test_a_message_names_parameters_and_the_command_writes_its_flags():
    from repaint_cli.cli.impute import flag_words

    message = said("`eta`=0.5: applies to `method` ddim only; leave `train_steps` out")
    assert message == "eta=0.5: applies to method ddim only; leave train_steps out"
    assert flag_words(message) == "--eta 0.5: applies to --method ddim only; leave --train-steps out"
    flags = "--t-T 90: more than the model's 50 steps; leave --jump-n-sample out, --combine 'max'"
    assert flag_words(parameter_words(flags)) == flags  # the shared checks' lines come back as they were
    assert str(parameter_words(flags)) == "t_T=90: more than the model's 50 steps; leave jump_n_sample out, combine='max'"
    assert flag_words(TableError("a `plain` line")) == "a `plain` line"  # backticks of a plain message kept
    assert isinstance(TableError(message).message, Message)


def test_the_library_names_parameters_where_the_command_names_flags(tmp_path):
    from typer.testing import CliRunner

    from repaint_cli.cli.app import app

    src = mixed_table(tmp_path / "t.csv")
    with pytest.raises(TableError) as e:
        impute.check_options(impute.ImputeOptions(method="repaint", model=TableModelConfig(members=2)))
    assert str(e.value) == "members is for method conditional; method repaint trains one model"
    r = CliRunner().invoke(app, ["impute", str(src), "--method", "repaint", "--members", "2"])
    assert r.exit_code == 2
    assert r.stderr.strip() == "error: --members is for --method conditional; --method repaint trains one model"
    with pytest.raises(TableError, match=r"^.*: `?categorical`? names no column 'zz'") as e:
        impute.impute_table(read_table(src), tiny(categorical=("zz",)))
    assert "--" not in str(e.value)


def test_tables_speak_no_flags():
    """No message of the tables wing names a flag (docstrings and comments may; messages.py reads them)."""
    for path in sorted(p for p in (PACKAGE / "tables").glob("*.py") if p.name != "messages.py"):
        tree = ast.parse(path.read_text())
        docs = {id(node.body[0].value) for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                assert " --" not in node.value and not node.value.startswith("--"), (path.name, node.value)


def test_table_errors_are_value_errors():
    assert issubclass(TableError, ValueError)
    with pytest.raises(TableError, match="no such file"):
        read_table("/nonexistent/table.csv")


def test_parameter_words():
    assert parameter_words("--samples must be at least 1") == "samples must be at least 1"
    assert parameter_words("--t-T 90 is more than") == "t_T=90 is more than"
    assert parameter_words("--combine 'max': use mean") == "combine='max': use mean"
