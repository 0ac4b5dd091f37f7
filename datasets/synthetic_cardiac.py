"""Synthetic cardiac MRI (Callanan, IMVIP 2022): short-axis-like slices of four classes whose
class-relevant region, the heart, is known exactly.

The generator follows seed-algorithms.md §3.1: a 105×135 canvas; left and right ventricles drawn
as myocardium disks with cavity disks on top; a subcutaneous fat strip; optional sex or class
marker boxes; intensities fat 229.5, cavity 204, myocardium 51, marker 255, each filled with
per-pixel N(intensity, 2) noise and cast to uint8. Generation is vectorised over images.

Version 2: one noise field per chunk instead of one per structure (the same distribution, ~4×
faster), so images differ from version 1 for a seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from xbench import Dataset, DatasetSpec, Param, Split, hookimpl, sources

H, W = 105, 135
CLASSES = ("NOR", "HCM", "DCM", "RV")
NOR, HCM, DCM, RV = range(4)
FAT, CAVITY, MYOCARDIUM, MARKER = 0.9 * 255, 0.8 * 255, 0.2 * 255, 255.0
NOISE_SD = 2.0
# normal ratios, times 25 × size multiplier
RV_RADIUS, RV_WALL, LV_RADIUS, LV_WALL = 2.5 / 17, 1 / 17, 3.5 / 17, 1.5 / 17
P_MALE = {NOR: 0.5, HCM: 0.6, DCM: 0.5, RV: 2.7 / 3.7}
MODES = ("sex_size", "sex_marker", "class_marker")
SEG = {"lv_cavity": 11, "rv_cavity": 12, "lv_myocardium": 13, "rv_myocardium": 14, "fat": 15, "marker": 16}

PARAMS = {
    "mode": Param("sex_size", "Callanan's experiment: sex_size (Exp. 1: sex-dependent heart and body size), "
                              "sex_marker (Exp. 2: same size, a 9×9 box marks males), class_marker (a box per class)",
                  choices=MODES, label=True),
    "n_train": Param(10000, "training images (balanced over the four classes)", ge=1),
    "n_val": Param(3000, "validation images", ge=1),
    "n_test": Param(2000, "test images", ge=1),
    "channels": Param(3, "image channels (the grey slice repeated, as the source fed VGG16)", choices=(1, 3)),
    "legacy_variability": Param(False, "the source's measurement quirk, m + N(m, 0.02m), which about doubles "
                                       "every size"),
    "scale": Param(1.0, "resize the 105×135 canvas by this factor (antialiased; masks keep pixels at least half "
                        "covered): 0.5 gives 52×67 images for CPU-scale studies", gt=0, le=1),
}

CARD = """\
**Synthetic cardiac MRI** (Callanan et al., IMVIP 2022; generator re-implemented from the
`JamesCallanan/Grad-CAM` description). Four balanced classes: NOR (normal), HCM (hypertrophic
cardiomyopathy: thick LV wall, small cavity), DCM (dilated cardiomyopathy: large LV cavity, more
body fat), RV (fatty or fibro-fatty right ventricle). Ground truth: the heart (both ventricles,
cavity and myocardium); regions `heart`, `fat` and `marker`.

Modes: `sex_size` (experiment 1: sex changes heart and body size), `sex_marker` (experiment 2:
a 9×9 box of value 255 in the bottom-right corner of male images; P(male) differs by class, so the
box is a non-causal shortcut), `class_marker` (a 19×19 box in a class-specific corner).

