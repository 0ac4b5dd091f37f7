"""Which figures a dataset page gets (planning), and running their drawing, in parallel processes
on large runs.

Planning (here, in the parent) decides the figures from the aggregates and packs each as a
:class:`Job`: a function of :mod:`xbench.leaderboard.draw`, its data, and how to caption the
result. What a family is comes from the rows' ``family``/``facet``/``level`` columns; its facets
are named as the metric declared them (``corruption``, ``severity``, ``step``). Drawing is matplotlib-bound and independent per figure, so on a large run on a machine with
four or more cores the jobs go to a pool of processes (at most four); the files are the same
whichever process draws them. Each worker pays a few seconds to import pandas and matplotlib, which
measured slower than drawing in one process on the project's 2-core machine, hence the threshold.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..results import read_gallery_meta
from . import draw
from .aggregate import Aggregates
from .tables import DatasetPage, Names
from .verification import Verification

PARALLEL_MIN_ROWS = 200_000  # below this, starting worker processes costs more than it saves
PARALLEL_MIN_JOBS = 6
PARALLEL_MIN_CORES = 4


@dataclass
class Job:
    section: str                       # glance, gallery, box, curves, robustness, correlation
    func: str                          # a function of xbench.leaderboard.draw
    args: tuple
    kwargs: dict = field(default_factory=dict)
    finish: Callable[[Any], dict | None] = lambda result: None  # parent side: result → page item


def _call(func: str, args: tuple, kwargs: dict):
    return getattr(draw, func)(*args, **kwargs)


def workers_for(rows: int, jobs: int, requested: int | None = None) -> int:
    """Processes to draw with: ``requested`` when given, else the environment's
    ``XBENCH_LEADERBOARD_WORKERS``, else one per core (≤ 4) on large runs on machines with at least
    four cores, and 1 otherwise."""
    if requested is None and os.environ.get("XBENCH_LEADERBOARD_WORKERS"):
        requested = int(os.environ["XBENCH_LEADERBOARD_WORKERS"])
    if requested is not None:
        return max(1, requested)
    cores = os.cpu_count() or 1
    if rows < PARALLEL_MIN_ROWS or jobs < PARALLEL_MIN_JOBS or cores < PARALLEL_MIN_CORES:
        return 1
    return min(4, cores)


def run(jobs: list[Job], workers: int) -> list[Any]:
    """The jobs' results, in order; in ``workers`` spawned processes when more than one."""
    if workers <= 1 or len(jobs) < 2:
        return [_call(j.func, j.args, j.kwargs) for j in jobs]
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_call, j.func, j.args, j.kwargs) for j in jobs]
        return [f.result() for f in futures]


