"""images/options.py: the four parts of a run's options are checked once, when they are made."""
import pytest
from repaint_cli.images.inpaint import InpaintOptions


def test_option_values_are_checked_once_when_the_parts_are_made():
    """Issue 22: each value is checked where the option part is made (images/options.py), one line each; the
    code that reads the options trusts them."""
    from repaint_cli.images.options import InpaintOptions, ReadOptions, RunError, SampleOptions

    for make, fragment in [(lambda: ReadOptions(mask_convention="white"), "--mask-convention"),
                           (lambda: ReadOptions(fit="stretch"), "--fit"),
                           (lambda: ReadOptions(shard="5/2"), "--shard 5/2"),
                           (lambda: ReadOptions(context=float("nan")), "--context"),
                           (lambda: SampleOptions(method="ddpm"), "--method"),
                           (lambda: SampleOptions(method="ddim", eta=1.5), "--eta"),
                           (lambda: SampleOptions(eta=0.5), "--eta"),
                           (lambda: SampleOptions(guidance=-1.0), "--guidance"),
                           (lambda: InpaintOptions(fit="stretch"), "--fit")]:
        with pytest.raises(RunError, match=fragment.replace("-", r"\-")) as e:
            make()
        assert "\n" not in str(e.value)
    assert ReadOptions(shard="1/2").shard_part == (1, 2) and ReadOptions().shard_part is None
