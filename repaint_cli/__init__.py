"""repaint: batch image inpainting with RePaint (Lugmayr et al., CVPR 2022).

The Python API the CLI itself uses:

    from repaint_cli import load_model, inpaint, InpaintOptions
    model, diffusion = load_model("emoji32")
"""
from .models import load_model
from .pipeline import InpaintOptions, inpaint

__version__ = "0.1.0"
__all__ = ["load_model", "inpaint", "InpaintOptions", "__version__"]
