"""Beta schedules, respacing and the jump schedule against the reference's own outputs."""
import json
import re

import numpy as np
import pytest
import torch

from conftest import FIXTURES, needs_fixtures
from repaint_cli.core.diffusion import Diffusion, beta_schedule, space_timesteps
from typer.testing import CliRunner

from repaint_cli.cli.app import app
from repaint_cli.core import schedule
from repaint_cli.core.schedule import (GUIDED_CALL_COST, PRESET_TIME_VS_PAPER, PRESETS, JumpParams, jump_schedule,
                                       preset_guidance, preset_guidance_calls, resolve_jump_params,
                                       schedule_summary, guided_calls)


@needs_fixtures
@pytest.mark.parametrize("r", ["250", "100", "50"])
def test_respacing_matches_reference_arrays(r):
    ref = np.load(FIXTURES / "respacing.npz")
    d = Diffusion.create(1000, "linear", r)
    arrays = {**d.arrays.tensors(), "timestep_map": d.timestep_map}
    for name in ["timestep_map", "betas", "alphas_cumprod", "alphas_cumprod_prev", "posterior_variance",
                 "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
                 "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod"]:
        np.testing.assert_allclose(arrays[name].numpy(), ref[f"r{r}_{name}"], rtol=1e-12, atol=1e-15, err_msg=name)


def test_respacing_sections_and_ddim():
    kept = space_timesteps(1000, "10,20")
    assert len(kept) == 30 and kept[0] == 0 and kept[9] == 499 and kept[10] == 500 and kept[-1] == 999
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(1000, "") == list(range(1000))
    with pytest.raises(ValueError):
        space_timesteps(10, "20")


def test_cosine_schedule_shape_and_unrespaced_identity():
    b = beta_schedule("cosine", 1000)
    assert b.shape == (1000,) and float(b.max()) <= 0.999 and float(b[0]) < 1e-4
    ac = torch.cumprod(1 - b, 0)
    assert abs(float(ac[499]) - np.cos((0.5 + 0.008) / 1.008 * np.pi / 2) ** 2 / np.cos(0.008 / 1.008 * np.pi / 2) ** 2) < 1e-9
    full = Diffusion.create(1000, "linear", "")
    # like guided-diffusion, betas are recomputed from the kept cumulative alphas even when all are kept
    assert torch.allclose(full.betas, beta_schedule("linear", 1000), rtol=1e-9, atol=0)
    with pytest.raises(ValueError):
        beta_schedule("quadratic", 10)


@needs_fixtures
def test_jump_schedules_equal_reference_lists():
    cases = json.loads((FIXTURES / "schedules.json").read_text())
    assert len(cases) >= 5
    for case in cases:
        assert jump_schedule(JumpParams.from_dict(case["params"])) == case["times"], case["params"]


def test_paper_schedule_counts():
    s = schedule_summary(jump_schedule(PRESETS["paper"]))
    assert s == {"entries": 4571, "unet_calls": 2410, "undo_steps": 2160, "t_T": 250}
    none = schedule_summary(jump_schedule(PRESETS["noresample"]))
    assert none["unet_calls"] == 250 and none["undo_steps"] == 0


def test_preset_conf_and_override_order():
    p = resolve_jump_params("fast", {"schedule_jump_params": {"t_T": 60, "jump_length": 3}}, jump_length=4)
    assert (p.t_T, p.jump_length, p.jump_n_sample) == (60, 4, 5)
    with pytest.raises(ValueError):
        resolve_jump_params("nope")


def test_respacing_rounds_a_running_sum_like_the_reference():
    # the reference adds the fractional stride up step by step; at .5 ties that differs from stride*j
    kept = space_timesteps(1000, "21")
    assert 499 in kept and 500 not in kept and len(kept) == 21


def test_nested_jumps_terminate_with_the_reference_length():
    p = JumpParams(t_T=40, jump_length=10, jump_n_sample=2, jump2_length=5, jump2_n_sample=2,
                   jump3_length=2, jump3_n_sample=2)
    times = jump_schedule(p)
    assert len(times) == 721  # the reference get_schedule_jump's length for these parameters
    assert times[0] == 39 and times[-1] == -1
    assert all(abs(b - a) == 1 for a, b in zip(times[:-1], times[1:]))


# ----------------------------------------------------------------------------- costs in one honest unit (issue 36)
# `repaint schedule --list` gives every preset's UNet calls, its forward-equivalents (a guided call counts its
# backward pass, as measured) and its measured time per image relative to paper, each computed from the preset
# as it is now.

runner = CliRunner()


def listed() -> dict[str, str]:
    r = runner.invoke(app, ["schedule", "--list"])
    assert r.exit_code == 0, r.output
    return dict(line.split("\t", 1) for line in r.stdout.splitlines())


def numbers_before(line: str, words: str) -> float:
    m = re.search(r"([\d,.]+) " + words, line)
    assert m, (words, line)
    return float(m.group(1).replace(",", ""))


