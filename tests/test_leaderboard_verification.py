"""The verification record on the leaderboard: marks beside every method and metric, linking to the
record; "not verified" for a plugin without a check; failed and stale checks named; the rank
heatmap first on the index and on each dataset page, and as an image the Markdown links; no record,
and a damaged one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from xbench.errors import DataError
from xbench.leaderboard import build_leaderboard
from xbench.leaderboard.synthetic import table, write_run
from xbench.verification import Outcome, Record

EVIL = "<b>evil</b>"
SPECS = {"methods": [{"name": "good", "version": "1"}, {"name": "bad", "version": "1"}, {"name": "plain", "version": "1"},
                     {"name": "newer", "version": "2"}],
         "metrics": [{"name": "loc", "version": "1"}, {"name": "faith", "version": "1"}]}


def _outcome(plugin: str, kind: str, verdict: str, difference, **kw) -> Outcome:
    return Outcome(name=f"{plugin}.ref", kind=kind, plugin=plugin, reference=kw.pop("reference", "Ref." + plugin),
                   library=kw.pop("library", "quantus"), library_version="0.6.0", inputs="tiny " + EVIL,
                   tolerance=1e-6, difference=difference, verdict=verdict, reason=kw.pop("reason", ""),
                   differences=kw.pop("differences", "none"), seconds=0.1, plugin_version=kw.pop("version", "1"))


def write_record(run_dir: Path) -> None:
    Record([_outcome("good", "methods", "pass", 1e-8),
            _outcome("bad", "methods", "fail", float("inf"), reason="max |difference| inf exceeds the tolerance"),
            _outcome("newer", "methods", "pass", 0.0, version="1"),
            _outcome("loc", "metrics", "pass", 0.0, library="scipy", reference="scipy.thing"),
            _outcome("faith", "metrics", "skipped", None, reason="quantus not installed")],
           {"methods": ["plain"], "metrics": []}, versions={"xbench": "t", "torch": "t"}
           ).write(run_dir / "verification")


def make_run(path: Path, record: bool = True) -> Path:
    """Two datasets, four methods (good, bad, plain, newer), metrics loc (localisation) and faith
    (faithfulness), with costs."""
    quality = {"good": 0.9, "bad": 0.3, "plain": 0.6, "newer": 0.5}
    seconds = {"good": 0.01, "bad": 0.001, "plain": 0.003, "newer": 0.02}
    tables = []
    for dataset in ("set-a", "set-b"):
        for seed in (0, 1):
            cell = {"dataset_label": dataset, "model_label": "net", "seed": seed,
                    "model_params": json.dumps({"untrained": False})}
            for method, q in quality.items():
                unit = {**cell, "method_label": method, "explain_seconds": seconds[method],
                        "explain_peak_bytes": 2**20}
                for metric, category, shift in (("loc", "localisation", 0.0), ("faith", "faithfulness", 0.1)):
                    tables.append(table({**unit, "metric_label": metric, "category": category, "value_name": "v",
                                         "value": q + shift + 0.01 * seed + np.array([0.0, 0.02]),
                                         "higher_is_better": True, "sample": [0, 1]}, 2))
    run = write_run(path, tables, {"specs": SPECS})
    if record:
        write_record(run)
    return run


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return build_leaderboard(make_run(tmp_path_factory.mktemp("verified")))


def body_order(html: str) -> list[str]:
    """The tags and ids of main's first elements after the run's status line, in order."""
    main = html[html.index("<main>"):]
    found = re.findall(r"<(h1|figure id=\"glance\"|p id=\"[a-z-]+\"|section id=\"[a-z]+\"|h2 id=\"[a-z]+\")", main)
    assert found[0] == 'p id="run-status"'
    return found[1:5]


def test_the_heatmap_opens_the_index_and_every_dataset_page(site):
    index = (site / "index.html").read_text()
    assert body_order(index)[:2] == ["h1", 'figure id="glance"']
    for name in ("dataset-set-a.html", "dataset-set-b.html"):
        assert body_order((site / name).read_text())[:2] == ["h1", 'figure id="glance"'], name
    src = re.search(r'<figure id="glance" class="glance"><img src="([^"]+)" width="(\d+)" height="(\d+)"', index)
    svg = (site / src.group(1)).read_text()
    # both datasets on the index, each method with its mark, each category with its verified metrics
    assert "set-a" in svg and "set-b" in svg
    for text in ("✓ good", "✗ bad", "– plain", "✓ newer", "1/1 verified", "0/1 verified", "time / sample"):
        assert text in svg, text
    assert int(src.group(2)) > 100 and int(src.group(3)) > 100


def test_marks_say_whether_and_against_what(site):
    page = (site / "dataset-set-a.html").read_text()
    overview = page[page.index('id="table-overview"'):]
    overview = overview[:overview.index("</table>")]
    assert 'href="verification.html#methods-good">verified against quantus 0.6.0: Ref.good</a>' in overview
    assert "failed verification against quantus 0.6.0: Ref.bad" in overview
    assert "not verified (no cross-check against an independent implementation)" in overview
    assert "checked version 1 of newer; this run used version 2" in overview  # a stale check is named
    assert 'class="mark mark-verified" href="verification.html#methods-good"' in page
    # metrics: the heading of each table says it
    assert re.search(r'loc <a class="mark mark-verified" href="verification.html#metrics-loc"[^>]*>✓</a> / v', page)
    assert "not verified (check skipped: quantus not installed)" in page


def test_the_verification_page_lists_the_runs_plugins_and_every_check(site):
    html = (site / "verification.html").read_text()
    assert 'id="methods-bad" class="state-failed"' in html and 'id="metrics-faith" class="state-not-verified"' in html
    assert "<td class=\"text\">tiny &lt;b&gt;evil&lt;/b&gt;</td>" in html and EVIL not in html  # escaped
    assert "inf" in html and "badge-fail" in html
    assert "This run's plugins: 3 verified, 1 failed, 2 not verified." in html.replace("\n", " ")
    record = json.loads((site / "verification.json").read_text())
    assert len(record["checks"]) == 5
    index = (site / "index.html").read_text()
    assert "3 of this run's methods and metrics verified, 1 failed, 2 not verified" in index


def test_markdown_opens_with_the_heatmap_image_and_marks_each_row(site):
    md = (site / "leaderboard.md").read_text()
    lines = [line for line in md.splitlines() if line]
    assert lines[0].startswith("# xbench leaderboard") and lines[2].startswith("![Which method to trust here")
    image = re.search(r"\]\((figures/glance-[0-9a-f]+\.svg)\)", lines[2]).group(1)
    assert (site / image).is_file()
    assert md.count("](figures/glance-") == 3  # the index's, then one per dataset (two datasets)
    assert "| good ✓ |" in md and "| bad ✗ |" in md and "| plain – |" in md
    assert "### loc ✓ / v" in md
    assert "| method | bad | ✗ failed | failed verification against quantus 0.6.0: Ref.bad |" in md
    assert EVIL not in md


def test_without_a_record_the_pages_say_how_to_make_one(tmp_path):
    site = build_leaderboard(make_run(tmp_path / "run", record=False))
    assert "No verification record for this run" in (site / "verification.html").read_text()
    page = (site / "dataset-set-a.html").read_text()
    assert "mark-" not in page and "no record" in page
    assert body_order(page)[:2] == ["h1", 'figure id="glance"']  # the heatmap is still there, without marks
    assert not (site / "verification.json").exists()
    assert "No verification record for this run" in (site / "leaderboard.md").read_text()


def test_a_record_elsewhere_and_a_damaged_record(tmp_path):
    run = make_run(tmp_path / "run", record=False)
    write_record(tmp_path / "elsewhere")
    from xbench.leaderboard.site import build

    site = build(run, record=tmp_path / "elsewhere" / "verification" / "verification.json")
    assert "mark-verified" in (site / "dataset-set-a.html").read_text()
    (run / "verification").mkdir()
    (run / "verification" / "verification.json").write_text("{not json")
    with pytest.raises(DataError, match=r"Cannot read the verification record .*xbench verify --out"):
        build_leaderboard(run)
