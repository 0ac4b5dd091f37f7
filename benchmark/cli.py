"""The ``xbench`` command line. Exit status: 0 all good, 1 something failed, 2 bad usage or config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .errors import UsageError, XbenchError
from .specs import SPEC_TYPES

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

KIND_CHOICES = tuple(k for k in SPEC_TYPES if k != "data_sources")  # data sources: `xbench data list`


class _Group(click.Group):
    """Turns xbench's own errors into their message and exit status, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except XbenchError as exc:
            err.print(f"[bold red]Error:[/] {escape(str(exc))}")
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            err.print(f"[yellow]Interrupted[/] ({escape(str(exc) or 'Ctrl-C')}). Whole results so far are kept and "
                      "the manifest says the run was interrupted; run the same command again to compute the rest.")
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="xbench")
def main() -> None:
    """Benchmark the correctness of image attribution methods on data whose truth is known."""


def _registry():
    from .registry import load_registry

    return load_registry()


def _report_broken(registry) -> None:
    for p in registry.problems:
        err.print(f"[yellow]Plugin {escape(p.name)!s} was left out:[/] {escape('; '.join(p.errors))}")


_filters = [
    click.option("-d", "--dataset", "datasets", multiple=True, help="Only these datasets (name or glob; repeatable)."),
    click.option("-m", "--model", "models", multiple=True, help="Only these models (name or glob; repeatable)."),
    click.option("-a", "--method", "methods", multiple=True, help="Only these methods (name or glob; repeatable)."),
    click.option("-M", "--metric", "metrics", multiple=True, help="Only these metrics (name or glob; repeatable)."),
    click.option("--seeds", help="Comma-separated seeds, e.g. 0,1,2 (overrides the config)."),
]


def _with_filters(fn):
    for option in reversed(_filters):
        fn = option(fn)
    return fn


def _parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers, e.g. 0,1,2", param_hint="--seeds")
    if not seeds:
        raise click.BadParameter("give at least one seed", param_hint="--seeds")
    return seeds


def _config(config, registry, *, seeds=None, filters=None, **overrides):
    from .config import load_config

    overrides["seeds"] = _parse_seeds(seeds)
    return load_config(config, registry, overrides=overrides, filters=filters)


PRESET_HELP = ("Presets: quick (the default: every method and metric on generated cardiac data, two studies' "
               "claims at miniature scale, minutes on a laptop CPU); callanan, oliveira, riotorto, treyer (each "
               "source study end to end with its published claims, ≤ 15 min on 2 CPU cores); literature (recent papers' "
               "findings checked on xbench's ground-truth data, ≤ 15 min on 2 CPU cores); paper (the four "
               "studies at the sources' scale, for a GPU machine).")


@main.command(epilog=PRESET_HELP)
@click.argument("config", required=False)
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default from the config).")
@click.option("--device", help="auto, cpu, cuda or cuda:N (default: auto).")
@click.option("--executor", help="local, dask, or an executor from a plugin.")
@click.option("--scheduler", help="Address of a running Dask scheduler (dask executor), e.g. tcp://host:8786.")
@click.option("--workers", type=click.IntRange(min=1), help="Workers of a local Dask cluster.")
@click.option("--no-leaderboard", is_flag=True, help="Do not build the leaderboard at the end.")
@click.option("-v", "--verbose", "verbose", count=True, help="Print every progress line (when not on a terminal).")
@click.option("-q", "--quiet", is_flag=True, help="Print only warnings, failures and the summary.")
@_with_filters
def run(config, out, device, executor, scheduler, workers, no_leaderboard, verbose, quiet, datasets, models, methods,
        metrics, seeds):
    """Run every valid combination of CONFIG (a TOML file or a preset; default: quick).

    Re-running the same output directory computes only what is missing.
    """
    from .progress import RunProgress
    from .runner import default_out
    from .runner import run as run_plan

    registry = _registry()
    _report_broken(registry)
    cfg = _config(config, registry, seeds=seeds, device=device, executor=executor, scheduler=scheduler,
                  workers=workers, filters={"datasets": datasets, "models": models, "methods": methods,
                                            "metrics": metrics})
    out_dir = Path(out) if out else default_out(cfg)
    err.print(f"xbench {__version__}: running [bold]{escape(cfg.source)}[/] into {escape(str(out_dir))}")
    for note in cfg.notes:
        err.print(f"[yellow]Note:[/] {escape(note)}")
    _warn_oversubscription(cfg)
    with RunProgress(err, verbosity=0 if quiet else 1 + verbose) as progress:
        summary = run_plan(cfg, registry, out=out_dir, on_event=progress.event)
    board = None
    if cfg.run.leaderboard and not no_leaderboard:
        from .leaderboard import build_leaderboard

        board = build_leaderboard(out_dir)
    _print_summary(summary, board, registry)
    sys.exit(1 if (summary.exit_code or registry.problems) else 0)


