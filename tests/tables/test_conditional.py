"""Issue 23: the conditional table model, ``repaint impute``'s default (tables/conditional.py)."""
import json

import numpy as np
import pytest
import torch

from impute_cli import TINY, TINY_REPAINT, TINY_USE, invoke, linear_table, one_error_line
from repaint_cli.tables.messages import TableError
from repaint_cli.tables.table_files import read_table
from repaint_cli.tables.conditional import column_groups, draw_samples, point_samples, train_conditional
from repaint_cli.tables.model_config import TableModelConfig, TrainSettings
from repaint_cli.tables.model_files import load_table_model
from repaint_cli.tables.impute import ImputeOptions, impute_table


def test_default_is_the_conditional_model_one_call_per_cell_and_sample(tmp_path):
    src, out = tmp_path / "t.csv", tmp_path / "o.csv"
    linear_table(src)
    r = invoke(src, "--out", out, "--json", *TINY[:-4], "--samples", 3, "--threads", 1)
    assert r.exit_code == 0, r.output
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert stats["method"] == "conditional" and stats["members"] == 2
    assert stats["model_calls_per_row"] == 3 * 2, "3 samples of each of 2 members"
    assert "schedule" not in stats and "guidance" not in stats
    r = invoke(src, "--out", tmp_path / "one.csv", "--json", *TINY[:-4], "--samples", 3, "--members", 1)
    assert r.exit_code == 0 and json.loads(r.stdout.strip().splitlines()[-1])["model_calls_per_row"] == 3, r.output


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
    assert card["model"]["members"] == 2 and type(model).__name__ == "ConditionalEnsemble"
    r = invoke(src, "--out", tmp_path / "p.csv", "--model", f"{saved}.yaml", "--json", *TINY_USE)
    assert r.exit_code == 0 and "training" not in r.stderr, r.output
    assert (tmp_path / "p.csv").read_text() == (tmp_path / "o.csv").read_text(), "a saved model imputes the same"
    r = invoke(src, "--out", tmp_path / "q.csv", "--model", f"{saved}.yaml", *TINY_USE, *TINY_REPAINT)
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
    r = invoke(src, "--out", tmp_path / "p.csv", "--model", f"{saved}.yaml", *TINY_USE, *TINY_REPAINT[2:])
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
    assert np.isfinite(draws).all() and np.array_equal(draws[:, keep], points[:len(draws), keep])
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
    from repaint_cli.tables.schema import infer_columns

    cols = infer_columns(table)
    groups = column_groups(cols)
    assert [len(g) for g in groups] == [1, cols[1].width] and cols[1].width > 1  # the constant k has no width
    assert groups[1] == list(range(1, 1 + cols[1].width))


def test_api_refuses_a_repaint_option_with_the_conditional_method(tmp_path):
    src = tmp_path / "t.csv"
    linear_table(src)
    with pytest.raises(TableError, match="^guidance applies to method repaint") as e:  # the parameter, no flag
        impute_table(read_table(src), ImputeOptions(method="conditional", guidance=3.0))
    assert "--" not in str(e.value)


def test_each_member_trains_the_steps_and_the_first_is_the_single_model():
    """Two members train apart on --train-steps each (progress counts on across them); member 0 is the model
    one member would give, bit for bit, and its samples come first."""
    from repaint_cli.tables.conditional import ConditionalEnsemble

    x, keep = _encoded()
    cfg = TableModelConfig(kind="conditional", width=32, blocks=1)
    seen = []
    pair = train_conditional(x, keep, [[0], [1]], cfg, TrainSettings(steps=16, seed=3),
                             on_step=lambda step, total, loss: seen.append((step, total)))
    assert isinstance(pair, ConditionalEnsemble) and len(pair.members) == 2
    steps = [step for step, total in seen]
    assert steps == sorted(steps) and steps[-1] == 32 and {total for _, total in seen} == {32}
    alone = train_conditional(x, keep, [[0], [1]], TableModelConfig(kind="conditional", width=32, blocks=1, members=1),
                              TrainSettings(steps=16, seed=3))
    assert all(torch.equal(p, q) for p, q in zip(pair.members[0].state_dict().values(), alone.state_dict().values()))
    assert not all(torch.equal(p, q) for p, q in zip(pair.members[0].state_dict().values(),
                                                      pair.members[1].state_dict().values()))
    points = point_samples(pair, x, keep, 2, seed=0)
    assert points.shape == (4,) + x.shape
    assert np.array_equal(points[:2], point_samples(alone, x, keep, 2, seed=0))
    draws = draw_samples(pair, x, keep, 3, seed=0)
    assert draws.shape == (3,) + x.shape and np.isfinite(draws).all()


