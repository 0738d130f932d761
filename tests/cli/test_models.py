"""cli/models.py: ``repaint models list``."""
from typer.testing import CliRunner
from repaint_cli.cli.app import app
from http_server import use_cards, write_card


runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def test_models_list():
    r = invoke("models", "list")
    assert r.exit_code == 0
    assert "celeba256" in r.stdout and "imagenet256" in r.stdout


def invoke_fetch(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_models_list_says_present_fetchable_and_size(server, weights, monkeypatch):
    w, cards, data, hp = weights
    server.files["tiny_1000.pt"] = data
    use_cards(monkeypatch, w, write_card(cards, hp, f"{server.url}/tiny_1000.pt"))
    line = next(x for x in invoke_fetch("models", "list").stdout.splitlines() if x.startswith("tiny\t"))
    assert "fetchable (about 1 MB): repaint models fetch tiny" in line
    line = next(x for x in invoke_fetch("models", "list").stdout.splitlines() if x.startswith("celeba256\t"))
    assert "fetchable (about 2.2 GB)" in line
    invoke_fetch("models", "fetch", "tiny")
    line = next(x for x in invoke_fetch("models", "list").stdout.splitlines() if x.startswith("tiny\t"))
    assert f"present ({w / 'tiny_1000.pt'}, " in line
