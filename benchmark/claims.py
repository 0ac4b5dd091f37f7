"""Claims: the published findings a study tests, stated as data in its config.

A *study* is a config that carries the claims it tests as ``[[claims]]`` tables beside ``[run]``,
so a third party can state the findings of its own paper without writing code. This module
validates those tables (``parse_claims``); ``xbench.leaderboard.findings`` evaluates them from the
result rows alone into *reproduced*, *contradicted* or *inconclusive*.

Grammar
=======

Every claim has these keys::

    id       = "callanan-heart-mass"   # required, unique; lowercase [a-z0-9_.-], starting with a letter or digit
    claim    = "..."                   # required: the finding, in words, as it is shown on the leaderboard
    source   = "..."                   # required: where it was published (paper, experiment, figure)
    metric   = "mass-in-region"        # required: the metric's name or label, or a glob of them
    value    = "mass/heart"            # required: a value name (``tpr``, ``rmse/contrast/3``), a glob
                                       # (``rmse/contrast/*``) or a value family (``rmse``, ``mass``, ``morf``)
    relation = "greater"               # required: greater | less | largest | smallest | increasing | decreasing | near
                                       # | above | below
    samples  = "all"                   # all | correct: per-sample rows of correctly classified samples only
                                       # (model-level rows have no sample and are always kept)
    test     = "mann-whitney"          # the statistic; default per relation, see below
    alpha    = 0.05                    # significance level, 0 < alpha < 1
    min_seeds = 3                      # model seeds needed per group (per position for trends), at least 2
    accuracy_floor = { above_chance = 0.2 }   # or { absolute = 0.95 }; optional split = "test" (default) | "val"
    published = { a = 0.26, b = 0.796, d = -11.88, U = 0 }   # the published numbers, shown beside the measured

**Selectors** choose rows. The same keys work at the top level of a claim (they narrow every row
the claim looks at) and inside the tables ``a`` and ``b`` (they choose one side)::

    dataset = "synthetic-cardiac*"     # name, label or glob (or a list of them: any matches)
    model   = "heatmap-loss[loss=cce]" # name, label or glob; labels hold brackets, so an exact label is
                                       # matched literally before any glob is tried
    method  = "hires-cam"              # name, label or glob; model-level values have no method
    facet   = "contrast"               # the string facet of a value (``mass/heart`` → heart), glob ok
    level   = 3                        # the numeric facet (severity 3, curve step 4), or a list of them
    untrained = false                  # the model's ``untrained`` flag
    baseline  = false                  # the method's ``baseline`` flag (random, sobel, laplace ...)
    model_params  = { degree = "4" }   # resolved model params that must be equal (all listed must match)
    method_params = { layer = "#-1" }

**Relations**, each one record of :data:`RELATIONS` (the keys it needs and forbids, its tests,
its direction, its statistic's text, how findings decides it), with the keys it needs:

- ``greater`` / ``less``: side ``a`` (required) against side ``b`` (required). Tests:
  ``mann-whitney`` (default; two-sided Mann–Whitney U over model instances, with Cohen's d),
  ``wilcoxon`` (two-sided signed-rank test, paired per sample) or ``bootstrap`` (percentile
  interval of the difference of means over model instances).
- ``largest`` / ``smallest``: the ``a`` rows against every competitor along ``among = "method" |
  "model" | "facet" | "level"``: competitors are the other values of that column within the claim's
  rows (narrowed by ``b`` when given). ``a`` must select along the ``among`` column (``a.method``
  for ``among = "method"`` ...); when ``a`` covers several values (``method = "in-model*"``), each
  must beat every competitor. Tests as for ``greater``, Holm-corrected over all comparisons.
- ``increasing`` / ``decreasing``: monotone along ``along = "model:<param>" | "method:<param>" |
  "level" | "facet"``, in ``order = [...]`` when given (positions not listed are left out), else in
  natural order (numbers, then text). ``a`` may narrow the rows; ``b`` is not allowed. Test:
  ``spearman`` (ρ between position and per-seed means).
- ``near``: the mean of the rows (narrowed by ``a``) lies within ``tolerance`` of ``target``
  (absolute). ``chance = 0.034`` optionally shows the value relative to chance. Test: ``bootstrap``.
- ``above`` / ``below``: the mean of the rows (narrowed by ``a``) lies above (below) ``target``: a
  floor or ceiling a finding states, e.g. "mass inside the object at least twice its area share".
  ``chance`` as for ``near``. Test: ``bootstrap``.

Sign convention: ``published`` numbers are stated with ``a`` first (d, diff and r are positive
when ``a`` is larger), so a ``greater`` claim cannot publish d < 0: state Callanan's d = −11.88
(CCE first) as ``relation = "less"`` with ``a`` = the CCE model, exactly as his table reads.
Keys of ``published``: ``a b diff d U r cles rho p n n_a n_b ci_low ci_high means`` (``means`` a
table of per-position or per-competitor means), the names the measured numbers carry. They are
shown beside the measured ones and never decide a verdict; the relation and the test do.

Examples, one per relation
--------------------------

::

    [[claims]]                          # less: Callanan's table, CCE first
    id = "callanan-exp2-heart-mass"
    claim = "HiResCAM puts less mass on the heart for the cross-entropy model than for the heatmap loss"
    source = "Callanan et al., IMVIP 2022, Exp. 2 (Tests_and_Plots.ipynb)"
    dataset = "synthetic-cardiac[mode=sex_marker]"
    metric = "mass-in-region"
    value = "mass/heart"
    method = "hires-cam[layer=#-1]"
    relation = "less"
    a = { model = "heatmap-loss[loss=cce]" }
    b = { model = "heatmap-loss[loss=heatmap]" }
    test = "mann-whitney"
    accuracy_floor = { absolute = 0.95, split = "val" }
    published = { a = 0.255, b = 0.796, d = -11.88, U = 0, p = 9.9e-9 }

    [[claims]]                          # greater: Oliveira's same-accuracy set
    id = "oliveira-mri-pretraining"
    claim = "MRI pre-training gives higher Integrated Gradients TPR than ImageNet pre-training"
    source = "Oliveira et al. 2024, same-accuracy set (boxplots)"
    dataset = "hcp-lesions"
    metric = "tpr-tnr"
    value = "tpr"
    method = "integrated-gradients"
    samples = "correct"
    relation = "greater"
    a = { model_params = { pretrain = "mri", degree = "1" } }
    b = { model_params = { pretrain = "imagenet", degree = "1" } }
    test = "wilcoxon"
    published = { a = 0.42, b = 0.25 }

    [[claims]]                          # largest: Rio-Torto's AOPC figure
    id = "rio-torto-aopc-black16"
    claim = "The in-model explainer has a higher AOPC than every post-hoc method"
    source = "Rio-Torto et al. 2020, AOPC figure, 16x16 black patches"
    dataset = "polygons"
    model = "joint-explainer*"
    metric = "aopc[fill=black,patch=16]"
    value = "aopc"
    relation = "largest"
    among = "method"
    a = { method = "in-model" }
    published = { a = 0.315, b = 0.29 }

    [[claims]]                          # smallest: Oliveira's worst method
    id = "oliveira-deconvolution-worst"
    claim = "Deconvolution has the lowest TPR of all non-baseline methods"
    source = "Oliveira et al. 2024, best set"
    dataset = "hcp-lesions"
    model = "vgg16-finetune*"
    metric = "tpr-tnr"
    value = "tpr"
    untrained = false
    relation = "smallest"
    among = "method"
    a = { method = "deconvolution" }
    b = { baseline = false }

    [[claims]]                          # increasing: Oliveira's fine-tuning degrees
    id = "oliveira-imagenet-degree"
    claim = "With ImageNet pre-training, TPR rises with the number of fine-tuned blocks"
    source = "Oliveira et al. 2024, best set"
    dataset = "hcp-lesions"
    metric = "tpr-tnr"
    value = "tpr"
    method = "saliency"
    relation = "increasing"
    along = "model:degree"
    order = ["1", "2", "3", "4", "all"]
    a = { model_params = { pretrain = "imagenet" } }
    published = { means = { "1" = 0.14, "all" = 0.49 } }

    [[claims]]                          # decreasing: Treyer's severity sweep
    id = "treyer-contrast-rmse"
    claim = "Under contrast, saliency RMSE falls as severity rises"
    source = "Treyer, MedMNIST one-page summary"
    metric = "saliency-rmse"
    value = "rmse"
    facet = "contrast"
    relation = "decreasing"
    along = "level"

    [[claims]]                          # near: Oliveira's random-model baseline
    id = "oliveira-untrained-tpr"
    claim = "An untrained VGG16 reaches a TPR of about 0.19"
    source = "Oliveira et al. 2024, baselines"
    dataset = "hcp-lesions"
    metric = "tpr-tnr"
    value = "tpr"
    untrained = true
    relation = "near"
    target = 0.19
    tolerance = 0.05
    chance = 0.034
    published = { a = 0.19 }

    [[claims]]                          # above: a floor stated with the finding
    id = "rio-torto-hybrid-in-object"
    claim = "The hybrid's in-model map holds at least twice the object's area share of its mass"
    source = "Rio-Torto et al. 2020, hybrid loss"
    dataset = "polygons"
    metric = "model-fit"
    value = "val_explanation_focus"
    relation = "above"
    target = 2.0
    a = { model_params = { loss = "hybrid" } }

    [[claims]]                          # below: a ceiling
    id = "oliveira-untrained-tpr-low"
    claim = "An untrained VGG16 stays below a TPR of 0.25"
    source = "Oliveira et al. 2024, baselines"
    dataset = "hcp-lesions"
    metric = "tpr-tnr"
    value = "tpr"
    untrained = true
    relation = "below"
    target = 0.25

Accuracy floor: a *trained* model instance (a (dataset, model, seed) of a model whose
``untrained`` flag is false) counts only when its accuracy (``model-fit`` rows, value
``test_accuracy`` or ``val_accuracy``) is strictly above the floor: ``chance + above_chance``
(``chance`` is the model-fit value of that name, the majority-class share) or ``absolute``. The
default floor is ``above_chance = 0``: a model at chance measures nothing.

Taking claims from another config: ``[[claims_from]]`` with ``preset = "callanan"`` (or a TOML
path relative to the config) takes that config's claims as they are stated there, so a config
that runs several studies at once never copies (and never drifts from) the studies' own.
``where = { model = "heatmap-loss*" }`` narrows every claim taken (selector keys) and ``replace
= { "synthetic-ood" = "imagenet" }`` swaps whole selector values that this config names
differently (see :class:`ClaimsFrom`; the ``paper`` preset takes all four studies' claims so).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import UsageError, did_you_mean


# ── the relations: one record each, read by validation here and by evaluation (xbench.leaderboard.findings) ──


@dataclass(frozen=True)
class Test:
    """A statistic a claim may name; ``text`` describes it (``{ci}``: the interval's percentage)."""

    name: str
    text: str


TESTS = {t.name: t for t in (
    Test("mann-whitney", "Mann–Whitney U, two-sided, over model seeds"),
    Test("wilcoxon", "Wilcoxon signed-rank, two-sided, paired per sample"),
    Test("bootstrap", "bootstrap {ci:g}% CI of the mean difference over model seeds"),
    Test("spearman", "Spearman ρ over per-seed means"),
)}
"""Every test, by name."""

SHAPE_KEYS = ("a", "b", "among", "along", "order", "target", "tolerance", "chance")
"""The keys whose meaning depends on the relation (a relation forbids those it does not take)."""


@dataclass(frozen=True)
class Relation:
    """What a relation is: the keys it ``needs`` and the others it ``takes`` (it forbids every other
    key of ``SHAPE_KEYS``), its ``tests`` (the first is the default), the direction it claims
    (``sign``: +1 when a, or the trend, is larger; None for ``near``) and its ``opposite``, how its
    statistic reads (``statistic``: ``{test}`` is the test's text), and ``evaluator``, the way
    findings decides it (``compare``: side a against side b; ``extreme``: candidates against every
    competitor along ``among``; ``trend``: along ``along``; ``near``: against a target band;
    ``bound``: against a one-sided target)."""

    name: str
    evaluator: Literal["compare", "extreme", "trend", "near", "bound"]
    needs: tuple[str, ...]
    takes: tuple[str, ...] = ()
    tests: tuple[str, ...] = ("mann-whitney", "wilcoxon", "bootstrap")
    sign: int | None = None
    opposite: str | None = None
    statistic: str = "{test}"

    @property
    def default_test(self) -> str:
        return self.tests[0]

    @property
    def forbids(self) -> tuple[str, ...]:
        return tuple(k for k in SHAPE_KEYS if k not in self.needs + self.takes)

    def statistic_text(self, test: str, alpha: float) -> str:
        """How the statistic reads on the leaderboard, e.g. "Mann–Whitney U, two-sided, over model seeds"."""
        return self.statistic.format(test=TESTS[test].text.format(ci=100 * (1 - alpha)), ci2=100 * (1 - 2 * alpha))


_EXTREME = " Holm-corrected over every competitor"
RELATIONS = {r.name: r for r in (
    Relation("greater", "compare", needs=("a", "b"), sign=1, opposite="less"),
    Relation("less", "compare", needs=("a", "b"), sign=-1, opposite="greater"),
    Relation("largest", "extreme", needs=("a", "among"), takes=("b",), sign=1, opposite="smallest",
             statistic="{test}," + _EXTREME),
    Relation("smallest", "extreme", needs=("a", "among"), takes=("b",), sign=-1, opposite="largest",
             statistic="{test}," + _EXTREME),
    Relation("increasing", "trend", needs=("along",), takes=("a", "order"), tests=("spearman",), sign=1,
             opposite="decreasing"),
    Relation("decreasing", "trend", needs=("along",), takes=("a", "order"), tests=("spearman",), sign=-1,
             opposite="increasing"),
    Relation("near", "near", needs=("target", "tolerance"), takes=("a", "chance"), tests=("bootstrap",),
             statistic="bootstrap {ci2:g}% CI of the mean within target ± tolerance"),
    Relation("above", "bound", needs=("target",), takes=("a", "chance"), tests=("bootstrap",), sign=1,
             opposite="below", statistic="bootstrap {ci2:g}% CI of the mean above target"),
    Relation("below", "bound", needs=("target",), takes=("a", "chance"), tests=("bootstrap",), sign=-1,
             opposite="above", statistic="bootstrap {ci2:g}% CI of the mean below target"),
)}
"""Every relation, by name: a new relation is one record here (and, for a new kind of decision, an
evaluator in findings)."""

VERDICTS = ("reproduced", "contradicted", "inconclusive")
"""What a claim's evaluation can say."""
AMONG = {"method": ("method", "method_params", "baseline"), "model": ("model", "model_params", "untrained"),
         "facet": ("facet",), "level": ("level",)}
"""The columns a largest/smallest claim compares along, with the selector keys of ``a`` that choose
a candidate there."""
ALONG_FIXED = ("level", "facet")
ALONG_PREFIXES = ("model:", "method:")
PUBLISHED_KEYS = ("a", "b", "diff", "d", "U", "r", "cles", "rho", "p", "n", "n_a", "n_b", "ci_low", "ci_high",
                  "means")
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")

Scalar = str | int | float | bool
Patterns = str | list[str]


class Selector(BaseModel):
    """Which rows: every key given must match (a list of patterns matches when any does)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, protected_namespaces=())

    dataset: Patterns | None = None
    model: Patterns | None = None
    method: Patterns | None = None
    facet: Patterns | None = None
    level: float | list[float] | None = None
    untrained: bool | None = None
    baseline: bool | None = None
    model_params: dict[str, Scalar] | None = None
    method_params: dict[str, Scalar] | None = None

    def given(self) -> dict[str, Any]:
        """The keys this selector sets."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


SELECTOR_KEYS = tuple(Selector.model_fields)


class AccuracyFloor(BaseModel):
    """Trained model instances count only with accuracy strictly above the floor."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, protected_namespaces=())

    above_chance: float | None = Field(None, ge=0, lt=1)
    absolute: float | None = Field(None, ge=0, le=1)
    split: Literal["test", "val"] = "test"

    def floor(self, chance: float) -> float:
        return self.absolute if self.absolute is not None else chance + (self.above_chance or 0.0)

    def describe(self) -> str:
        if self.absolute is not None:
            return f"{self.split} accuracy > {self.absolute:g}"
        return f"{self.split} accuracy > chance + {self.above_chance or 0:g}"


class Claim(Selector):
    """One ``[[claims]]`` table (the module docstring gives the grammar)."""

    id: str
    claim: str = Field(min_length=1)
    source: str = Field(min_length=1)
    metric: str = Field(min_length=1)
    value: str = Field(min_length=1)
    relation: Literal[tuple(RELATIONS)]  # type: ignore[valid-type]
    samples: Literal["all", "correct"] = "all"
    a: Selector | None = None
    b: Selector | None = None
    among: Literal[tuple(AMONG)] | None = None  # type: ignore[valid-type]
    along: str | None = None
    order: list[Scalar] | None = None
    target: float | None = None
    tolerance: float | None = Field(None, gt=0)
    chance: float | None = Field(None, gt=0, le=1)
    test: Literal[tuple(TESTS)] | None = None  # type: ignore[valid-type]
    alpha: float = Field(0.05, gt=0, lt=1)
    min_seeds: int = Field(3, ge=2)
    accuracy_floor: AccuracyFloor = Field(default_factory=AccuracyFloor)
    published: dict[str, float | dict[str, float]] = Field(default_factory=dict)

    @property
    def kind(self) -> Relation:
        """The relation's record."""
        return RELATIONS[self.relation]

    @property
    def statistic_test(self) -> str:
        """The test in force: the one given, else the relation's default."""
        return self.test or self.kind.default_test

    @property
    def statistic(self) -> str:
        """How the statistic in force reads on the leaderboard."""
        return self.kind.statistic_text(self.statistic_test, self.alpha)

    def where(self) -> Selector:
        """The claim-level selector (narrows every row the claim looks at)."""
        return Selector(**{k: getattr(self, k) for k in SELECTOR_KEYS})

    def to_dict(self) -> dict[str, Any]:
        """The claim as a plain table (for the manifest); ``parse_claims`` reads it back."""
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=False)


