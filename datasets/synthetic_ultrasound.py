"""Synthetic breast ultrasound (a BreastMNIST-like stand-in): grayscale B-mode-like images of a
hypoechoic lesion whose *shape* decides the class, with the lesion's mask as ground truth.

Why it exists: Treyer's corruption study runs on BreastMNIST, which cannot be fetched on an offline
machine; a stand-in of the same modality (speckle, depth attenuation, one lesion, two classes named
as BreastMNIST names them) is closer than cardiac MRI, and its mask adds a dataset with ground truth
in a second modality.

How an image is made (batched over images; no per-pixel Python loops):

1. Echogenicity: layered tissue (skin line, subcutaneous fat with lobules, fibroglandular tissue,
   pectoral muscle with striations) whose boundaries undulate, times a smooth random texture.
2. The lesion: a star-shaped region r(θ) = ellipse(θ) · (1 + margin(θ)), rendered at 4× and
   area-averaged (so thin spicules survive as partial coverage). *Benign* (``normal, benign``): an
   oval wider than tall, parallel to the skin, circumscribed (a gentle two-to-four-lobe margin).
   *Malignant*: round to taller than wide, tilted, with an angular, microlobulated margin and
   spicules. Its area share is drawn from one range for both classes (the shape is rescaled to
   it), and so are its echogenicity, depth and the posterior acoustic feature (shadow, enhancement
   or none), so the class evidence lies inside the mask and no global statistic such as mean
   intensity gives the class away.
3. Speckle: a complex Gaussian field blurred by an anisotropic point-spread function (wider
   laterally than axially); its magnitude is Rayleigh-distributed, multiplied into the amplitude
   (fully developed multiplicative speckle).
4. Depth attenuation, exp(−a · depth), partly undone by a time-gain compensation ramp; then log
   compression to a fixed dynamic range, giving images in [0, 1] quantised to 8 bits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xbench import Dataset, DatasetSpec, Param, Split, hookimpl, sources

CLASSES = ("malignant", "normal, benign")  # BreastMNIST's label order
MALIGNANT, BENIGN = 0, 1
SUPERSAMPLE = 4  # the lesion outline is rendered at 4× and area-averaged
THETA = 256  # angular samples of the lesion outline
GAIN_HEADROOM_DB = 10.0  # glandular tissue (0 dB) is displayed this far below white

def _range_problem(value) -> str | None:
    if len(value) != 2 or float(value[0]) > float(value[1]):
        return "must be two numbers [low, high] with low ≤ high, e.g. [0.03, 0.10]"
    return None


PARAMS = {
    "size": Param(64, "image side in pixels (BreastMNIST at 64 px is Treyer's default)", ge=32),
    "n_train": Param(546, "training images, balanced over the two classes (BreastMNIST has 546)", ge=1),
    "n_val": Param(78, "validation images (BreastMNIST has 78)", ge=1),
    "n_test": Param(156, "test images (BreastMNIST has 156)", ge=1),
    "lesion_area": Param([0.03, 0.10], "range of the lesion's share of the image, drawn uniformly per image, "
                                       "the same for both classes", ge=0.005, le=0.3, check=_range_problem),
    "lesion_echo": Param(0.03, "lesion echogenicity (backscattered power) relative to the tissue around it "
                               "(< 1: hypoechoic; 0.03 is −15 dB)", gt=0, le=1),
    "speckle_grain": Param(0.8, "axial s.d. in px of the speckle's point-spread function (lateral is twice it); "
                                "0 gives uncorrelated speckle", ge=0),
    "attenuation": Param(2.0, "tissue attenuation over the image's depth, in nepers of amplitude (half is "
                              "undone by the time-gain compensation)", ge=0),
    "dynamic_range": Param(40.0, "log-compression dynamic range in dB (the display maps it to [0, 1])", gt=0),
}

CARD = """\
**Synthetic breast ultrasound** (generated; a stand-in for BreastMNIST, which is not on this
machine). Two balanced classes named as BreastMNIST names them: `malignant` and `normal, benign`.
Each 64×64 grayscale image shows layered breast tissue (skin line, subcutaneous fat, fibroglandular
tissue, pectoral muscle) under multiplicative Rayleigh speckle, depth attenuation with partial gain
compensation and log compression, and one hypoechoic lesion. Ground truth: the lesion (`mask`, and
region `lesion`).