def test_averaging_two_members_is_no_worse_than_their_mean_error():
    """Why two members: a cell's absolute error under the mean of two predictions is at most the mean of the two
    errors (the triangle inequality), so the pair never loses to the average member; it gains where they differ."""
    rng = np.random.default_rng(0)
    n = 300
    a = rng.normal(size=n)
    x = np.stack([a, a + 0.3 * rng.normal(size=n), a - 0.3 * rng.normal(size=n)], 1).astype(np.float32)
    keep = rng.random(x.shape) > 0.3
    keep[:, 0] |= ~(keep[:, 1] | keep[:, 2])
    miss = ~keep
    pair = train_conditional(x, keep, [[0], [1], [2]], TableModelConfig(kind="conditional", width=32, blocks=1),
                             TrainSettings(steps=150))
    points = point_samples(pair, x, keep, 3, seed=0)
    each = [np.abs(points[3 * m:3 * m + 3].mean(0) - x)[miss].mean() for m in range(2)]
    both = np.abs(points.mean(0) - x)[miss].mean()
    assert both <= np.mean(each) + 1e-6 and both < max(each)


def test_a_card_from_before_members_loads_as_one_model(tmp_path):
    src, saved = tmp_path / "t.csv", tmp_path / "m"
    linear_table(src)
    r = invoke(src, "--out", tmp_path / "o.csv", "--save-model", saved, "--members", 1, *TINY)
    assert r.exit_code == 0, r.output
    card = (tmp_path / "m.yaml").read_text()
    old = "\n".join(line for line in card.splitlines() if "members:" not in line)
    assert old != card
    (tmp_path / "m.yaml").write_text(old + "\n")
    model, _, _ = load_table_model(f"{saved}.yaml")
    assert type(model).__name__ == "ConditionalDenoiser" and model.cfg.members == 1
    r = invoke(src, "--out", tmp_path / "p.csv", "--model", f"{saved}.yaml", *TINY_USE)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.csv").read_text() == (tmp_path / "o.csv").read_text()


@pytest.mark.parametrize("extra, words", [(["--members", 0], "--members 0"),
                                          (["--members", 2, *TINY_REPAINT], "--members is for --method conditional")])
def test_no_members_or_members_with_a_repaint_method_is_one_line(tmp_path, extra, words):
    src = tmp_path / "t.csv"
    linear_table(src)
    r = invoke(src, "--out", tmp_path / "o.csv", *TINY, *extra)
    assert r.exit_code == 2 and words in one_error_line(r), r.output
    assert not (tmp_path / "o.csv").exists()


def test_members_trained_side_by_side_are_the_same_bits_as_in_turn():
    """With workers, the members train in forked processes (Linux), each on one thread with its own seed."""
    from repaint_cli.runtime.apart import can_fork

    if not can_fork():
        pytest.skip("training side by side forks: Linux only (elsewhere the members train in turn)")
    x, keep = _encoded()
    cfg = TableModelConfig(kind="conditional", width=32, blocks=1, members=3)
    seen = []
    apart = train_conditional(x, keep, [[0], [1]], cfg, TrainSettings(steps=15, seed=5), workers=2,
                              on_step=lambda step, total, loss: seen.append(step))
    in_turn = train_conditional(x, keep, [[0], [1]], cfg, TrainSettings(steps=15, seed=5), workers=1)
    for a, b in zip(apart.members, in_turn.members):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert seen[-1] == 45 and seen == sorted(seen)
    assert np.array_equal(point_samples(apart, x, keep, 2, seed=0), point_samples(in_turn, x, keep, 2, seed=0))


