"""``repaint models fetch`` and fetching on first use (``repaint inpaint --fetch``, or a yes/no question
on a terminal): the Rich download bar over :mod:`repaint_cli.models.fetch`."""
from __future__ import annotations

import sys
from typing import Optional

import typer

from .output import die, err, error_line
from .params import PlainCommand


class RichDownload:
    """A download's bar on stderr: bytes so far, speed, time left."""

    def __init__(self):
        self.progress = None
        self.task = None

    def start(self, name: str, total: Optional[int], done: int) -> None:
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.finish()
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=err, transient=False)
        self.progress.start()
        self.task = self.progress.add_task(name, total=total, completed=done)

    def advance(self, n: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=n)

    def note(self, message: str) -> None:
        (self.progress.console if self.progress is not None else err).print(message, markup=False, highlight=False,
                                                                            soft_wrap=True)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def fetch_card_files(card, from_: Optional[str] = None, classifier: bool = True, print_paths: bool = True) -> int:
    """Download the card's missing files; prints each file's path on stdout (``print_paths``). The number that
    failed."""
    from ..models import fetch

    if card.format == "diffusers":
        return _fetch_from_hub(card)
    todo = fetch.missing(card, classifier)
    for t in fetch.targets(card, classifier):
        if t not in todo:
            err.print(f"{t.file}: present ({card.find_file(t.file)})", markup=False, highlight=False)
    failed = 0
    try:
        dest = fetch.fetch_dir() if todo else None
        for t in todo:
            urls = fetch.sources(t, from_, len(todo) if len(todo) > 1 else 0)
            err.print(f"{t.file}: from {urls[0] if urls else '(no url)'} into {dest}", markup=False, highlight=False,
                      soft_wrap=True)
            try:
                path, digest = fetch.fetch_target(t, dest, urls, RichDownload(), fetch.strict_check(card, t))
            except fetch.FetchError as e:
                error_line(str(e))
                failed += 1
                continue
            how = "matches its card" if t.sha256 else "not in the card: its keys and shapes were checked instead"
            err.print(f"{t.file}: sha256 {digest} ({how})", markup=False, highlight=False, soft_wrap=True)
            if print_paths:
                print(path)
    except fetch.FetchError as e:
        error_line(str(e))
        return len(todo) or 1
    return failed


def _fetch_from_hub(card) -> int:
    """A diffusers model: the Hugging Face hub's own client downloads it into its cache."""
    if card.find_file() is not None:
        err.print(f"{card.name}: present ({card.find_file()})", markup=False, highlight=False)
        return 0
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        error_line(f"model '{card.name}' is in diffusers' format: install repaint-cli[diffusers] to fetch it "
                   f"from the Hugging Face hub")
        return 1
    try:
        print(snapshot_download(card.file))
    except Exception as e:  # the hub client raises many kinds: all mean "not fetched"
        error_line(f"model '{card.name}': the hub download of {card.file} failed ({type(e).__name__}: "
                   f"{(str(e).splitlines() or [''])[0][:200]})")
        return 1
    return 0


def register(models_app: typer.Typer) -> None:
    @models_app.command("fetch", cls=PlainCommand)
    def models_fetch(
        name: str = typer.Argument(..., metavar="NAME", help="A model's name ('repaint models list')."),
        from_: Optional[str] = typer.Option(
            None, "--from", metavar="URL|PATH", help="A mirror instead of the card's URLs: a base URL or folder "
            "holding the files by name, or one URL or file for a model of one file."),
    ):
        """Download a model's checkpoint (and classifier) into the first writable weights folder; resumes a
        partial download; checks it before it can be used."""
        from ..models.cards import find_card, list_cards

        card = find_card(name)
        if card is None:
            die(f"{name}: not a known model (known: {', '.join(c.name for c in list_cards())})")
        if card.format != "diffusers" and not any(t.urls for t in _targets(card)) and not from_:
            die(f"model '{card.name}': its card names no url; add 'url:' to {card.card_path}, or pass --from URL")
        raise typer.Exit(1 if fetch_card_files(card, from_) else 0)


def _targets(card):
    from ..models import fetch

    return fetch.targets(card)


def fetch_before_run(model: Optional[str], allowed: bool, classifier: bool) -> None:
    """First use of a known model whose files are missing: fetch them with ``--fetch``, or after a yes on a
    terminal; elsewhere (scripts, pipelines) never silently: exit 2 saying how."""
    from ..models.cards import find_card

    card = find_card(model) if model else None
    if card is None or card.format == "diffusers":
        return
    from ..models import fetch

    todo = [t for t in fetch.missing(card, classifier) if t.urls]
    if not todo:
        return
    files = " and ".join(t.file for t in todo)
    size = f" ({card.size})" if card.size else ""
    if not allowed:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            die(f"model '{card.name}': {files} not downloaded yet{size}; run 'repaint models fetch {card.name}', or "
                f"rerun with --fetch")
        if not typer.confirm(f"model '{card.name}': download {files}{size} now?", default=False, err=True):
            die(f"model '{card.name}': not downloaded; 'repaint models fetch {card.name}' does it later")
    if fetch_card_files(card, classifier=classifier, print_paths=False):  # stdout: the run's results only
        raise typer.Exit(1)