CLAIM_KEYS = tuple(Claim.model_fields)

EXPECT = {
    "id": 'a unique lowercase string of [a-z0-9_.-], e.g. "callanan-heart-mass"',
    "claim": "the finding in words (a non-empty string)",
    "source": 'where it was published (a non-empty string, e.g. "Callanan et al., IMVIP 2022, Exp. 2")',
    "metric": "a metric name or label, or a glob (a string)",
    "value": 'a value name, glob or family (a string, e.g. "tpr", "mass/heart", "rmse")',
    "relation": "one of " + ", ".join(RELATIONS),
    "samples": '"all" or "correct"',
    "a": "a table of selectors (" + ", ".join(SELECTOR_KEYS) + ")",
    "b": "a table of selectors (" + ", ".join(SELECTOR_KEYS) + ")",
    "among": "one of " + ", ".join(AMONG),
    "along": '"level", "facet", "model:<param>" or "method:<param>"',
    "order": "an array of positions (strings or numbers)",
    "target": "a number",
    "tolerance": "a number > 0",
    "chance": "a number in (0, 1]",
    "test": "one of " + ", ".join(TESTS),
    "alpha": "a number with 0 < alpha < 1",
    "min_seeds": "an integer ≥ 2",
    "accuracy_floor": "a table { above_chance = <0..1> } or { absolute = <0..1> }, optionally with split = "
                      '"test" or "val"',
    "published": "a table of numbers (" + ", ".join(PUBLISHED_KEYS) + "; means = a table of numbers)",
    "dataset": "a name, label or glob, or an array of them",
    "model": "a name, label or glob, or an array of them",
    "method": "a name, label or glob, or an array of them",
    "facet": "a facet name or glob, or an array of them",
    "level": "a number or an array of numbers",
    "untrained": "true or false",
    "baseline": "true or false",
    "model_params": "a table of param = value (strings, numbers or booleans)",
    "method_params": "a table of param = value (strings, numbers or booleans)",
    "above_chance": "a number with 0 ≤ above_chance < 1",
    "absolute": "a number with 0 ≤ absolute ≤ 1",
    "split": '"test" or "val"',
}
CHOICES = {"relation": RELATIONS, "samples": ("all", "correct"), "among": AMONG, "test": TESTS,
           "split": ("test", "val")}
