"""Batch-invariant CPU inference: an image's UNet output is the same bits in any batch, at any position.

PyTorch's CPU kernels are deterministic run to run, but several of the UNet's
layers give an image a result that depends on the *other* images of its batch
(measured with torch 2.13 on an AVX-512 CPU: benchmarks/RESULTS.md#batch-invariance):

- ``Linear``: MKL's GEMM blocks the rows of the batch together, so the order
  of a row's dot-product sums changes with the number of rows.
- ``Conv1d``/``Conv2d``: PyTorch sends a convolution to oneDNN or to its own
  im2col kernel by batch size (a single small image, or a 1x1 kernel on one
  thread below 16 images, goes to the native kernel), and the two round
  differently. oneDNN's convolution (``brg_conv_fwd``) gives every image the
  same result at any batch size, so we call it directly, whatever the batch.
- ``GroupNorm`` on channels_last input of 32x32 pixels or more, on more than
  one thread: PyTorch then splits batch x pixels between the threads and adds
  the partial sums per thread, so where an image's pixels are cut depends on
  the batch; batches that are a multiple of the thread count keep every image
  whole in one thread, others are padded to one. Smaller maps (one thread per
  image and group) and contiguous input are already invariant.
- ``SiLU`` (and any element-wise op with a transcendental function) on a thread
  count whose chunks do not fall on whole vector blocks: the last elements of
  a chunk go through scalar code that rounds differently; then one call per image.
- A one-image batch often carries an arbitrary stride on its batch dimension
  after an element-wise op, which PyTorch reads as another memory format; the
  UNet's blocks restore the stride a batch would have.

Attention (``F.scaled_dot_product_attention``), the element-wise layers,
up/down-sampling and the timestep embedding are invariant as they are.

The replacements below keep every module's class hierarchy, attribute names
and parameters (so state-dict keys and strict loading are unchanged): a module
is switched by giving it a subclass whose ``forward`` takes the invariant path
for CPU fp32 inference and falls back to the plain layer anywhere else (CUDA,
other dtypes, autograd).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from .unet import GroupNorm32, PointwiseConv1d, TimestepBlock, TimestepEmbedSequential

# PyTorch's channels_last GroupNorm kernel splits batch x pixels between threads from this
# many pixels per map on (aten/src/ATen/native/cpu/group_norm_kernel.cpp, feature_map_threshold).
GROUPNORM_SPLIT_PIXELS = 1024
GROUPNORM_PER_IMAGE = 1 << 20  # elements per image from which GroupNorm runs on one thread (see below)


def canonical_batch_stride(x: torch.Tensor) -> torch.Tensor:
    """``x`` with a one-image batch's batch stride set as in a batch of several (a view, no copy).

    A one-image result of an element-wise op can come out with an arbitrary stride on its size-1
    batch dimension (e.g. (96, 1, 1536, 96) for a channels_last 96x16x16 map); PyTorch then no longer
    sees it as channels_last and, for GroupNorm, runs another kernel that rounds differently.
    """
    if x.dim() < 2 or x.shape[0] != 1:
        return x
    extent = max((st * sz for st, sz in zip(x.stride()[1:], x.shape[1:]) if sz > 1), default=1)
    if x.stride(0) == extent:
        return x
    return x.as_strided(x.shape, (extent, *x.stride()[1:]), x.storage_offset())


def _plain(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Where the plain layer runs: anything but CPU fp32 inference."""
    return (x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
            or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)))


@contextlib.contextmanager
def one_thread():
    """PyTorch (and MKL) on one thread inside the block, as many as before after it (also when the
    block raises). The one copy: the tables' training and sampling use it through ``runtime.threads``.

    Here: MKL's batched GEMM may split a problem's output columns between threads when the problems are
    fewer than the threads (a lone image on 3 threads: blocks of 43 columns whose tails run other
    code and round differently); on one thread every problem is computed by the same code in order.
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _gemm_per_problem(x: torch.Tensor, weight_t: torch.Tensor, bias) -> torch.Tensor:
    """``x`` (b, rows, in) times ``weight_t`` (in, out) as b identical problems, on one thread (see
    :func:`one_thread`): each problem's bits depend on it alone, whatever b and the thread count."""
    b = x.shape[0]
    w = weight_t.expand(b, -1, -1)
    with one_thread():
        if bias is None:
            return torch.bmm(x, w)
        return torch.baddbmm(bias.expand(b, 1, -1), x, w)