def test_forward_equivalents_are_the_calls_unguided_and_the_measured_factor_more_guided():
    lines = listed()
    assert set(lines) == set(PRESETS)
    guided = [n for n in PRESETS if preset_guidance(n)]
    assert guided and len(guided) < len(PRESETS)  # both kinds are listed
    for name, p in PRESETS.items():
        calls = schedule_summary(jump_schedule(p))["unet_calls"]
        assert numbers_before(lines[name], "UNet calls") == calls
        fe = numbers_before(lines[name], "forward-equivalents")
        if preset_guidance(name):
            guided = sum(guided_calls(jump_schedule(p), preset_guidance_calls(name)))
            assert abs(fe - (calls - guided + guided * GUIDED_CALL_COST)) < 0.5 and fe > calls, lines[name]
            assert f"a guided call counts {GUIDED_CALL_COST:g}" in lines[name]
        else:
            assert fe == calls, lines[name]


def test_forward_equivalents_follow_the_factor_and_the_schedule(monkeypatch):
    """Computed from the schedule and the named factor, not written down per preset."""
    monkeypatch.setattr(schedule, "GUIDED_CALL_COST", 3.0)
    monkeypatch.setitem(schedule.PRESETS, "draft", JumpParams(t_T=20, jump_length=5, jump_n_sample=2))
    lines = listed()
    quick_calls = schedule_summary(jump_schedule(schedule.PRESETS["quick"]))["unet_calls"]
    assert schedule.preset_guidance_calls("quick") == "all"
    assert numbers_before(lines["quick"], "forward-equivalents") == quick_calls * 3
    assert "a guided call counts 3" in lines["quick"]
    draft_calls = schedule_summary(jump_schedule(schedule.PRESETS["draft"]))["unet_calls"]
    assert numbers_before(lines["draft"], "forward-equivalents") == draft_calls != 95
    # the time was measured for the old draft: not shown as the new one's
    assert "time per image vs paper not measured" in lines["draft"]


def test_measured_times_belong_to_the_presets_as_they_are():
    """Each measured time names a preset with its current schedule and scale, and is below paper's."""
    lines = listed()
    assert "time per image 1 (the unit)" in lines["paper"]
    assert PRESET_TIME_VS_PAPER, "no preset's time relative to paper is recorded"
    for name, (params, guidance, calls, rel) in PRESET_TIME_VS_PAPER.items():
        assert PRESETS[name] == params and preset_guidance(name) == guidance, name
        assert calls == preset_guidance_calls(name) or not guidance, name
        assert 0 < rel < 1
        assert f"time per image {rel:.3f} of paper's" in lines[name], lines[name]


def test_the_two_units_agree_on_the_measured_presets():
    """The measured time and the forward-equivalents (each relative to paper's) agree within a third: the
    factor and the times were measured apart, and a guided preset's time is not its calls' share of paper's."""
    paper_fe = schedule.forward_equivalents(PRESETS["paper"])
    for name, (params, guidance, which, rel) in PRESET_TIME_VS_PAPER.items():
        by_fe = schedule.forward_equivalents(params, guidance, which) / paper_fe
        assert 0.75 < rel / by_fe < 1.33, (name, rel, by_fe)
        if guidance:  # each guided call's backward shows in the time: more than the calls' share of paper's
            flags = guided_calls(jump_schedule(params), which)
            share = len(flags) / schedule_summary(jump_schedule(PRESETS["paper"]))["unet_calls"]
            assert rel > (1 + 0.5 * sum(flags) / len(flags)) * share, name


def test_guidance_on_the_last_calls_flags_one_call_per_time_the_last_one():
    """'last': each time of the schedule is guided once, at its last reverse step (the pass the steps below carry on
    from); 'all': every call. Any schedule, nested jumps too."""
    for params in (JumpParams(t_T=20, jump_length=5, jump_n_sample=5), JumpParams(t_T=30, jump_length=10,
                   jump_n_sample=3, jump2_length=3, jump2_n_sample=2), PRESETS["paper"], JumpParams(t_T=7)):
        times = jump_schedule(params)
        steps = [a for a, b in zip(times[:-1], times[1:]) if b < a]  # the time of each UNet call
        assert guided_calls(times, "all") == [True] * len(steps)
        flags = guided_calls(times, "last")
        assert len(flags) == len(steps) and sum(flags) == params.t_T  # one per time
        for k, (t, on) in enumerate(zip(steps, flags)):
            assert on == (t not in steps[k + 1:]), (params, k, t)
    assert guided_calls([4, 3, 2, 1, 0, -1], "last") == [True] * 5  # no resampling: every call is a time's last
    with pytest.raises(ValueError, match="use one of all, last"):
        guided_calls([1, 0, -1], "some")


def test_forward_equivalents_count_only_the_guided_calls_backward():
    p = JumpParams(t_T=20, jump_length=5, jump_n_sample=5)
    assert schedule.forward_equivalents(p, 10.0, "all") == pytest.approx(80 * GUIDED_CALL_COST)
    assert schedule.forward_equivalents(p, 10.0, "last") == pytest.approx(60 + 20 * GUIDED_CALL_COST)
    assert schedule.forward_equivalents(p, 0.0, "last") == 80  # without guidance the choice costs nothing
