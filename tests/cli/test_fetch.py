"""cli/fetch.py: a known model's missing files on first use are fetched only when asked, never silently."""
import pytest
import typer

from repaint_cli.cli import fetch as cli_fetch
from repaint_cli.models import cards, fetch
from repaint_cli.models.fetch import Target


@pytest.fixture
def unfetched(monkeypatch):
    """A known model whose checkpoint no weights folder holds yet, and a record of download attempts."""
    card = next(c for c in cards.list_cards() if c.format != "diffusers" and c.urls)
    monkeypatch.setattr(cards, "find_card", lambda name: card if name == card.name else None)
    monkeypatch.setattr(fetch, "missing", lambda c, classifier=True: [Target(c.file, c.urls, None, "model")])
    tried = []
    monkeypatch.setattr(cli_fetch, "fetch_card_files", lambda c, **kw: tried.append(c.name) or 0)
    return card, tried


def test_outside_a_terminal_a_missing_model_stops_with_how_to_fetch_it(unfetched, monkeypatch, capsys):
    card, tried = unfetched
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(typer.Exit) as e:
        cli_fetch.fetch_before_run(card.name, allowed=False, classifier=False)
    assert e.value.exit_code == 2 and tried == []
    err = capsys.readouterr().err
    assert f"repaint models fetch {card.name}" in err and "--fetch" in err


def test_fetch_downloads_and_an_unknown_or_present_model_is_left_alone(unfetched, monkeypatch):
    card, tried = unfetched
    cli_fetch.fetch_before_run(card.name, allowed=True, classifier=False)
    assert tried == [card.name]
    cli_fetch.fetch_before_run("no-such-model", allowed=False, classifier=False)
    cli_fetch.fetch_before_run(None, allowed=False, classifier=False)
    monkeypatch.setattr(fetch, "missing", lambda c, classifier=True: [])
    cli_fetch.fetch_before_run(card.name, allowed=False, classifier=False)
    assert tried == [card.name], "nothing more was downloaded"