class InvariantLinear(nn.Linear):
    """A batched matrix product whose batch dimension is the rows (2-D input) or the images (3-D and
    more): one product per row or image, each computed alike whatever the batch (MKL's batched GEMM
    over identical problems, on one thread)."""

    def forward(self, x):
        if x.dim() < 2 or _plain(x, self.weight):
            return super().forward(x)
        if x.dim() == 2:
            return _gemm_per_problem(x.unsqueeze(1), self.weight.t(), self.bias).squeeze(1)
        # (b, ..., in), as diffusers' attention applies its projections to (b, pixels, channels): one
        # GEMM per image
        rows = x.reshape(x.shape[0], -1, x.shape[-1])
        return _gemm_per_problem(rows, self.weight.t(), self.bias).reshape(*x.shape[:-1], -1)


def _onednn_usable(conv: nn.Module) -> bool:
    return (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


def _invariant_conv(conv, x, plain_forward):
    """oneDNN's convolution at every batch size; where oneDNN is missing, one call per image."""
    if _plain(x, conv.weight):
        return plain_forward(x)
    x = canonical_batch_stride(x)
    if _onednn_usable(conv):
        return torch.ops.aten.mkldnn_convolution(x, conv.weight, conv.bias, conv.padding, conv.stride,
                                                 conv.dilation, conv.groups)
    if x.shape[0] == 1:
        return plain_forward(x)
    return torch.cat([plain_forward(xi) for xi in x.split(1)])


class InvariantConv1d(nn.Conv1d):
    def forward(self, x):
        return _invariant_conv(self, x, super().forward)


class InvariantPointwiseConv1d(PointwiseConv1d):
    """Attention's qkv and proj_out: as a convolution, oneDNN's; as a linear map over (b, length, c),
    one GEMM per image (a batched product over identical problems), whatever the batch."""

    def forward(self, x):
        return _invariant_conv(self, x, super().forward)

    def linear(self, x):
        if x.dim() != 3 or _plain(x, self.weight):
            return super().linear(x)
        return _gemm_per_problem(x, self.weight[:, :, 0].t(), self.bias)


class InvariantConv2d(nn.Conv2d):
    def forward(self, x):
        return _invariant_conv(self, x, super().forward)


def _invariant_group_norm(x: torch.Tensor, plain_forward) -> torch.Tensor:
    """GroupNorm whose per-image statistics are summed in the same order whatever the batch and the
    number of threads: in order from an image's first pixel to its last, as on one thread.

    PyTorch's channels_last kernel (maps of 32x32 pixels or more) cuts batch x pixels into one equal
    chunk per thread, each thread summing its pixels in order, and adds the threads' partial sums.
    When the batch is a multiple of the thread count every chunk holds whole images, so each image
    is summed by one thread from its first pixel to its last, exactly as on one thread: the
    canonical result. Other batches (a lone image on two threads, say) are padded with zero
    images up to the next multiple, and the padding is dropped from the output.

    Padding costs up to threads - 1 images of work, so large maps (from ``GROUPNORM_PER_IMAGE``
    elements per image: 256 px models, run one image at a time on the CPU) run on one thread
    instead (a norm is a few milliseconds there, against seconds for the UNet call). The choice
    depends on the layer's shape and the thread count only, never on the batch. Off the CPU, and where
    a gradient flows, the plain layer.
    """
    if x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad):
        return plain_forward(x)
    x = canonical_batch_stride(x)
    n, threads = x.shape[0], torch.get_num_threads()
    if (x.dim() != 4 or threads == 1 or x.shape[2] * x.shape[3] < GROUPNORM_SPLIT_PIXELS
            or not x.is_contiguous(memory_format=torch.channels_last)):
        return plain_forward(x)
    if x[0].numel() >= GROUPNORM_PER_IMAGE:
        with one_thread():
            return plain_forward(x)
    if n % threads:
        pad = x.new_zeros((threads - n % threads, *x.shape[1:])).contiguous(memory_format=torch.channels_last)
        return plain_forward(torch.cat([x, pad]))[:n]
    return plain_forward(x)