The lesion's *shape* decides the class, after the BI-RADS descriptors: benign lesions are ovals
wider than tall, parallel to the skin, with circumscribed margins; malignant ones are round to
taller than wide, tilted, with angular, microlobulated and spiculated margins. Lesion area,
echogenicity, depth and the posterior acoustic feature (shadowing, enhancement or none) follow one
distribution for both classes, so the evidence lies inside the mask and global statistics (mean
intensity, lesion area) do not give the class away.

Not BreastMNIST: real lesions vary far more, posterior shadowing does go with malignancy, and
BreastMNIST's `normal, benign` class includes images without a lesion and is imbalanced (about 73 %).
Verdicts on this data are verdicts on a stand-in. Generated data, no licence restrictions; nothing
to download.
"""


def _smooth_noise(rng: np.random.Generator, n: int, size: int, cells: int) -> torch.Tensor:
    """``(n, size, size)`` zero-mean, unit-s.d. smooth random field: ``cells``² Gaussian values,
    upsampled bicubically."""
    coarse = torch.from_numpy(rng.standard_normal((n, 1, cells, cells), dtype=np.float32))
    field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[:, 0]
    field = field - field.mean((1, 2), keepdim=True)
    return field / field.std((1, 2), keepdim=True).clamp(min=1e-6)


def _undulating(rng: np.random.Generator, n: int, size: int, base: np.ndarray, amplitude: float) -> torch.Tensor:
    """``(n, size)`` depth of a tissue boundary across the image: ``base`` plus two random sinusoids."""
    x = np.arange(size, dtype=np.float32)[None, :] / size
    freq = rng.uniform(0.5, 2.5, (n, 2, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 2, 1))
    amp = rng.uniform(0.3, 1.0, (n, 2, 1)) * amplitude * size
    wave = (amp * np.sin(2 * np.pi * freq * x[:, None] + phase)).sum(1)
    return torch.from_numpy((base[:, None] * size + wave).astype(np.float32))


def _tissue(rng: np.random.Generator, n: int, size: int) -> torch.Tensor:
    """``(n, size, size)`` echogenicity (backscattered power) of layered breast tissue, glandular tissue ≈ 1."""
    depth = torch.arange(size, dtype=torch.float32)[None, :, None]
    skin = _undulating(rng, n, size, rng.uniform(0.03, 0.06, n), 0.005)[:, None]
    fat = _undulating(rng, n, size, rng.uniform(0.18, 0.30, n), 0.03)[:, None]
    muscle = _undulating(rng, n, size, rng.uniform(0.80, 0.90, n), 0.02)[:, None]

    def below(edge):  # soft step, 1 px wide
        return torch.sigmoid(depth - edge)

    echo = torch.full((n, size, size), 2.0)  # skin line
    echo = echo + (0.2 - echo) * below(skin)  # subcutaneous fat: hypoechoic
    echo = echo + (1.0 - echo) * below(fat)  # fibroglandular tissue: echogenic
    echo = echo + (0.35 - echo) * below(muscle)  # pectoral muscle
    lobules = _smooth_noise(rng, n, size, 10)
    fat_band = below(skin) * (1 - below(fat))
    echo = echo * torch.exp(0.4 * lobules * fat_band)
    texture = _smooth_noise(rng, n, size, 16)
    gland = below(fat) * (1 - below(muscle))
    echo = echo * torch.exp(0.4 * texture * gland)
    fibres = torch.from_numpy(rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32))
    striation = torch.exp(0.5 * torch.sin(depth * 2 * math.pi / 3.0 + fibres) * below(muscle))
    return echo * striation


def _outline(rng: np.random.Generator, labels: np.ndarray, area_px: np.ndarray) -> np.ndarray:
    """``(n, THETA)`` lesion radius per angle, in px, scaled so the star-shaped region has ``area_px``."""
    n = len(labels)
    malignant = labels == MALIGNANT
    theta = np.linspace(0, 2 * np.pi, THETA, endpoint=False)[None, :]
    # width/height: benign oval 1.4–2.0 (wider than tall), malignant 0.65–1.1 (round to taller than wide)
    ratio = np.where(malignant, rng.uniform(0.65, 1.1, n), rng.uniform(1.4, 2.0, n))
    tilt = np.where(malignant, rng.uniform(-0.5, 0.5, n), rng.uniform(-0.15, 0.15, n))
    a, b = np.sqrt(ratio), 1 / np.sqrt(ratio)  # unit area before scaling
    t = theta - tilt[:, None]
    ellipse = (a * b)[:, None] / np.sqrt((b[:, None] * np.cos(t)) ** 2 + (a[:, None] * np.sin(t)) ** 2)
    # benign margin: two to four gentle lobes
    k = np.arange(2, 5)[None, :, None]
    lobes = (rng.uniform(0, 0.04, (n, 3, 1)) * np.cos(k * theta[:, None] + rng.uniform(0, 2 * np.pi, (n, 3, 1)))).sum(1)
    # malignant margin: angular, microlobulated (harmonics 5–12) plus 5–10 spicules
    k = np.arange(5, 13)[None, :, None]
    rough = (rng.uniform(0.03, 0.07, (n, 8, 1)) * np.cos(k * theta[:, None] + rng.uniform(0, 2 * np.pi, (n, 8, 1)))).sum(1)
    count = rng.integers(5, 11, n)
    centres = rng.uniform(0, 2 * np.pi, (n, 10))
    lengths = rng.uniform(0.35, 0.8, (n, 10)) * (np.arange(10)[None, :] < count[:, None])
    widths = rng.uniform(0.04, 0.08, (n, 10))
    gap = np.angle(np.exp(1j * (theta[:, None, :] - centres[:, :, None])))
    spicules = (lengths[:, :, None] * np.exp(-((gap / widths[:, :, None]) ** 2))).sum(1)
    margin = np.where(malignant[:, None], rough + spicules, lobes)
    radius = ellipse * (1 + margin)
    area = 0.5 * (radius ** 2).mean(1) * 2 * np.pi
    return radius * np.sqrt(area_px / area)[:, None]


def _lesion_coverage(radius: np.ndarray, cy: np.ndarray, cx: np.ndarray, size: int, group: int = 64) -> torch.Tensor:
    """``(n, size, size)`` share of each pixel inside the star-shaped outline, rendered at 4× in a
    box around each lesion; lesions are grouped by reach so that few need a large box."""
    order = np.argsort(radius.max(1), kind="stable")
    full = torch.empty(len(radius), size, size)
    for s in range(0, len(order), group):
        idx = order[s:s + group]
        full[torch.from_numpy(idx)] = _coverage_in_box(radius[idx], cy[idx], cx[idx], size)
    return full


def _coverage_in_box(radius: np.ndarray, cy: np.ndarray, cx: np.ndarray, size: int) -> torch.Tensor:
    n = len(radius)
    box = min(size, 2 * int(math.ceil(float(radius.max()))) + 3)
    top = torch.from_numpy(np.clip(np.floor(cy).astype(np.int64) - box // 2, 0, size - box))
    left = torch.from_numpy(np.clip(np.floor(cx).astype(np.int64) - box // 2, 0, size - box))
    fine = (torch.arange(box * SUPERSAMPLE, dtype=torch.float32) + 0.5) / SUPERSAMPLE - 0.5
    r = torch.from_numpy(radius.astype(np.float32))
    dy = fine[None, :, None] + (top.float() - torch.from_numpy(cy.astype(np.float32)))[:, None, None]
    dx = fine[None, None, :] + (left.float() - torch.from_numpy(cx.astype(np.float32)))[:, None, None]
    angle = torch.atan2(dy, dx).remainder_(2 * math.pi).mul_(THETA / (2 * math.pi))
    lo = angle.floor()
    frac = angle - lo
    lo = lo.long().remainder_(THETA).flatten(1)
    bound = torch.lerp(torch.gather(r, 1, lo), torch.gather(r, 1, (lo + 1).remainder_(THETA)), frac.flatten(1))
    inside = ((dy ** 2 + dx ** 2).flatten(1) <= bound ** 2).float().view(n, 1, *angle.shape[1:])
    cover = F.avg_pool2d(inside, SUPERSAMPLE)[:, 0]
    full = torch.zeros(n, size, size)
    rows = top[:, None] + torch.arange(box)[None, :]
    cols = left[:, None] + torch.arange(box)[None, :]
    full[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]] = cover
    return full


def _blur(field: torch.Tensor, sd_y: float, sd_x: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(n, c, H, W)`` with circular padding (speckle has no edges)."""
    for sd, dim in ((sd_y, 2), (sd_x, 3)):
        if sd <= 0:
            continue
        half = max(1, int(math.ceil(3 * sd)))
        t = torch.arange(-half, half + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (t / sd) ** 2)
        kernel = (kernel / kernel.sum()).view(1, 1, -1, 1) if dim == 2 else (kernel / kernel.sum()).view(1, 1, 1, -1)
        pad = (0, 0, half, half) if dim == 2 else (half, half, 0, 0)
        c = field.shape[1]
        field = F.conv2d(F.pad(field, pad, mode="circular"), kernel.expand(c, 1, *kernel.shape[2:]), groups=c)
    return field


