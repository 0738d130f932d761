"""Issue 23: the conditional table model, ``repaint impute``'s default (tables/conditional.py)."""
import json

import numpy as np
import pytest
import torch

from test_impute_silent import TINY, TINY_REPAINT, invoke, linear_table, one_error_line
from repaint_cli.tables.codec import TableError, read_table
from repaint_cli.tables.conditional import column_groups, draw_samples, point_samples, train_conditional
from repaint_cli.tables.denoiser import TableModelConfig, TrainSettings, load_table_model
from repaint_cli.tables.impute import ImputeOptions, impute_table


def test_default_is_the_conditional_model_one_call_per_cell_and_sample(tmp_path):
    src, out = tmp_path / "t.csv", tmp_path / "o.csv"
    linear_table(src)
    r = invoke(src, "--out", out, "--json", *TINY[:-4], "--samples", 3, "--threads", 1)
    assert r.exit_code == 0, r.output
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert stats["method"] == "conditional" and stats["model_calls_per_row"] == 3
    assert "schedule" not in stats and "guidance" not in stats


@pytest.mark.parametrize("flag, value", [("--guidance", 5), ("--t-T", 10), ("--preset", "fast"), ("--rounds", 2),
                                         ("--jump-n-sample", 2)])
def test_a_repaint_only_option_with_the_conditional_model_is_one_line(tmp_path, flag, value):
    src = tmp_path / "t.csv"
    linear_table(src)
    r = invoke(src, "--out", tmp_path / "o.csv", flag, value, *TINY)
    assert r.exit_code == 2
    line = one_error_line(r)
    assert flag in line and "--method repaint" in line
    assert not (tmp_path / "o.csv").exists()


def test_a_saved_model_chooses_its_method_and_refuses_another(tmp_path):
    src, saved = tmp_path / "t.csv", tmp_path / "m"
    linear_table(src)
    r = invoke(src, "--out", tmp_path / "o.csv", "--save-model", saved, *TINY)
    assert r.exit_code == 0, r.output
    model, cols, card = load_table_model(f"{saved}.yaml")
    assert card["model"]["kind"] == "conditional" and card["model"]["dropout"] == 0.4
    r = invoke(src, "--out", tmp_path / "p.csv", "--model", f"{saved}.yaml", "--json", *TINY)
    assert r.exit_code == 0 and "training" not in r.stderr, r.output
    assert (tmp_path / "p.csv").read_text() == (tmp_path / "o.csv").read_text(), "a saved model imputes the same"
    r = invoke(src, "--out", tmp_path / "q.csv", "--model", f"{saved}.yaml", *TINY, *TINY_REPAINT)
    assert r.exit_code == 2 and "a conditional model" in one_error_line(r)


def test_a_card_without_a_kind_loads_as_the_eps_model(tmp_path):
    """Cards written before the conditional model name no kind: they are RePaint's eps models."""
    src, saved = tmp_path / "t.csv", tmp_path / "m"
    linear_table(src)
    r = invoke(src, "--out", tmp_path / "o.csv", "--save-model", saved, *TINY, *TINY_REPAINT)
    assert r.exit_code == 0, r.output
    card = (tmp_path / "m.yaml").read_text()
    old = "\n".join(line for line in card.splitlines() if "kind: eps" not in line and "dropout:" not in line)
    assert old != card
    (tmp_path / "m.yaml").write_text(old + "\n")
    model, _, _ = load_table_model(f"{saved}.yaml")
    assert model.cfg.kind == "eps" and type(model).__name__ == "TableDenoiser"
    r = invoke(src, "--out", tmp_path / "p.csv", "--model", f"{saved}.yaml", *TINY, *TINY_REPAINT[2:])
    assert r.exit_code == 0, r.output