class InvariantGroupNorm32(GroupNorm32):
    """GroupNorm32 made batch-invariant on the CPU (:func:`_invariant_group_norm`)."""

    def forward(self, x):
        return _invariant_group_norm(x, super().forward)


class InvariantGroupNorm(nn.GroupNorm):
    """torch's own GroupNorm (diffusers' UNet2DModel uses it) made batch-invariant on the CPU."""

    def forward(self, x):
        return _invariant_group_norm(x, super().forward)


class InvariantTimestepEmbedSequential(TimestepEmbedSequential):
    """The UNet's blocks with every layer's input and output in the canonical batch layout, so that
    layout-driven kernel choices (GroupNorm, pooling, attention's reshapes) are those of a batch."""

    def forward(self, x, emb):
        for layer in self:
            x = canonical_batch_stride(x)
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return canonical_batch_stride(x)


# PyTorch splits an element-wise op over n elements into k = min(threads, ceil(n / GRAIN)) equal
# chunks (at::internal::GRAIN_SIZE) and runs each chunk's last n mod 2*vector-width elements through
# the scalar code, which rounds transcendental functions differently from the vector code.
ELEMENTWISE_GRAIN = 32768
VECTOR_BLOCK = 64  # a multiple of 2x the vector width in floats (AVX-512: 32, AVX2: 16)


