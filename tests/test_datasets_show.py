"""`xbench show`: a PNG grid per class with the ground truth drawn on top."""

from __future__ import annotations

import numpy as np
import torch
from click.testing import CliRunner
from PIL import Image

from xbench import Dataset, Split, testing
from xbench.cli import main
from xbench.show import displayable, pick_examples, show_dataset


def _red_pixels(path) -> int:
    """Red pixels above the legend (the bottom 8 % of the figure)."""
    a = np.asarray(Image.open(path).convert("RGB")).astype(int)
    a = a[: int(a.shape[0] * 0.92)]
    return int(((a[..., 0] > 200) & (a[..., 1] < 110) & (a[..., 2] < 110)).sum())


def test_grid_draws_the_ground_truth_only_where_there_is_one(tmp_path):
    data = testing.planted_dataset(n_train=8, n_val=8, n_test=16, size=24)
    with_mask = show_dataset(data, tmp_path / "a.png", per_class=3)
    test = data.test
    empty = Split(images=test.images, labels=test.labels, masks=torch.zeros_like(test.masks))
    without = show_dataset(Dataset("planted", data.class_names, {"train": empty, "val": empty, "test": empty}),
                           tmp_path / "b.png", per_class=3)
    assert Image.open(with_mask).size == Image.open(without).size
    assert _red_pixels(with_mask) > 50 and _red_pixels(without) == 0


def test_pick_examples_and_display_scaling():
    labels = torch.tensor([1, 0, 1, 1, 2, 1])
    assert pick_examples(labels, 4, 2) == [[1], [0, 2], [4], []]
    x = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    shown = displayable(x)
    assert shown.shape == (1, 4, 4, 3) and shown.min() == 0 and shown.max() == 1


def test_cli_show_writes_a_png_and_explains_bad_params(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cardiac.png"
    result = runner.invoke(main, ["show", "synthetic-cardiac", "--param", "mode=sex_marker", "-p", "n_train=4",
                                  "-p", "n_val=4", "-p", "n_test=16", "--per-class", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and Image.open(out).format == "PNG" and _red_pixels(out) > 50
    bad = runner.invoke(main, ["show", "synthetic-cardiac", "-p", "mod=sex_marker"])
    assert bad.exit_code == 2 and 'did you mean "mode"' in bad.output
    bad = runner.invoke(main, ["show", "synthetic-cardiac", "-p", "n_test"])
    assert bad.exit_code == 2 and "key=value" in bad.output
    bad = runner.invoke(main, ["show", "no-such-data"])
    assert bad.exit_code == 2 and "Unknown dataset" in bad.output
