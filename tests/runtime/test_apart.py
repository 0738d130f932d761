"""runtime/apart.py: jobs run side by side in forked processes give what they give in turn, in order."""
import numpy as np
import pytest

from repaint_cli.runtime.apart import can_fork, run_apart

pytestmark = pytest.mark.skipif(not can_fork(), reason="fork is only used on Linux")


def seeded_job(seed):
    def job(report):
        rng = np.random.default_rng(seed)
        for step in range(3):
            report(step, float(seed + step))
        return {"w": rng.normal(size=4), "seed": np.array([seed])}
    return job


def test_results_come_back_in_job_order_with_the_bits_of_a_run_in_turn():
    jobs = [seeded_job(s) for s in (5, 6, 7)]
    heard = []
    apart = run_apart(jobs, workers=2, on_progress=lambda k, step, loss: heard.append((k, step, loss)))
    in_turn = [job(lambda step, loss: None) for job in jobs]
    assert [r["seed"][0] for r in apart] == [5, 6, 7]
    for a, b in zip(apart, in_turn):
        np.testing.assert_array_equal(a["w"], b["w"])
    assert sorted(heard) == sorted((k, step, float(s + step)) for k, s in enumerate((5, 6, 7)) for step in range(3))


def test_a_failing_job_fails_the_run_with_its_reason():
    def broken(report):
        raise ValueError("no rows left")

    with pytest.raises(RuntimeError, match=r"training member 1: ValueError: no rows left"):
        run_apart([seeded_job(1), broken], workers=2)
