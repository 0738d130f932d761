"""Training a small unconditional DDPM with our guided-diffusion-compatible UNet.

The objective is the one the paper's checkpoints were trained with (Improved
DDPM's hybrid loss: eps MSE plus the variational bound for the learned
variance), with EMA weights. A run lives in one folder and resumes from its
``state.pt`` after a kill; ``best_ema.safetensors`` holds the EMA weights with
the lowest held-out loss seen so far.
"""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from ..core.diffusion import Diffusion
from ..files import atomic_path, write_bytes_atomic
from ..models.unet import UNetConfig, UNetModel


@dataclass
class TrainConfig:
    size: int = 32
    steps: int = 100_000
    batch_size: int = 64
    lr: float = 3e-4
    warmup: int = 200
    ema_rate: float = 0.999
    noise_schedule: str = "cosine"
    diffusion_steps: int = 1000
    hflip: bool = True
    seed: int = 0
    threads: int = 1
    save_every: int = 100
    eval_every: int = 500
    sample_every: int = 1000
    channels_last: bool = True
    model: dict = field(default_factory=lambda: {
        "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2,2", "attention_resolutions": "8",
        "num_heads": 4, "num_head_channels": 32, "resblock_updown": True, "use_scale_shift_norm": True,
        "learn_sigma": True, "class_cond": False, "dropout": 0.0,
    })

    def unet_config(self) -> UNetConfig:
        return UNetConfig.from_dict({**self.model, "image_size": self.size})

    def model_card_hparams(self) -> dict:
        """The model and diffusion settings in RePaint's conf keys (what ``load_model`` reads)."""
        return {**self.model, "image_size": self.size, "diffusion_steps": self.diffusion_steps,
                "noise_schedule": self.noise_schedule}


