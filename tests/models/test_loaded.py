"""models/loaded.py: what every loader of a model gives back (LoadedModel), and how it says no (ModelError)."""
import pytest

from repaint_cli.models import checkpoints, diffusers_unet, loaded
from repaint_cli.models.checkpoints import load
from repaint_cli.models.loaded import MODEL_FILE_SUFFIXES, LoadedModel, ModelError
from repaint_cli.models.unet import UNetModel


def test_both_loaders_say_no_with_the_one_model_error():
    """The guided-diffusion checkpoints and the diffusers models raise the same class, so the CLI and the Python
    API catch one; it is the class the package exports."""
    assert checkpoints.ModelError is loaded.ModelError and diffusers_unet.ModelError is loaded.ModelError
    assert issubclass(diffusers_unet.DiffusersError, ModelError)


def test_a_checkpoint_loads_as_a_loaded_model_with_its_diffusion(small_checkpoint):
    got = load(str(small_checkpoint), device="cpu")
    assert isinstance(got, LoadedModel)
    assert isinstance(got.model, UNetModel) and got.weights
    assert got.path == small_checkpoint
    assert got.diffusion.num_train_steps == 1000 and len(got.diffusion.betas) == 1000 and got.hparams["image_size"] == 16
    assert got.classifier is None and got.classifier_scale == 0.0


def test_a_path_with_no_model_behind_it_is_a_model_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere.pt"
    assert missing.suffix in MODEL_FILE_SUFFIXES, "a .pt name is a path, never a model's name nor a hub id"
    with pytest.raises(ModelError) as e:
        load(str(missing), device="cpu")
    assert "nowhere.pt" in str(e.value) and "\n" not in str(e.value)
