"""A study's findings where a user looks first: the index page opens with them, the Markdown export
carries them first, findings.csv holds them, and `xbench findings RUN_DIR` prints them with an
exit status that says whether a claim was contradicted. Also: a directory that is not a run is a
clear usage error, never an empty site."""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from click.testing import CliRunner

from xbench.cli import main
from xbench.leaderboard import build_leaderboard
from xbench.leaderboard.synthetic import table, write_run

SEEDS = range(5)
MARKUP = "[bold red]markup[/] <script>alert(1)</script>"
CLAIMS = [
    {"id": "a-beats-b", "claim": "Loss a gives a higher hit rate than loss b", "source": "Someone et al. 2031",
     "metric": "loc", "value": "hit", "relation": "greater", "a": {"model_params": {"loss": "a"}},
     "b": {"model_params": {"loss": "b"}}, "published": {"a": 0.8, "b": 0.3}},
    {"id": "b-beats-a", "claim": f"Loss b is better {MARKUP}", "source": f"A preprint {MARKUP}", "metric": "loc",
     "value": "hit", "relation": "greater", "a": {"model_params": {"loss": "b"}},
     "b": {"model_params": {"loss": "a"}}},
    {"id": "no-such-metric", "claim": "Nothing measures this", "source": "nowhere", "metric": "nothing",
     "value": "hit", "relation": "near", "target": 0.5, "tolerance": 0.1},
]


def claims_run(path, claims=CLAIMS, manifest=None, dataset="toy"):
    """Two trained variants of one model (loss a: hit 0.8, loss b: hit 0.3), 5 seeds, with the
    model-fit accuracy (0.95 against chance 0.5) that the accuracy floor reads."""
    tables = []
    for loss, hit in (("a", 0.8), ("b", 0.3)):
        for seed in SEEDS:
            cell = {"dataset_label": dataset, "model_label": f"net[loss={loss}]", "model": "net", "seed": seed,
                    "model_params": json.dumps({"loss": loss, "untrained": False})}
            tables.append(table({**cell, "scope": "model", "metric_label": "model-fit", "category": "classification",
                                 "value_name": ["test_accuracy", "val_accuracy", "chance"], "value": [0.95, 0.95, 0.5],
                                 "higher_is_better": [True, True, None]}, 3))
            tables.append(table({**cell, "method_label": "saliency", "metric_label": "loc", "value_name": "hit",
                                 "value": hit + 0.01 * seed + np.array([0.0, 0.01, 0.02]), "higher_is_better": True,
                                 "sample": [0, 1, 2], "label": [0, 1, 1], "prediction": [0, 1, 1]}, 3))
    return write_run(path, tables, {"claims": claims, **(manifest or {})})


class Sections(HTMLParser):
    """The ids of the index's top-level sections in document order, and the findings table's rows."""

    def __init__(self):
        super().__init__()
        self.ids, self.rows, self.cell, self.in_findings = [], [], None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id") in ("findings", "run", "datasets"):
            self.ids.append(attrs["id"])
        if tag == "table":
            self.in_findings = attrs.get("id") == "table-findings"
        elif tag == "tr" and self.in_findings:
            self.rows.append([])
        elif tag == "td" and self.in_findings:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.rows[-1].append(self.cell.strip())
            self.cell = None
        elif tag == "table":
            self.in_findings = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return build_leaderboard(claims_run(tmp_path_factory.mktemp("claims")))


