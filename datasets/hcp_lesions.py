"""MRI slices with planted lesions (Oliveira et al. 2024): round vs not-round lesions on real brain
MRI, where the class-relevant region, the lesions, is known exactly.

Follows seed-algorithms.md §2.1–2.3 and §5.1 D3. A lesion bank of 70-px blobs (compactness
> 0.8 round, < 0.4 not-round) is grown from smoothed noise; each image gets 3–5 lesions of one
type, placed inside the brain without overlap and blended in as a screen (I' = 1 − (1 − I)(1 − L)).
Backgrounds are axial T1 slices (:mod:`xbench.datasets._brain_slices`), chosen by ``background``:
HCP's skull-stripped volumes (``hcp``), IXI's (``ixi``), one real individual that a Debian package
ships (``sample-t1``) or the MNI152 template nilearn ships (``mni152``); ``auto`` is the HCP folder
when one is set, else the template. Composition runs at ``canvas`` px, then the image is resized
to ``size``. ``Dataset.info["provenance"]`` names the volumes read, with their checksums.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xbench import Dataset, DatasetSpec, LazyArray, Param, Split, hookimpl
from xbench.errors import XbenchError

from . import _brain_slices as brain_slices
from ._realdata import resolve_root

CLASSES = ("round", "not-round")
ENV = "XBENCH_HCP_DIR"
CHUNK = 256  # images composed at once (bounds memory; fixed so data never depends on it)
RETRIES = 5  # lesions tried per slot before the slot stays empty

BACKGROUNDS = ("auto", *brain_slices.BACKGROUNDS)

PARAMS = {
    "background": Param("auto", "the MRI slices the lesions are planted in: 'hcp' (a folder of skull-stripped T1 "
                                "volumes: root, $XBENCH_HCP_DIR or $XBENCH_DATA/hcp), 'ixi' (`xbench data fetch "
                                "ixi:t1`), 'sample-t1' (one real individual, Debian's insighttoolkit5-examples), "
                                "'mni152' (nilearn's template); 'auto' = the HCP folder when root or $XBENCH_HCP_DIR "
                                "is set, else mni152", choices=BACKGROUNDS, label=True),
    "root": Param("", f"background 'hcp' or 'auto': folder of skull-stripped T1 NIfTI volumes; '' = ${ENV}"),
    "size": Param(224, "output image side in pixels (lesions are composed at canvas, then resized)", ge=8),
    "canvas": Param(256, "side in pixels of the slice the lesions are planted in (the source's 256)", ge=32),
    "channels": Param(3, "image channels (the gray slice repeated, as the source fed VGG16)", choices=(1, 3)),
    "n_train": Param(2500, "training images (the two classes exactly balanced)", ge=1),
    "n_val": Param(2500, "validation images", ge=1),
    "n_test": Param(2500, "test images", ge=1),
    "min_lesions": Param(3, "fewest lesions planted per image", ge=1),
    "max_lesions": Param(5, "most lesions planted per image (at most bank_size)", ge=1),
    "bank_size": Param(30, "lesions of each type grown from noise for the bank (the source's 30)", ge=1),
    "blob_size": Param(70, "pixels of each grown lesion before blurring (the source's 70)", ge=8),
    "lesion_upscale": Param(2, "lesion patches are upscaled by this factor (bilinear) before planting (the source's 2)",
                            ge=1),
    "max_brain": Param(0.7, "brain intensities are scaled to [0, max_brain] before the lesions are blended in",
                       gt=0, le=1),
    "max_lesion": Param(0.5, "peak lesion intensity in the screen blend", gt=0, le=1),
    "augment": Param("auto", "per-image variation of the slices (rotation, scale, flip, gamma, bias field): 'on', "
                             "'off', or 'auto' = on for mni152 and sample-t1 (one volume), off for hcp and ixi",
                     choices=("auto", "on", "off")),
    "legacy_fixed_round": Param(False, "the source's bug: images of class round always take the bank's first lesions"),
    "legacy_box_artefact": Param(False, "the source's bug: a 0.1 intensity floor over each lesion's whole rectangle"),
}


def validate(params: Mapping[str, Any]) -> None:
    """Rules between params: each image's lesions are distinct lesions of the bank; a folder is read
    only by the backgrounds that read one."""
    lo, hi, bank = int(params["min_lesions"]), int(params["max_lesions"]), int(params["bank_size"])
    if lo > hi:
        raise ValueError(f"min_lesions ({lo}) must be at most max_lesions ({hi})")
    if hi > bank:
        raise ValueError(f"max_lesions ({hi}) must be at most bank_size ({bank}): an image takes distinct lesions "
                         "from the bank; raise bank_size or lower max_lesions")
    if str(params["root"]).strip() and params["background"] not in ("auto", "hcp"):
        raise ValueError(f"root names an HCP folder, which background = {params['background']!r} does not read; "
                         "set background = \"hcp\" or leave root empty")


CARD = """\
**HCP lesions** (Oliveira, Wilming, Clark, Budding, Eitel, Ritter, Haufe, Front. AI 2024;
re-implemented from the description of `Marta54/Pretrain_XAI_gt`). Axial T1 MRI slices with 3–5
planted hyperintense lesions of one type: class `round` (compactness > 0.8) or `not-round`
(compactness < 0.4). Ground truth (`mask`): the lesions' support. 3 channels (the gray slice
repeated), values in [0, 1], no mean/std normalisation (as the source).