GUIDE = "See the claim grammar in the docstring of xbench.claims (`python -m pydoc xbench.claims`)."


def parse_claims(tables: Any, source: str = "config") -> list[Claim]:
    """Validate ``[[claims]]`` tables (as ``tomllib`` reads them) into claims.

    Raises ``UsageError`` with one paragraph per bad claim naming the claim (its id), the key, what
    was expected and the closest valid key or value."""
    if tables is None:
        return []
    if isinstance(tables, Mapping) or not isinstance(tables, Sequence) or isinstance(tables, str):
        raise UsageError(f"Config {source}: 'claims' must be an array of tables ([[claims]] ... ), "
                         f"got {type(tables).__name__}. {GUIDE}")
    claims: list[Claim] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(tables, start=1):
        if isinstance(table, Claim):
            table = table.to_dict()
        name = _name(table, index)
        if not isinstance(table, Mapping):
            problems.append(f"{name} in {source} must be a table, got {type(table).__name__}.")
            continue
        try:
            claim = Claim.model_validate(dict(table))
        except ValidationError as exc:
            problems.append(f"{name} in {source} is invalid: " + "; ".join(_explain(exc, table)) + ".")
            continue
        mistakes = _check(claim)
        if mistakes:
            problems.append(f"{name} in {source} is invalid: " + "; ".join(mistakes) + ".")
            continue
        if claim.id in seen:
            problems.append(f"{name} in {source} reuses the id of claim {seen[claim.id]}: claim ids must be unique.")
            continue
        seen[claim.id] = index
        claims.append(claim)
    if problems:
        raise UsageError("\n\n".join(problems) + "\n\n" + GUIDE)
    return claims


