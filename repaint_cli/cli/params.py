"""The options several commands share, declared once, and the help they are shown in.

Each shared option is a typer ``Annotated`` alias (its flag, metavar and help panel written once): a command
names it as the type of a parameter (``seed: Seed = 0``). Where the option means something else in each command
(what ``--seed`` seeds, what ``--overwrite`` replaces), a function takes the command's help sentence and gives
the rest. Every option's range and choices are checked in ``repaint_cli/constraints.py``, not here.

Help reads in ordinary CLI words: ``PlainCommand`` and ``PlainGroup`` (passed as ``cls=``) show a flag without
a value type, an argument without its Python type (``INPUTS``, not ``INPUTS <list[str]>``), the usage line
without braces (``sheet [OPTIONS] OUTDIR``) and a default given as text as it is written (``[default: thick]``).
"""
from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

HELP = {"help_option_names": ["-h", "--help"]}

# Help panels, in the order a user thinks of them (repaint inpaint has all six, repaint impute four).
INPUTS, MASKS, MODEL, SAMPLING, OUTPUTS, SPEED = "Inputs", "Masks", "Model", "Sampling", "Outputs", "Speed"

FLAG = dict(metavar="")  # a flag takes no value: none is shown (the schedule command's flags say so inline)


# ----------------------------------------------------------------------------- help in ordinary CLI words

def _default_as_written(param, typer_class, **how) -> str:
    """The default as help shows it: text given as ``show_default`` as written (Typer puts it in parentheses)."""
    if how.get("show_default_is_str"):
        return param.show_default
    return typer_class._get_default_string(param, **how)


class PlainOption(TyperOption):
    """An option as help shows it here: a flag with no value type (``--json``, not ``--json <bool>``: it takes
    none, and ``--json true`` would read 'true' as an input), a default given as text (``show_default="the
    model's"``) as it is written, not in parentheses."""

    __slots__ = ()  # adds no field: a parameter Typer built can take this class (see _PlainParams)

    def _get_default_string(self, **how) -> str:
        return _default_as_written(self, TyperOption, **how)

    def display_type_rich(self, ctx) -> Optional[str]:
        if self.is_flag and self.metavar is None:
            return ""
        return super().display_type_rich(ctx)


class PlainArgument(TyperArgument):
    """An argument as help shows it here: its name alone (the name column already says what it is), in the
    usage line without braces (``INPUTS...``, as other CLIs write it), a default given as text as it is written."""

    __slots__ = ()

    def _get_default_string(self, **how) -> str:
        return _default_as_written(self, TyperArgument, **how)

    def display_type_rich(self, ctx) -> str:
        return ""

    def get_usage_pieces(self, ctx) -> list[str]:
        pieces = super().get_usage_pieces(ctx)
        if not self.required:
            return pieces
        return [p.replace("{", "", 1).replace("}", "", 1) for p in pieces]


_PLAIN = {TyperOption: PlainOption, TyperArgument: PlainArgument}


class _PlainParams:
    """Typer builds every parameter as a TyperOption or TyperArgument itself (``typer.Option`` takes no class),
    so a command of ours gives its own parameters, its help option included, the plain classes above."""

    def get_params(self, ctx) -> list:
        params = super().get_params(ctx)
        for param in params:
            plain = _PLAIN.get(type(param))
            if plain is not None:
                param.__class__ = plain
        return params


class PlainCommand(_PlainParams, TyperCommand):
    """A command whose help reads plainly (see the module's docstring); pass it as ``cls=``."""


class PlainGroup(_PlainParams, TyperGroup):
    """A group (``repaint``, ``repaint masks``, ``repaint models``) whose own options read plainly."""


# ----------------------------------------------------------------------------- options several commands share

TT = Annotated[Optional[int], typer.Option(
    "--t-T", metavar="N", help="Respaced steps (t_T), overriding the preset.", rich_help_panel=SAMPLING)]
JumpLength = Annotated[Optional[int], typer.Option(
    "--jump-length", metavar="N", help="Steps per jump back.", rich_help_panel=SAMPLING)]
JumpNSample = Annotated[Optional[int], typer.Option(
    "--jump-n-sample", metavar="N", help="Times each jump is resampled (1 = no resampling).",
    rich_help_panel=SAMPLING)]

ETA_HELP = "--method ddim: noise scale, 0 (deterministic between resamplings) to 1"


def method(help: str, show_default: Any = True) -> Any:
    """--method M: the reverse step (or, for tables, the model)."""
    return typer.Option("--method", metavar="M", show_default=show_default, help=help, rich_help_panel=SAMPLING)


def eta(help: str = ETA_HELP + ".") -> Any:
    """--eta F: DDIM's noise scale."""
    return typer.Option("--eta", metavar="F", help=help, rich_help_panel=SAMPLING)


def guidance(help: str, show_default: str) -> Any:
    """--guidance S: the reconstruction guidance scale; its default depends on the command."""
    return typer.Option("--guidance", metavar="S", show_default=show_default, help=help, rich_help_panel=SAMPLING)


def preset(help: str, show_default: str) -> Any:
    """--preset NAME: a sampling preset (core/schedule.PRESETS)."""
    return typer.Option("--preset", metavar="NAME", show_default=show_default, help=help, rich_help_panel=SAMPLING)


def seed(help: str) -> Any:
    """--seed N: what it seeds is the command's to say."""
    return typer.Option("--seed", metavar="N", help=help, rich_help_panel=SAMPLING)


def threads(help: str, panel: str) -> Any:
    """--threads N: CPU threads; by default the cores free when the run starts."""
    return typer.Option("--threads", metavar="N", show_default="the free cores", help=help, rich_help_panel=panel)


def out(metavar: str, help: str, show_default: Any = True) -> Any:
    """--out / -o: where the results go."""
    return typer.Option("--out", "-o", metavar=metavar, show_default=show_default, help=help,
                        rich_help_panel=OUTPUTS)


def overwrite(help: str) -> Any:
    """--overwrite: what a rerun may replace."""
    return typer.Option("--overwrite", help=help, rich_help_panel=OUTPUTS)


def json_flag(help: str) -> Any:
    """--json: JSON on stdout."""
    return typer.Option("--json", help=help, rich_help_panel=OUTPUTS)


def quiet(help: str) -> Any:
    """--quiet / -q: no progress bar."""
    return typer.Option("--quiet", "-q", help=help, rich_help_panel=OUTPUTS)