def _speckle(rng: np.random.Generator, n: int, size: int, grain: float) -> torch.Tensor:
    """``(n, size, size)`` Rayleigh speckle of mean 1: |blurred complex Gaussian|, normalised."""
    iq = torch.from_numpy(rng.standard_normal((n, 2, size, size), dtype=np.float32))
    iq = _blur(iq, grain, 2 * grain)
    envelope = iq.pow(2).sum(1).sqrt()
    return envelope / envelope.mean((1, 2), keepdim=True)


def _draw(rng: np.random.Generator, labels: np.ndarray, params: Mapping[str, Any]):
    n, size = len(labels), int(params["size"])
    lo, hi = (float(v) for v in params["lesion_area"])
    area = rng.uniform(lo, hi, n) * size * size
    radius = _outline(rng, labels, area)
    reach = radius.max(1)
    # centre: laterally in the middle 60 %, at 35–60 % depth, clipped so the lesion stays inside
    cy = np.clip(rng.uniform(0.35, 0.6, n) * size, reach + 1, size - 2 - reach)
    cx = np.clip(rng.uniform(0.2, 0.8, n) * size, reach + 1, size - 2 - reach)
    cover = _lesion_coverage(radius, cy, cx, size)
    echo = _tissue(rng, n, size)
    # posterior acoustic feature, independent of the class: shadow, enhancement or none
    kind = rng.integers(0, 3, n)
    gain = np.select([kind == 0, kind == 1], [rng.uniform(0.4, 0.7, n), rng.uniform(1.3, 1.6, n)], 1.0)
    column = cover.amax(1, keepdim=True)  # the lesion's lateral extent
    behind = (cover.cumsum(1) > 0.5).float() * (1 - cover)  # below the lesion's top, outside it
    fade = torch.exp(-torch.arange(size, dtype=torch.float32)[None, :, None] / (0.6 * size))
    posterior = 1 + (torch.from_numpy(gain.astype(np.float32))[:, None, None] - 1) * column * behind * fade
    contrast = float(params["lesion_echo"]) * np.exp(rng.normal(0, 0.3, n))
    inner = torch.from_numpy(contrast.astype(np.float32))[:, None, None] * torch.exp(0.4 * _smooth_noise(rng, n, size, 8))
    echo = echo * (1 - cover + inner * cover)
    echo = echo * posterior
    depth = torch.arange(size, dtype=torch.float32)[None, :, None] / size
    a = float(params["attenuation"]) * np.exp(rng.normal(0, 0.2, n))
    tgc = torch.from_numpy(a.astype(np.float32))[:, None, None] * depth
    amplitude = echo.sqrt() * _speckle(rng, n, size, float(params["speckle_grain"])) * torch.exp(-tgc / 2)
    db = 20 * torch.log10(amplitude.clamp(min=1e-6))
    dr = float(params["dynamic_range"])
    image = ((db + dr - GAIN_HEADROOM_DB) / dr).clamp(0, 1)
    image = (image * 255).floor().div(255)  # 8-bit, as a scanner's display
    return image, cover >= 0.5


