"""repaint: batch image inpainting with RePaint (Lugmayr et al., CVPR 2022).

The Python API the CLI itself uses:

    from repaint_cli import load_model, inpaint, InpaintOptions
    model, diffusion = load_model("emoji32")

and, for tables, a scikit-learn-shaped transformer (scikit-learn not needed):

    from repaint_cli import DiffusionImputer
    filled = DiffusionImputer(random_state=0).fit_transform(frame)

The names are imported on first use, so that ``repaint --help`` and other
quick commands never pay for importing PyTorch.
"""
from importlib import import_module

__version__ = "0.1.0"
__all__ = ["load_model", "inpaint", "InpaintOptions", "DiffusionImputer", "__version__"]

_LAZY = {"load_model": "models.checkpoints", "inpaint": "images.inpaint", "InpaintOptions": "images.inpaint",
         "DiffusionImputer": "tables.imputer"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
