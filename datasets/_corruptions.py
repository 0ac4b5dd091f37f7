"""Graded image corruptions (ImageNet-C style, as used by Treyer's MedMNIST robustness study).

Five corruptions at severities 1–5 with the parameter tables of seed-algorithms.md §4.4::

    from xbench.datasets._corruptions import corrupt, corruption_seeds
    seeds = corruption_seeds(sample_indices, "motion_blur", 3)        # one int64 seed per image
    x3 = corrupt(images, "motion_blur", 3, seeds)                      # (N,C,H,W) in [0, 1]

Why a counter-based generator: every random number is a hash of (image seed, stream, element
index), so an image gets the same corruption alone or inside any batch, in any order, on any
device (up to float rounding of log/cos), with no per-image ``torch.Generator`` loop.

Why 8-bit emulation (``quantize=True``, the default): the source corrupts uint8 images and casts
the result back to uint8 (truncation, as ``np.uint8`` does); without it, small severities would
differ from the published ones by sub-level noise.

The source's normalisation mismatch ([BUG] in §4.4: clean test images in [−1, 1], corrupted ones
min-max stretched per image to [0, 1]) is reproduced only with ``legacy_minmax=True``: each input
image, whatever its range, is then stretched to [0, 1] before it is corrupted. Datasets that offer
the legacy behaviour say so in ``Dataset.info["corruption_options"]``; pass those on with
``corrupt(..., **corruption_options(dataset))``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from xbench.errors import XbenchError, did_you_mean

CORRUPTIONS = ("gaussian_noise", "speckle_noise", "motion_blur", "contrast", "brightness")
SEVERITIES = (1, 2, 3, 4, 5)

# seed-algorithms.md §4.4, severity 1..5
GAUSSIAN_NOISE_SD = (0.08, 0.12, 0.18, 0.26, 0.38)
SPECKLE_NOISE_SD = (0.15, 0.20, 0.35, 0.45, 0.60)
MOTION_BLUR = ((10, 3.0), (15, 5.0), (15, 8.0), (15, 12.0), (20, 15.0))  # (radius, sigma)
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
MOTION_ANGLE_DEG = 45.0  # angle ~ U(-45°, 45°)

# --- a counter-based RNG: SplitMix64 on int64 tensors (wrapping arithmetic, logical shifts) ---


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


_GAMMA = _signed(0x9E3779B97F4A7C15)
_MUL1 = _signed(0xBF58476D1CE4E5B9)
_MUL2 = _signed(0x94D049BB133111EB)
STREAMS = {"normal": 1, "angle": 2}


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic)."""
    return (x >> k).bitwise_and_((1 << (64 - k)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser, in place on a fresh tensor: a bijective 64-bit hash, bit-identical on
    CPU and CUDA (int64 products wrap)."""
    x = x.clone()
    x.bitwise_xor_(_shr(x, 30)).mul_(_MUL1)
    x.bitwise_xor_(_shr(x, 27)).mul_(_MUL2)
    return x.bitwise_xor_(_shr(x, 31))


def _hash_bits(seeds: torch.Tensor, stream: int, count: int) -> torch.Tensor:
    """``(N, count)`` int64 hashes of ``(seeds[n], stream, i)``: a SplitMix64 sequence per image."""
    key = mix64(seeds.to(torch.int64).reshape(-1, 1) * _GAMMA + stream)
    counter = torch.arange(1, count + 1, device=seeds.device, dtype=torch.int64).mul_(_GAMMA)
    return mix64(key + counter[None, :])


def _to_uniform(bits: torch.Tensor, shift: int) -> torch.Tensor:
    """24 of the 64 bits (from ``shift`` up) as float32 uniforms in (0, 1), never 0 or 1."""
    return (_shr(bits, shift).bitwise_and_((1 << 24) - 1).to(torch.float32) + 0.5).mul_(1.0 / (1 << 24))


def hash_uniform(seeds: torch.Tensor, stream: int, count: int) -> torch.Tensor:
    """``(N, count)`` float32 uniforms in (0, 1): element ``i`` of row ``n`` depends only on
    ``(seeds[n], stream, i)``."""
    return _to_uniform(_hash_bits(seeds, stream, count), 40)


def hash_normal(seeds: torch.Tensor, count: int) -> torch.Tensor:
    """``(N, count)`` standard normals by Box–Muller: one 64-bit hash gives two 24-bit uniforms,
    which give two normals (the cosine half first, then the sine half)."""
    pairs = (count + 1) // 2
    bits = _hash_bits(seeds, STREAMS["normal"], pairs)
    radius = _to_uniform(bits, 40).log_().mul_(-2.0).sqrt_()
    theta = _to_uniform(bits, 16).mul_(2.0 * math.pi)
    return torch.cat([radius * torch.cos(theta), radius.mul_(torch.sin(theta))], dim=1)[:, :count]


def corruption_seeds(indices: torch.Tensor, kind: str, severity: int, seed: int = 0) -> torch.Tensor:
    """One int64 seed per sample from (sample index, corruption, severity, run seed).

    The seed of an image never depends on which other images are corrupted with it.
    """
    _check_kind(kind)
    indices = torch.as_tensor(indices, dtype=torch.int64)
    salt = torch.tensor([_signed(int(seed) % (1 << 64))], dtype=torch.int64)
    for part in (CORRUPTIONS.index(kind), int(severity)):
        salt = mix64(salt * _GAMMA + part)
    return mix64(indices.reshape(-1) * _GAMMA + salt.to(indices.device))


def corruption_options(dataset: Any) -> dict[str, Any]:
    """The keyword options a dataset asks corruptions to use (``legacy_minmax``), from its info."""
    info: Mapping[str, Any] = getattr(dataset, "info", None) or {}
    return dict(info.get("corruption_options", {}))


# --- the corruptions, each (N, C, H, W) in [0, 1] -> same ---


def _gaussian_noise(x: torch.Tensor, severity: int, seeds: torch.Tensor) -> torch.Tensor:
    c = GAUSSIAN_NOISE_SD[severity - 1]
    noise = hash_normal(seeds, x[0].numel()).view_as(x).to(x.dtype)
    return x + noise * c


def _speckle_noise(x: torch.Tensor, severity: int, seeds: torch.Tensor) -> torch.Tensor:
    c = SPECKLE_NOISE_SD[severity - 1]
    noise = hash_normal(seeds, x[0].numel()).view_as(x).to(x.dtype)
    return x + x * noise * c


def motion_kernel(radius: int, sigma: float) -> torch.Tensor:
    """The one-sided Gaussian taps ``w_i ∝ exp(-i²/2σ²)``, ``i = 0..2·radius``, summing to 1."""
    i = torch.arange(2 * radius + 1, dtype=torch.float64)
    w = torch.exp(-(i**2) / (2 * sigma**2))
    return (w / w.sum()).float()


def motion_angles(seeds: torch.Tensor) -> torch.Tensor:
    """Per-image blur angle in degrees, U(-45, 45), from the image's seed."""
    u = hash_uniform(seeds, STREAMS["angle"], 1)[:, 0]
    return (2 * u - 1) * MOTION_ANGLE_DEG


def _motion_blur(x: torch.Tensor, severity: int, seeds: torch.Tensor) -> torch.Tensor:
    """Shift-accumulate along each image's own angle as ImageNet-C's ``imagecorruptions`` does:
    ``out(p) = Σ_i w_i · x(p + s_i)`` with ``s_i = ceil(i·d − 0.5)``, ``d = (sin a, cos a)`` (rows,
    columns), edge pixels replicated beyond the border. Why this sign and rounding: they are the
    source's (imgaug wraps ``imagecorruptions._motion_blur``), so a bright dot trails towards −d, and
    halves round down (``ceil(v − 0.5)``), not to even; ``d`` is formed as it forms it (point/hypot).

    The loop runs over the (at most 41) taps, never over images: each tap is one batched gather.
    The source stops accumulating once a shift exceeds the image (its images are ≥ 32 px); here the
    border is replicated instead, so every tap's weight is kept at any size.
    """
    radius, sigma = MOTION_BLUR[severity - 1]
    n, c, h, w = x.shape
    width = 2 * radius + 1
    weights = motion_kernel(radius, sigma).to(x.device, x.dtype)
    angle = torch.deg2rad(motion_angles(seeds).double())
    point_y, point_x = width * torch.sin(angle), width * torch.cos(angle)
    hypot = torch.hypot(point_y, point_x)
    taps = torch.arange(width, device=x.device, dtype=torch.float64)
    dy = torch.ceil(taps[None, :] * point_y[:, None] / hypot[:, None] - 0.5).long()  # (N, T)
    dx = torch.ceil(taps[None, :] * point_x[:, None] / hypot[:, None] - 0.5).long()
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    flat = x.reshape(n, c, h * w)
    out = torch.zeros_like(flat)
    for i in range(width):
        r = (rows[None, :] + dy[:, i:i + 1]).clamp_(0, h - 1)  # (N, H)
        q = (cols[None, :] + dx[:, i:i + 1]).clamp_(0, w - 1)  # (N, W)
        index = (r[:, :, None] * w + q[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
        out.add_(flat.gather(2, index), alpha=float(weights[i]))
    out = out.view(n, c, h, w)
    return out


def _contrast(x: torch.Tensor, severity: int, seeds: torch.Tensor) -> torch.Tensor:
    c = CONTRAST[severity - 1]
    mean = x.mean(dim=(2, 3), keepdim=True)  # per image and channel, as ImageNet-C
    return (x - mean) * c + mean


def _brightness(x: torch.Tensor, severity: int, seeds: torch.Tensor) -> torch.Tensor:
    """V += c in HSV, hue and saturation kept. With H and S fixed every RGB channel is proportional
    to V, so this is ``x · V'/V`` (and V' gray where V = 0); for one channel it is ``x + c``."""
    c = BRIGHTNESS[severity - 1]
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + c).clamp(0.0, 1.0)
    scale = torch.where(v > 0, v_new / v.clamp_min(1e-12), torch.zeros_like(v))
    return torch.where(v > 0, x * scale, v_new.expand_as(x))


_FUNCTIONS = {
    "gaussian_noise": _gaussian_noise,
    "speckle_noise": _speckle_noise,
    "motion_blur": _motion_blur,
    "contrast": _contrast,
    "brightness": _brightness,
}


def _check_kind(kind: str) -> None:
    if kind not in _FUNCTIONS:
        raise XbenchError(f"Unknown corruption {kind!r}{did_you_mean(kind, CORRUPTIONS)}. "
                          f"Corruptions: {', '.join(CORRUPTIONS)}.")


def _minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-image min-max stretch to [0, 1] (cv2 NORM_MINMAX over all channels); constant -> 0."""
    flat = x.flatten(1)
    lo = flat.amin(1).view(-1, 1, 1, 1)
    hi = flat.amax(1).view(-1, 1, 1, 1)
    span = hi - lo
    return torch.where(span > 0, (x - lo) / span.clamp_min(1e-12), torch.zeros_like(x))


def corrupt(images: torch.Tensor, kind: str, severity: int, seeds: torch.Tensor, *, quantize: bool = True,
            legacy_minmax: bool = False) -> torch.Tensor:
    """Corrupt a batch: ``images`` ``(N, C, H, W)`` float in [0, 1] on any device, ``severity`` 1..5,
    ``seeds`` ``(N,)`` int64 (one per image, e.g. from :func:`corruption_seeds`).

    Returns ``(N, C, H, W)`` in [0, 1] on the images' device and dtype, deterministic per seed
    whatever the batch composition. ``quantize`` emulates the source's 8-bit images (inputs rounded
    to 1/255 steps, outputs truncated to them). ``legacy_minmax`` reproduces the source's per-image
    min-max stretch of the input (see the module docstring).
    """
    _check_kind(kind)
    if isinstance(severity, bool) or int(severity) != severity or int(severity) not in SEVERITIES:
        raise XbenchError(f"Corruption severity must be an integer 1..5, got {severity!r}.")
    severity = int(severity)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise XbenchError(f"corrupt() needs a float (N, C, H, W) image tensor, got {shape}.")
    seeds = torch.as_tensor(seeds)
    if seeds.dim() != 1 or len(seeds) != len(images) or seeds.dtype not in (torch.int64, torch.int32):
        raise XbenchError(f"corrupt() needs one integer seed per image: a ({len(images)},) int64 tensor, "
                          f"got {tuple(seeds.shape)} {seeds.dtype}.")
    seeds = seeds.to(images.device, torch.int64)
    x = _minmax(images) if legacy_minmax else images.clamp(0.0, 1.0)
    if quantize:
        x = torch.round(x * 255.0) / 255.0
    y = _FUNCTIONS[kind](x, severity, seeds).clamp_(0.0, 1.0)
    if quantize:
        y = torch.floor(y * 255.0 + 1e-4) / 255.0  # np.uint8(...) truncates; 1e-4 absorbs float error
    return y
