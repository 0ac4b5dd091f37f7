"""A PNG grid of a dataset's examples, one row per class, with the ground truth drawn on top.

Why: a benchmark of "does the map point at the truth" is only as good as its truth; looking at a
few examples per class is the quickest way to see a mask that is off by a transpose, a class that
is empty, or a marker that gives the label away. ``xbench show DATASET`` calls :func:`show_dataset`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .specs import Dataset, Split

MASK_COLOUR = "#ff3b30"
REGION_COLOURS = ("#34c759", "#0a84ff", "#ffcc00", "#bf5af2", "#ff9f0a", "#64d2ff")


def pick_examples(labels: torch.Tensor, num_classes: int, per_class: int) -> list[list[int]]:
    """The first ``per_class`` indices of each class (fewer where a class has fewer)."""
    labels = torch.as_tensor(labels).reshape(-1)
    return [torch.nonzero(labels == c).flatten()[:per_class].tolist() for c in range(num_classes)]


def displayable(images: torch.Tensor) -> np.ndarray:
    """``(N, C, H, W)`` → ``(N, H, W, 3)`` in [0, 1] for imshow; images outside [0, 1] (a dataset in
    [−1, 1]) are min-max scaled per image."""
    x = images.detach().float().cpu()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        x = x[:, :1].expand(-1, 3, -1, -1)
    if float(x.min()) < 0 or float(x.max()) > 1:
        flat = x.flatten(1)
        lo, hi = flat.amin(1)[:, None, None, None], flat.amax(1)[:, None, None, None]
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    return x.permute(0, 2, 3, 1).numpy()


def _outline(ax, mask: np.ndarray, colour: str, fill: float) -> None:
    if not mask.any():
        return
    if fill:
        overlay = np.zeros((*mask.shape, 4))
        overlay[mask] = (*_rgb(colour), fill)
        ax.imshow(overlay, interpolation="nearest")
    ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=0.9)


def _rgb(colour: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(colour)


def render(split: Split, class_names: Sequence[str], *, per_class: int = 4, title: str = "",
           regions: Sequence[str] | None = None):
    """A matplotlib figure: rows are classes, columns examples; the mask in red (outline and a light
    fill), named regions as coloured outlines. ``regions`` picks which (default: all but those equal
    to the mask)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt
    from matplotlib.lines import Line2D

    rows = pick_examples(split.labels, len(class_names), per_class)
    chosen = [i for row in rows for i in row]
    index = torch.tensor(chosen, dtype=torch.int64)
    images = displayable(split.images[index]) if chosen else np.zeros((0, 1, 1, 3))
    masks = split.masks[index].bool().cpu().numpy() if (split.masks is not None and chosen) else None
    if regions is None:
        regions = [k for k, v in split.regions.items()
                   if not (masks is not None and chosen and np.array_equal(v[index].bool().cpu().numpy(), masks))]
    region_arrays = {k: split.regions[k][index].bool().cpu().numpy() for k in regions} if chosen else {}
    where = {i: pos for pos, i in enumerate(chosen)}

    cols = max(1, per_class)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.9 * cols + 0.6, 1.9 * len(rows) + 0.7), squeeze=False)
    for r, (name, row) in enumerate(zip(class_names, rows)):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{name}\n({int((split.labels == r).sum())})", fontsize=8)
            if c >= len(row):
                ax.set_frame_on(False)
                continue
            k = where[row[c]]
            ax.imshow(images[k], interpolation="nearest")
            for (region, arr), colour in zip(region_arrays.items(), REGION_COLOURS):
                _outline(ax, arr[k], colour, 0.0)
            if masks is not None:
                _outline(ax, masks[k], MASK_COLOUR, 0.18)
    handles = []
    if masks is not None:
        handles.append(Line2D([], [], color=MASK_COLOUR, label="ground truth"))
    handles += [Line2D([], [], color=colour, label=str(region))
                for region, colour in zip(region_arrays, REGION_COLOURS)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.04 if handles else 0, 1, 0.97 if title else 1))
    return fig


def show_dataset(dataset: Dataset, out: str | Path, *, split: str = "test", per_class: int = 4,
                 params: Mapping[str, Any] | None = None, seed: int | None = None) -> Path:
    """Write the grid of ``dataset``'s ``split`` to ``out`` (PNG) and return the path."""
    from matplotlib import pyplot as plt

    data = dataset.split(split)
    facts = [f"split {split}", f"{len(data)} images"]
    if seed is not None:
        facts.append(f"seed {seed}")
    background = dataset.info.get("background") if dataset.info else None
    if background:
        facts.append(f"background: {background}")
    changed = ", ".join(f"{k}={v}" for k, v in (params or {}).items())
    title = f"{dataset.name}: " + ", ".join(facts) + (f"\n{changed}" if changed else "")
    fig = render(data, dataset.class_names, per_class=per_class, title=title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