def test_a_failing_member_fails_the_training_with_its_reason(monkeypatch):
    from repaint_cli.tables import conditional
    from repaint_cli.runtime.apart import can_fork

    if not can_fork():
        pytest.skip("training side by side forks: Linux only")

    def broken(*args, **kw):
        raise ValueError("no rows to train on")

    monkeypatch.setattr(conditional, "_train", broken)
    x, keep = _encoded()
    with pytest.raises(RuntimeError, match="no rows to train on"):
        train_conditional(x, keep, [[0], [1]], TableModelConfig(kind="conditional", width=8, blocks=1),
                          TrainSettings(steps=4), workers=2)


def test_the_gaussian_base_is_the_closed_form_conditional():
    """E[x_H | x_G] = mean_H + cov_HG (cov_GG + ridge)^-1 (x_G - mean_G), row by row, whatever cells each row gives;
    the base's chunks of rows change nothing."""
    from repaint_cli.tables import conditional as cond

    rng = np.random.default_rng(0)
    dim, rows = 6, 40
    a = rng.normal(size=(dim, dim))
    cov = torch.tensor(a @ a.T + np.eye(dim), dtype=torch.float32)
    mean = torch.tensor(rng.normal(size=dim), dtype=torch.float32)
    v = torch.tensor(rng.normal(size=(rows, dim)), dtype=torch.float32)
    c = torch.tensor(rng.random((rows, dim)) < 0.5, dtype=torch.float32)
    got = cond.gaussian_conditional(mean, cov, v, c).numpy()
    S, m, x = cov.double().numpy(), mean.double().numpy(), v.double().numpy()
    for i in range(rows):
        g, h = np.flatnonzero(c[i].numpy()), np.flatnonzero(c[i].numpy() == 0)
        want = m[h] + S[np.ix_(h, g)] @ np.linalg.solve(S[np.ix_(g, g)] + cond.GAUSSIAN_RIDGE * np.eye(len(g)),
                                                        x[i, g] - m[g])
        np.testing.assert_allclose(got[i, h], want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got[i, g], x[i, g], atol=0.01)  # a given cell: about its value (the ridge)
    old = cond.BASE_ELEMENTS
    try:
        cond.BASE_ELEMENTS = 3 * dim * dim  # chunks of 3 rows
        np.testing.assert_allclose(cond.gaussian_conditional(mean, cov, v, c).numpy(), got, atol=1e-5)
    finally:
        cond.BASE_ELEMENTS = old


def test_the_gaussian_fit_recovers_a_known_gaussian_from_incomplete_rows():
    from repaint_cli.tables.conditional import fit_gaussian

    rng = np.random.default_rng(1)
    cov = np.array([[1.0, 0.8, -0.3], [0.8, 1.0, 0.0], [-0.3, 0.0, 2.0]])
    x = rng.multivariate_normal([1.0, -2.0, 0.5], cov, size=40_000)
    keep = rng.random(x.shape) > 0.3
    mean, got = fit_gaussian(torch.tensor(np.where(keep, x, 0.0)), torch.tensor(keep), 0.1)
    want = 0.9 * cov + 0.1 * np.diag(np.diag(cov))
    np.testing.assert_allclose(mean.numpy(), [1.0, -2.0, 0.5], atol=0.03)
    np.testing.assert_allclose(got.numpy(), want, atol=0.04)
    assert np.linalg.eigvalsh(got.double().numpy()).min() > 0


