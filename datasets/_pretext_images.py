"""The images of the pre-training (pretext) tasks: generated out-of-domain shapes, brain slices
with planted shapes, and rotated brain slices. They are data, so they live with the datasets; the
pre-training that uses them is ``xbench.plugins.models._pretraining``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from xbench.attribution import LUMINANCE

OOD_CLASSES = ("disk", "square", "triangle", "cross", "ring")


def rotation_task(folder: str, count: int, height: int, width: int, channels: int,
                  seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Axial brain slices, each rotated by a random multiple of 90°; the label is the rotation."""
    from xbench.datasets._brain_slices import axial_slices

    side = max(height, width)
    slices, _ = axial_slices(folder or None, count=count, size=side, seed=seed)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (count,), generator=g)
    x = slices.float()[:, None]
    for k in range(1, 4):
        chosen = labels == k
        x[chosen] = torch.rot90(x[chosen], k, dims=(2, 3))
    if (height, width) != (side, side):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0, 1).expand(-1, channels, -1, -1).contiguous(), labels


def shape_masks(labels: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, r: torch.Tensor, angle: torch.Tensor,
                height: int, width: int) -> torch.Tensor:
    """``(n, height, width)`` bool masks of the shapes ``OOD_CLASSES[labels]`` centred at (cy, cx) with
    radius ``r`` and rotation ``angle`` (all ``(n,)``)."""
    yy = torch.arange(height, dtype=torch.float32).view(1, -1, 1)
    xx = torch.arange(width, dtype=torch.float32).view(1, 1, -1)
    col = lambda v: v.view(-1, 1, 1)  # noqa: E731
    cy, cx, r, angle = col(cy), col(cx), col(r), col(angle)
    dy, dx = yy - cy, xx - cx
    u = dx * torch.cos(angle) + dy * torch.sin(angle)
    v = -dx * torch.sin(angle) + dy * torch.cos(angle)
    rho = torch.sqrt(u * u + v * v)
    shapes = torch.stack([
        rho < r,
        (u.abs() < 0.8 * r) & (v.abs() < 0.8 * r),
        (v > -r / 2) & (math.sqrt(3) * u + v < r) & (-math.sqrt(3) * u + v < r),
        ((u.abs() < r / 3) & (v.abs() < r)) | ((v.abs() < r / 3) & (u.abs() < r)),
        (rho < r) & (rho > r / 2),
    ], 1)
    return shapes[torch.arange(len(labels)), labels]


def ood_images(count: int, height: int, width: int, channels: int, seed: int,
               chunk: int = 256, min_radius: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """Generated non-medical images: a coloured, textured shape (the class, see ``OOD_CLASSES``)
    at a random place, size and angle on a smooth random colour background. Deterministic for ``seed``.

    The radius is uniform in [``min_radius``, 0.3] of the shorter side: 0.15 (the original
    stand-in) gives large shapes only; smaller values add shapes at the scale of small structures
    (ImageNet's objects come at every scale)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(OOD_CLASSES), (count,), generator=g)
    out = torch.empty(count, channels, height, width)
    side = min(height, width)
    for s in range(0, count, chunk):
        lab = labels[s:s + chunk]
        n = len(lab)
        background = 0.3 + 0.4 * F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(height, width),
                                               mode="bilinear", align_corners=False)
        background = background + 0.03 * torch.randn(n, 3, height, width, generator=g)
        cy = (0.25 + 0.5 * torch.rand(n, generator=g)) * height
        cx = (0.25 + 0.5 * torch.rand(n, generator=g)) * width
        r = (min_radius + (0.3 - min_radius) * torch.rand(n, generator=g)) * side
        angle = torch.rand(n, generator=g) * 2 * math.pi
        inside = shape_masks(lab, cy, cx, r, angle, height, width)[:, None]
        # a dark or a bright colour, so the shape stands out from the mid-range background in grey too
        bright = torch.rand(n, 1, 1, 1, generator=g) < 0.5
        colour = torch.where(bright, 0.75, 0.0) + 0.25 * torch.rand(n, 3, 1, 1, generator=g)
        texture = 0.9 + 0.1 * torch.rand(n, 1, height, width, generator=g)
        rgb = torch.where(inside, colour * texture, background).clamp(0, 1)
        if channels == 3:
            out[s:s + n] = rgb
        else:
            grey = (rgb * torch.tensor(LUMINANCE).view(1, 3, 1, 1)).sum(1, keepdim=True)
            out[s:s + n] = grey.expand(-1, channels, -1, -1)
    return out, labels


def brain_shapes(folder: str, count: int, height: int, width: int, channels: int, seed: int, *,
                 radius: tuple[float, float] = (0.03, 0.09), shapes: tuple[int, int] = (2, 4),
                 chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Axial brain slices with 2–4 small hyperintense geometric shapes of one class (the label, one
    of ``OOD_CLASSES``) planted inside the brain, blended as the lesions are (I' = 1 − (1 − I)(1 − L),
    slice in [0, 0.7], L up to 0.5 with softened edges). Radii are ``radius`` × the shorter side
    (a few pixels: the scale of small structures), so the pretext needs local shape features."""
    from xbench.datasets._brain_slices import axial_slices

    side = max(height, width)
    slices, _ = axial_slices(folder or None, count=count, size=side, seed=seed)
    x = slices.float()[:, None]
    if (height, width) != (side, side):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    x = x[:, 0].clamp(0, 1)
    g = torch.Generator().manual_seed(seed + 1)
    labels = torch.randint(0, len(OOD_CLASSES), (count,), generator=g)
    out = torch.empty(count, channels, height, width)
    short = min(height, width)
    for s in range(0, count, chunk):
        lab, brain = labels[s:s + chunk], x[s:s + chunk]
        n = len(lab)
        image = brain / brain.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1) * 0.7
        eroded = -F.max_pool2d(-(brain > 0).float()[:, None], 7, 1, 3)[:, 0]  # centres away from the brain's edge
        weights = eroded.flatten(1) + 1e-6
        lesion = torch.zeros(n, height, width)
        k = torch.randint(shapes[0], shapes[1] + 1, (n,), generator=g)
        for j in range(shapes[1]):
            centre = torch.multinomial(weights, 1, generator=g)[:, 0]
            cy, cx = (centre // width).float(), (centre % width).float()
            r = (radius[0] + (radius[1] - radius[0]) * torch.rand(n, generator=g)) * short
            angle = torch.rand(n, generator=g) * 2 * math.pi
            level = 0.3 + 0.2 * torch.rand(n, generator=g)
            mask = shape_masks(lab, cy, cx, r, angle, height, width).float() * (k > j).float().view(-1, 1, 1)
            lesion = torch.maximum(lesion, mask * level.view(-1, 1, 1))
        lesion = F.avg_pool2d(lesion[:, None], 3, 1, 1, count_include_pad=False)[:, 0] * (brain > 0)
        blended = 1 - (1 - image) * (1 - lesion)
        out[s:s + n] = blended[:, None].expand(-1, channels, -1, -1)
    return out, labels