def generate(n: int, seed: int, split: int, params: Mapping[str, Any], chunk: int = 256) -> Split:
    """``n`` images, balanced over the two classes, deterministic for (seed, split, params); drawn
    ``chunk`` images at a time to bound memory (the 4× outline render is the largest buffer)."""
    rng = np.random.default_rng([seed, split, 0x05])
    labels = rng.permutation(np.arange(n) % 2)
    parts = [_draw(rng, labels[s:s + chunk], params) for s in range(0, n, chunk)]
    images, masks = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return Split(images=images[:, None].contiguous(), labels=torch.from_numpy(labels).long(), masks=masks,
                 regions={"lesion": masks})


def load(params: Mapping[str, Any], seed: int) -> Dataset:
    splits = {name: generate(int(params[f"n_{name}"]), seed, i, params)
              for i, name in enumerate(("train", "val", "test"))}
    return Dataset("synthetic-ultrasound", CLASSES, splits,
                   info={"size": int(params["size"]), "value_range": [0, 1], "modality": "ultrasound (generated)",
                         "provenance": sources.provenance("generated", detail="drawn by xbench")})


@hookimpl
def xbench_datasets():
    yield DatasetSpec(
        name="synthetic-ultrasound",
        load=load,
        version="1",
        description="Synthetic breast ultrasound: a hypoechoic lesion whose shape decides benign vs malignant; "
                    "ground truth = the lesion (a BreastMNIST-like stand-in).",
        params=PARAMS,
        provides=frozenset({"mask", "regions", "grayscale", "classes:2"}),
        card=CARD,
    )