def claims_from_toml(text: str, source: str = "<string>") -> list[Claim]:
    """The claims of a TOML document (its ``[[claims]]`` tables)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"Config {source} is not valid TOML: {exc}.") from None
    return parse_claims(data.get("claims", []), source)


class ClaimsFrom(BaseModel):
    """One ``[[claims_from]]`` table: take another config's claims instead of copying them, so that
    a config running several studies at once (the ``paper`` preset) never drifts from the study
    presets. ``where`` narrows every claim taken (selector keys, e.g. ``model = "cifar-resnet18*"``
    when other studies' models score the same metric); ``replace`` swaps whole selector values
    where this config names a thing differently (a stand-in's name, a label with more swept
    params): ``{ "synthetic-ood" = "imagenet" }``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, protected_namespaces=())

    preset: str = Field(min_length=1, description="a preset name, or a TOML path relative to this config")
    where: Selector = Field(default_factory=Selector)
    replace: dict[str, Scalar] = Field(default_factory=dict)


def derive_claim(table: Mapping[str, Any], rule: ClaimsFrom) -> dict[str, Any]:
    """A claim table as ``rule`` takes it: ``replace`` applied to its selector values (the metric,
    names and globs, param values; at the top level and in ``a`` and ``b``), then ``where``'s keys
    added. A key that the claim already sets to another value is an error (UsageError)."""
    swap = {position_key(k): v for k, v in rule.replace.items()}

    def swapped(value: Any) -> Any:
        if isinstance(value, list):
            return [swapped(v) for v in value]
        if isinstance(value, (str, int, float, bool)):
            return swap.get(position_key(value), value)
        return value

    def selector(sel: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(sel)
        for key, value in sel.items():
            if key in ("model_params", "method_params") and isinstance(value, Mapping):
                out[key] = {k: swapped(v) for k, v in value.items()}
            elif key in ("dataset", "model", "method", "facet"):
                out[key] = swapped(value)
        return out

    out = selector(table)
    if "metric" in out:
        out["metric"] = swapped(out["metric"])
    for side in ("a", "b"):
        if isinstance(out.get(side), Mapping):
            out[side] = selector(out[side])
    for key, value in rule.where.given().items():
        if key in out and out[key] != value:
            raise UsageError(f"claims_from {rule.preset!r}: where.{key} = {value!r} would replace claim "
                             f"{table.get('id')!r}'s own {key} = {out[key]!r}; narrow by another key, or leave the "
                             f"claim's own.")
        out[key] = value
    return out


def _name(table: Any, index: int) -> str:
    if isinstance(table, Mapping) and isinstance(table.get("id"), str) and table["id"]:
        return f'Claim "{table["id"]}" (claim {index})'
    return f"Claim {index} (no id)"


def _lookup(table: Mapping, path: Sequence[str]) -> Any:
    value: Any = table
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _explain(exc: ValidationError, table: Mapping) -> list[str]:
    problems: dict[str, str] = {}
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        nested = loc[0] in ("a", "b", "accuracy_floor") and len(loc) > 1
        if err["type"] == "extra_forbidden":
            key = ".".join(loc[:2] if nested else loc[:1])
            word = loc[1] if nested else loc[0]
            known = (AccuracyFloor.model_fields if loc[0] == "accuracy_floor" else SELECTOR_KEYS) if nested \
                else CLAIM_KEYS
            problems.setdefault(key, f"unknown key {key!r}{did_you_mean(word, known)}")
            continue
        if loc[0] == "published" and len(loc) > 1:
            key = f"published.{loc[1]}"
            problems.setdefault(key, f"{key!r} must be a number (or, for means, a table of numbers); "
                                     f"got {_show(_lookup(table, ['published', loc[1]]))}")
            continue
        path = loc[:2] if nested else loc[:1]
        key = ".".join(path)
        if key in problems:
            continue
        field = path[-1]
        if err["type"] == "missing":
            problems[key] = f"missing key {key!r}: {EXPECT.get(field, 'required')}"
            continue
        got = _lookup(table, path)
        hint = did_you_mean(got, CHOICES[field]) if field in CHOICES and isinstance(got, str) else ""
        problems[key] = f"{key!r} must be {EXPECT.get(field, err['msg'].lower())}; got {_show(got)}{hint}"
    return list(problems.values())


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def _check(c: Claim) -> list[str]:
    """What pydantic cannot see: the keys the relation needs and forbids (its record), and
    consistent numbers."""
    out: list[str] = []
    if not ID_PATTERN.match(c.id):
        out.append(f"'id' must be {EXPECT['id']}; got {_show(c.id)}")
    rel = c.kind
    r = rel.name
    for key in rel.needs:
        if getattr(c, key) is None:
            out.append(f"relation {r!r} needs key {key!r}: {EXPECT[key]}")
    for key in rel.forbids:
        if getattr(c, key) is not None:
            out.append(f"key {key!r} does not apply to relation {r!r} (it is for "
                       f"{', '.join(x.name for x in RELATIONS.values() if key not in x.forbids)})")
    for side in ("a", "b"):
        sel = getattr(c, side)
        if sel is not None and not sel.given() and side in rel.needs:
            out.append(f"{side!r} selects nothing: give it at least one of {', '.join(SELECTOR_KEYS)}")
    if c.test is not None and c.test not in rel.tests:
        out.append(f"'test' = {_show(c.test)} does not apply to relation {r!r}; use one of {', '.join(rel.tests)}")
    if c.among is not None and c.a is not None:
        keys = AMONG[c.among]
        if not any(getattr(c.a, k) is not None for k in keys):
            out.append(f"relation {r!r} among {c.among!r} needs 'a' to choose the candidate {c.among} "
                       f"(set a.{keys[0]})")
    if c.along is not None:
        ok = c.along in ALONG_FIXED or any(c.along.startswith(p) and len(c.along) > len(p) for p in ALONG_PREFIXES)
        if not ok:
            out.append(f"'along' must be {EXPECT['along']}; got {_show(c.along)}"
                       f"{did_you_mean(c.along, ALONG_FIXED + ('model:degree', 'method:layer'))}")
    if c.order is not None:
        keys = [position_key(v) for v in c.order]
        if len(set(keys)) != len(keys) or len(keys) < 2:
            out.append(f"'order' must list at least two distinct positions; got {c.order!r}")
    for key in c.published:
        if key not in PUBLISHED_KEYS:
            out.append(f"unknown key 'published.{key}'{did_you_mean(key, PUBLISHED_KEYS)}; published numbers are "
                       f"shown beside the measured ones of the same name ({', '.join(PUBLISHED_KEYS)})")
        elif (key == "means") != isinstance(c.published[key], dict):
            out.append("'published.means' must be a table of numbers" if key == "means"
                       else f"'published.{key}' must be a number")
    floor = c.accuracy_floor
    if floor.absolute is not None and floor.above_chance is not None:
        out.append("'accuracy_floor' takes above_chance or absolute, not both")
    out.extend(_check_signs(c))
    return out


def _check_signs(c: Claim) -> list[str]:
    """Published numbers that contradict the relation they are published for (a stated with a first)."""
    p = {k: v for k, v in c.published.items() if isinstance(v, (int, float))}
    rel = c.kind
    if rel.sign is None:
        return []
    out = []
    word = "> 0" if rel.sign > 0 else "< 0"
    if rel.evaluator in ("compare", "extreme"):
        if "a" in p and "b" in p and (p["a"] - p["b"]) * rel.sign < 0:
            out.append(f"published a = {p['a']:g} and b = {p['b']:g} contradict relation {rel.name!r}: state "
                       f"published numbers with a first, or use the opposite relation")
        for key in ("diff", "d", "r"):
            if key in p and p[key] * rel.sign < 0:
                out.append(f"published {key} = {p[key]:g} contradicts relation {rel.name!r} ({key} is a − b, so "
                           f"it must be {word}): swap a and b, or use relation {rel.opposite!r}")
    elif "rho" in p and p["rho"] * rel.sign < 0:
        out.append(f"published rho = {p['rho']:g} contradicts relation {rel.name!r} (it must be {word})")
    return out


def position_key(value: Any) -> str:
    """The canonical text of a sweep position (params, levels, facets): ``4``, ``4.0`` and ``"4"``
    are one position; booleans read ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)
