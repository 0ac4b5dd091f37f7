"""Synthetic polygons (Rio-Torto's synthetic set, seed-algorithms.md §1.7 and §5.1 D1): black 1-px
outlines on white; positive images contain the target polygon (a triangle by default) among
circles, negative images only circles. Ground truth: the target's bounding box (the source) or its
tight filled outline.

Shapes are drawn as anti-aliased distance fields, for a whole chunk of images at once; placement
(no clipping, no overlap by the circle–circle test, up to ``nr_tries`` tries per shape) is decided
for all images of a chunk in one pass per shape slot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from xbench import Dataset, DatasetSpec, Param, Split, hookimpl, sources

CLASSES = ("neg", "pos")
CHUNK = 64
PARAMS = {
    "size": Param(224, "image side in pixels (the source: 224)", ge=8),
    "channels": Param(3, "image channels: 3 repeats the grey image (as the source fed its ResNet), or 1", choices=(1, 3)),
    "n_train": Param(800, "training images (half of them with the target)", ge=1),
    "n_val": Param(200, "validation images", ge=1),
    "n_test": Param(200, "test images", ge=1),
    "nr_shapes": Param(5, "shapes per image, the target included (the source: 5)", ge=1),
    "rad_min": Param(12, "smallest radius in pixels, inclusive (the source: 12)", ge=1),
    "rad_max": Param(30, "largest radius in pixels, exclusive; below size/2 (the source: 30)", ge=2),
    "nr_tries": Param(10, "placements tried per shape before its slot stays empty (the source: 10)", ge=1),
    "target_vertices": Param(3, "p of the target polygon {p/q} (3: a triangle)", ge=3),
    "target_step": Param(1, "q of the target polygon {p/q}: vertex i joins vertex i + q; 1 <= q < p/2", ge=1),
    "mask": Param("box", "ground truth: the target's bounding box (the source) or its filled outline",
                  choices=("box", "polygon")),
    "noise": Param(False, "the source's optional darkening noise N(5, var 5), in 8-bit units"),
}

CARD = """\
**Synthetic polygons** (Rio-Torto, Fernandes, Teixeira, Pattern Recognition Letters 2020, "Synthetic
Dataset" generator of `icrto/xML`, simplified mode). White `size`×`size` images with `nr_shapes`
black 1-px anti-aliased outlines; class `pos` (half the images) has the target polygon {p/q}
(`target_vertices`/`target_step`; default a triangle) as its first shape, every other shape is a
circle. Radii are integers in [`rad_min`, `rad_max`), shapes are never clipped by the border and never
overlap (circle–circle test on their circumscribed circles), rotation U(−π, π).

Ground truth (`mask`): the target's axis-aligned box [c − r, c + r]² as in the source (`mask = "box"`),
or the filled polygon (`mask = "polygon"`, a deviation the spec asks for); both are also named
regions. `noise = true` adds the source's optional darkening noise N(5, var 5) in 8-bit units.
Generated data, no licence restriction. Defaults of the source's config: 5 shapes, radii 12–30,
10 tries; its image counts (100 per generated set) are raised here so a model can learn.
"""


def _shape_points(p: int, q: int, centre: torch.Tensor, radius: torch.Tensor, angle: torch.Tensor):
    """Segments (n, p, 2, 2) of the polygon {p/q}: vertex i joined to vertex (i + q) mod p."""
    k = torch.arange(p, dtype=torch.float32)
    theta = angle[:, None] + 2 * math.pi * k[None, :] / p
    vertices = centre[:, None, :] + radius[:, None, None] * torch.stack([torch.sin(theta), torch.cos(theta)], -1)
    return torch.stack([vertices, vertices[:, (torch.arange(p) + q) % p]], dim=2)


def _segment_distance_local(points: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """Distance of each image's points (n, K, 2) to each of its segments (n, E, 2, 2) -> (n, E, K)."""
    a, b = segments[:, :, None, 0], segments[:, :, None, 1]
    ab = b - a
    rel = points[:, None] - a
    t = ((rel * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    return (rel - t[..., None] * ab).norm(dim=-1)


def _winding_local(points: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """Non-zero winding rule: is each point (n, K, 2) inside the closed path of segments? -> (n, K)."""
    a, b = segments[:, :, None, 0], segments[:, :, None, 1]
    py, px = points[:, None, :, 0], points[:, None, :, 1]
    cross = (b[..., 1] - a[..., 1]) * (py - a[..., 0]) - (px - a[..., 1]) * (b[..., 0] - a[..., 0])
    up = (a[..., 0] <= py) & (b[..., 0] > py) & (cross > 0)
    down = (a[..., 0] > py) & (b[..., 0] <= py) & (cross < 0)
    return (up.int() - down.int()).sum(1) != 0


def _place(n: int, slots: int, params: Mapping[str, Any], rng: np.random.Generator):
    """Centres and radii of ``slots`` shapes per image: ``nr_tries`` candidates per slot, the first that
    overlaps no earlier shape wins; none -> the slot stays empty (as the source after its tries)."""
    size, tries = int(params["size"]), int(params["nr_tries"])
    lo, hi = int(params["rad_min"]), int(params["rad_max"])
    centres = np.zeros((n, slots, 2))
    radii = np.zeros((n, slots))
    used = np.zeros((n, slots), dtype=bool)
    for s in range(slots):
        r = rng.integers(lo, hi, (n, tries)).astype(np.float64)
        c = rng.random((n, tries, 2)) * (size - 1 - 2 * r[..., None]) + r[..., None]  # never clipped
        gap = np.linalg.norm(c[:, :, None, :] - centres[:, None, :s, :], axis=-1) - radii[:, None, :s] - r[..., None]
        ok = np.all((gap > 0) | ~used[:, None, :s], axis=2)
        first = ok.argmax(1)
        found = ok[np.arange(n), first]
        centres[found, s] = c[found, first[found]]
        radii[found, s] = r[found, first[found]]
        used[found, s] = True
    return centres, radii, used


def generate(n: int, seed: int, split: int, params: Mapping[str, Any]) -> Split:
    """``n`` images, half with the target, deterministic for (seed, split).

    Each shape is rendered only in a window around it (side 2·rad_max + 5) and merged into the canvas
    with a scatter-max, so the cost does not grow with the canvas.
    """
    size, p, q = int(params["size"]), int(params["target_vertices"]), int(params["target_step"])
    rng = np.random.default_rng([seed, split, 0x9017])
    labels = rng.permutation(np.arange(n) % 2)
    centres, radii, used = _place(n, int(params["nr_shapes"]), params, rng)
    angles = rng.uniform(-math.pi, math.pi, n)
    used[:, 0] |= labels == 1  # the target is placed first, on an empty canvas
    ink = torch.zeros(n, size * size)
    polygon = torch.zeros(n, size * size)
    half = int(params["rad_max"]) + 2
    offsets = torch.stack(torch.meshgrid(torch.arange(-half, half + 1), torch.arange(-half, half + 1),
                                         indexing="ij"), -1).reshape(-1, 2)  # (K, 2)
    for start in range(0, n, CHUNK):
        part = slice(start, min(start + CHUNK, n))
        m = part.stop - part.start
        c = torch.from_numpy(centres[part]).float()
        r = torch.from_numpy(radii[part]).float()
        target = torch.from_numpy(labels[part] == 1)
        present = torch.from_numpy(used[part])
        local = c.round().long()[:, :, None, :] + offsets[None, None]  # (m, S, K, 2) pixel coordinates
        pts = local.float()
        d = ((pts - c[:, :, None]).norm(dim=-1) - r[..., None]).abs()  # circle outlines
        segments = _shape_points(p, q, c[:, 0], r[:, 0], torch.from_numpy(angles[part]).float())
        around = pts[:, 0]  # (m, K, 2): the window of the first shape
        d_target = _segment_distance_local(around, segments).amin(1)
        d[:, 0] = torch.where(target[:, None], d_target, d[:, 0])
        inside = ((local >= 0) & (local < size)).all(-1)
        index = (local[..., 0].clamp(0, size - 1) * size + local[..., 1].clamp(0, size - 1)).reshape(m, -1)
        shape_ink = ((1.0 - d).clamp(0, 1) * (present[..., None] & inside)).reshape(m, -1)  # 1-px lines
        ink[part].scatter_reduce_(1, index, shape_ink, reduce="amax")
        filled = (_winding_local(around, segments) | (d_target < 0.5)) & inside[:, 0] & target[:, None]
        polygon[part].scatter_reduce_(1, index.view(m, -1, offsets.shape[0])[:, 0], filled.float(), reduce="amax")
    grid = torch.arange(size).float()
    c0, r0 = torch.from_numpy(centres[:, 0]).float(), torch.from_numpy(radii[:, 0]).float()
    rows = (grid[None, :] - c0[:, 0:1]).abs() <= r0[:, None]
    cols = (grid[None, :] - c0[:, 1:2]).abs() <= r0[:, None]
    box = rows[:, :, None] & cols[:, None, :] & torch.from_numpy(labels == 1)[:, None, None]
    polygon = (polygon.view(n, size, size) > 0) & box  # the outline's half-pixel rim stays in the box
    images = (1.0 - ink).view(n, 1, size, size)
    if params["noise"]:  # the source: img + (255 - bg) - N(5, var 5), in 8-bit units
        g = torch.Generator().manual_seed(int(rng.integers(2**62)))
        images -= (5 + math.sqrt(5) * torch.randn(images.shape, generator=g)) / 255
    images = torch.round(images.clamp_(0, 1) * 255) / 255  # the source draws uint8 images
    channels = int(params["channels"])
    x = images.expand(-1, channels, -1, -1).contiguous() if channels == 3 else images
    masks = polygon if params["mask"] == "polygon" else box
    meta = {"centres": torch.from_numpy(centres).float(), "radii": torch.from_numpy(radii).float(),
            "shapes": torch.from_numpy(used.sum(1))}
    return Split(images=x, labels=torch.from_numpy(labels).long(), masks=masks,
                 regions={"box": box, "polygon": polygon}, meta=meta)


def validate(params: Mapping[str, Any]) -> None:
    """The rules between params (each param's own range is in its ``Param``), checked when a config
    is read."""
    p, q = int(params["target_vertices"]), int(params["target_step"])
    if not q < p / 2:
        raise ValueError(f"polygons: the target {{p/q}} needs 1 <= q < p/2, got p={p}, q={q} (target_vertices, "
                         "target_step).")
    lo, hi, size = int(params["rad_min"]), int(params["rad_max"]), int(params["size"])
    if not lo < hi or 2 * hi >= size:
        raise ValueError(f"polygons: need rad_min < rad_max < size/2 (shapes are never clipped), got radii "
                         f"[{lo}, {hi}) for size {size}.")


def load(params: Mapping[str, Any], seed: int) -> Dataset:
    splits = {name: generate(int(params[f"n_{name}"]), seed, i, params)
              for i, name in enumerate(("train", "val", "test"))}
    target = f"{{{params['target_vertices']}/{params['target_step']}}}"
    # black outlines on a white background: a white patch (the background) or a blurred one removes
    # what it covers; a black patch draws a filled square, i.e. adds shape instead of removing it
    return Dataset("polygons", CLASSES, splits, info={"target": target, "mask": params["mask"],
                                                      "removal_fills": ["white", "blur"],
                                                      "provenance": sources.provenance(
                                                          "generated", detail="polygons drawn by xbench")})


@hookimpl
def xbench_datasets():
    yield DatasetSpec(
        name="polygons",
        load=load,
        version="1",
        description="Black outlines on white: a triangle among circles or circles only; ground truth = its box (Rio-Torto).",
        params=PARAMS,
        validate=validate,
        provides=frozenset({"mask", "regions", "grayscale"}),
        card=CARD,
    )