def test_the_gaussian_shrink_is_chosen_by_held_out_cells():
    """Strongly related columns and many rows: the least shrink predicts held-out cells best; unrelated columns:
    the most."""
    from repaint_cli.tables.conditional import SHRINKS, choose_shrink

    rng = np.random.default_rng(2)
    base = rng.normal(size=(3000, 1))
    related = base + 0.05 * rng.normal(size=(3000, 4))
    unrelated = rng.normal(size=(60, 4))
    for x, shrink in ((related, SHRINKS[0]), (unrelated, SHRINKS[-1])):
        keep = torch.tensor(rng.random(x.shape) > 0.3)
        data = torch.tensor(np.where(keep, x, 0.0), dtype=torch.float32)
        assert choose_shrink(data, keep, seed=5) == shrink


def test_the_model_reads_its_gaussian_base():
    """With the base, the first layer reads the fitted Gaussian's conditional: another covariance, other
    imputations; without it, no base is kept."""
    x, keep = _encoded()
    for base in (True, False):
        cfg = TableModelConfig(kind="conditional", width=32, blocks=1, members=1, gaussian_base=base)
        model = train_conditional(x, keep, [[0], [1]], cfg, TrainSettings(steps=60))
        assert (model.base_cov is not None) == base and model.inp.in_features == (4 if base else 3) * 2
    before = point_samples(model := train_conditional(
        x, keep, [[0], [1]], TableModelConfig(kind="conditional", width=32, blocks=1, members=1),
        TrainSettings(steps=60)), x, keep, 1, seed=0)
    model.base_cov = torch.tensor([[1.0, -0.9], [-0.9, 1.0]])
    assert not np.allclose(point_samples(model, x, keep, 1, seed=0)[0][~keep], before[0][~keep])


def test_a_table_wider_than_the_base_allows_trains_without_it(monkeypatch):
    from repaint_cli.tables import conditional as cond

    x, keep = _encoded()
    monkeypatch.setattr(cond, "BASE_MAX_DIM", 1)
    model = train_conditional(x, keep, [[0], [1]], TableModelConfig(kind="conditional", width=32, blocks=1, members=1),
                              TrainSettings(steps=5))
    assert model.cfg.gaussian_base is False and model.base_cov is None


def test_a_saved_model_keeps_its_base_and_a_card_from_before_it_loads_without(tmp_path):
    src = tmp_path / "t.csv"
    linear_table(src)
    r = invoke(src, "--out", tmp_path / "o.csv", "--save-model", tmp_path / "m", "--members", 1, *TINY)
    assert r.exit_code == 0, r.output
    model, _, card = load_table_model(tmp_path / "m.yaml")
    assert card["model"]["gaussian_base"] is True and model.base_cov is not None
    assert not torch.equal(model.base_cov, torch.eye(model.dim))  # the fitted one, not the placeholder
    r = invoke(src, "--out", tmp_path / "p.csv", "--model", tmp_path / "m.yaml", *TINY_USE)
    assert (tmp_path / "p.csv").read_text() == (tmp_path / "o.csv").read_text()
    # a model saved before the base existed: no buffers in its weights, no field in its card
    r = invoke(src, "--out", tmp_path / "q.csv", "--save-model", tmp_path / "old", "--members", 1,
               "--no-gaussian-base", *TINY)
    assert r.exit_code == 0, r.output
    text = (tmp_path / "old.yaml").read_text()
    (tmp_path / "old.yaml").write_text("\n".join(line for line in text.splitlines() if "gaussian_base" not in line))
    model, _, _ = load_table_model(tmp_path / "old.yaml")
    assert model.cfg.gaussian_base is False and model.base_cov is None
    r = invoke(src, "--out", tmp_path / "s.csv", "--model", tmp_path / "old.yaml", *TINY_USE)
    assert (tmp_path / "s.csv").read_text() == (tmp_path / "q.csv").read_text()


def test_the_gaussian_base_with_a_repaint_method_is_one_line(tmp_path):
    src = tmp_path / "t.csv"
    linear_table(src)
    r = invoke(src, "--out", tmp_path / "o.csv", *TINY, "--gaussian-base", *TINY_REPAINT)
    assert r.exit_code == 2
    assert "--gaussian-base is for --method conditional" in one_error_line(r)