def elementwise_split_aligned(numel: int, threads: int) -> bool:
    """True when every chunk boundary of an element-wise op over ``numel`` elements falls on a whole
    vector block, so that every element goes through the vector code."""
    if numel % VECTOR_BLOCK:
        return False
    if threads <= 1 or numel < ELEMENTWISE_GRAIN:
        return True
    chunks = min(threads, -(-numel // ELEMENTWISE_GRAIN))
    return numel % (chunks * VECTOR_BLOCK) == 0


def aligned_length(numel: int, threads: int) -> int:
    """The smallest length from ``numel`` on whose thread split every element goes through the vector code."""
    length = -(-numel // VECTOR_BLOCK) * VECTOR_BLOCK
    while not elementwise_split_aligned(length, threads):
        length += VECTOR_BLOCK
    return length


class InvariantSiLU(nn.SiLU):
    """SiLU whose per-element rounding depends neither on where the thread split falls nor on the
    batch: where a split would send some elements through the scalar code, the tensor (in memory
    order) is padded to a length whose split sends all of them through the vector code, as a
    1-thread call on a multiple of the vector block does. The same bits at any thread count."""

    def forward(self, x):
        if x.device.type != "cpu" or not x.is_floating_point():
            return super().forward(x)
        fmt = _dense_format(x)
        x = x.contiguous(memory_format=fmt)  # no copy when it already is
        numel = x.numel()
        if elementwise_split_aligned(numel, torch.get_num_threads()):
            return super().forward(x)
        flat = x.new_zeros(aligned_length(numel, torch.get_num_threads()))
        flat[:numel] = _memory_order(x)
        out = torch.empty_like(x, memory_format=fmt)
        _memory_order(out).copy_(F.silu(flat)[:numel])
        return out


def _memory_order(x: torch.Tensor) -> torch.Tensor:
    """A 1-D view of dense ``x`` (contiguous or channels_last) in the order of its memory."""
    return (x.permute(0, 2, 3, 1) if x.dim() == 4 and not x.is_contiguous() else x).view(-1)


def _dense_format(x):
    return torch.channels_last if x.dim() == 4 and not x.is_contiguous() else torch.contiguous_format


# plain class -> its invariant subclass (exact types only: other subclasses are left alone)
INVARIANT = {nn.Linear: InvariantLinear, nn.Conv1d: InvariantConv1d, PointwiseConv1d: InvariantPointwiseConv1d,
             nn.Conv2d: InvariantConv2d,
             GroupNorm32: InvariantGroupNorm32, nn.GroupNorm: InvariantGroupNorm, nn.SiLU: InvariantSiLU,
             TimestepEmbedSequential: InvariantTimestepEmbedSequential}
PLAIN = {v: k for k, v in INVARIANT.items()}


def set_batch_invariant(model: nn.Module, on: bool = True) -> nn.Module:
    """Switch every layer of ``model`` listed in ``INVARIANT`` to (or back from) its batch-invariant
    form, in place; names, parameters and state-dict keys stay as they are."""
    table = INVARIANT if on else PLAIN
    for m in model.modules():
        new = table.get(type(m))
        if new is not None:
            m.__class__ = new
    return model


def is_batch_invariant(model: nn.Module) -> bool:
    """True when some layer of ``model`` runs its batch-invariant form."""
    return any(type(m) in PLAIN for m in model.modules())


# --------------------------------------------------------------------------- start-up self-check

_SELF_CHECKED: dict = {}  # thread count -> None (passed) or what failed


def self_check() -> "str | None":
    """None when the batch-invariant layers keep their promise on this CPU and PyTorch build at the
    current thread count, else what failed (once per thread count, a few milliseconds).

    The replacements above lean on PyTorch's internals (which kernel runs for which shape, where
    the thread split falls, ``aten.mkldnn_convolution``): another build may differ. Each layer, in
    shapes that exercise those internals, runs on a lone image and inside batches of 5, 3 and 2.
    """
    threads = torch.get_num_threads()
    if threads not in _SELF_CHECKED:
        _SELF_CHECKED[threads] = _first_variant_probe()
    return _SELF_CHECKED[threads]


def _probes():
    """(name, batch-invariant layer as a callable, input of 5 images) for each kind of layer."""
    g = torch.Generator().manual_seed(0)
    cl = torch.channels_last

    def rand(*shape, fmt=torch.contiguous_format):
        return torch.randn(shape, generator=g).contiguous(memory_format=fmt)

    def switched(m):
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        return set_batch_invariant(m.eval())

    yield "Linear", switched(nn.Linear(128, 128)), rand(5, 128)
    yield "Linear on 3-D input", switched(nn.Linear(64, 64)), rand(5, 64, 64)
    yield "attention's linear map", switched(PointwiseConv1d(64, 192, 1)).linear, rand(5, 64, 64)
    yield "Conv1d", switched(nn.Conv1d(64, 192, 1)), rand(5, 64, 64)
    yield "Conv2d", switched(nn.Conv2d(64, 64, 3, padding=1)).to(memory_format=cl), rand(5, 64, 8, 8, fmt=cl)
    yield "GroupNorm", switched(nn.GroupNorm(8, 32)), rand(5, 32, 32, 32, fmt=cl)
    yield "GroupNorm32", switched(GroupNorm32(8, 32)), rand(5, 32, 32, 32, fmt=cl)
    yield "SiLU", switched(nn.SiLU()), rand(5, 32, 33, 33, fmt=cl)  # 34848 elements per image: split at 2+ threads
    yield "scaled_dot_product_attention", lambda q: F.scaled_dot_product_attention(q, q, q), rand(5, 2, 64, 32)


def _first_variant_probe() -> "str | None":
    try:
        with torch.no_grad():
            for name, layer, x in _probes():
                alone = [layer(x[i:i + 1]) for i in range(len(x))]
                for start, size in ((0, 5), (1, 3), (3, 2)):
                    out = layer(x[start:start + size])
                    for i in range(size):
                        if not torch.equal(out[i:i + 1], alone[start + i]):
                            return f"{name}: image {start + i} alone differs from it in a batch of {size}"
    except Exception as e:  # a PyTorch without the internals used here
        return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
    return None