def test_findings_open_the_index(site):
    text = (site / "index.html").read_text()
    parsed = Sections()
    parsed.feed(text)
    assert parsed.ids[:3] == ["findings", "run", "datasets"]
    rows = {r[1].split(":")[0]: r for r in parsed.rows if r}
    assert [r[0] for r in parsed.rows if r] == ["reproduced", "contradicted", "inconclusive"]
    verdict, claim, source, data, measured, published, statistic, n, reason = rows["a-beats-b"]
    assert claim == "a-beats-b: Loss a gives a higher hit rate than loss b" and source == "Someone et al. 2031"
    assert data == "toy"
    assert measured.startswith("a 0.830, b 0.330") and published == "a 0.800, b 0.300"
    assert statistic.startswith("Mann–Whitney U") and n == "10" and reason.startswith("a > b as published")
    assert rows["no-such-metric"][-1].startswith("no matching rows")
    assert "badge-contradicted" in text
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_markdown_carries_the_findings_first(site):
    md = (site / "leaderboard.md").read_text()
    assert md.index("## Findings") < md.index("## toy")
    assert "1 reproduced · 1 contradicted · 1 inconclusive" in md
    assert "<script>" not in md and "&lt;script&gt;" in md


def test_findings_csv(site):
    rows = list(csv.DictReader((site / "findings.csv").open(encoding="utf-8")))
    assert [r["id"] for r in rows] == ["a-beats-b", "b-beats-a", "no-such-metric"]
    assert [r["verdict"] for r in rows] == ["reproduced", "contradicted", "inconclusive"]
    assert rows[0]["n"] == "10" and rows[0]["published"] == "a 0.800, b 0.300"
    prov = json.loads((site / "provenance.json").read_text())
    assert [f["verdict"] for f in prov["findings"]] == ["reproduced", "contradicted", "inconclusive"]


def test_a_run_without_claims_says_so_in_one_line(tmp_path):
    site = build_leaderboard(claims_run(tmp_path / "run", claims=[]))
    text = (site / "index.html").read_text()
    assert "This run states no claims" in text and "table-findings" not in text and "<h2>Findings" not in text
    md = (site / "leaderboard.md").read_text()
    assert "This run states no claims." in md and "## Findings" not in md
    assert list(csv.reader((site / "findings.csv").open()))[0][0] == "id"  # the header, no rows
    assert len(list(csv.reader((site / "findings.csv").open()))) == 1


# ----------------------------------------------------------------------------- xbench findings

def invoke(*args):
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "400"})


def test_cli_prints_the_findings_and_fails_on_a_contradiction(site):
    result = invoke("findings", str(site.parent))
    assert result.exit_code == 1, result.output
    text = result.output
    for needle in ("reproduced", "contradicted", "inconclusive", "a-beats-b", "Someone et al. 2031",
                   "a 0.830, b 0.330", "1 reproduced · 1 contradicted · 1 inconclusive"):
        assert needle in text, needle
    assert MARKUP in text  # claim text is shown literally: no rich markup is interpreted


def test_cli_json_gives_the_verdicts(site):
    result = invoke("findings", str(site.parent), "--json")
    assert result.exit_code == 1
    verdicts = json.loads(result.output)
    assert [v["id"] for v in verdicts] == ["a-beats-b", "b-beats-a", "no-such-metric"]
    assert verdicts[0]["verdict"] == "reproduced" and verdicts[0]["measured"]["a"] == pytest.approx(0.83)
    assert verdicts[0]["published"] == {"a": 0.8, "b": 0.3}


def test_cli_exits_0_without_a_contradiction(tmp_path):
    run = claims_run(tmp_path / "ok", claims=[CLAIMS[0], CLAIMS[2]])
    result = invoke("findings", str(run))
    assert result.exit_code == 0, result.output
    assert "1 reproduced · 0 contradicted · 1 inconclusive" in result.output
    none = invoke("findings", str(claims_run(tmp_path / "none", claims=[])))
    assert none.exit_code == 0 and "This run states no claims." in none.output
    assert json.loads(invoke("findings", str(tmp_path / "none"), "--json").output) == []


