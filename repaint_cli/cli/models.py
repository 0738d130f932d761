"""``repaint models ...``: the known models and their checkpoints (``list``; ``fetch`` is in :mod:`.fetch`).

Wired into the main app with ``app.add_typer(models_app, name="models")``. One line per model on stdout; where
the checkpoints were looked for goes to stderr.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .fetch import register as register_fetch
from .output import err, print_line
from .params import HELP, PlainCommand, PlainGroup

models_app = typer.Typer(help="Known models and their checkpoints.", no_args_is_help=True, context_settings=HELP,
                         cls=PlainGroup)

Verify = Annotated[bool, typer.Option("--verify", help="Hash present checkpoints and compare with their cards.")]


@models_app.command("list", cls=PlainCommand)
def models_list(verify: Verify = False):
    """Known models and whether their checkpoints are present (one line each on stdout)."""
    from ..files import sha256_file
    from ..models.cards import list_cards
    from ..resources import bundled_weights_dir, user_weights_dirs

    looked = [f"{'' if d.is_absolute() else './'}{d}{'' if d.is_dir() else ' (absent)'}" for d in user_weights_dirs()]
    env = "" if os.environ.get("REPAINT_WEIGHTS") else "$REPAINT_WEIGHTS (unset), "
    err.print(f"looked for checkpoints in {env}{', '.join(looked)}, then the files shipped with repaint "
              f"({bundled_weights_dir()})", markup=False, highlight=False, soft_wrap=True)
    import warnings

    with warnings.catch_warnings(record=True) as skipped:  # cards skipped: one 'warning:' line each
        warnings.simplefilter("always")
        cards = list_cards()
    for w in skipped:
        print_line(err, str(w.message), "warning")
    for card in cards:
        path = card.find_file()
        if card.format == "diffusers":
            status = (f"present ({path})" if path else
                      f"fetchable: repaint models fetch {card.name} (diffusers format, from the Hugging Face hub)")
            verify_this = False
        else:
            status = f"present ({path}, {_file_size(path)})" if path else _missing_status(card)
            verify_this = verify
        if path and verify_this:
            digest = sha256_file(path)
            status += (" sha256 ok" if card.sha256 == digest else
                       f" sha256 {digest}" + (" MISMATCH" if card.sha256 else ""))
        print(f"{card.name}\t{card.hparams.get('image_size')}px\t{status}\t{card.description}")


def _file_size(path: Path) -> str:
    from ..models.fetch import human_size

    return human_size(path.stat().st_size)


def _missing_status(card) -> str:
    """A missing checkpoint: fetchable (with its size where the card says it), or where to put it."""
    if card.fetchable():
        return f"fetchable{' (' + card.size + ')' if card.size else ''}: repaint models fetch {card.name}"
    return f"missing: put {card.file} in ~/.cache/repaint/weights/"


register_fetch(models_app)