def _warn_oversubscription(cfg) -> None:
    """Processes × threads above the cores makes torch 15–23× slower here: say so before it happens."""
    import os

    cores = os.cpu_count() or 1
    processes = cfg.run.workers if cfg.run.executor == "dask" and not cfg.run.scheduler else 1
    threads = cfg.run.threads or (1 if processes > 1 else 0)
    if threads and processes * threads > cores:
        err.print(f"[yellow]Warning:[/] {processes} worker process(es) × threads = {threads} is "
                  f"{processes * threads} CPU threads on {cores} core(s): oversubscribed torch runs many times "
                  "slower. Lower run.threads (or --workers) so that workers × threads ≤ cores.")


def _print_summary(summary, board, registry) -> None:
    out.print()
    state = "" if summary.status == "complete" else f" [yellow](status: {escape(summary.status)}, " \
                                                    f"{summary.missing} unit(s) without results)[/]"
    out.print(f"[bold]Done[/] in {summary.wall_seconds:.1f} s: {summary.computed} units computed, "
              f"{summary.skipped_done} already done, {len(summary.failed)} failed, {summary.rows} rows written."
              + state)
    if summary.skipped_combinations:
        out.print(f"  {summary.skipped_combinations} combination(s) skipped (a missing capability or an `only`); "
                  "`xbench plan` lists each with its reason.")
    out.print(f"  results:     {summary.out / 'results'}  (read with xbench.load_results('{summary.out}'))")
    out.print(f"  manifest:    {summary.out / 'manifest.json'}")
    if board is not None:
        out.print(f"  leaderboard: {board / 'index.html'}  and  {board / 'leaderboard.md'}")
    for warning in summary.warnings:
        out.print(f"[yellow]training warning:[/] {escape(warning)}")
    if summary.failed:
        out.print(f"[red]{len(summary.failed)} unit(s) failed[/]; details in {summary.out / 'errors'}:")
        shown = {}
        for e in summary.failed:
            shown.setdefault((e["phase"], e["error"]), []).append(e)
        for (phase, error), items in list(shown.items())[:10]:
            first = items[0]
            where = " × ".join(str(x) for x in (first["dataset"], first["model"], first["method"], first["metric"]) if x)
            more = f" (+{len(items) - 1} more)" if len(items) > 1 else ""
            out.print(f"  - {escape(phase)}: {escape(where)}: {escape(error)}{more}")
    if registry.problems:
        out.print(f"[yellow]{len(registry.problems)} plugin(s) could not be loaded; see `xbench plugins --all`.[/]")