def plan(agg: Aggregates, dataset: str, folder: Path, run_dir: Path, models: list[str], method_order: list[str],
         baselines: set[str], names: Names) -> list[Job]:
    """Every figure of one dataset page as a job."""
    jobs: list[Job] = []
    untrained = {m for m in models if m in agg.untrained}
    ps = agg.per_seed[(agg.per_seed["view"] == "all") & (agg.per_seed["dataset_label"].astype(object) == dataset)]

    def display(metric: str, value: str, row) -> str:
        return names.display(metric, value, row["family"], row["facet"], bool(row["summary"]))

    # heatmap gallery: the first seed of every model that has one
    for model, (seed, cell) in _gallery_cells(run_dir, dataset, ps, models).items():
        def finish(made, model=model, seed=seed):
            if made:
                made.update(title=f"{model}, seed {seed}", folder=f"{folder.name}/gallery")
            return made
        jobs.append(Job("gallery", "gallery", (cell, folder / "gallery", method_order), finish=finish))

    # box plots per method across the model sweep (Oliveira), correctly classified samples
    samples = agg.samples
    x_param, hue = draw.sweep_axes(models, agg.model_params, untrained)
    if not samples.empty and x_param:
        ds_rows = samples[(samples["dataset_label"].astype(object) == dataset).to_numpy()
                          & samples["correct"].fillna(False).to_numpy(bool)
                          & samples["higher_is_better"].notna().to_numpy()]
        for (metric, value), rows in ds_rows.groupby(["metric_label", "value_name"], observed=True, sort=True):
            first = rows.iloc[0]
            if str(first["category"]) == "classification" or (bool(first["summary"]) and pd.notna(first["facet"])):
                continue  # per-facet summaries (rmse/contrast/*) have their own figures
            name = display(str(metric), str(value), first)
            caption = (f"Per-sample values on correctly classified test samples, by {x_param}"
                       + (f" and {hue}" if hue else "") + "; untrained models in grey (Oliveira et al. 2024).")
            cols = ["model_label", "method_label", "value"]
            jobs.append(Job("box", "box_plots", (rows[cols], agg.model_params, folder, [dataset, str(metric), str(value)]),
                            {"title_value": name, "baselines": baselines, "untrained": untrained},
                            finish=_item(f"{metric} / {name}", caption)))

    # curves (MoRF) and grid families (RMSE against severity and per layer)
    member = ps["family"].notna().to_numpy() & ~ps["summary"].fillna(False).to_numpy(bool)
    members = ps[member]
    member_family = members["family"].astype(object).to_numpy()
    for (metric, family), rows in members.groupby([members["metric_label"].astype(object), member_family], sort=True):
        key = [dataset, metric, family]
        axes = names.axes_of(metric, family)
        kind = names.kind(metric, family)
        hib = rows["higher_is_better"].dropna()
        hib = bool(hib.iloc[0]) if len(hib) else None
        if kind == "curve":
            better = {True: "higher is better", False: "lower and faster-falling is more faithful"}.get(hib, "")
            jobs.append(Job("curves", "curves", (rows, folder, key),
                            {"baselines": baselines, "family": family, "level": axes.level, "higher_is_better": hib},
                            finish=_item(f"{metric}: mean {family} curve against {axes.level}",
                                         f"Mean over samples and seeds of each {family} value at each {axes.level}"
                                         + (f" ({better})" if better else "") + "; the band spans the seeds' mean "
                                         "curves (a MoRF curve: f(x^k) after removing the k most relevant patches, "
                                         "Rio-Torto et al. 2020).")))
        elif kind == "grid":
            jobs.append(Job("robustness", "severity_curves", (rows, folder, key),
                            {"baselines": baselines, "family": family, "untrained": untrained, "facet": axes.facet,
                             "level": axes.level},
                            finish=_item(f"{metric}: {family} against {axes.level}",
                                         f"Mean over samples, seeds and trained model variants, per {axes.facet} "
                                         "(Treyer).")))
            jobs.append(Job("robustness", "layer_curves", (rows, agg.method_params, folder, key + ["layers"]),
                            {"family": family, "untrained": untrained, "level": axes.level},
                            finish=_item(f"{metric}: {family} per target layer",
                                         f"CAM methods by target layer, mean over {axes.level}, samples, seeds and "
                                         f"trained model variants; one line per {axes.facet} (Treyer).")))

    # ΔAUC against RMSE (Treyer): model-level delta grids against sample-level grid families
    mps = agg.model_per_seed[agg.model_per_seed["dataset_label"].astype(object) == dataset]
    m_member = mps["family"].notna().to_numpy() & ~mps["summary"].fillna(False).to_numpy(bool)
    m_grid = m_member & mps["facet"].notna().to_numpy() & mps["level"].notna().to_numpy()
    m_family = mps["family"].astype(object)
    for y_family in sorted({str(f) for f in m_family[m_grid]}):
        if not y_family.startswith("delta"):
            continue
        ymembers = mps[m_grid & (m_family == y_family).to_numpy()]
        for (metric, family), rows in members.groupby([members["metric_label"].astype(object), member_family],
                                                      sort=True):
            if names.kind(metric, family) != "grid":
                continue
            axes = names.axes_of(metric, family)

            def finish(made, title=f"{y_family} against {metric}: {family}", axes=axes):
                if not made:
                    return None
                corr = "; ".join(f"{c['method']}: r = {c['r']:.2f}" for c in made[1] if math.isfinite(c["r"]))
                return {"src": made[0], "title": title,
                        "caption": f"Each point is one model instance at one {axes.facet} (colour) and {axes.level} "
                                   "(size) (Treyer). Pearson r per method: " + (corr or "—") + "."}
            jobs.append(Job("robustness", "delta_vs_value", (ymembers, rows, folder, [dataset, metric, family, y_family]),
                            {"x_name": f"{family} (per-seed mean)", "y_name": str(y_family), "baselines": baselines},
                            finish=finish))

    # explanation against classification performance (Oliveira)
    mnames = mps["value_name"].astype(str)
    acc = mps[mnames.to_numpy() == "accuracy"]
    if acc.empty:  # no accuracy: the first directed plain model-level value
        directed_up = mps["higher_is_better"].astype("boolean").fillna(False).to_numpy(bool)
        acc = mps[directed_up & mps["family"].isna().to_numpy()]
        acc = acc[acc["value_name"].astype(str) == (acc["value_name"].astype(str).iloc[0] if len(acc) else "")]
    xs = acc[["model_label", "seed", "mean"]].astype({"model_label": object}).rename(columns={"mean": "x"})
    if len(xs) >= 3:
        x_name = str(acc["value_name"].iloc[0])
        head = ps[ps["family"].isna().to_numpy() & ps["higher_is_better"].notna().to_numpy()]
        series = agg.series[(agg.series["dataset_label"].astype(object) == dataset) & (agg.series["view"] == "all")]
        cats = dict(zip(zip(series["metric_label"].astype(str), series["value_name"].astype(str)),
                        series["category"].astype(str)))
        panels = []
        for (metric, value), rows in head.groupby(["metric_label", "value_name"], observed=True, sort=True):
            if cats.get((str(metric), str(value))) in ("classification", None):
                continue
            pts = rows[["model_label", "method_label", "seed", "mean"]].astype(
                {"model_label": object, "method_label": object}).rename(columns={"mean": "y"}).merge(
                xs, on=["model_label", "seed"])
            panels.append((f"{metric} / {display(str(metric), str(value), rows.iloc[0])}", pts))

        def finish(made, x_name=x_name):
            if not made:
                return None
            return {"src": made[0], "title": f"Explanation scores against {x_name}", "fits": made[1],
                    "caption": "One point per model instance (variant × seed) and method, with each method's "
                               "least-squares line: is a method's score more than its model's accuracy (Oliveira "
                               "et al. 2024)? Slopes and Pearson r in the table below."}
        jobs.append(Job("correlation", "explanation_vs_classification", (panels, folder, [dataset, "acc"]),
                        {"x_name": x_name, "baselines": baselines}, finish=finish))
    return jobs


