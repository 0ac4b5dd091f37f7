"""Drawing the figures people in this field expect (what to draw is decided in
:mod:`xbench.leaderboard.figure_plan`), with matplotlib's object API (no pyplot state, Agg/SVG
canvases), saved as SVG (plots) or PNG (heatmaps) next to the pages.

Each function returns the file it wrote, or None when the run has nothing to draw. Facets are read
from the rows' ``facet`` and ``level`` columns, and axes are labelled with the names the metric
gave them (``severity``, ``step``). Text that comes
from plugins or data is escaped for mathtext (``$``), so a label can never break a figure; the
figures are shown with ``<img>``, so nothing in them can run in the page.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.image import imsave
from matplotlib.patches import Patch

from ..hashing import content_hash
from ..results import read_gallery
from .formatting import natural_key

COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#1f78b4", "#b2df8a",
          "#fb9a99", "#cab2d6", "#6a3d9a"]
BASELINE_COLOR = "#888888"
MAX_PANELS = 16


def text(s) -> str:
    """A plugin- or data-provided string made safe for matplotlib (no mathtext)."""
    return str(s).replace("$", r"\$")


def _save(fig: Figure, folder: Path, stem: str, key, legend_rows: int = 1) -> Path:
    """SVG with text kept as text (small files, crisp, searchable); one draw, fixed margins."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}-{content_hash(key)[:10]}.svg"
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=min(0.3, 0.75 / w), right=1 - 0.15 / w, top=1 - 0.45 / h,
                        bottom=min(0.45, (0.55 + 0.22 * legend_rows) / h), wspace=0.32, hspace=0.62)
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "xbench"}):
        fig.savefig(path, format="svg", metadata={"Date": None})
    return path


def _grid(n: int, cols: int = 4, w: float = 3.4, h: float = 2.9):
    cols = max(1, min(cols, n))
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(w * cols, h * rows + 0.5))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _legend(fig: Figure, handles, labels, cols: int = 4) -> int:
    """A legend under the panels; returns its number of rows (for the bottom margin)."""
    if not labels:
        return 0
    cols = max(1, min(cols, len(labels)))
    fig.legend(handles, labels, loc="lower center", ncols=cols, fontsize=7, frameon=False)
    return int(np.ceil(len(labels) / cols))


def _colors(labels: Sequence[str], baselines: set[str]) -> dict[str, str]:
    out, i = {}, 0
    for label in labels:
        if label in baselines:
            out[label] = BASELINE_COLOR
        else:
            out[label] = COLORS[i % len(COLORS)]
            i += 1
    return out


# ----------------------------------------------------------------------------- gallery

def gallery(cell_dir: Path, folder: Path, methods_order: Sequence[str] | None = None) -> dict | None:
    """Image, ground truth and every method's map on the same test samples of one cell, as PNG
    tiles for an HTML table (labels stay HTML text, escaped by the page). Maps are scaled per map to
    [0, 1] by their largest magnitude; signed maps use a diverging scale centred on 0."""
    cell = read_gallery(cell_dir)
    if cell is None:
        return None
    meta, images, labels, preds, masks, maps = cell.meta, cell.images, cell.labels, cell.predictions, cell.masks, \
        list(cell.maps)
    if methods_order:
        rank = {name: i for i, name in enumerate(methods_order)}
        maps.sort(key=lambda t: (rank.get(t[0], len(rank)), t[0]))
    k = min([len(images)] + [len(att) for _, _, att in maps])  # a map file may hold fewer samples
    if k == 0:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"tile-{content_hash([cell_dir.name])[:10]}"
    names = meta.get("class_names") or []

    def tile(array: np.ndarray, name: str, cmap: str, vmin: float, vmax: float) -> str:
        path = folder / f"{stem}-{name}.png"
        imsave(path, array, cmap=cmap, vmin=vmin, vmax=vmax)
        return path.name

    def cls(i: int):
        return names[i] if 0 <= i < len(names) else i

    columns = ["image"] + (["ground truth"] if masks is not None else []) + [m[0] for m in maps]
    rows = []
    for i in range(k):
        img = images[i]
        cells = []
        if img.shape[0] == 1:
            cells.append(tile(np.clip(img[0], 0, 1), f"{i}-image", "gray", 0, 1))
        else:
            rgb = np.clip(np.moveaxis(img[:3], 0, -1), 0, 1)
            path = folder / f"{stem}-{i}-image.png"
            imsave(path, rgb)
            cells.append(path.name)
        if masks is not None:
            cells.append(tile(masks[i].astype(np.float32), f"{i}-mask", "gray", 0, 1))
        for j, (_, _, att) in enumerate(maps):
            a = np.nan_to_num(att[i])
            scale = float(np.abs(a).max()) or 1.0
            if a.min() < 0:
                cells.append(tile(a / scale, f"{i}-m{j}", "seismic", -1, 1))
            else:
                cells.append(tile(a / scale, f"{i}-m{j}", "inferno", 0, 1))
        rows.append({"label": cls(int(labels[i])), "prediction": cls(int(preds[i])), "tiles": cells})
    return {"columns": columns, "baselines": [False] * (len(columns) - len(maps)) + [m[1] for m in maps],
            "rows": rows, "meta": meta}


