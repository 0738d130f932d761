"""What every repaint command prints on stderr: one console, the one-line ``error:`` exit,
and the Rich progress reporters of ``repaint inpaint`` and ``repaint impute``.

Results go to stdout; everything here goes to stderr.  Only Typer and Rich are imported at
start-up (the image reporter imports the inpaint module when it is made).
"""
from __future__ import annotations

import time
from typing import NoReturn

import typer
from rich.console import Console

from ..choices import ChoiceError, check_choice

# Rich looks up sys.stderr at write time, so test runners that swap sys.stderr still capture it.
err = Console(stderr=True, highlight=False)

STEPS_LABEL = "schedule steps"  # what inpaint's progress counts (the log line beside it gives the UNet calls)

_PREFIX = {"error": "[red]error:[/red] ", "warning": "[yellow]warning:[/yellow] "}


def print_line(console: Console, message: str, level: str = "info") -> None:
    """One message, prefixed 'error: ' or 'warning: ' by level, the message itself never read as markup."""
    console.print(_PREFIX.get(level, ""), end="", markup=True)
    console.print(message, markup=False, highlight=False, soft_wrap=True)


def error_line(message: str) -> None:
    """'error: MESSAGE' on stderr, without exiting (for problems listed before the last)."""
    print_line(err, message, "error")


def die(message: str, code: int = 2) -> NoReturn:
    """'error: MESSAGE' on stderr and exit ``code`` (2: a usage error found before any work)."""
    error_line(message)
    raise typer.Exit(code)


def die_unless_choice(value, choices, what: str, hint: str = ""):
    """``value`` when it is one of ``choices``; else one line naming the closest choice, exit 2."""
    try:
        return check_choice(value, choices, what, hint)
    except ChoiceError as e:
        die(str(e))


class _LogLines:
    """log() of both reporters: info lines are dropped with --quiet, warnings and errors never."""

    quiet = False

    def _print(self, console: Console, msg: str, level: str) -> None:
        if level == "info" and self.quiet:
            return
        print_line(console, msg, level)


def rich_reporter(json_lines: bool, quiet: bool = False):
    """repaint inpaint's reporter: a progress bar and log lines on stderr; one line per finished
    image on stdout (its output path, or its JSON record with --json)."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from ..images.options import ImageResult, Reporter

    class RichReporter(Reporter, _LogLines):
        def __init__(self):
            super().__init__()
            self.json_lines = json_lines
            self.quiet = quiet
            # the count is of schedule steps (UNet calls and undo steps, over all batches), not UNet calls: labelled
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn(STEPS_LABEL), TimeElapsedColumn(), TimeRemainingColumn(), console=err,
                                     transient=False, disable=quiet)
            self.task = None
            self.images_done = 0
            self.n_images = 0

        def log(self, msg: str, level: str = "info") -> None:
            self._print(self.progress.console, msg, level)

        def start(self, n_images: int, total_steps: int) -> None:
            self.n_images = n_images
            self.progress.start()
            self.task = self.progress.add_task(f"images 0/{n_images}", total=total_steps or None)

        def advance_steps(self, n: int = 1) -> None:
            if self.task is not None:
                self.progress.advance(self.task, n)

        def image_done(self, result: ImageResult) -> None:
            if result.status == "done":
                self.images_done += 1
            if self.task is not None:
                self.progress.update(self.task, description=f"images {self.images_done}/{self.n_images}")
            if self.json_lines:
                print(result.json(), flush=True)
            elif result.status in ("done", "skipped") and result.output in result.files:
                # every finished output, so stdout lists all results; not one another run is still making (a
                # pipeline would get a file that does not exist yet): the --json line says that one is skipped
                print(result.output, flush=True)

        def stop(self):
            if self.task is not None:  # a progress never started would print an empty line
                self.progress.stop()

    return RichReporter()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class TableProgress(_LogLines):
    """repaint impute's reporter (tables.impute.Progress) on stderr: Rich bars on a terminal (one per
    phase, and an overall one), plain lines elsewhere (every 10% of a phase or every 10 s), both with
    an estimate for the whole run."""

    EVERY_S = 10.0

    def __init__(self, console: Console, quiet: bool):
        from rich.progress import (BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.console, self.quiet = console, quiet
        self.plain = not console.is_terminal
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=console, disable=quiet or self.plain)
        self.task = self.overall = None
        self.costs: list[tuple[str, float]] = []  # the planned phases ahead: (name, cost of a unit)
        self.total_work = self.done_work = 0.0
        self.name, self.total, self.done, self.cost = "", 0, 0, 1.0

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def log(self, msg: str, level: str = "info") -> None:
        self._print(self.bar.console, msg, level)

    def plan(self, phases) -> None:
        self.costs = [(name, cost) for name, _, cost in phases]
        self.total_work = sum(units * cost for _, units, cost in phases)
        self.overall = self.bar.add_task("overall", total=self.total_work, info="")

    def phase(self, name: str, total: int) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=self.total)
        at = next((i for i, (n, _) in enumerate(self.costs) if n == name), None)
        self.cost = self.costs[at][1] if at is not None else 1.0
        del self.costs[:0 if at is None else at + 1]
        self.name, self.total, self.done = name, total, 0
        self.started = self.last_print = time.monotonic()
        self.last_decile = 0
        self.task = self.bar.add_task(name, total=total, info="")

    def advance(self, n: int = 1, **fields) -> None:
        if self.task is None:
            return
        self.done += n
        self.done_work += n * self.cost
        info = f"{self.done}/{self.total}" + (f", loss {fields['loss']}" if "loss" in fields else "")
        self.bar.update(self.task, advance=n, info=info)
        if self.overall is not None:
            self.bar.update(self.overall, completed=self.done_work)
        now = time.monotonic()
        decile = self.done * 10 // max(1, self.total)
        if self.plain and not self.quiet and (decile > self.last_decile or now - self.last_print >= self.EVERY_S):
            self.last_decile, self.last_print = decile, now
            self.console.print(f"{self.name}: {100 * self.done // max(1, self.total)}% ({info}){self._overall(now)}",
                               markup=False, highlight=False, soft_wrap=True)

    def _overall(self, now: float) -> str:
        """The whole run's share done and time left, at the current phase's measured speed (in row-passes)."""
        if not self.total_work:
            return ""
        rate = self.done * self.cost / max(now - self.started, 1e-9)
        left = (self.total_work - self.done_work) / rate if rate > 0 else float("nan")
        share = 100 * self.done_work / self.total_work
        return f"; overall {share:.0f}%, about {_duration(left)} left" if left == left else f"; overall {share:.0f}%"
