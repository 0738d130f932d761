"""tables/model_config.py: a table model's settings, each None settled to its kind's default."""
from impute_cli import TINY, invoke, linear_table
from repaint_cli.tables.model_config import TrainSettings
from repaint_cli.tables.model_files import load_table_model


def test_training_steps_follow_the_rows_unless_given(tmp_path):
    """About 400 passes over the rows, 1,500 to 3,000 steps per member: a small table over-fits with more."""
    from repaint_cli.tables.model_config import conditional_steps

    assert [conditional_steps(r) for r in (10, 150, 569, 944, 991, 992, 1000, 1500, 1887, 1888, 100_000)] == [
        1500, 1500, 1500, 1500, 1500, 1600, 1600, 2300, 2900, 3000, 3000]
    assert TrainSettings().settled("conditional", rows=150).steps == 1500
    assert TrainSettings().settled("eps", rows=150).steps == 3000, "the RePaint methods keep their 3,000"
    assert TrainSettings(steps=40).settled("conditional", rows=150).steps == 40
    src = tmp_path / "t.csv"
    linear_table(src)  # 60 rows
    r = invoke(src, "--out", tmp_path / "o.csv", "--save-model", tmp_path / "m", *TINY[2:], "--members", 1)
    assert r.exit_code == 0, r.output
    _, _, card = load_table_model(tmp_path / "m.yaml")
    assert card["train"]["steps"] == 1500