# ----------------------------------------------------------------------------- box plots

def sweep_axes(models: Sequence[str], params: dict[str, dict], untrained: set[str] = frozenset()) \
        -> tuple[str | None, str | None]:
    """The model params that vary across the trained variants (``untrained``: the labels of the
    untrained ones): (x axis, grouping), preferring Oliveira's fine-tune degree on x and the
    pre-training as groups."""
    trained = [params.get(m, {}) for m in models if m not in untrained]
    varying = sorted({k for p in trained for k in p if len({json.dumps(q.get(k), sort_keys=True) for q in trained}) > 1})
    if not varying:
        return None, None
    preferred = [k for k in ("degree", "finetune_degree", "fine_tune_degree") if k in varying]
    x = preferred[0] if preferred else varying[0]
    rest = [k for k in varying if k != x]
    hue = "pretrain" if "pretrain" in rest else (rest[0] if rest else None)
    return x, hue


def _box_stats(values: np.ndarray) -> dict:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    iqr = q3 - q1
    inside = values[(values >= q1 - 1.5 * iqr) & (values <= q3 + 1.5 * iqr)]
    return {"med": med, "q1": q1, "q3": q3, "whislo": inside.min(), "whishi": inside.max(), "fliers": []}


def box_plots(samples: pd.DataFrame, params: dict[str, dict], folder: Path, key, *, title_value: str,
              baselines: set[str], untrained: set[str] = frozenset()) -> Path | None:
    """Per-sample values of one (metric, value), one panel per method, boxes per fine-tune degree
    (x) and pre-training (colour), untrained models as a grey box at the end (Oliveira's figure;
    whiskers at 1.5 IQR, outliers not drawn)."""
    if samples.empty:
        return None
    models = list(samples["model_label"].astype(object).unique())
    x_param, hue_param = sweep_axes(models, params, untrained)
    if x_param is None:
        return None
    methods = sorted(samples["method_label"].astype(object).unique(), key=lambda m: (m in baselines, m))[:MAX_PANELS]
    trained = [m for m in models if m not in untrained]
    untrained = [m for m in models if m in untrained]
    x_values = sorted({json.dumps(params[m].get(x_param)) for m in trained}, key=lambda v: natural_key(json.loads(v)))
    hues = sorted({json.dumps(params[m].get(hue_param)) for m in trained},
                  key=lambda v: natural_key(json.loads(v))) if hue_param else ["null"]
    position = {}
    for m in trained:
        xi = x_values.index(json.dumps(params[m].get(x_param)))
        hi = hues.index(json.dumps(params[m].get(hue_param))) if hue_param else 0
        position[m] = (xi, hi)
    values = samples["value"].to_numpy(float)
    groups = samples.groupby(["method_label", "model_label"], observed=True).indices
    width = 0.8 / len(hues)
    fig, axes = _grid(len(methods))
    for ax, method in zip(axes, methods):
        pooled: dict[tuple[int, int], list[np.ndarray]] = {}
        for m in trained:
            idx = groups.get((method, m))
            if idx is not None:
                pooled.setdefault(position[m], []).append(values[idx])
        stats, pos, colors = [], [], []
        for (xi, hi), parts in sorted(pooled.items()):
            v = np.concatenate(parts)
            v = v[np.isfinite(v)]
            if v.size:
                stats.append(_box_stats(v))
                pos.append(xi + (hi - (len(hues) - 1) / 2) * width)
                colors.append(COLORS[hi % len(COLORS)])
        base = [values[groups[(method, m)]] for m in untrained if (method, m) in groups]
        base = np.concatenate(base) if base else np.array([])
        base = base[np.isfinite(base)]
        ticks = [text(json.loads(v)) for v in x_values]
        if base.size:
            stats.append(_box_stats(base))
            pos.append(len(x_values))
            colors.append(BASELINE_COLOR)
            ticks.append("untrained")
        if stats:
            bp = ax.bxp(stats, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=False,
                        showcaps=False, medianprops={"color": "black", "lw": 1})
            for patch, c in zip(bp["boxes"], colors):
                patch.set_facecolor(c)
                patch.set_alpha(0.8)
        ax.set_xticks(range(len(ticks)), ticks, fontsize=7)
        ax.set_title(_short(method) + (" (baseline)" if method in baselines else ""), fontsize=8)
        ax.set_xlabel(text(x_param), fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel(text(title_value), fontsize=8)
    rows = 0
    if hue_param:
        handles = [Patch(color=COLORS[h % len(COLORS)], alpha=0.8) for h in range(len(hues))]
        rows = _legend(fig, handles, [text(f"{hue_param}={json.loads(h)}") for h in hues], cols=len(hues))
    return _save(fig, folder, "box", key, rows)


def _short(label: str, width: int = 38) -> str:
    """A panel title: escaped, and wrapped so long variant labels do not run into each other."""
    return "\n".join(textwrap.wrap(text(label), width)) or " "


# ----------------------------------------------------------------------------- curves

def curves(per_seed: pd.DataFrame, folder: Path, key, *, baselines: set[str], family: str, level: str = "level",
           higher_is_better: bool | None = None) -> Path | None:
    """A curve family's mean value against its level per method (Rio-Torto's MoRF curve f(x^k)
    against the step k), one panel per model; the band is the spread of the per-seed mean curves
    (min to max over seeds)."""
    if per_seed.empty:
        return None
    data = per_seed.assign(k=per_seed["level"].to_numpy(float), model=per_seed["model_label"].astype(object),
                           method=per_seed["method_label"].astype(object))
    models = sorted(data["model"].unique(), key=natural_key)[:MAX_PANELS]
    methods = sorted(data["method"].unique(), key=lambda m: (m in baselines, m))
    color = _colors(methods, baselines)
    lines = data.groupby(["model", "method", "k"])["mean"].agg(["mean", "min", "max"])
    fig, axes = _grid(len(models))
    for ax, model in zip(axes, models):
        for method in methods:
            if (model, method) not in lines.index.droplevel(2):
                continue
            line = lines.loc[(model, method)].sort_index()
            ax.plot(line.index, line["mean"], color=color[method], lw=1.4, ls="--" if method in baselines else "-",
                    label=text(method))
            ax.fill_between(line.index, line["min"], line["max"], color=color[method], alpha=0.08, lw=0)
        ax.set_title(_short(model), fontsize=8)
        ax.set_xlabel(text(level), fontsize=7)
        ax.tick_params(labelsize=7)
    better = {True: " (higher is better)", False: " (lower is better)"}.get(higher_is_better, "")
    axes[0].set_ylabel(text(f"{family}: mean{better}"), fontsize=8)
    rows = _legend(fig, *axes[0].get_legend_handles_labels())
    return _save(fig, folder, "morf", key, rows)


def _trained_means(per_seed: pd.DataFrame, untrained: set[str], by: list[str]) -> pd.Series:
    data = per_seed[~per_seed["model_label"].astype(object).isin(untrained).to_numpy()]
    return data.groupby(by)["mean"].mean()


def severity_curves(per_seed: pd.DataFrame, folder: Path, key, *, baselines: set[str], family: str,
                    untrained: set[str] = frozenset(), facet: str = "facet", level: str = "level") -> Path | None:
    """A grid family's mean value against its level, one panel per facet, one line per method,
    averaged over the trained model variants and seeds: Treyer's RMSE against severity, per
    corruption."""
    if per_seed.empty:
        return None
    data = per_seed.assign(corruption=per_seed["facet"].astype(object).to_numpy(),
                           severity=per_seed["level"].to_numpy(float), method=per_seed["method_label"].astype(object))
    means = _trained_means(data, untrained, ["corruption", "method", "severity"])
    if means.empty:
        return None
    corruptions = sorted(means.index.get_level_values(0).unique())
    methods = sorted(means.index.get_level_values(1).unique(), key=lambda m: (m in baselines, natural_key(m)))
    color = _colors(methods, baselines)
    fig, axes = _grid(len(corruptions), cols=5, w=2.9, h=2.6)
    for ax, corruption in zip(axes, corruptions):
        for method in methods:
            if (corruption, method) not in means.index.droplevel(2):
                continue
            line = means.loc[(corruption, method)].sort_index()
            ax.plot(line.index, line.to_numpy(), marker="o", ms=3, lw=1.2, color=color[method],
                    ls="--" if method in baselines else "-", label=text(method))
        severities = sorted(means.loc[corruption].index.get_level_values(1).unique())
        ax.set_xticks(severities, [f"{v:g}" for v in severities])
        ax.set_title(_short(f"{facet}: {corruption}"), fontsize=8)
        ax.set_xlabel(text(level), fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel(text(family), fontsize=8)
    rows = _legend(fig, *axes[0].get_legend_handles_labels())
    return _save(fig, folder, "severity", key, rows)


def layer_curves(per_seed: pd.DataFrame, method_params: dict[str, dict], folder: Path, key, *, family: str,
                 untrained: set[str] = frozenset(), layer_param: str = "layer", level: str = "level") -> Path | None:
    """Mean value (over levels, trained model variants and seeds) against the target layer of CAM
    methods, one line per facet, one panel per method: Treyer's RMSE per layer, one line per
    corruption, averaged over severities."""
    if per_seed.empty:
        return None
    labels = per_seed["method_label"].astype(object)
    layered = {m for m in labels.unique() if layer_param in method_params.get(m, {})}
    data = per_seed[labels.isin(layered).to_numpy()]
    if data.empty:
        return None
    data = data.assign(corruption=data["facet"].astype(object).to_numpy(),
                       layer=[str(method_params[m][layer_param]) for m in data["method_label"].astype(object)],
                       base=[_method_base(m) for m in data["method_label"].astype(object)])
    means = _trained_means(data, untrained, ["base", "corruption", "layer"])
    if means.empty:
        return None
    layers_per_base = means.reset_index().groupby("base")["layer"].nunique()
    bases = sorted(layers_per_base[layers_per_base >= 2].index)  # one layer is not a trend
    if not bases:
        return None
    corruptions = sorted(means.index.get_level_values(1).unique())
    color = _colors(corruptions, set())
    fig, axes = _grid(len(bases), cols=4, w=3.4, h=3.0)
    for ax, base in zip(axes, bases):
        layers = sorted(means.loc[base].index.get_level_values(1).unique(), key=natural_key)
        for corruption in corruptions:
            if (base, corruption) not in means.index.droplevel(2):
                continue
            line = means.loc[(base, corruption)].reindex(layers)
            ax.plot(range(len(layers)), line.to_numpy(), marker="o", ms=3, lw=1.2, color=color[corruption],
                    label=text(corruption))
        ax.set_xticks(range(len(layers)), [text(x) for x in layers], rotation=45, ha="right", fontsize=6)
        ax.set_title(_short(base), fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel(text(f"{family} (mean over {level})"), fontsize=8)
    rows = _legend(fig, *axes[0].get_legend_handles_labels(), cols=5)
    return _save(fig, folder, "layers", key, rows + 1)


def _method_base(label: str) -> str:
    """``grad-cam[layer=layer4]`` → ``grad-cam``: the method without its swept params."""
    return label.split("[", 1)[0]


def delta_vs_value(model_seed: pd.DataFrame, sample_seed: pd.DataFrame, folder: Path, key, *, x_name: str,
                   y_name: str, baselines: set[str]) -> tuple[Path, list[dict]] | None:
    """Model-level ΔAUC against a saliency family's per-seed mean (Treyer's ΔAUC vs RMSE), matched
    on (model, seed, corruption, severity); one panel per method; colour = corruption, size =
    severity. Returns the figure and the Pearson correlation per method."""
    if model_seed.empty or sample_seed.empty:
        return None

    def facets(frame: pd.DataFrame) -> list[tuple]:
        return list(zip(frame["facet"].astype(object), frame["level"].to_numpy(float)))

    y = model_seed.assign(facet=facets(model_seed))
    x = sample_seed.assign(facet=facets(sample_seed))
    y = y[["model_label", "seed", "facet", "mean"]].astype({"model_label": object}).rename(columns={"mean": "y"})
    x = x[["model_label", "method_label", "seed", "facet", "mean"]].astype({"model_label": object, "method_label": object})
    data = x.merge(y, on=["model_label", "seed", "facet"]).rename(columns={"mean": "x"})
    data = data[np.isfinite(data["x"]) & np.isfinite(data["y"])]
    if data.empty:
        return None
    methods = sorted(data["method_label"].unique(), key=lambda m: (m in baselines, natural_key(m)))[:MAX_PANELS]
    corruptions = sorted({f[0] for f in data["facet"]})
    color = _colors(corruptions, set())
    fig, axes = _grid(len(methods))
    corr = []
    for ax, method in zip(axes, methods):
        sub = data[data["method_label"] == method]
        for c in corruptions:
            part = sub[[f[0] == c for f in sub["facet"]]]
            sev = np.array([f[1] if np.isfinite(f[1]) else 1.0 for f in part["facet"]])
            ax.scatter(part["x"], part["y"], s=6 + 6 * sev, color=color[c], alpha=0.7, label=text(c), lw=0)
        r = float(np.corrcoef(sub["x"], sub["y"])[0, 1]) if len(sub) > 2 and sub["x"].std() > 0 and sub["y"].std() > 0 \
            else float("nan")
        corr.append({"method": method, "r": r, "points": int(len(sub))})
        ax.set_title(_short(method) + (f"  (r = {r:.2f})" if np.isfinite(r) else ""), fontsize=8)
        ax.set_xlabel(text(x_name), fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel(text(y_name), fontsize=8)
    rows = _legend(fig, *axes[0].get_legend_handles_labels(), cols=5)
    return _save(fig, folder, "delta", key, rows), corr


def explanation_vs_classification(panels: list[tuple[str, pd.DataFrame]], folder: Path, key, *, x_name: str,
                                  baselines: set[str]) -> tuple[Path, list[dict]] | None:
    """Per model instance (variant × seed): its accuracy (x) against its mean explanation score (y),
    one panel per value, one colour per method, with each method's least-squares line and Pearson r
    (Oliveira's check that explanation quality is not just classification quality)."""
    panels = [(name, pts) for name, pts in panels[:MAX_PANELS] if not pts.empty and pts["x"].nunique() >= 2]
    if not panels:
        return None
    methods = sorted({m for _, pts in panels for m in pts["method_label"].unique()},
                     key=lambda m: (m in baselines, natural_key(m)))
    color = _colors(methods, baselines)
    fig, axes = _grid(len(panels), cols=4, w=3.4, h=3.0)
    fits = []
    for ax, (name, pts) in zip(axes, panels):
        for method in methods:
            sub = pts[pts["method_label"] == method]
            if sub.empty:
                continue
            ax.scatter(sub["x"], sub["y"], s=12, color=color[method], alpha=0.8, lw=0, label=text(method))
            if len(sub) > 2 and sub["x"].std() > 0 and sub["y"].std() > 0:
                slope, intercept = np.polyfit(sub["x"], sub["y"], 1)
                r = float(np.corrcoef(sub["x"], sub["y"])[0, 1])
                grid = np.linspace(sub["x"].min(), sub["x"].max(), 2)
                ax.plot(grid, slope * grid + intercept, color=color[method], lw=1, alpha=0.8,
                        ls="--" if method in baselines else "-")
                fits.append({"panel": name, "method": method, "slope": float(slope), "r": r, "points": int(len(sub))})
        ax.set_title(_short(name), fontsize=8)
        ax.set_xlabel(text(x_name), fontsize=7)
        ax.tick_params(labelsize=7)
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    rows = _legend(fig, handles, labels)
    return _save(fig, folder, "explvscls", key, rows), fits


# ----------------------------------------------------------------------------- at a glance

MARK_COLORS = {"verified": "#1a7f37", "failed": "#cf222e", "not verified": "#6e7781"}


def rank_heatmap(panels: list[dict], folder: Path, key, *, legend: str) -> tuple[Path, int, int] | None:
    """Methods × metric categories (and cost) coloured by mean rank, one panel per dataset: which
    method to trust here, at a glance. Each panel is ``{"title", "methods": [(label, baseline,
    mark symbol, mark state)], "columns", "notes" (a line under each column), "ranks" (rows of
    numbers or None), "worst"}``; a method's verification mark prefixes its name, in its colour.
    Rank 1 is dark green; baselines and missing cells stay blank. ``legend`` is a short key under
    the panels. Returns the SVG and its size in CSS pixels (the page reserves the space, so nothing
    below it moves when it loads)."""
    panels = [p for p in panels[:MAX_PANELS] if p["methods"] and p["columns"]]
    if not panels:
        return None
    rows = max(len(p["methods"]) for p in panels)
    cols = min(len(panels), 2)
    width = max(len(p["columns"]) for p in panels) * 1.05 + 2.6
    fig = Figure(figsize=(width * cols, (0.3 * rows + 1.5) * int(np.ceil(len(panels) / cols)) + 0.4))
    axes = np.atleast_1d(fig.subplots(int(np.ceil(len(panels) / cols)), cols, squeeze=False).ravel())
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, p in zip(axes, panels):
        values = np.array([[np.nan if v is None else float(v) for v in row] for row in p["ranks"]], dtype=float)
        worst = max(2, int(p["worst"]))
        image = ax.imshow(values, cmap="YlGn_r", vmin=1, vmax=worst, aspect="auto")
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                dark = (v - 1) / (worst - 1) < 0.4
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
            else:
                ax.text(j, i, "—", ha="center", va="center", fontsize=7, color=BASELINE_COLOR)
        ax.set_xticks(range(len(p["columns"])),
                      [text(f"{c}\n{n}" if n else c) for c, n in zip(p["columns"], p["notes"])], fontsize=7)
        ax.xaxis.tick_top()
        labels = [text(f"{sym} {label}" if sym else label) + (" (baseline)" if base else "")
                  for label, base, sym, _ in p["methods"]]
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        for tick, (_, base, _, state) in zip(ax.get_yticklabels(), p["methods"]):
            tick.set_color(BASELINE_COLOR if base else MARK_COLORS.get(state, "black"))
        ax.tick_params(length=0)
        ax.set_title(_short(p["title"], 60), fontsize=9, pad=28)
        for spine in ax.spines.values():
            spine.set_visible(False)
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02).ax.tick_params(labelsize=6)
    fig.subplots_adjust(left=0.3 / cols, right=0.97, top=1 - 1.0 / fig.get_figheight(),
                        bottom=0.5 / fig.get_figheight(), wspace=0.9, hspace=0.5)
    fig.text(0.01, 0.005, "\n".join(textwrap.wrap(text(legend), int(fig.get_figwidth() * 15))), fontsize=6.5,
             color="#444444", va="bottom")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"glance-{content_hash(key)[:10]}.svg"
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "xbench"}):  # cropped to what is drawn
        fig.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight", pad_inches=0.08)
    head = path.read_text(encoding="utf-8")[:2000]
    width, height = (float(re.search(rf'{side}="([0-9.]+)pt"', head).group(1)) * 4 / 3 for side in ("width", "height"))
    return path, round(width), round(height)
