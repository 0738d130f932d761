"""RePaint's jump schedule: the list of times the sampler walks through.

A step to a smaller t is a reverse (UNet) step; a step to a larger t is an
undo (re-noising) step. The list matches the reference ``get_schedule_jump``
entry for entry (``../shared/fixtures/schedules.json``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..choices import GUIDANCE_CALLS
from ..constraints import whole_number


@dataclass(frozen=True)
class JumpParams:
    t_T: int = 250
    n_sample: int = 1
    jump_length: int = 10
    jump_n_sample: int = 10
    jump2_length: int = 1
    jump2_n_sample: int = 1
    jump3_length: int = 1
    jump3_n_sample: int = 1
    start_resampling: int = 100_000_000

    @classmethod
    def from_dict(cls, d: dict) -> "JumpParams":
        """From a conf's ``schedule_jump_params`` (and overrides): a value that is no whole number (null, 50.9,
        text) raises ValueError naming the key; none is truncated."""
        return cls(**{k: whole_number(v, k) for k, v in d.items() if k in cls.__dataclass_fields__})

    def as_dict(self) -> dict:
        return asdict(self)


def _jump_budget(t_T: int, length: int, n_sample: int) -> dict[int, int]:
    return {j: n_sample - 1 for j in range(0, t_T - length, length)}


def jump_schedule(p: JumpParams) -> list[int]:
    """Times from t_T-1 down to -1, with the paper's jumps back (resampling)."""
    if p.t_T < 1 or p.jump_length < 1 or p.jump_n_sample < 1 or p.n_sample < 1:
        raise ValueError("t_T, n_sample, jump_length and jump_n_sample must be at least 1")
    # three nested levels of jumps, the smallest (jump3) first; a bigger jump refills the smaller ones' budgets
    levels = [(p.jump3_length, p.jump3_n_sample), (p.jump2_length, p.jump2_n_sample), (p.jump_length, p.jump_n_sample)]
    budgets = [_jump_budget(p.t_T, length, n) for length, n in levels]
    t, times = p.t_T, []
    while t >= 1:
        t -= 1
        times.append(t)
        # n_sample: go up and down one step in place, n_sample-1 times
        if t + 1 < p.t_T - 1 and t <= p.start_resampling:
            for _ in range(p.n_sample - 1):
                t += 1
                times.append(t)
                if t >= 0:
                    t -= 1
                    times.append(t)
        for level, (length, _) in enumerate(levels):
            if budgets[level].get(t, 0) > 0 and t <= p.start_resampling - length:
                budgets[level][t] -= 1
                for _ in range(length):
                    t += 1
                    times.append(t)
                budgets[:level] = [_jump_budget(p.t_T, *smaller) for smaller in levels[:level]]
    times.append(-1)
    return times


def schedule_summary(times: list[int]) -> dict:
    pairs = list(zip(times[:-1], times[1:]))
    reverse = sum(1 for a, b in pairs if b < a)
    return {"entries": len(times), "unet_calls": reverse, "undo_steps": len(pairs) - reverse,
            "t_T": max(times) + 1}


# Named sampling presets. 'paper' is the paper's setting; 'quick' and 'fast' were chosen from the paired frontier of
# the embedded model (benchmarks/frontier.py: each candidate minus 'paper' image by image, 96 images on each of six
# masks; benchmarks/RESULTS.md#paired-frontier), on the cost that counts a guided call's backward pass
# (forward-equivalents, GUIDED_CALL_COST): 'quick' is the cheapest candidate ahead of 'paper' in both hole PSNR and
# SSIM on all six masks (20/5/5 with reconstruction guidance 10 on every call: 176 forward-equivalents); 'fast', the
# cheapest within 0.3 dB and 0.01 SSIM of it on all six (the same schedule, guided only on the last call at each
# time: 104, about a twentieth of 'paper's 2,410). emoji32's default is 'fast'.
PRESETS: dict[str, JumpParams] = {
    "paper": JumpParams(t_T=250, jump_length=10, jump_n_sample=10),  # 2,410 UNet calls
    "quick": JumpParams(t_T=20, jump_length=5, jump_n_sample=5),  # 80, all guided
    "fast": JumpParams(t_T=20, jump_length=5, jump_n_sample=5),  # 80, 20 of them guided (PRESET_GUIDANCE_CALLS)
    "draft": JumpParams(t_T=50, jump_length=5, jump_n_sample=2),  # 95
    "noresample": JumpParams(t_T=250, jump_length=10, jump_n_sample=1),  # 250
}


