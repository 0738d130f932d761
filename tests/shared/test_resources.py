"""resources.py: where the files that ship with repaint are, and the user's weights folders in order."""
from pathlib import Path
from typer.testing import CliRunner
from repaint_cli import resources
from repaint_cli.cli.app import app


def test_user_weights_are_searched_in_order(tmp_path, monkeypatch):
    env_dir, home, cwd = tmp_path / "env", tmp_path / "home", tmp_path / "cwd"
    cache = home / ".cache" / "repaint" / "weights"
    for d in (env_dir, cache, cwd / "weights"):
        d.mkdir(parents=True)
    monkeypatch.setenv("REPAINT_WEIGHTS", str(env_dir))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    dirs = resources.weight_dirs()
    assert [str(d) for d in dirs[:3]] == [str(env_dir), str(cache), "weights"]
    assert dirs[3] == resources.bundled_weights_dir() and len(dirs) == 4

    from repaint_cli.models.cards import find_card

    card = find_card("emoji32")
    # the same checkpoint name in two user folders: the earlier folder wins; the shipped copy comes last
    (cwd / "weights" / card.file).write_bytes(b"cwd")
    assert card.find_file() == card.card_path.parent / card.file  # a card's own folder is looked in first
    card.card_path = None
    assert card.find_file() == Path("weights") / card.file
    (cache / card.file).write_bytes(b"cache")
    assert card.find_file() == cache / card.file
    (env_dir / card.file).write_bytes(b"env")
    assert card.find_file() == env_dir / card.file

    # a user's card of the same name overrides the shipped one
    (cache / "emoji32.yaml").write_text("name: emoji32\nfile: mine.pt\nhparams: {image_size: 32}\n")
    assert find_card("emoji32").file == "mine.pt"

    r = CliRunner().invoke(app, ["models", "list"])
    assert r.exit_code == 0
    assert f"looked for checkpoints in {env_dir}, {cache}, ./weights, then the files shipped with repaint" in r.stderr