@main.command()
@click.argument("config", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_with_filters
def plan(config, as_json, datasets, models, methods, metrics, seeds):
    """Show the cells and units CONFIG would run, and every skipped combination with its reason."""
    from .plan import make_plan

    registry = _registry()
    _report_broken(registry)
    cfg = _config(config, registry, seeds=seeds,
                  filters={"datasets": datasets, "models": models, "methods": methods, "metrics": metrics})
    p = make_plan(cfg, registry)
    for note in cfg.notes:
        err.print(f"[yellow]Note:[/] {escape(note)}")
    if as_json:
        click.echo(json.dumps({
            "cells": [{"dataset": c.dataset.label, "model": c.model.label, "seed": c.seed, "key": c.key,
                       "units": [{"method": u.method.label if u.method else None, "metric": u.metric.label,
                                  "key": u.key} for u in p.units[c.key]]} for c in p.cells],
            "skipped": [s.__dict__ for s in p.skipped],
        }, indent=2))
        return
    out.print(f"[bold]{len(p.cells)} cells, {len(p.all_units)} units[/] from {escape(cfg.source)}")
    table = Table("dataset", "model", "seed", "units", "methods", "metrics")
    for c in p.cells:
        units = p.units[c.key]
        table.add_row(escape(c.dataset.label), escape(c.model.label), str(c.seed), str(len(units)),
                      escape(", ".join(sorted({u.method.label for u in units if u.method}))),
                      escape(", ".join(sorted({u.metric.label for u in units}))))
    out.print(table)
    if p.skipped:
        out.print(f"[bold]{len(p.skipped)} skipped combinations[/]")
        skipped = Table("dataset", "model", "method", "metric", "reason")
        for s in p.skipped:
            skipped.add_row(*(escape(x or "") for x in (s.dataset, s.model, s.method, s.metric, s.reason)))
        out.print(skipped)


@main.command(name="list")
@click.argument("kind", required=False, type=click.Choice(KIND_CHOICES))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(kind, as_json):
    """List installed datasets, models, methods, metrics and executors (or one KIND), with their
    params (type, default, allowed values), tags and descriptions."""
    from .config import plugin_params
    from .specs import defaults, resolve_tags

    registry = _registry()
    kinds = [kind] if kind else list(KIND_CHOICES)
    data = {}
    for k in kinds:
        items = []
        for name in registry.names(k):
            entry = registry.get(k, name)
            spec = entry.spec
            item = {"name": name, "version": entry.version, "plugin": entry.plugin.name,
                    "description": getattr(spec, "description", "")}
            params = plugin_params(k, spec) if hasattr(spec, "params") else {}
            item["params"] = {key: p.describe() for key, p in params.items()}
            for tag in ("provides", "requires"):
                if hasattr(spec, tag):
                    value = getattr(spec, tag)
                    item[tag] = sorted(resolve_tags(value, defaults(params))) if value is not None else []
            if k == "metrics":
                item.update(category=spec.category, scope=spec.scope,
                            values={v: (d.describe() if hasattr(d, "describe") else d) for v, d in spec.values.items()})
            if k == "methods":
                item.update(baseline=spec.baseline, stochastic=spec.stochastic)
            items.append(item)
        data[k] = items
    if as_json:
        click.echo(json.dumps(data if not kind else data[kind], indent=2, default=str))
        return
    for k, items in data.items():
        table = Table(title=k, title_justify="left", show_lines=True)
        for col in ("name", "description", "params", "tags"):
            table.add_column(col, overflow="fold")
        for item in items:
            params = "\n".join(_describe_param(key, p) for key, p in item["params"].items())
            tags = "; ".join(f"{t}: {', '.join(item[t])}" for t in ("provides", "requires") if item.get(t))
            table.add_row(escape(f"{item['name']} (v{item['version']})"), escape(item["description"]),
                          escape(params), escape(tags))
        out.print(table)
    _report_broken(registry)


def _describe_param(key: str, p: dict) -> str:
    allowed = f" ∈ {{{', '.join(map(str, p['choices']))}}}" if "choices" in p else ""
    bounds = ", ".join(f"{k.replace('ge', '≥').replace('gt', '>').replace('le', '≤')} {v}" for k, v in
                       p.get("range", {}).items() if k != "min_items")
    return f"{key} = {p['default']!r} ({p['type']}{allowed}{', ' + bounds if bounds else ''})"


@main.command()
@click.option("--all", "show_all", is_flag=True, help="Include the built-in plugins.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(show_all, as_json):
    """List plugin packages: name, version, distribution, hooks and status."""
    registry = _registry()
    records = [p for p in registry.plugins if show_all or not p.builtin]
    if as_json:
        click.echo(json.dumps([p.as_dict() for p in records], indent=2))
    else:
        table = Table("name", "version", "distribution", "hooks", "status")
        for p in records:
            status = p.status if not p.errors else f"{p.status}: {'; '.join(p.errors)}"
            table.add_row(escape(p.name), escape(p.version or ""), escape(p.distribution or ""),
                          escape(", ".join(h.removeprefix("xbench_") for h in p.hooks)), escape(status))
        out.print(table)
        if not records:
            out.print("No third-party plugins installed (built-ins: --all).")
    sys.exit(1 if any(p.status == "error" for p in records) else 0)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Where to write the site "
              "(default RUN_DIR/leaderboard).")
def leaderboard(run_dir, out):
    """Build the static leaderboard of RUN_DIR from its Parquet results alone."""
    from .leaderboard import build_leaderboard

    site = build_leaderboard(run_dir, out)
    click.echo(f"leaderboard: {site / 'index.html'}")
    click.echo(f"markdown:    {site / 'leaderboard.md'}")


def _parse_params(kind: str, name: str, pairs, defaults) -> dict:
    """``k=v`` pairs from the command line; values are TOML (``64``, ``true``, ``"x"``), else strings."""
    import tomllib

    from .config import check_param

    params = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param {pair!r} is not of the form key=value, e.g. --param size=64.")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        params[key.strip()] = check_param("--param", kind, name, key.strip(), value, defaults)
    return params


@main.command()
@click.argument("dataset")
@click.option("-p", "--param", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A dataset param (repeatable), e.g. --param mode=sex_marker --param n_test=64.")
@click.option("--seed", type=int, default=0, show_default=True, help="The data seed.")
@click.option("--split", type=click.Choice(("train", "val", "test")), default="test", show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG file (default DATASET-SPLIT.png).")
@click.option("--per-class", type=click.IntRange(1, 64), default=4, show_default=True, help="Examples per class.")
@click.option("--card", is_flag=True, help="Print the dataset's card (what it is, its licence, how to get the data, "
                                           "its folder layout) instead of drawing it.")
def show(dataset, pairs, seed, split, out_path, per_class, card):
    """Write a PNG grid of DATASET's examples per class with the ground truth drawn on top (or, with
    --card, print what the dataset is and how to get its data)."""
    from .checks import check_split
    from .show import show_dataset

    from .config import plugin_params
    from .specs import defaults

    registry = _registry()
    spec = registry.get("datasets", dataset).spec
    table = plugin_params("datasets", spec)
    params = _parse_params("datasets", dataset, pairs, table)  # a bad --param is an error, with --card too
    merged = {**defaults(table), **params}
    if spec.validate is not None:
        try:
            spec.validate(merged)
        except (ValueError, XbenchError) as exc:
            raise UsageError(f"--param: {exc}") from None
    if card:
        from rich.markdown import Markdown

        out.print(Markdown(spec.card or f"{spec.name}: {spec.description or 'no card'}"))
        return
    data = spec.load(merged, seed)
    check_split(data.split(split), dataset, split, len(data.class_names))
    path = show_dataset(data, out_path or Path(f"{dataset}-{split}.png"), split=split, per_class=per_class,
                        params=params, seed=seed)
    click.echo(str(path))


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="The verdicts as JSON (a list of verdict objects).")
def findings(run_dir, as_json):
    """Evaluate the claims that RUN_DIR's study states against its results.

    One table row per claim on a wide terminal, one block per claim on a narrow one or through a
    pipe. Exit status 1 when a claim is contradicted, 0 otherwise (inconclusive claims do not fail),
    2 when RUN_DIR is not a run directory."""
    from .leaderboard.findings import evaluate, exit_status
    from .leaderboard.load import load_run
    from .leaderboard.tables import findings as typed

    run = load_run(run_dir)
    claims = run.manifest.get("claims") or []
    verdicts = evaluate(run.frame, claims) if claims else []
    if not run.status.complete:
        err.print(f"[yellow]{escape(run.status.headline)}[/]")
    if as_json:
        click.echo(json.dumps([v.to_dict() for v in verdicts], indent=2))
        sys.exit(exit_status(verdicts))
    table = typed(verdicts)
    if not table.rows:
        out.print("This run states no claims.")
        sys.exit(0)
    render = _findings_table if out.width >= FINDINGS_TABLE_WIDTH else _findings_blocks
    out.print(render(table, f"Findings of {run_dir}"))
    out.print(" · ".join(f"{n} {k}" for k, n in table.counts.items()))
    sys.exit(exit_status(verdicts))


FINDINGS_TABLE_WIDTH = 160
"""Below this many columns the findings' eight columns would fold into cells a few characters
wide (a claim some forty lines tall), so each claim is printed as a block of its own."""
VERDICT_STYLE = {"reproduced": "bold green", "contradicted": "bold red", "inconclusive": "yellow"}


def _findings_table(findings, title: str) -> Table:
    """One row per claim (every plugin- or claim-provided string printed literally)."""
    from rich.text import Text

    table = Table(title=Text(title), show_lines=True)
    for column in ("verdict", "claim", "data", "measured", "published", "statistic", "n", "reason"):
        table.add_column(column, overflow="fold", justify="right" if column == "n" else "left")
    for f in findings.rows:
        table.add_row(Text(f.verdict_text, style=VERDICT_STYLE[f.verdict]),
                      Text.assemble((f.id, "bold"), ": ", f.claim, "\n", (f.source, "dim")),
                      Text(f.data), Text(f.measured), Text(f.published), Text(f.statistic), str(f.n), Text(f.reason))
    return table


def _findings_blocks(findings, title: str):
    """One block per claim, a label column and a value column, for narrow terminals and pipes."""
    from rich.console import Group
    from rich.text import Text

    blocks = [Text(title, style="bold")]
    for f in findings.rows:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_row("", Text.assemble((f.verdict_text, VERDICT_STYLE[f.verdict]), "  ", (f.id, "bold")))
        for key, value in (("claim", f.claim), ("source", f.source), ("data", f.data), ("measured", f.measured),
                           ("published", f.published), ("statistic", f"{f.statistic} (n = {f.n})"),
                           ("reason", f.reason)):
            grid.add_row(key, Text(value))
        blocks += [Text(""), grid]
    return Group(*blocks)


@main.command()
@click.argument("patterns", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON instead of a table.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write verification.json and verification.md here (a run's leaderboard reads "
                   "RUN_DIR/verification/verification.json).")
def verify(patterns, as_json, out_dir):
    """Cross-check every installed method and metric that has a check against an independent
    implementation (Quantus, pytorch-grad-cam, scipy, …), or only those matching PATTERNS (plugin or
    check names, globs).

    A check whose reference is not installed is skipped (pip install "xbench[verify]").
    Exit status 1 when a check fails or raises, 0 otherwise."""
    from .verification import reference_text, verify as run_checks

    registry = _registry()
    _report_broken(registry)
    with err.status("verifying") as status:
        record = run_checks(registry, tuple(patterns),
                            progress=lambda spec: status.update(f"verifying {spec.plugin} against {spec.reference}"))
    paths = record.write(out_dir) if out_dir else []
    if as_json:
        click.echo(json.dumps(record.to_dict(), indent=2))
    else:
        style = {"pass": "green", "fail": "bold red", "error": "bold red", "skipped": "yellow"}
        table = Table(title="Verification against independent implementations", show_lines=True)
        table.add_column("plugin", no_wrap=True)
        table.add_column("reference · inputs · definition differences adjusted for", overflow="fold", ratio=1)
        for column in ("max |Δ|", "tol.", "verdict"):
            table.add_column(column, overflow="fold")
        for o in record.outcomes:
            verdict = f"[{style[o.verdict]}]{o.verdict}[/]" + (f": {escape(o.reason)}" if o.reason else "")
            about = (f"[bold]{escape(reference_text(o))}[/]\n[dim]inputs:[/] {escape(o.inputs)}"
                     + (f"\n[dim]adjusted for:[/] {escape(o.differences)}" if o.differences else ""))
            table.add_row(escape(f"{o.kind[:-1]}\n{o.plugin}"), about,
                          "—" if o.difference is None else f"{o.difference:.2g}", f"{o.tolerance:.2g}", verdict)
        out.print(table)
        counts = record.counts
        out.print(f"{counts['pass']} passed, {counts['fail']} failed, {counts['error']} errors, "
                  f"{counts['skipped']} skipped.")
        for kind, names in record.unverified.items():
            if names and not patterns:
                out.print(f"[dim]Not verified ({kind} without a check): {escape(', '.join(names))}[/]")
        for path in paths:
            out.print(f"  {path}")
    sys.exit(0 if record.ok else 1)


# ----------------------------------------------------------------------------- xbench data

@main.group()
def data() -> None:
    """Real datasets and weights: list, fetch, verify, locate (under $XBENCH_DATA).

    \b
    xbench data list                        every source the installed plugins know, with its state
    xbench data fetch medmnist:breastmnist  download (resumable, retried) and verify by checksum
    xbench data verify                      re-check every file that is here by its checksum
    xbench data path hcp                    where xbench reads a source from
    """


def _sources(registry) -> dict:
    return {name: registry.get("data_sources", name).spec for name in registry.names("data_sources")}


def _natural(name: str):
    return [int(p) if p.isdigit() else p for p in name.split(":")]


def _size(source) -> str:
    from .leaderboard.formatting import fmt_bytes

    size = source.size
    if size is None:
        return source.size_note or "?"
    return ("≤ " if source.size_note.startswith("at most") else "≈ " if source.size_note else "") + fmt_bytes(size)


STATE_STYLE = {"verified": "green", "present": "cyan", "partial": "yellow", "missing": "dim", "corrupt": "bold red",
               "not installed": "dim"}


@data.command(name="list")
@click.argument("patterns", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def data_list(patterns, as_json):
    """Every data source (or those PATTERNS name: a name, a prefix such as medmnist:breastmnist, a glob):
    what it is, where xbench looks, its state, licence, size and how to get it. Nothing is hashed:
    `verified` comes from the last fetch or verify of the unchanged file."""
    from . import sources as S

    registry = _registry()
    _report_broken(registry)
    known = _sources(registry)
    chosen = S.select(known, patterns) if patterns else list(known.values())
    states = [S.inspect(src) for src in sorted(chosen, key=lambda s: _natural(s.name))]
    if as_json:
        click.echo(json.dumps([{"name": st.source.name, "description": st.source.description, "kind": st.source.kind,
                                "state": st.state, "where": str(S.where(st.source) or ""), "licence": st.source.licence,
                                "size": st.source.size, "size_note": st.source.size_note,
                                "homepage": st.source.homepage, "version": st.source.version,
                                "get": S.how_to_get(st.source), "problems": st.problems, "note": st.note}
                               for st in states], indent=2))
        return
    root = S.data_root()
    table = Table(title=f"Data sources (data root {escape(str(root))}; set $XBENCH_DATA to move it)",
                  title_justify="left")
    table.add_column("source", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("size", justify="right", max_width=14)
    table.add_column("licence")
    table.add_column("what · where · how to get it", overflow="fold")
    for st in states:
        src = st.source
        place = S.where(src)
        shown = "—" if place is None else str(place).replace(str(root), "$XBENCH_DATA", 1)
        lines = [escape(src.description), f"[dim]{escape(shown)}[/]"]
        if not src.fetchable:
            lines.append(escape(S.how_to_get(src)))
        lines += [f"[red]{escape(p)}[/]" for p in st.problems]
        table.add_row(escape(src.name), f"[{STATE_STYLE[st.state]}]{escape(st.state)}[/]", escape(_size(src)),
                      escape(src.licence), "\n".join(lines))
    out.print(table)
    counts = {k: sum(st.state == k for st in states) for k in STATE_STYLE}
    out.print(" · ".join(f"{v} {k}" for k, v in counts.items() if v) + ". `xbench data fetch SOURCE` downloads one "
              "(a prefix takes a group); `xbench data verify` re-checks the checksums.")


@data.command(name="fetch")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Download again even when a verified file is here.")
@click.option("--retries", type=click.IntRange(0, 100), default=5, show_default=True,
              help="Retries after a failed attempt (with exponential back-off).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds without data before an attempt counts as stalled.")
def data_fetch(names, force, retries, timeout):
    """Download NAMES (a source, a prefix such as medmnist:breastmnist for every size, or a glob),
    verify each file by its published checksum and place it atomically. Sources behind terms of
    access (HCP, ImageNet) or installed by a package manager print the exact steps instead."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    from . import sources as S
    from .download import DownloadError, Policy, fetch

    registry = _registry()
    _report_broken(registry)
    chosen = S.select(_sources(registry), names)
    policy = Policy(retries=retries, timeout=timeout)
    failed = []
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=err, transient=True) as bars:

        def progress(name):
            task = bars.add_task(escape(name), total=None)
            return lambda done, total: bars.update(task, completed=done, total=total)

        for src in chosen:
            if not S.effective(src)[0].fetchable:
                state = S.inspect(src, hash_files=True)
                if state.state == "verified":
                    out.print(f"[green]{escape(src.name)}[/]: already in place at {escape(str(S.where(src)))}")
                    continue
                failed.append(src.name)
                problems = "".join(f"; {p}" for p in state.problems)
                out.print(f"[yellow]{escape(src.name)}[/] cannot be downloaded by xbench ({escape(src.licence)}). "
                          f"Its state here: {escape(state.state + problems)}.")
                out.print(escape(src.steps or f"See {src.homepage}."))
                continue
            try:
                state = fetch(src, force=force, policy=policy, progress=progress,
                              report=lambda line: err.print(escape(line)))
            except DownloadError as exc:
                failed.append(src.name)
                err.print(f"[bold red]{escape(src.name)}:[/] {escape(str(exc))}")
                continue
            style = STATE_STYLE[state.state]
            out.print(f"[{style}]{escape(src.name)}: {escape(state.state)}[/] at {escape(str(S.where(src)))}"
                      + (f" ({escape('; '.join(state.problems))})" if state.problems else ""))
            if state.state != "verified":
                failed.append(src.name)
    if failed:
        err.print(f"[red]{len(failed)} of {len(chosen)} source(s) are not in place:[/] {escape(', '.join(failed))}.")
    sys.exit(1 if failed else 0)


@data.command(name="verify")
@click.argument("names", nargs=-1)
def data_verify(names):
    """Re-check by checksum (and layout) every source that is here, or NAMES. Exit 1 when a file is
    damaged, another version, or missing from a source that was named."""
    from . import sources as S

    registry = _registry()
    _report_broken(registry)
    known = _sources(registry)
    chosen = S.select(known, names) if names else list(known.values())
    bad = 0
    checked = 0
    for src in sorted(chosen, key=lambda s: _natural(s.name)):
        state = S.inspect(src)
        if state.state in ("missing", "not installed") and not names:
            continue
        state = S.inspect(src, hash_files=True, recompute=True)
        checked += 1
        where = escape(str(S.where(src) or "—"))
        if state.state == "verified":
            out.print(f"[green]ok[/]       {escape(src.name)} ({where})")
            continue
        bad += 1
        out.print(f"[bold red]{escape(state.state):<8}[/] {escape(src.name)} ({where})")
        for problem in state.problems or [f"not in place: {S.how_to_get(src)}"]:
            out.print(f"         {escape(problem)}")
        fix = (f"`xbench data fetch {src.name}` downloads it again (the bad file is replaced once the new one "
               "verifies)" if state.source.fetchable else S.how_to_get(src))
        out.print(f"         fix: {escape(fix)}")
    if not checked:
        out.print("No data source is here yet; `xbench data list` shows them all.")
    else:
        out.print(f"{checked - bad} of {checked} source(s) verified.")
    sys.exit(1 if bad else 0)


@data.command(name="path")
@click.argument("name")
def data_path(name):
    """Print where xbench reads source NAME from (its file, or its folder). Exit 1 when it is not there."""
    from . import sources as S

    registry = _registry()
    known = _sources(registry)
    if name not in known:
        S.select(known, [name])  # a usage error with the closest names, or a group
        raise UsageError(f"{name!r} names a group of sources; `xbench data path` takes one: "
                         + ", ".join(s.name for s in S.select(known, [name])[:6]) + ".")
    src = known[name]
    path = S.where(src)
    if path is None:
        err.print(f"{escape(name)} is not installed: {escape(src.steps)}")
        sys.exit(1)
    click.echo(str(path))
    sys.exit(0 if path.exists() else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
