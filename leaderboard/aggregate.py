"""From tidy rows to leaderboard tables: per-seed means, then mean and 95% CI over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .stats import bootstrap_ci

KEYS = ["dataset_label", "model_label", "method_label", "metric_label", "value_name"]


def summarise(df: pd.DataFrame, *, correct_only: bool = False) -> pd.DataFrame:
    """One row per (dataset, model, method, metric, value): mean over seeds of the per-seed mean
    over samples, its 95% bootstrap CI over seeds (over samples when there is a single seed),
    the number of seeds and samples, direction, category and baseline flag."""
    if df.empty:
        return pd.DataFrame()
    data = df[df["scope"] == "sample"]
    if correct_only:
        data = data[data["correct"].fillna(False).astype(bool)]
    data = data.assign(value=data["value"].astype(float))
    rows = []
    for key, group in data.groupby(KEYS, sort=True, observed=True, dropna=False):
        per_seed = group.groupby("seed", observed=True)["value"].mean()
        finite = per_seed[np.isfinite(per_seed)]
        if len(finite) >= 2:
            lo, hi = bootstrap_ci(finite.to_numpy())
            ci_over = "seeds"
        else:
            lo, hi = bootstrap_ci(group["value"].to_numpy())
            ci_over = "samples"
        first = group.iloc[0]
        rows.append(dict(zip(KEYS, key)) | {
            "mean": float(finite.mean()) if len(finite) else float("nan"),
            "ci_low": lo, "ci_high": hi, "ci_over": ci_over,
            "seeds": int(group["seed"].nunique()), "samples": int(len(group)),
            "higher_is_better": first["higher_is_better"], "category": first["category"],
            "baseline": bool(first["baseline"]),
        })
    return pd.DataFrame(rows)


def summarise_models(df: pd.DataFrame) -> pd.DataFrame:
    """Model-level values (accuracy, AUROC …): mean and CI over seeds per dataset and model."""
    data = df[df["scope"] == "model"]
    rows = []
    keys = ["dataset_label", "model_label", "metric_label", "value_name"]
    for key, group in data.groupby(keys, sort=True, observed=True):
        values = group["value"].astype(float).to_numpy()
        lo, hi = bootstrap_ci(values)
        rows.append(dict(zip(keys, key)) | {"mean": float(np.nanmean(values)) if np.isfinite(values).any() else np.nan,
                                            "ci_low": lo, "ci_high": hi, "seeds": int(group["seed"].nunique()),
                                            "higher_is_better": group["higher_is_better"].iloc[0]})
    return pd.DataFrame(rows)