def load_training_images(data: str | Path, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 from a prepared ``.npz`` (key ``train``) or a folder of images."""
    data = Path(data)
    if data.suffix == ".npz":
        with np.load(data) as z:
            images = z["train"]
        if images.shape[1:3] != (size, size):
            raise ValueError(f"{data}: images are {images.shape[2]}x{images.shape[1]}, not {size}x{size}")
        return images
    from PIL import Image, ImageOps

    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp", ".bmp"})
    if not files:
        raise ValueError(f"{data}: no images found (png, jpg, webp, bmp); give a folder of images or an .npz")
    out = []
    for f in files:
        im = ImageOps.exif_transpose(Image.open(f)).convert("RGB")
        out.append(np.asarray(ImageOps.fit(im, (size, size), Image.Resampling.LANCZOS)))
    return np.stack(out)


def _to_model_range(batch_u8: torch.Tensor) -> torch.Tensor:
    return batch_u8.permute(0, 3, 1, 2).float() / 127.5 - 1


def _save_atomic(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_weights(model: torch.nn.Module, path: Path, dtype=torch.float16) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}, str(tmp))


@torch.no_grad()
def heldout_loss(model, diffusion: Diffusion, images: torch.Tensor, seed: int = 1234) -> float:
    """Hybrid loss on fixed held-out images, fixed times and fixed noise: comparable across a run."""
    g = torch.Generator().manual_seed(seed)
    x0 = _to_model_range(images)
    t = torch.randint(0, diffusion.num_steps, (len(x0),), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    return diffusion.training_losses(model, x0, t, noise)["loss"].mean().item()


@torch.no_grad()
def sample_grid(model, diffusion_cfg: dict, n: int, path: Path, seed: int = 0, steps: int = 100) -> None:
    """Plain ancestral samples (no mask) on a respaced schedule, saved as one PNG grid."""
    from PIL import Image

    d = Diffusion.create(**{**diffusion_cfg, "timestep_respacing": str(steps)})
    g = torch.Generator().manual_seed(seed)
    size = model.cfg.image_size
    x = torch.randn((n, 3, size, size), generator=g)
    for i in reversed(range(d.num_steps)):
        t = torch.full((n,), i, dtype=torch.int64)
        mean, log_var, _ = d.p_mean_variance(model(x, d.timestep_map[t]), x, t)
        x = mean + (i > 0) * (0.5 * log_var).exp() * torch.randn(x.shape, generator=g)
    img = ((x + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = np.full((rows * (size + 2), cols * (size + 2), 3), 255, np.uint8)
    for k, im in enumerate(img):
        r, c = divmod(k, cols)
        grid[r * (size + 2): r * (size + 2) + size, c * (size + 2): c * (size + 2) + size] = im
    with atomic_path(path) as tmp:
        Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.Resampling.NEAREST).save(tmp)


def train(data, run_dir, cfg: TrainConfig, heldout: np.ndarray | None = None, log=None, on_step=None) -> Path:
    """Train (or resume) in ``run_dir``; returns the path of the best EMA weights.

    ``on_step(step, total, loss)`` is called after every step (progress bars).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    torch.set_num_threads(cfg.threads)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    images = torch.from_numpy(load_training_images(data, cfg.size))
    held = _held_out_images(data, heldout, images, cfg, log)
    run = _TrainingRun.start(cfg, run_dir, log)
    t0, seen, losses = time.time(), 0, []
    while run.step < cfg.steps:
        losses.append(run.one_step(images))
        seen += cfg.batch_size
        step = run.step
        if on_step is not None:
            on_step(step, cfg.steps, losses[-1])
        if step % 50 == 0:
            log(f"step {step} loss {np.mean(losses):.4f} {seen / (time.time() - t0):.1f} img/s")
            losses = []
        if step % cfg.eval_every == 0 or step == cfg.steps:
            run.evaluate(held, log)
        if step % cfg.sample_every == 0:
            sample_grid(run.ema, {"steps": cfg.diffusion_steps, "noise_schedule": cfg.noise_schedule},
                        16, run_dir / f"samples_{step:06d}.png")
        if step % cfg.save_every == 0 or step == cfg.steps:
            run.checkpoint()
    return run_dir / "best_ema.safetensors"


def _held_out_images(data, heldout, images: torch.Tensor, cfg: TrainConfig, log) -> torch.Tensor:
    """The images the held-out loss is measured on: the .npz's held-out set, else the first training images."""
    if heldout is None and Path(data).suffix == ".npz":
        with np.load(data) as z:
            heldout = z["heldout"] if "heldout" in z else None
    held = torch.from_numpy(heldout[:128]) if heldout is not None else images[:128]
    source = "held-out images" if heldout is not None else "training images (no held-out set given)"
    log(f"training on {len(images)} images of {cfg.size}x{cfg.size}; evaluating on {len(held)} {source}")
    return held


@dataclass
class _TrainingRun:
    """The model, its EMA, the optimiser and where they stand: made fresh or resumed from ``state.pt``."""

    cfg: TrainConfig
    run_dir: Path
    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    diffusion: Diffusion
    step: int = 0
    best: float = float("inf")

    @classmethod
    def start(cls, cfg: TrainConfig, run_dir: Path, log) -> "_TrainingRun":
        torch.manual_seed(cfg.seed)
        model = UNetModel(cfg.unet_config())
        ema = copy.deepcopy(model).requires_grad_(False)
        diffusion = Diffusion.create(cfg.diffusion_steps, cfg.noise_schedule, "", learn_sigma=True)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
        run = cls(cfg, run_dir, model, ema, opt, diffusion)
        state_path = run_dir / "state.pt"
        if state_path.exists():
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["opt"])
            run.step, run.best = state["step"], state["best"]
            torch.set_rng_state(state["rng"])
            log(f"resumed from {state_path} at step {run.step} (best held-out loss {run.best:.4f})")
        write_bytes_atomic(run_dir / "config.yaml", yaml.safe_dump(asdict(cfg), sort_keys=False).encode())
        if cfg.channels_last:
            run.model = model.to(memory_format=torch.channels_last)
        log(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
        return run

    def one_step(self, images: torch.Tensor) -> float:
        """One optimiser step on a random batch (warm-up, clipping, EMA); returns its loss."""
        cfg, model = self.cfg, self.model
        idx = torch.randint(0, len(images), (cfg.batch_size,))
        x0 = _to_model_range(images[idx])
        if cfg.hflip:
            flip = torch.rand(cfg.batch_size) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
        if cfg.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        t = torch.randint(0, self.diffusion.num_steps, (cfg.batch_size,))
        loss = self.diffusion.training_losses(model, x0, t)["loss"].mean()
        for g in self.opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (self.step + 1) / cfg.warmup)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        self.opt.step()
        # EMA with a warm-up: early on the average would otherwise stay close to the random init
        decay = min(cfg.ema_rate, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for pe, pm in zip(self.ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        self.step += 1
        return loss.item()

    def evaluate(self, held: torch.Tensor, log) -> None:
        """The EMA's held-out loss, logged to eval.jsonl; the best EMA weights so far kept."""
        ev = heldout_loss(self.ema, self.diffusion, held)
        with open(self.run_dir / "eval.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, "heldout_loss": ev, "time": time.time()}) + "\n")
        if ev < self.best:
            self.best = ev
            save_weights(self.ema, self.run_dir / "best_ema.safetensors")
        log(f"step {self.step} held-out loss {ev:.4f} (best {self.best:.4f})")

    def checkpoint(self) -> None:
        _save_atomic({"model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                      "step": self.step, "best": self.best, "rng": torch.get_rng_state()}, self.run_dir / "state.pt")


def export(run_dir, out_path, name: str | None = None) -> Path:
    """Copy a run's best EMA weights (fp16 safetensors) with a sidecar YAML of its hyper-parameters."""
    run_dir, out_path = Path(run_dir), Path(out_path)
    src = run_dir / "best_ema.safetensors"
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no best EMA weights yet; train longer (they are written at each evaluation)")
    cfg = TrainConfig(**yaml.safe_load((run_dir / "config.yaml").read_text()))
    write_bytes_atomic(out_path, src.read_bytes(), option="--export")
    side = out_path.with_suffix(".yaml")
    if not side.exists():
        write_bytes_atomic(side, yaml.safe_dump(cfg.model_card_hparams(), sort_keys=False).encode(), option="--export")
    return out_path
