"""cli/params.py: the shared options declared once, and help from the commands' own classes."""
import typer.main
from typer.testing import CliRunner
from repaint_cli.cli.app import app


runner = CliRunner()


def test_help_comes_from_the_commands_classes_not_from_rewriting_typer():
    """Issue 35: importing the CLI leaves Typer's classes as Typer made them (no method rewritten for the whole
    process); the plain help (no <bool>, no {OUTDIR}, defaults as written) is our commands' own, passed as cls=."""
    import typer.core as tc

    from repaint_cli.cli.params import PlainCommand, PlainGroup

    for cls, name in ((tc.TyperOption, "display_type_rich"), (tc.TyperOption, "_get_default_string"),
                      (tc.TyperArgument, "display_type_rich"), (tc.TyperArgument, "_usage_display_name"),
                      (tc.TyperArgument, "_get_default_string")):
        assert getattr(cls, name).__module__.startswith("typer"), (cls.__name__, name)
    group = typer.main.get_command(app)
    assert isinstance(group, PlainGroup)
    for name in ("inpaint", "impute", "schedule", "train", "sheet", "merge-manifests"):
        assert isinstance(group.commands[name], PlainCommand), name
    for sub in ("masks", "models"):
        assert isinstance(group.commands[sub], PlainGroup) and all(
            isinstance(c, PlainCommand) for c in group.commands[sub].commands.values()), sub


def test_options_both_commands_share_are_declared_once():
    """Issue 35: --t-T, --jump-length and --jump-n-sample are one declaration (cli/params.py), and both commands'
    help panels carry the same names."""
    from typing import get_type_hints

    from repaint_cli.cli import params
    from repaint_cli.cli.impute import impute_cmd
    from repaint_cli.cli.inpaint import inpaint_cmd

    inpaint_hints = get_type_hints(inpaint_cmd, include_extras=True)
    impute_hints = get_type_hints(impute_cmd, include_extras=True)
    for name, alias in (("t_T", params.TT), ("jump_length", params.JumpLength), ("jump_n_sample", params.JumpNSample)):
        assert inpaint_hints[name] == impute_hints[name] == alias, name
    for command in ("inpaint", "impute"):
        text = runner.invoke(app, [command, "--help"], terminal_width=200).stdout
        assert "─ Inputs ─" in text and "─ Sampling ─" in text and "─ Outputs ─" in text and "─ Input ─" not in text