def test_cli_warns_when_the_run_is_incomplete(tmp_path):
    run = claims_run(tmp_path / "run", claims=[CLAIMS[0]], manifest={"status": "interrupted"})
    result = CliRunner().invoke(main, ["findings", str(run), "--json"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    assert "interrupted" in result.output  # on stderr, which CliRunner mixes in
    assert json.loads(result.output[result.output.index("["):])[0]["verdict"] == "reproduced"


@pytest.mark.parametrize("command", ["findings", "leaderboard"])
def test_a_directory_that_is_not_a_run_is_a_usage_error(tmp_path, command):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    result = invoke(command, str(empty))
    assert result.exit_code == 2, result.output
    assert "is not an xbench run directory" in " ".join(result.output.split())
    assert not (empty / "leaderboard").exists()  # no empty site
    missing = invoke(command, str(tmp_path / "nowhere"))
    assert missing.exit_code == 2


def test_cli_prints_one_block_per_claim_on_a_narrow_terminal_or_a_pipe(site):
    """Eight columns do not fit 80: each claim is a block, its fields one under another."""
    result = CliRunner().invoke(main, ["findings", str(site.parent)], env={"COLUMNS": "80"})
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert len(lines) <= 3 * 14 + 2  # about a dozen lines a claim (the 8-column table took ~40)
    starts = [i for i, line in enumerate(lines) if line.startswith(("reproduced", "contradicted", "inconclusive"),
                                                                     len(line) - len(line.lstrip()))]
    assert len(starts) == 3 and "a-beats-b" in lines[starts[0]]
    block = "\n".join(lines[starts[0]:starts[1]])
    for field in ("claim", "source", "data", "measured", "published", "statistic", "reason"):
        assert re.search(rf"^\s*{field}\s", block, re.M), field
    assert "toy" in block and "a 0.830, b 0.330" in block
    assert "[bold red]markup[/]" in result.output  # printed literally, never as markup
    assert "1 reproduced · 1 contradicted · 1 inconclusive" in result.output


def test_a_verdict_on_a_stand_in_dataset_says_so_everywhere(tmp_path):
    stand_in = "synthetic-cardiac (stand-in for medmnist[flag=breastmnist])"
    data = {"kind": "stand-in", "data_kind": "generated", "dataset": stand_in, "stand_in_for": "medmnist[flag=breastmnist]"}
    run = claims_run(tmp_path / "run", claims=[CLAIMS[0]], dataset=stand_in, manifest={"cells": {"c": {"data": data}}})
    (verdict,) = json.loads(invoke("findings", str(run), "--json").output)
    assert verdict["verdict"] == "reproduced" and verdict["data"] == [stand_in]
    label = "reproduced (on a stand-in: synthetic-cardiac for medmnist[flag=breastmnist])"
    wide = invoke("findings", str(run)).output
    assert "(on a stand-in:" in wide and "synthetic-cardiac (stand-in for medmnist[flag=breastmnist])" in wide
    assert label in " ".join(CliRunner().invoke(main, ["findings", str(run)], env={"COLUMNS": "80"}).output.split())
    site = build_leaderboard(run)
    html = (site / "index.html").read_text()
    assert "(on a stand-in: synthetic-cardiac for medmnist[flag=breastmnist])" in html
    pages = sorted(site.glob("*.html"))
    assert {p.name for p in pages} >= {"index.html", "provenance.html", "verification.html"} and len(pages) == 4
    for page in pages:  # every page's footer names the data the run read, and what it stands in for
        line = re.search(r'<p id="data-line">(.*?)</p>', page.read_text()).group(1)
        assert line.startswith("Data: synthetic-cardiac (stand-in for medmnist[flag=breastmnist]): stand-in for "
                               "medmnist[flag=breastmnist] (generated)"), (page.name, line)
    md = (site / "leaderboard.md").read_text()
    assert r"reproduced (on a stand-in: synthetic-cardiac for medmnist\[flag=breastmnist\])" in md
    rows = list(csv.DictReader((site / "findings.csv").open(encoding="utf-8")))
    assert rows[0]["data"] == stand_in and rows[0]["stand_in"] == "synthetic-cardiac for medmnist[flag=breastmnist]"