# The reconstruction guidance scale a preset samples with (``--guidance`` overrides it); a preset
# not named here has none: 'paper' is the paper's algorithm, guidance 0.
PRESET_GUIDANCE: dict[str, float] = {"quick": 10.0, "fast": 10.0}

# Which UNet calls take the guidance (``--guidance-calls`` overrides it): "all", or "last": only the last call at
# each time of the schedule, the pass its later steps carry on from; the earlier passes of a jump run the plain
# forward, without the guidance's backward. A preset not named here guides all its calls.
PRESET_GUIDANCE_CALLS: dict[str, str] = {"fast": "last"}


def preset_guidance(preset: str | None) -> float:
    return PRESET_GUIDANCE.get(preset or "paper", 0.0)


def preset_guidance_calls(preset: str | None) -> str:
    return PRESET_GUIDANCE_CALLS.get(preset or "paper", "all")


def guided_calls(times: list[int], which: str = "all") -> list[bool]:
    """One flag per UNet call (reverse step) of the schedule ``times``, in order: whether it takes the guidance."""
    if which not in GUIDANCE_CALLS:
        raise ValueError(f"guidance calls {which!r}: use one of {', '.join(GUIDANCE_CALLS)}")
    calls = [a for a, b in zip(times[:-1], times[1:]) if b < a]  # the time of each reverse step
    if which == "all":
        return [True] * len(calls)
    last = {t: k for k, t in enumerate(calls)}  # a time's last call wins
    return [last[t] == k for k, t in enumerate(calls)]


# What one guided UNet call costs, in plain forward calls: its forward with autograd on plus the
# reconstruction guidance's backward through the UNet, over a forward under no_grad, on the embedded
# model (32 px) at one thread, medians of interleaved pairs on the CPU clock: 1.9 at batch 1, 2.1-2.3 at
# batch 4 and 16 (the frontier's batch); whole guided runs against unguided ones gave 2.0-2.5
# (benchmarks/guided_cost.py --calls; benchmarks/RESULTS.md#guided-call-cost).
# Larger models and GPUs will differ.
GUIDED_CALL_COST = 2.2

# Seconds per image relative to 'paper', as measured: each preset's whole run and paper's in turn on the
# same machine at one thread, 4 images a run, the process's CPU time, the median of 6 rounds
# (benchmarks/guided_cost.py --sampler; benchmarks/RESULTS.md#guided-call-cost). Kept with the schedule, guidance
# scale and guided calls measured, so that a preset changed since shows as not measured.
PRESET_TIME_VS_PAPER: dict[str, tuple[JumpParams, float, str, float]] = {  # name: (schedule, guidance, calls, time)
    "quick": (JumpParams(t_T=20, jump_length=5, jump_n_sample=5), 10.0, "all", 0.087),
    "fast": (JumpParams(t_T=20, jump_length=5, jump_n_sample=5), 10.0, "last", 0.046),
    "draft": (JumpParams(t_T=50, jump_length=5, jump_n_sample=2), 0.0, "all", 0.040),
    "noresample": (JumpParams(t_T=250, jump_length=10, jump_n_sample=1), 0.0, "all", 0.102),
}


def measured_time_vs_paper(preset: str, params: JumpParams, guidance: float, calls: str = "all") -> float | None:
    """The measured time per image relative to paper of ``preset``, if measured with these very settings."""
    if preset == "paper" and params == PRESETS["paper"] and not guidance:
        return 1.0
    jp, g, which, rel = PRESET_TIME_VS_PAPER.get(preset, (None, None, None, None))
    return rel if jp == params and g == guidance and (which == calls or not guidance) else None


def forward_equivalents(params: JumpParams, guidance: float = 0.0, calls: str = "all") -> float:
    """UNet calls counted in plain forward passes: a guided call counts GUIDED_CALL_COST (undo steps, a few
    element-wise operations each, count nothing)."""
    flags = guided_calls(jump_schedule(params), calls)
    guided = sum(flags) if guidance else 0
    return len(flags) - guided + guided * GUIDED_CALL_COST


def resolve_jump_params(preset: str | None = None, conf: dict | None = None, **overrides) -> JumpParams:
    """Preset, then a RePaint conf's ``schedule_jump_params``, then explicit overrides (None = unset)."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    params = PRESETS[preset or "paper"].as_dict()
    if conf and conf.get("schedule_jump_params"):
        params.update(conf["schedule_jump_params"])
    params.update({k: v for k, v in overrides.items() if v is not None})
    return JumpParams.from_dict(params)