Deviations from the source, on purpose: the measurement variability is `m·(1+N(0, 0.02))` (the
source adds a sample centred on `m`, doubling every size: `legacy_variability = true`); the
"no sex marker" copy is not aliased; images are in [0, 1] (the source scales to [−1, 1]); the
sub-image is clipped to the canvas. Generated data, no licence restrictions; nothing to download.
"""


def _normal(rng, mean, sd, n):
    return rng.normal(mean, sd, n)


def _sample_geometry(rng: np.random.Generator, labels: np.ndarray, mode: str, legacy: bool) -> dict[str, np.ndarray]:
    n = len(labels)
    male = rng.random(n) < np.vectorize(P_MALE.get)(labels)
    if mode == "sex_size":
        mult = np.where(male, _normal(rng, 1.3, 0.15, n), _normal(rng, 1.0, 0.15, n))
        dcm = labels == DCM
        fat_pct = np.where(male, np.where(dcm, _normal(rng, 28, 7.9, n), _normal(rng, 26, 7.9, n)),
                           np.where(dcm, _normal(rng, 38.4, 9.7, n), _normal(rng, 36.4, 9.7, n)))
        heart_to_skin = 10 * mult
    else:
        mult = np.ones(n)
        fat_pct = np.where(labels == DCM, _normal(rng, 33, 9, n), _normal(rng, 31, 9, n))
        heart_to_skin = np.full(n, 18.0)
    mult = np.clip(mult, 0.3, None)
    fat_pct = np.clip(fat_pct, 0.0, None)

    rv_wall, rv_rad, lv_wall, lv_rad = np.ones(n), np.ones(n), np.ones(n), np.ones(n)
    u = rng.random((n, 4))
    is_ = lambda c: labels == c  # noqa: E731
    # DCM
    rv_wall[is_(DCM)], rv_rad[is_(DCM)], lv_wall[is_(DCM)], lv_rad[is_(DCM)] = 0.9, 1.2, 0.8, 1.8
    # HCM
    lv_wall[is_(HCM)], lv_rad[is_(HCM)] = 2.2, 0.4
    rv_rad[is_(HCM) & (u[:, 0] < 0.16)] = 1.2
    # RV: fatty (50%) or fatty-fibro (50%)
    fibro = is_(RV) & (u[:, 1] < 0.5)
    fatty = is_(RV) & ~fibro
    rv_rad[is_(RV)] = 1.5
    lv_wall[fibro] = 0.9
    lv_rad[fibro & (u[:, 2] < 0.1)] = 1.2
    rv_fat_f = np.zeros(n)
    rv_fat_f[fatty] = rng.uniform(0.7, 0.9, n)[fatty]
    rv_fat_f[fibro] = rng.uniform(0.3, 0.8, n)[fibro]
    lv_fatty = is_(RV) & (u[:, 3] < 0.1)
    lv_fat_f = np.where(lv_fatty, rng.uniform(0.0, 0.4, n), 0.0)

    def measure(ratio, modifier):
        m = ratio * 25 * mult * modifier
        if legacy:  # the source: m + N(m, 0.02·m), i.e. about 2m
            return m + rng.normal(m, 0.02 * m)
        return m * (1 + rng.normal(0.0, 0.02, n))

    g = {
        "rv_radius": measure(RV_RADIUS, rv_rad), "rv_wall": measure(RV_WALL, rv_wall),
        "lv_radius": measure(LV_RADIUS, lv_rad), "lv_wall": measure(LV_WALL, lv_wall),
    }
    lv_comb = g["lv_radius"] + g["lv_wall"]
    rv_comb = g["rv_radius"] + g["rv_wall"]
    heart_len = 2 * (lv_comb + rv_comb)
    fat_len = fat_pct * mult / 80 * 70
    width = np.ceil(np.maximum(heart_len, fat_len)) + 2
    height = np.ceil(2 * lv_comb + heart_to_skin)
    lv_x = lv_comb + 1 + np.where(fat_len > heart_len, (fat_len - heart_len) / 2, 0.0)
    y = height - 1 - lv_comb
    rv_x = lv_x + lv_comb + rv_comb - 1
    oy = np.floor((H - height) / 2)
    ox = np.floor((W - width) / 2)
    g.update(
        lv_comb=lv_comb, rv_comb=rv_comb, lv_cy=oy + y, lv_cx=ox + lv_x, rv_cy=oy + y, rv_cx=ox + rv_x,
        fat_top=oy, fat_left=ox + np.round((width - fat_len) / 2), fat_len=np.round(fat_len),
        male=male, mult=mult, rv_fat_f=rv_fat_f, lv_fat_f=lv_fat_f, rv_variant=np.where(fibro, 2, np.where(fatty, 1, 0)),
    )
    return g


def _draw(rng: np.random.Generator, labels: np.ndarray, g: Mapping[str, np.ndarray], mode: str):
    """Draw a chunk of images in the source's order; later draws overwrite earlier ones.

    Only the segmentation is painted in order; intensities follow from the final label of each
    pixel plus one N(0, 2) field. That is the source's distribution exactly (every pixel keeps the
    noise of the structure drawn last over it, independently per pixel) at a quarter of the cost.
    """
    n = len(labels)
    yy = np.arange(H, dtype=np.float32)[None, :, None]
    xx = np.arange(W, dtype=np.float32)[None, None, :]
    col = lambda a: np.asarray(a, dtype=np.float32)[:, None, None]  # noqa: E731

    def disk(cy, cx, r):
        return (yy - col(cy)) ** 2 + (xx - col(cx)) ** 2 < col(r) ** 2

    seg = np.zeros((n, H, W), dtype=np.uint8)
    seg[disk(g["lv_cy"], g["lv_cx"], g["lv_comb"])] = SEG["lv_myocardium"]
    seg[disk(g["rv_cy"], g["rv_cx"], g["rv_comb"])] = SEG["rv_myocardium"]
    # (the fatty re-fill of the myocardium comes here in the source; it survives on the pixels that
    # are still myocardium once the cavities are drawn, so it is applied below from the final labels)
    seg[disk(g["lv_cy"], g["lv_cx"], g["lv_radius"])] = SEG["lv_cavity"]
    seg[disk(g["rv_cy"], g["rv_cx"], g["rv_radius"])] = SEG["rv_cavity"]
    top, left, length = col(g["fat_top"]), col(g["fat_left"]), col(g["fat_len"])
    seg[(yy >= top) & (yy < top + 4) & (xx >= left) & (xx < left + length)] = SEG["fat"]
    if mode == "sex_marker":
        seg[g["male"], H - 10:H - 1, W - 10:W - 1] = SEG["marker"]
    elif mode == "class_marker":
        corners = {RV: (slice(H - 20, H - 1), slice(W - 20, W - 1)), NOR: (slice(1, 20), slice(W - 20, W - 1)),
                   HCM: (slice(H - 20, H - 1), slice(1, 20)), DCM: (slice(1, 20), slice(1, 20))}
        for c, (rows, cols) in corners.items():
            seg[labels == c, rows, cols] = SEG["marker"]

    intensity = np.zeros(256, dtype=np.float32)
    intensity[[SEG["lv_myocardium"], SEG["rv_myocardium"]]] = MYOCARDIUM
    intensity[[SEG["lv_cavity"], SEG["rv_cavity"]]] = CAVITY
    intensity[SEG["fat"]], intensity[SEG["marker"]] = FAT, MARKER
    img = intensity[seg]
    drawn = seg > 0  # the background is a constant 0 in the source: no noise there
    img[drawn] += NOISE_SD * rng.standard_normal(int(drawn.sum()), dtype=np.float32)
    # fatty re-fill of the myocardium: U(51, 51 + f·(229.5 − 51)) per pixel
    span = np.float32(FAT - MYOCARDIUM)
    for code, f in ((SEG["rv_myocardium"], g["rv_fat_f"]), (SEG["lv_myocardium"], g["lv_fat_f"])):
        fatty = (seg == code) & (f > 0)[:, None, None]
        which = np.nonzero(fatty)[0]
        img[fatty] = MYOCARDIUM + rng.random(len(which), dtype=np.float32) * f.astype(np.float32)[which] * span
    pixels = np.clip(img, 0, 255).astype(np.uint8)  # the source casts each fill to uint8
    return pixels, seg


def generate(n: int, seed: int, split: int, *, mode: str = "sex_size", channels: int = 3,
             legacy_variability: bool = False, chunk: int = 512) -> Split:
    """``n`` images, balanced over the four classes, deterministic for (seed, split)."""
    if mode not in MODES:
        raise ValueError(f"synthetic-cardiac: mode must be one of {MODES}, got {mode!r}")
    if channels not in (1, 3):
        raise ValueError(f"synthetic-cardiac: channels must be 1 or 3, got {channels}")
    rng = np.random.default_rng([seed, split])
    labels = rng.permutation(np.arange(n) % 4)
    g = _sample_geometry(rng, labels, mode, legacy_variability)
    images = np.empty((n, H, W), dtype=np.uint8)
    seg = np.empty((n, H, W), dtype=np.uint8)
    for s in range(0, n, chunk):
        part = {k: v[s:s + chunk] for k, v in g.items()}
        images[s:s + chunk], seg[s:s + chunk] = _draw(rng, labels[s:s + chunk], part, mode)
    x = torch.from_numpy(images).float().div_(255.0)[:, None]
    if channels == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    seg_t = torch.from_numpy(seg)
    heart = (seg_t >= SEG["lv_cavity"]) & (seg_t <= SEG["rv_myocardium"])
    regions = {"heart": heart, "fat": seg_t == SEG["fat"], "marker": seg_t == SEG["marker"]}
    meta = {"male": torch.from_numpy(g["male"]), "size_multiplier": torch.from_numpy(g["mult"]).float(),
            "rv_variant": torch.from_numpy(g["rv_variant"]), "segmentation": seg_t}
    return Split(images=x, labels=torch.from_numpy(labels).long(), masks=heart, regions=regions, meta=meta)


def rescaled(split: Split, scale: float) -> Split:
    """``split`` at ``scale`` times its size: images bilinear with antialiasing, every mask and region
    keeping the pixels at least half covered (so a region's area share is kept)."""
    if scale == 1.0:
        return split
    import torch.nn.functional as F

    size = (max(1, round(H * scale)), max(1, round(W * scale)))
    x = F.interpolate(split.images, size=size, mode="bilinear", antialias=True, align_corners=False)

    def mask(m: torch.Tensor) -> torch.Tensor:
        return F.interpolate(m.float()[:, None], size=size, mode="area")[:, 0] >= 0.5

    regions = {k: mask(v) for k, v in split.regions.items()}
    return Split(images=x.contiguous(), labels=split.labels, masks=mask(split.masks), regions=regions,
                 meta={k: v for k, v in split.meta.items() if k != "segmentation"})


def load(params: Mapping[str, Any], seed: int) -> Dataset:
    kw = {k: params[k] for k in ("mode", "channels", "legacy_variability")}
    scale = float(params["scale"])
    splits = {name: rescaled(generate(int(params[f"n_{name}"]), seed, i, **kw), scale)
              for i, name in enumerate(("train", "val", "test"))}
    return Dataset("synthetic-cardiac", CLASSES, splits, info={"mode": params["mode"], "canvas": [H, W],
                                                                "scale": scale, "removal_fills": ["black", "blur"],
                                                                "legacy_variability": params["legacy_variability"],
                                                                "provenance": sources.provenance(
                                                                    "generated", detail="drawn by xbench")})


@hookimpl
def xbench_datasets():
    yield DatasetSpec(
        name="synthetic-cardiac",
        load=load,
        version="2",
        description="Synthetic cardiac MRI with four classes; ground truth = the heart (Callanan).",
        params=PARAMS,
        provides=lambda p: {"mask", "regions", "grayscale", "classes:4"} | ({"marker"} if p["mode"] != "sex_size" else set()),
        card=CARD,
    )