def _item(title: str, caption: str) -> Callable[[Any], dict | None]:
    return lambda path: {"src": path, "title": title, "caption": caption} if path else None


def _gallery_cells(run_dir: Path, dataset: str, ps: pd.DataFrame, models: list[str]) -> dict[str, tuple[int, Path]]:
    """For each model of the page (in page order), the gallery cell of its first seed that is part of
    the current results."""
    gallery_dir = run_dir / "gallery"
    seen: dict[str, tuple[int, Path]] = {}
    if not gallery_dir.is_dir():
        return seen
    valid = {(str(m), int(s)) for m, s in zip(ps["model_label"].astype(object), ps["seed"])}
    for cell in sorted(gallery_dir.iterdir()):
        meta = read_gallery_meta(cell)
        if meta is None:
            continue
        model, seed = str(meta.get("model_label")), int(meta.get("seed", 0))
        if meta.get("dataset_label") != dataset or (valid and (model, seed) not in valid):
            continue
        if model not in seen or seed < seen[model][0]:
            seen[model] = (seed, cell)
    return {m: seen[m] for m in models if m in seen}


def assemble(jobs: list[Job], results: list[Any], folder: Path) -> dict[str, list[dict]]:
    """Page items per section, in plan order, with image paths relative to the site."""
    out: dict[str, list[dict]] = {"glance": [], "gallery": [], "box": [], "curves": [], "robustness": [],
                                  "correlation": []}
    for job, result in zip(jobs, results):
        item = job.finish(result)
        if not item:
            continue
        if job.section != "gallery":
            item["src"] = f"{folder.name}/{Path(item['src']).name}"
        out[job.section].append(item)
    return out


# ----------------------------------------------------------------------------- at a glance

GLANCE_TITLE = "Which method to trust here: mean rank per category"


def glance_legend(verified: Verification) -> str:
    marks = ("✓ verified against an independent implementation, ✗ failed verification, – not verified "
             "(xbench verify)." if verified.record is not None else
             "No verification record for this run: `xbench verify --out RUN_DIR/verification` makes one.")
    return ("Each method's mean rank per metric category, over the category's ranked values and the trained models "
            "(1 = best, darkest); cost: the rank of its time per sample (1 = fastest). Baselines are not ranked. "
            + marks)


def glance_panel(page: DatasetPage, verified: Verification) -> dict | None:
    """The data of one dataset's rank heatmap, from its "Methods at a glance" overview."""
    o = page.overview
    if o is None:
        return None
    cost = o.cost_ranks() if o.costs else None
    metrics = {s.category: {t.metric for t in s.ranked} for s in page.views["all"]}
    notes = []
    for category in o.categories:
        marks = [verified.metric(m) for m in sorted(metrics.get(category, ()))]
        done = sum(1 for m in marks if m is not None and m.state == "verified")
        failed = sum(1 for m in marks if m is not None and m.state == "failed")
        notes.append("" if verified.record is None else
                     f"{done}/{len(marks)} verified" + (f", {failed} failed" if failed else ""))
    methods = []
    for r in o.rows:
        mark = verified.method(r.method)
        methods.append((r.method, r.baseline, mark.symbol if mark else "", mark.state if mark else ""))
    ranks = [list(r.ranks) + ([cost[i]] if cost else []) for i, r in enumerate(o.rows)]
    return {"title": page.name, "methods": methods, "columns": list(o.categories) + (["cost"] if cost else []),
            "notes": notes + (["time / sample"] if cost else []), "ranks": ranks,
            "worst": max(o.ranked_methods, sum(v is not None for v in (cost or [])))}


def glance_job(panels: list[dict], folder: Path, key: list[str], verified: Verification) -> Job:
    """The rank heatmap of one page (one panel per dataset on the index)."""
    key_line = "Mean rank (1 = best, dark); cost: 1 = fastest." + (
        " ✓ verified · ✗ failed verification · – not verified (xbench verify)" if verified.record is not None else
        " No verification record (xbench verify).")
    caption = glance_legend(verified)

    def finish(made):
        return {"src": made[0], "width": made[1], "height": made[2], "title": GLANCE_TITLE, "caption": caption} \
            if made else None
    return Job("glance", "rank_heatmap", (panels, folder, key), {"legend": key_line}, finish=finish)
