"""models/cards.py: the model cards of the weights folders, read whole or named as broken."""
import pytest
from repaint_cli.models.checkpoints import ModelError, find_card, list_cards, load


def test_registry_cards_and_missing_checkpoint_message():
    names = {c.name for c in list_cards()}
    assert {"celeba256", "places256", "imagenet256"} <= names
    card = find_card("celeba256")
    assert card.hparams["num_head_channels"] == 64 and card.file == "celeba256_250000.pt"
    if card.find_file() is None:
        with pytest.raises(ModelError) as e:
            load("celeba256")
        assert "celeba256_250000.pt" in str(e.value) and "weights" in str(e.value)


def test_a_card_missing_a_required_key_is_named_not_silently_dropped(tmp_path, monkeypatch):
    """A card without its hparams (or file, or name) vanished from `models list` without a word; now
    a warning names the file and the missing key. A RePaint conf beside a checkpoint (it may have a
    name, never file or hparams) is still skipped quietly."""
    import warnings

    (tmp_path / "nohparams.yaml").write_text("name: nohparams\nfile: nohparams.pt\n")
    (tmp_path / "noname.yaml").write_text("file: x.pt\nhparams: {image_size: 32}\n")
    (tmp_path / "mine.yaml").write_text("name: face_example\nimage_size: 32\nnum_channels: 32\n")
    monkeypatch.setenv("REPAINT_WEIGHTS", str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = [c.name for c in list_cards()]
    messages = sorted(str(w.message) for w in caught)
    assert "nohparams" not in names and "face_example" not in names
    assert len(messages) == 2, messages
    assert f"{tmp_path / 'nohparams.yaml'}: a model card without hparams; skipped" in messages[0]
    assert f"{tmp_path / 'noname.yaml'}: a model card without name; skipped" in messages[1]


def test_a_broken_card_is_named_not_silently_dropped(tmp_path, monkeypatch):
    """A card with a YAML error once made the embedded model vanish without a word; a sidecar of an
    exported model (valid YAML, not a card) is still skipped quietly."""
    import warnings

    from repaint_cli.models.cards import list_cards

    (tmp_path / "broken.yaml").write_text("name: broken\ntraining:\n  hardware: one core: 80 minutes\n")
    (tmp_path / "sidecar.yaml").write_text("image_size: 32\nnum_channels: 32\n")
    monkeypatch.setenv("REPAINT_WEIGHTS", str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = [c.name for c in list_cards()]
    messages = [str(w.message) for w in caught]
    assert "broken" not in names and "emoji32" in names
    assert len(messages) == 1 and "broken.yaml: not valid YAML (line 3)" in messages[0]