Backgrounds (`background`): the source used HCP 2-D slices that are not public.
- `hcp`: a folder of skull-stripped T1 volumes (HCP `T1w_restore_brain.nii.gz`, from
  https://db.humanconnectome.org under the WU-Minn HCP Data Use Terms; `xbench data fetch hcp`
  prints the steps): `root`, else `XBENCH_HCP_DIR`, else `$XBENCH_DATA/hcp`.
- `ixi`: IXI's ~580 real T1 volumes (CC BY-SA 3.0), downloaded and skull-stripped by
  `xbench data fetch ixi:t1` (about 4.5 GB).
- `sample-t1`: one real individual T1 head with its skull-strip mask (ITK's example data, Apache-2.0),
  installed by `apt-get install insighttoolkit5-examples`: real MRI offline, for tests and CI.
- `mni152`: the MNI152 ICBM 2009a template nilearn ships (a real MRI, but an average of 152).
- `auto` (default): the HCP folder when `root` or `XBENCH_HCP_DIR` is set, else `mni152`.
One volume gives few distinct slices, so `mni152` and `sample-t1` slices vary per image (rotation,
scale, flip, gamma, bias field). `Dataset.info["provenance"]` names the source, the checksums of
the files read (or the fingerprint of a folder) and whether the data is real or a package's sample.

Deviations, on purpose: both lesion types are shuffled (the source always used the first round
lesions: `legacy_fixed_round = true`); lesion intensity starts at 0 (the source's 0.1 floor made
whole-rectangle artefacts: `legacy_box_artefact = true`); classes are exactly balanced; the mask at
output resolution keeps pixels at least half covered by a lesion; the lesion bank is regrown from
the §2.1 recipe (the source's 30-lesion pickles are not reproduced bit for bit).
Generated lesions: no licence restriction; the MNI152 template is © McConnell Brain Imaging Centre
(free use with attribution); IXI is CC BY-SA 3.0; ITK's sample is Apache-2.0.
"""


# --- the lesion bank (§2.1) ---


def _otsu(images: np.ndarray, bins: int = 256) -> np.ndarray:
    """Otsu's threshold per image of a stack, from 256-bin histograms over each image's range."""
    k = len(images)
    flat = images.reshape(k, -1)
    lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    idx = np.clip(((flat - lo) / np.maximum(hi - lo, 1e-12) * bins).astype(np.int64), 0, bins - 1)
    hist = np.bincount((idx + np.arange(k)[:, None] * bins).ravel(), minlength=k * bins).reshape(k, bins)
    centres = lo + (hi - lo) * (np.arange(bins) + 0.5) / bins
    w0 = np.cumsum(hist, 1)[:, :-1].astype(np.float64)
    w1 = flat.shape[1] - w0
    m0 = np.cumsum(hist * centres, 1)[:, :-1] / np.maximum(w0, 1)
    m1 = ((hist * centres).sum(1, keepdims=True) - np.cumsum(hist * centres, 1)[:, :-1]) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return centres[np.arange(k), between.argmax(1)]


def _compactness(blob: np.ndarray) -> float:
    from skimage.measure import regionprops

    perimeter = regionprops(blob.astype(np.uint8))[0].perimeter_crofton
    return 4 * math.pi * blob.sum() / perimeter**2


def _erode(b: np.ndarray) -> np.ndarray:
    """Binary erosion of each image of a stack by the 3×3 cross, outside = background (scipy's default)."""
    out = b.copy()
    out[:, 1:, :] &= b[:, :-1, :]
    out[:, :-1, :] &= b[:, 1:, :]
    out[:, :, 1:] &= b[:, :, :-1]
    out[:, :, :-1] &= b[:, :, 1:]
    out[:, [0, -1], :] = False
    out[:, :, [0, -1]] = False
    return out


def _dilate(b: np.ndarray) -> np.ndarray:
    """Binary dilation of each image of a stack by the 3×3 cross."""
    out = b.copy()
    out[:, 1:, :] |= b[:, :-1, :]
    out[:, :-1, :] |= b[:, 1:, :]
    out[:, :, 1:] |= b[:, :, :-1]
    out[:, :, :-1] |= b[:, :, 1:]
    return out


@functools.lru_cache(maxsize=4)
def lesion_bank(bank_size: int = 30, blob_size: int = 70, upscale: int = 2) -> dict[str, Any]:
    """The bank of :func:`grow_lesions`, upscaled ``upscale``× (bilinear) and padded into one tensor."""
    from skimage.transform import resize

    grown = grow_lesions(bank_size, blob_size)
    kept = {kind: [(resize(p, (p.shape[0] * upscale, p.shape[1] * upscale), order=1, anti_aliasing=True)
                    if upscale != 1 else p).astype(np.float32) for p, _ in grown[kind]] for kind in (0, 1)}
    side = max(p.shape[d] for kind in kept.values() for p in kind for d in (0, 1))
    patches = torch.zeros(2, bank_size, side, side)
    shapes = torch.zeros(2, bank_size, 2, dtype=torch.int64)
    compactness = torch.zeros(2, bank_size)
    for kind in (0, 1):
        for j, p in enumerate(kept[kind]):
            patches[kind, j, :p.shape[0], :p.shape[1]] = torch.from_numpy(p)
            shapes[kind, j] = torch.tensor(p.shape)
            compactness[kind, j] = grown[kind][j][1]
    return {"patches": patches, "shapes": shapes, "compactness": compactness, "seeds_used": grown["seeds_used"]}


@functools.lru_cache(maxsize=2)
def grow_lesions(bank_size: int = 30, blob_size: int = 70) -> dict[Any, Any]:
    """``bank_size`` round and not-round lesions, grown from noise seeds 0, 1, 2, … (§2.1).

    Per seed: U(0,1) noise 256², Gaussian σ=2, Otsu threshold, erosion then opening (A), one more
    erosion (B); connected components of exactly ``blob_size`` px in A and B are candidates; round if
    4π·area/perimeter² > 0.8 (Crofton perimeter), not-round if < 0.4. A kept blob is its bounding box
    padded by 2 px, blurred (σ 0.75), cut below 0.2 (round) / 0.15 (not-round), accepted when its
    energy lies within ±1 of ``blob_size``·(1 − 0.05·0.75). Returns ``{0: [(patch, compactness)…],
    1: […], "seeds_used": n}``.
    """
    from scipy import ndimage as ndi

    plane = np.zeros((3, 3, 3), dtype=bool)
    plane[1] = ndi.generate_binary_structure(2, 1)  # 2-D cross: stack members never touch
    target = blob_size - blob_size * 0.05 * 0.75
    kept: dict[int, list[tuple[np.ndarray, float]]] = {0: [], 1: []}
    seed, batch = 0, 32
    while min(len(kept[0]), len(kept[1])) < bank_size:
        if seed > 20000:
            raise XbenchError(f"hcp-lesions: the lesion bank did not fill {bank_size} lesions per type from "
                              f"{seed} noise seeds; use a smaller bank_size or the default blob_size 70.")
        noise = np.stack([np.random.RandomState(s).random_sample((256, 256)) for s in range(seed, seed + batch)])
        smooth = ndi.gaussian_filter(noise.astype(np.float32), sigma=(0, 2, 2))
        binary = smooth > _otsu(smooth)[:, None, None]
        a = _dilate(_erode(_erode(binary)))  # erosion, then opening
        b = _erode(a)
        for image in (a, b):
            labels, _ = ndi.label(image, plane)
            sizes = np.bincount(labels.ravel())
            wanted = np.nonzero(sizes == blob_size)[0]
            wanted = wanted[wanted > 0]
            where = np.flatnonzero(np.isin(labels, wanted))
            order = np.argsort(labels.ravel()[where], kind="stable")
            for group in np.split(where[order], np.arange(blob_size, len(where), blob_size)):
                if len(group) == 0:
                    continue
                _, ys, xs = np.unravel_index(group, labels.shape)
                blob = np.zeros((ys.max() - ys.min() + 1, xs.max() - xs.min() + 1), dtype=bool)
                blob[ys - ys.min(), xs - xs.min()] = True
                c = _compactness(blob)
                kind = 0 if c > 0.8 else 1 if c < 0.4 else None
                if kind is None or len(kept[kind]) >= bank_size:
                    continue
                patch = ndi.gaussian_filter(np.pad(blob.astype(np.float64), 2), 0.75, mode="nearest")
                patch[patch < (0.2 if kind == 0 else 0.15)] = 0.0
                if abs(patch.sum() - target) <= 1.0:
                    kept[kind].append((patch, c))
        seed += batch
    return {0: kept[0], 1: kept[1], "seeds_used": seed}


# --- composing images (§2.2, §5.1 D3) ---


def _box_sums(blocked: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """For every top-left (y, x): how many blocked pixels the h×w rectangle covers (per image h, w);
    rectangles that leave the canvas count as blocked. Batched with summed-area tables and gathers."""
    n, s, _ = blocked.shape
    table = F.pad(blocked.to(torch.int32).cumsum(1).cumsum(2), (1, 0, 1, 0))  # (n, s+1, s+1)
    pos = torch.arange(s)
    y2 = (pos[None, :] + h[:, None]).clamp(max=s)  # (n, s)
    x2 = (pos[None, :] + w[:, None]).clamp(max=s)
    lower = table.gather(1, y2[:, :, None].expand(n, s, s + 1))  # rows y + h
    upper = table[:, :s, :]  # rows y
    cols = x2[:, None, :].expand(n, s, s)
    total = lower.gather(2, cols) - upper.gather(2, cols) - lower[:, :, :s] + upper[:, :, :s]
    outside = (pos[None, :, None] + h[:, None, None] > s) | (pos[None, None, :] + w[:, None, None] > s)
    return total.masked_fill_(outside, 1)


def _paste(canvas: torch.Tensor, patches: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
           where: torch.Tensor) -> None:
    """Add ``patches`` (n, P, P) at (top, left) into ``canvas`` (n, S, S) for images ``where``."""
    n, s, _ = canvas.shape
    side = patches.shape[-1]
    rows = (top[:, None] + torch.arange(side)[None, :]).clamp(max=s - 1)
    cols = (left[:, None] + torch.arange(side)[None, :]).clamp(max=s - 1)
    index = (rows[:, :, None] * s + cols[:, None, :]).reshape(n, -1)
    values = (patches * where[:, None, None]).reshape(n, -1)
    canvas.view(n, -1).scatter_add_(1, index, values)


def compose(backgrounds: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor, bank: Mapping[str, Any],
            generator: torch.Generator, *, max_brain: float = 0.7, max_lesion: float = 0.5,
            fixed_round: bool = False, box_artefact: bool = False) -> dict[str, torch.Tensor]:
    """Plant ``counts`` lesions of type ``labels`` (0 round, 1 not-round) in each background slice.

    Each lesion's top-left corner is drawn uniformly among the positions whose whole rectangle lies
    in the brain (> 0) and clear of earlier lesions, for all images at once (the source's rejection
    sampling, without the loop); a lesion that fits nowhere is swapped for the next unused one of
    the shuffled bank, up to ``RETRIES`` times, then left out (``placed`` counts what was planted).
    Lesion value L = max_lesion·p/max(p); image I' = 1 − (1 − I)(1 − L) with I the slice scaled to
    [0, max_brain]; truth = support of p.
    """
    n, s, _ = backgrounds.shape
    bank_size = bank["patches"].shape[1]
    peak = backgrounds.flatten(1).amax(1).clamp_min(1e-12)
    image = backgrounds / peak[:, None, None] * max_brain  # min-max to [0, max_brain]; background stays 0
    order = torch.rand(n, bank_size, generator=generator).argsort(1)
    if fixed_round:  # the source's bug: round images always take the first lesions of the list
        order[labels == 0] = torch.arange(bank_size)
    most = int(counts.max()) if n else 0
    ids = torch.full((n, most), -1, dtype=torch.int64)
    anchors = torch.full((n, most, 2), -1, dtype=torch.int64)
    lesion = torch.zeros(n, s, s)
    truth = torch.zeros(n, s, s)
    blocked = backgrounds <= 0
    side = bank["patches"].shape[-1]
    grid_r = torch.arange(side)[None, :, None]
    grid_c = torch.arange(side)[None, None, :]
    cursor = torch.full((n,), most, dtype=torch.int64)
    for j in range(most):
        pid = order[:, j].clone()
        top = torch.zeros(n, dtype=torch.int64)
        left = torch.zeros(n, dtype=torch.int64)
        placed = torch.zeros(n, dtype=torch.bool)
        pending = counts > j
        for _ in range(RETRIES):  # a lesion that fits nowhere is swapped for the next unused one
            sub = pending.nonzero().flatten()
            if len(sub) == 0:
                break
            h, w = bank["shapes"][labels[sub], pid[sub]].unbind(1)
            free = (_box_sums(blocked[sub], h, w) == 0).view(len(sub), -1)
            keys = torch.rand(len(sub), s * s, generator=generator).masked_fill_(~free, -1.0)
            best = keys.argmax(1)
            ok = free.any(1)
            top[sub], left[sub] = best // s, best % s
            placed[sub[ok]] = True
            pending[sub[ok]] = False
            retry = sub[~ok]
            pid[retry] = order[retry, cursor[retry] % bank_size]
            cursor[retry] += 1
        patch = bank["patches"][labels, pid]
        values = patch / patch.flatten(1).amax(1).clamp_min(1e-12)[:, None, None] * max_lesion
        if box_artefact:  # the source's 0.1 floor over the whole rectangle
            h, w = bank["shapes"][labels, pid].unbind(1)
            inside = (grid_r < h[:, None, None]) & (grid_c < w[:, None, None])
            values = torch.where(inside, 0.1 + values * (max_lesion - 0.1) / max_lesion, values)
        _paste(lesion, values, top, left, placed)
        touched = torch.zeros(n, s, s)
        _paste(touched, (values > 0).float(), top, left, placed)
        blocked |= touched > 0
        _paste(truth, (patch > 0).float(), top, left, placed)
        ids[placed, j] = pid[placed]
        anchors[placed, j] = torch.stack([top, left], 1)[placed]
    image = 1 - (1 - image) * (1 - lesion.clamp_(0.0, 1.0))
    return {"image": image, "truth": truth > 0, "ids": ids, "anchors": anchors, "placed": (ids >= 0).sum(1)}


def _generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1))


def _background(params: Mapping[str, Any]) -> tuple[brain_slices.Bank, bool]:
    """The bank of background volumes and whether slices vary per image."""
    root = resolve_root(params["root"], ENV)
    name = str(params["background"])
    if name == "auto":
        name = "hcp" if root is not None else "mni152"
    b = brain_slices.bank(name, root=root)
    augment = {"auto": b.augment, "on": True, "off": False}[str(params["augment"])]
    return b, augment


def _split(params: Mapping[str, Any], seed: int, index: int, n: int) -> Split:
    bank_of_volumes, augment = _background(params)
    canvas, size, channels = int(params["canvas"]), int(params["size"]), int(params["channels"])
    bank = lesion_bank(int(params["bank_size"]), int(params["blob_size"]), int(params["lesion_upscale"]))
    rng = np.random.default_rng([seed, index, 0x1E5])
    labels = torch.from_numpy(rng.permutation(np.arange(n) % 2)).long()
    counts = torch.from_numpy(rng.integers(int(params["min_lesions"]), int(params["max_lesions"]) + 1, n))
    slices, binfo = brain_slices.axial_slices(bank_of_volumes, count=n, size=canvas,
                                              seed=int(rng.integers(2**62)), augment=augment)
    images = torch.zeros(n, 1, size, size)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    most = int(params["max_lesions"])
    ids = torch.full((n, most), -1, dtype=torch.int64)
    placed = torch.zeros(n, dtype=torch.int64)
    for c, start in enumerate(range(0, n, CHUNK)):
        stop = min(start + CHUNK, n)
        out = compose(slices[start:stop], labels[start:stop], counts[start:stop], bank, _generator(seed, index, c),
                      max_brain=float(params["max_brain"]), max_lesion=float(params["max_lesion"]),
                      fixed_round=bool(params["legacy_fixed_round"]),
                      box_artefact=bool(params["legacy_box_artefact"]))
        images[start:stop] = F.interpolate(out["image"][:, None], size=(size, size), mode="bilinear",
                                           antialias=True, align_corners=False).clamp_(0.0, 1.0)
        masks[start:stop] = F.interpolate(out["truth"][:, None].float(), size=(size, size), mode="area")[:, 0] >= 0.5
        ids[start:stop, :out["ids"].shape[1]] = out["ids"]
        placed[start:stop] = out["placed"]
    meta = {"n_lesions": placed, "lesion_ids": ids, "volume": binfo["volume"], "level": binfo["level"]}

    def fetch(indices: list[int]) -> torch.Tensor:
        return images[indices].expand(-1, channels, -1, -1).contiguous()

    return Split(images=LazyArray(n, (channels, size, size), fetch), labels=labels, masks=masks,
                 regions={"lesions": masks}, meta=meta)


def load(params: Mapping[str, Any], seed: int) -> Dataset:
    validate(params)
    background, augment = _background(params)  # fails now, naming what is missing, rather than on first use
    splits = {name: functools.partial(_split, params, seed, i, int(params[f"n_{name}"]))
              for i, name in enumerate(("train", "val", "test"))}
    bank = lesion_bank(int(params["bank_size"]), int(params["blob_size"]), int(params["lesion_upscale"]))
    info = {
        "background": background.label,
        "background_varied": augment,
        "provenance": brain_slices.provenance(background),
        "canvas": int(params["canvas"]),
        "lesion_bank_seeds": int(bank["seeds_used"]),
        "compactness_round": [round(float(bank["compactness"][0].min()), 3), round(float(bank["compactness"][0].max()), 3)],
        "compactness_not_round": [round(float(bank["compactness"][1].min()), 3),
                                  round(float(bank["compactness"][1].max()), 3)],
    }
    return Dataset("hcp-lesions", CLASSES, splits, info=info)


@hookimpl
def xbench_datasets():
    yield DatasetSpec(
        name="hcp-lesions",
        load=load,
        version="1",
        description="MRI slices with 3-5 planted round or not-round lesions; ground truth = the lesions (Oliveira).",
        params=PARAMS,
        provides=frozenset({"mask", "regions", "grayscale"}),
        card=CARD,
        validate=validate,
    )


@hookimpl
def xbench_data_sources():
    yield from brain_slices.DATA_SOURCES
