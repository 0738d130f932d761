"""A UNet that loads guided-diffusion checkpoints strictly.

The attribute names below (``input_blocks``, ``in_layers``, ``emb_layers``,
``qkv``, ``proj_out`` ...) *are* the checkpoint format of guided-diffusion and
RePaint: ``celeba256_250000.pt``, ``places256_300000.pt``, OpenAI's
``256x256_diffusion.pt`` and ``256x256_classifier.pt`` all load into these
classes with ``load_state_dict(strict=True)``. Keep them as they are.

Attention runs through ``F.scaled_dot_product_attention``, which gives the
same result as guided-diffusion's explicit softmax (scale 1/sqrt(head_dim)) but
uses fused kernels where PyTorch has them.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, fields
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# The channel multipliers guided-diffusion uses when ``channel_mult`` is ''. The 32 entry
# is ours (guided-diffusion has none for 32 and raises); our embedded model names its own.
DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
    32: (1, 2, 2, 2),
}


def parse_channel_mult(channel_mult, image_size: int) -> tuple:
    if channel_mult in ("", None):
        if image_size not in DEFAULT_CHANNEL_MULT:
            raise ValueError(f"no default channel_mult for image_size {image_size}; give channel_mult")
        return DEFAULT_CHANNEL_MULT[image_size]
    if isinstance(channel_mult, str):
        return tuple(float(c) if "." in c else int(c) for c in channel_mult.split(","))
    return tuple(channel_mult)


def parse_attention_resolutions(attention_resolutions, image_size: int) -> tuple:
    """'32,16,8' (resolutions) -> downsample rates (8, 16, 32) for image_size 256."""
    if isinstance(attention_resolutions, str):
        items = [int(r) for r in attention_resolutions.split(",") if r.strip()]
    elif isinstance(attention_resolutions, int):
        items = [attention_resolutions]
    else:
        items = list(attention_resolutions)
    return tuple(image_size // r for r in items)


@dataclass
class UNetConfig:
    """guided-diffusion's model hyper-parameters, with its names and defaults."""

    image_size: int = 256
    num_channels: int = 256
    num_res_blocks: int = 2
    channel_mult: object = ""
    attention_resolutions: object = "32,16,8"
    num_heads: int = 4
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    resblock_updown: bool = True
    use_scale_shift_norm: bool = True
    learn_sigma: bool = True
    class_cond: bool = False
    num_classes: int = 1000
    use_fp16: bool = False
    dropout: float = 0.0
    use_checkpoint: bool = False
    use_new_attention_order: bool = False
    in_channels: int = 3

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return _from_known_keys(cls, d)


@dataclass
class ClassifierConfig:
    """guided-diffusion's ``classifier_*`` hyper-parameters (RePaint conf keys)."""

    image_size: int = 256
    classifier_width: int = 128
    classifier_depth: int = 2
    classifier_attention_resolutions: object = "32,16,8"
    classifier_use_scale_shift_norm: bool = True
    classifier_resblock_updown: bool = True
    classifier_pool: str = "attention"
    classifier_use_fp16: bool = False
    classifier_channel_mult: object = ""  # our addition for small test models; '' = guided-diffusion's default
    num_classes: int = 1000

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierConfig":
        return _from_known_keys(cls, d)


def _from_known_keys(cls, d: dict):
    """A config from a RePaint conf dict: its keys that name fields, the others ignored."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in fp32 whatever the input dtype, as guided-diffusion does."""

    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def full_precision(x: torch.Tensor):
    """Autocast off (where it is on) for the layers guided-diffusion keeps in fp32 under ``use_fp16``: the
    timestep and class embeddings, each ResBlock's ``emb_layers`` and the final ``out``. Its fp16 conversion
    touches convolutions of the trunk only; autocast would run every linear and conv layer in fp16."""
    kind = x.device.type
    if kind in ("cuda", "cpu", "mps", "xpu") and torch.is_autocast_enabled(kind):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()


def _fp32_parts(model: nn.Module) -> list:
    """The modules of a UNet or classifier whose weights stay fp32 in a half-precision copy (see
    :func:`full_precision`): ``time_embed``, ``label_emb``, every ``emb_layers`` and the final ``out``."""
    found = [getattr(model, name) for name in ("time_embed", "label_emb", "out") if hasattr(model, name)]
    return found + [m.emb_layers for m in model.modules() if isinstance(m, ResBlock)]


def normalization(channels: int) -> nn.Module:
    return GroupNorm32(32, channels)


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.detach().zero_()
    return module


