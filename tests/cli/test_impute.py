"""cli/impute.py: the options of ``repaint impute`` as the command shows them."""
from impute_cli import runner
from repaint_cli.cli.app import app


def test_out_is_in_the_output_panel_and_samples_short_option():
    r = runner.invoke(app, ["impute", "--help"], env={"COLUMNS": "200"})
    text = r.stdout
    assert text.index("--out") > text.index("Outputs")
    assert "-n" in text[text.index("--samples") - 40:text.index("--samples") + 40]