def _encoded(n=200, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    x = np.stack([a, 2 * a + 0.1 * rng.normal(size=n)], 1).astype(np.float32)
    keep = rng.random((n, 2)) > 0.3
    keep[:, 0] |= ~keep[:, 1]
    return x, keep


def test_point_samples_keep_observed_cells_and_are_the_same_at_any_thread_count():
    x, keep = _encoded()
    model = train_conditional(x, keep, [[0], [1]], TableModelConfig(kind="conditional", width=32, blocks=1),
                              TrainSettings(steps=60))
    torch.set_num_threads(2)
    two = point_samples(model, x, keep, 2, seed=0)
    torch.set_num_threads(1)
    one = point_samples(model, x, keep, 2, seed=0)
    assert np.array_equal(one, two)
    assert np.array_equal(one[:, keep], np.broadcast_to(x[keep], one[:, keep].shape))
    assert not np.array_equal(one[0], one[1]), "each sample has its own noise"
    assert not np.array_equal(point_samples(model, x, keep, 1, seed=1)[0], one[0])


def test_draws_spread_more_than_point_samples():
    """--draws are samples of the missing cells (a DDPM chain); the point samples are medians given noise."""
    x, keep = _encoded(400)
    model = train_conditional(x, keep, [[0], [1]], TableModelConfig(kind="conditional", width=64, blocks=2),
                              TrainSettings(steps=400))
    miss = ~keep
    points = point_samples(model, x, keep, 6, seed=0)
    draws = draw_samples(model, x, keep, 6, seed=0)
    assert np.isfinite(draws).all() and np.array_equal(draws[:, keep], points[:, keep])
    assert draws.std(0)[miss].mean() > points.std(0)[miss].mean()


def test_training_is_seeded_and_leaves_the_global_rng_alone():
    x, keep = _encoded()
    cfg = TableModelConfig(kind="conditional", width=32, blocks=1)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = train_conditional(x, keep, [[0], [1]], cfg, TrainSettings(steps=30, seed=4))
    assert torch.equal(torch.rand(3), before)
    b = train_conditional(x, keep, [[0], [1]], cfg, TrainSettings(steps=30, seed=4))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_hide_max_zero_hides_nothing_so_training_leaves_the_weights_alone():
    """A training row hides a share U(0, hide_max) of its observed cells, and only hidden cells are scored:
    with hide_max = 0 no cell is a target and no weight moves."""
    x, keep = _encoded()
    cfg = TableModelConfig(kind="conditional", width=32, blocks=1)
    untouched = train_conditional(x, keep, [[0], [1]], cfg, TrainSettings(steps=0, seed=2)).state_dict()
    idle = train_conditional(x, keep, [[0], [1]], cfg, TrainSettings(steps=20, seed=2, hide_max=0.0)).state_dict()
    moved = train_conditional(x, keep, [[0], [1]], cfg, TrainSettings(steps=20, seed=2, hide_max=0.5)).state_dict()
    assert all(torch.equal(idle[k], untouched[k]) for k in untouched)
    assert not all(torch.equal(moved[k], untouched[k]) for k in untouched)


def test_a_wide_table_hides_at_most_hide_columns_of_a_row_and_a_narrow_one_up_to_all():
    from repaint_cli.tables.conditional import HIDE_COLUMNS

    def weights(x, keep, **kw):
        cfg = TableModelConfig(kind="conditional", width=16, blocks=1)
        groups = [[j] for j in range(x.shape[1])]
        return list(train_conditional(x, keep, groups, cfg, TrainSettings(steps=5, **kw)).state_dict().values())

    def same(a, b):
        return all(torch.equal(p, q) for p, q in zip(a, b))

    x, keep = _encoded()
    assert same(weights(x, keep), weights(x, keep, hide_max=1.0))
    rng = np.random.default_rng(1)
    wide = rng.normal(size=(100, 2 * HIDE_COLUMNS)).astype(np.float32)
    wide_keep = rng.random(wide.shape) > 0.2
    assert same(weights(wide, wide_keep), weights(wide, wide_keep, hide_max=0.5))
    assert not same(weights(wide, wide_keep), weights(wide, wide_keep, hide_max=1.0))


def test_dropout_is_on_in_training_only_and_keeps_the_mean():
    from repaint_cli.tables.conditional import _dropout

    h = torch.ones(200, 500)
    assert _dropout(h, 0.4, training=False) is h and _dropout(h, 0.0, training=True) is h
    dropped = _dropout(h, 0.4, training=True)
    assert abs((dropped == 0).float().mean().item() - 0.4) < 0.01
    assert abs(dropped.mean().item() - 1.0) < 0.02


def test_training_falls_back_to_the_plain_adamw_where_torch_has_no_fused_one(monkeypatch):
    """torch before 2.4 has no fused AdamW on the CPU: the plain one trains the same model up to rounding."""
    x, keep = _encoded()
    cfg = TableModelConfig(kind="conditional", width=32, blocks=1)
    fused = train_conditional(x, keep, [[0], [1]], cfg, TrainSettings(steps=30)).state_dict()
    plain_adamw = torch.optim.AdamW

    def old_adamw(params, fused=None, **kw):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be CUDA tensors")
        return plain_adamw(params, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", old_adamw)
    plain = train_conditional(x, keep, [[0], [1]], cfg, TrainSettings(steps=30)).state_dict()
    assert all(torch.allclose(fused[k], plain[k], atol=1e-4) for k in fused)


def test_column_groups_keep_a_one_hot_block_together(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("a,c,k\n" + "".join(f"{i * 0.1:.1f},{'xyz'[i % 3]},7\n" for i in range(30)) + "1.0,,7\n")
    table = read_table(src)
    from repaint_cli.tables.codec import infer_columns

    cols = infer_columns(table)
    groups = column_groups(cols)
    assert [len(g) for g in groups] == [1, cols[1].width] and cols[1].width > 1  # the constant k has no width
    assert groups[1] == list(range(1, 1 + cols[1].width))


def test_api_refuses_a_repaint_option_with_the_conditional_method(tmp_path):
    src = tmp_path / "t.csv"
    linear_table(src)
    with pytest.raises(TableError, match="--guidance"):
        impute_table(read_table(src), ImputeOptions(method="conditional", guidance=3.0))