class TimestepBlock(nn.Module):
    def forward(self, x, emb):  # pragma: no cover - interface
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    def __init__(self, channels, use_conv, out_channels=None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, self.out_channels, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    def __init__(self, channels, use_conv, out_channels=None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, self.out_channels, 3, stride=2, padding=1)
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x):
        return self.op(x)


class ResBlock(TimestepBlock):
    def __init__(self, channels, emb_channels, dropout, out_channels=None, use_conv=False,
                 use_scale_shift_norm=False, up=False, down=False):
        super().__init__()
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, self.out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels),
        )
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        elif use_conv:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x, emb):
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        with full_precision(emb):
            emb_out = self.emb_layers(emb.float())
        emb_out = emb_out.type(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class PointwiseConv1d(nn.Conv1d):
    """A 1x1 Conv1d (as the checkpoints store it) that attention applies as a linear map over
    (batch, length, channels); ``invariant.py`` gives it a batch-invariant form on the CPU."""

    def linear(self, x):
        return F.linear(x, self.weight[:, :, 0], self.bias)


class AttentionBlock(nn.Module):
    """Self-attention over spatial positions; ``qkv``/``proj_out`` are 1x1 Conv1d as in the checkpoints."""

    def __init__(self, channels, num_heads=1, num_head_channels=-1, use_new_attention_order=False):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            assert channels % num_head_channels == 0, f"{channels} channels not divisible by {num_head_channels}"
            self.num_heads = channels // num_head_channels
        self.new_order = use_new_attention_order
        self.norm = normalization(channels)
        self.qkv = PointwiseConv1d(channels, channels * 3, 1)
        self.proj_out = zero_module(PointwiseConv1d(channels, channels, 1))

    def forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        length = x.shape[-1]
        heads, ch = self.num_heads, c // self.num_heads
        # qkv and proj_out as linear maps over (b, length, c): the same weights as the 1x1 Conv1d of the
        # checkpoints, but q, k and v come out contiguous in the head dimension (stride(-1) == 1), which
        # SDPA's fused kernels (flash, memory-efficient, cuDNN) need; laid out (b, c, length) they would
        # all fall back to the math kernel (fp32 upcast, the full length x length scores)
        qkv = self.qkv.linear(self.norm(x).transpose(1, 2))
        if self.new_order:  # channels laid out as (q|k|v, heads, ch)
            q, k, v = qkv.reshape(b, length, 3, heads, ch).permute(2, 0, 3, 1, 4)
        else:  # legacy layout: (heads, q|k|v, ch)
            q, k, v = qkv.reshape(b, length, heads, 3, ch).permute(3, 0, 2, 1, 4)
        # each (b, heads, length, ch); SDPA's default scale 1/sqrt(ch) is guided-diffusion's
        a = F.scaled_dot_product_attention(q, k, v)
        h = self.proj_out.linear(a.transpose(1, 2).reshape(b, length, c))
        return (x + h.transpose(1, 2)).reshape(b, c, *spatial)


def _convert_to(module: nn.Module, dtype) -> None:
    """guided-diffusion's fp16 conversion: conv weights only, norms stay fp32."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            m.weight.data = m.weight.data.to(dtype)
            if m.bias is not None:
                m.bias.data = m.bias.data.to(dtype)


class UNetModel(nn.Module):
    """guided-diffusion's UNetModel; called as ``model(x, t, y=None)``, t the training step index."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        mult = parse_channel_mult(cfg.channel_mult, cfg.image_size)
        attn_ds = parse_attention_resolutions(cfg.attention_resolutions, cfg.image_size)
        mc = cfg.num_channels
        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
        self.model_channels = mc
        self.num_classes = cfg.num_classes if cfg.class_cond else None
        self.out_channels = 6 if cfg.learn_sigma else 3
        emb_dim = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if self.num_classes is not None:
            self.label_emb = nn.Embedding(self.num_classes, emb_dim)

        def res(ch_in, ch_out, **kw):
            return ResBlock(ch_in, emb_dim, cfg.dropout, out_channels=ch_out,
                            use_scale_shift_norm=cfg.use_scale_shift_norm, **kw)

        def attn(ch, heads):
            return AttentionBlock(ch, heads, cfg.num_head_channels, cfg.use_new_attention_order)

        ch = input_ch = int(mult[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        skip_chans, ds = [ch], 1
        for level, m in enumerate(mult):
            for _ in range(cfg.num_res_blocks):
                layers = [res(ch, int(m * mc))]
                ch = int(m * mc)
                if ds in attn_ds:
                    layers.append(attn(ch, cfg.num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(mult) - 1:
                down = res(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch, True, ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch, cfg.num_heads), res(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), int(mc * m))]
                ch = int(mc * m)
                if ds in attn_ds:
                    layers.append(attn(ch, heads_up))
                if level and i == cfg.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch, True, ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(input_ch, self.out_channels, 3, padding=1)))
        self.dtype = torch.float32
        if cfg.use_fp16:
            self.convert_to_fp16()

    def fp32_modules(self) -> list:
        """What a half-precision copy keeps in fp32 (``runtime.device.low_precision_copy``)."""
        return _fp32_parts(self)

    def convert_to_fp16(self):
        """Run the trunk in fp16, as guided-diffusion's ``use_fp16``; only sensible on CUDA."""
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            _convert_to(part, torch.float16)
        self.dtype = torch.float16

    def convert_to_fp32(self):
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            _convert_to(part, torch.float32)
        self.dtype = torch.float32

    def forward(self, x, timesteps, y: Optional[torch.Tensor] = None):
        assert (y is not None) == (self.num_classes is not None), "pass y iff the model is class-conditional"
        with full_precision(x):
            emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
            if self.num_classes is not None:
                emb = emb + self.label_emb(y)
        skips = []
        h = x.type(self.dtype)
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        with full_precision(x):
            return self.out(h.type(x.dtype))


class AttentionPool2d(nn.Module):
    """CLIP-style attention pooling of the classifier's head (``classifier_pool: attention``)."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads_channels: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, spacial_dim ** 2 + 1) / embed_dim ** 0.5)
        self.qkv_proj = nn.Conv1d(embed_dim, 3 * embed_dim, 1)
        self.c_proj = nn.Conv1d(embed_dim, output_dim, 1)
        self.num_heads = embed_dim // num_heads_channels

    def forward(self, x):
        b, c, *_ = x.shape
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = x + self.positional_embedding[None].to(x.dtype)
        length, heads, ch = x.shape[-1], self.num_heads, c // self.num_heads
        # as in AttentionBlock: linear over (b, length, c) so that q, k, v have stride(-1) == 1
        qkv = F.linear(x.transpose(1, 2), self.qkv_proj.weight[:, :, 0], self.qkv_proj.bias)
        q, k, v = qkv.reshape(b, length, 3, heads, ch).permute(2, 0, 3, 1, 4)  # the "new order" layout
        a = F.scaled_dot_product_attention(q, k, v)
        pooled = a[:, :, 0].reshape(b, c)  # only the mean token is read out
        return F.linear(pooled, self.c_proj.weight[:, :, 0], self.c_proj.bias)


class EncoderUNetModel(nn.Module):
    """guided-diffusion's noisy-image classifier: the UNet's encoder half and a pooling head."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        mult = parse_channel_mult(cfg.classifier_channel_mult, cfg.image_size)
        attn_ds = parse_attention_resolutions(cfg.classifier_attention_resolutions, cfg.image_size)
        mc = cfg.classifier_width
        emb_dim = mc * 4
        self.model_channels = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def res(ch_in, ch_out, **kw):
            return ResBlock(ch_in, emb_dim, 0.0, out_channels=ch_out,
                            use_scale_shift_norm=cfg.classifier_use_scale_shift_norm, **kw)

        def attn(ch):  # create_classifier uses num_head_channels=64, legacy order
            return AttentionBlock(ch, 1, 64, False)

        ch = int(mult[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(3, ch, 3, padding=1))])
        ds = 1
        for level, m in enumerate(mult):
            for _ in range(cfg.classifier_depth):
                layers = [res(ch, int(m * mc))]
                ch = int(m * mc)
                if ds in attn_ds:
                    layers.append(attn(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
            if level != len(mult) - 1:
                down = res(ch, ch, down=True) if cfg.classifier_resblock_updown else Downsample(ch, True, ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                ds *= 2
        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch), res(ch, ch))
        if cfg.classifier_pool != "attention":
            raise ValueError(f"classifier_pool {cfg.classifier_pool!r} is not supported (only 'attention')")
        self.out = nn.Sequential(
            normalization(ch), nn.SiLU(),
            AttentionPool2d(cfg.image_size // ds, ch, 64, cfg.num_classes),
        )
        self.dtype = torch.float32
        if cfg.classifier_use_fp16:
            self.convert_to_fp16()

    def fp32_modules(self) -> list:
        return _fp32_parts(self)

    def convert_to_fp16(self):
        for part in (self.input_blocks, self.middle_block):
            _convert_to(part, torch.float16)
        self.dtype = torch.float16

    def forward(self, x, timesteps):
        with full_precision(x):
            emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        h = x.type(self.dtype)
        for block in self.input_blocks:
            h = block(h, emb)
        h = self.middle_block(h, emb).type(x.dtype)
        with full_precision(x):
            return self.out(h)
