"""Costs in one honest unit (issue 36): `repaint schedule --list` gives every preset's UNet calls,
its forward-equivalents (a guided call counts its backward pass, as measured) and its measured time
per image relative to paper, each computed from the preset as it is now."""
import re

from typer.testing import CliRunner

from repaint_cli.cli.app import app
from repaint_cli.core import schedule
from repaint_cli.core.schedule import (GUIDED_CALL_COST, PRESET_TIME_VS_PAPER, PRESETS, JumpParams, jump_schedule,
                                       preset_guidance, schedule_summary)

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
            assert abs(fe - calls * GUIDED_CALL_COST) < 0.5 and fe > calls, lines[name]
            assert f"a guided call counts {GUIDED_CALL_COST:g}" in lines[name]
        else:
            assert fe == calls, lines[name]


def test_forward_equivalents_follow_the_factor_and_the_schedule(monkeypatch):
    """Computed from the schedule and the named factor, not written down per preset."""
    monkeypatch.setattr(schedule, "GUIDED_CALL_COST", 3.0)
    monkeypatch.setitem(schedule.PRESETS, "draft", JumpParams(t_T=20, jump_length=5, jump_n_sample=2))
    lines = listed()
    assert numbers_before(lines["quick"], "forward-equivalents") == 230 * 3
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
    for name, (params, guidance, rel) in PRESET_TIME_VS_PAPER.items():
        assert PRESETS[name] == params and preset_guidance(name) == guidance, name
        assert 0 < rel < 1
        assert f"time per image {rel:.3f} of paper's" in lines[name], lines[name]


def test_the_two_units_agree_on_the_measured_presets():
    """The measured time and the forward-equivalents (each relative to paper's) agree within a third: the
    factor and the times were measured apart, and a guided preset's time is not its calls' share of paper's."""
    paper_fe = schedule.forward_equivalents(PRESETS["paper"])
    for name, (params, guidance, rel) in PRESET_TIME_VS_PAPER.items():
        by_fe = schedule.forward_equivalents(params, guidance) / paper_fe
        assert 0.75 < rel / by_fe < 1.33, (name, rel, by_fe)
        if guidance:
            calls = schedule_summary(jump_schedule(params))["unet_calls"]
            assert rel > 1.5 * calls / schedule_summary(jump_schedule(PRESETS["paper"]))["unet_calls"], name
