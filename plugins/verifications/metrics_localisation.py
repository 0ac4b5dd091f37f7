"""Localisation metrics against Quantus (TPR as RelevanceRankAccuracy and TopKIntersection, the
pointing game, relevance mass accuracy), TorchRay's pointing-game test, and EMD against the
transport problem solved as a linear programme."""

from __future__ import annotations

import numpy as np
import torch

from xbench import VerificationSpec, hookimpl, testing
from xbench.verification import max_abs_difference

from ._inputs import maps_context

QUANTUS_OFF = dict(normalise=False, abs=False, disable_warnings=True)


def _quantus_call(metric, a: torch.Tensor, masks: torch.Tensor):
    n, h, w = a.shape
    return np.asarray(metric(model=None, x_batch=np.zeros((n, 1, h, w), np.float32), y_batch=np.zeros(n, int),
                             a_batch=a[:, None].numpy(), s_batch=masks[:, None].numpy().astype(float), device="cpu"),
                      dtype=float)


def tpr_against_quantus(spec) -> float:
    """RelevanceRankAccuracy (hits of the top-|s| pixels / |s|) on masks of several sizes, and
    TopKIntersection with k = |s| on masks of one size, are TPR by definition."""
    import quantus

    g = torch.Generator().manual_seed(7)
    masks = torch.zeros(24, 16, 16, dtype=torch.bool)
    for i in range(24):
        r, c, h = (int(v) for v in torch.randint(0, 8, (3,), generator=g))
        masks[i, r:r + h + 1, c:c + h + 2] = True
    a = torch.rand(24, 16, 16, generator=g) + 0.5 * masks  # informative but imperfect, no ties
    ours = testing.score(spec, maps_context(a, masks))["tpr"]
    worst = max_abs_difference(ours, _quantus_call(quantus.RelevanceRankAccuracy(**QUANTUS_OFF), a, masks))
    same_size = testing.planted_split(16, size=16, patch=4, seed=1).masks  # |s| = 16 for all
    a2 = torch.rand(16, 16, 16, generator=g) + 0.3 * same_size
    ours2 = testing.score(spec, maps_context(a2, same_size))["tpr"]
    theirs2 = _quantus_call(quantus.TopKIntersection(k=16, **QUANTUS_OFF), a2, same_size)
    return max(worst, max_abs_difference(ours2, theirs2))


def _pointing_inputs():
    g = torch.Generator().manual_seed(7)
    a = torch.rand(32, 16, 16, generator=g)
    a[::4] = (a[::4] * 3).round() / 3  # tied maxima, in and out of the masks
    return a, torch.rand(32, 16, 16, generator=g) < 0.3


def pointing_game_against_quantus(spec) -> float:
    import quantus

    a, masks = _pointing_inputs()
    ours = testing.score(spec, maps_context(a, masks), tolerance=0.0, ties="any")["pointing_game"]
    return max_abs_difference(ours, _quantus_call(quantus.PointingGame(**QUANTUS_OFF), a, masks))


def torchray_hit(mask: torch.Tensor, point, tolerance) -> bool:
    """TorchRay's PointingGame.evaluate (torchray/benchmark/pointing_game.py), point = (u, v) = (col, row)."""
    v, u = torch.meshgrid((torch.arange(mask.shape[0], dtype=torch.float32) - point[1]) ** 2,
                          (torch.arange(mask.shape[1], dtype=torch.float32) - point[0]) ** 2, indexing="ij")
    return bool((mask & ((v + u) < tolerance ** 2)).any())


def pointing_game_against_torchray(spec) -> float:
    """One maximum per map, sparse masks, tolerances 1, 2, 5 and 15 px in the image's pixels
    (``tolerance_rule = "torchray"``) and 15 px scaled from a 224-px side (the default rule); then
    maps with many tied maxima (``ties = "split"``: the share of the maxima TorchRay's test hits)."""
    g = torch.Generator().manual_seed(0)
    rows, cols = torch.randint(0, 20, (60,), generator=g), torch.randint(0, 20, (60,), generator=g)
    a = torch.zeros(60, 20, 20)
    a[torch.arange(60), rows, cols] = 1.0
    masks = torch.rand(60, 20, 20, generator=g) < 0.01
    masks[:, 0, 0] = True
    worst = 0.0
    for tau, rule in ((1, "torchray"), (2, "torchray"), (5, "torchray"), (15, "torchray"), (15, "scaled")):
        ours = testing.score(spec, maps_context(a, masks), tolerance=float(tau),
                             tolerance_rule=rule)["pointing_game"]
        radius = tau if rule == "torchray" else tau * 20 / 224
        theirs = [float(torchray_hit(masks[i], (cols[i].item(), rows[i].item()), radius)) for i in range(60)]
        worst = max(worst, max_abs_difference(ours, theirs))
    tied = (torch.rand(16, 20, 20, generator=g) * 3).floor()  # about a third of the pixels are maxima
    tied[::4] = 0.0  # constant maps: every pixel
    ours = testing.score(spec, maps_context(tied, masks[:16]), tolerance=3.0, tolerance_rule="torchray",
                         ties="split")["pointing_game"]
    theirs = []
    for i in range(16):
        peaks = (tied[i] == tied[i].max()).nonzero().tolist()
        theirs.append(sum(torchray_hit(masks[i], (c, r), 3.0) for r, c in peaks) / len(peaks))
    return max(worst, max_abs_difference(ours, theirs))


def relevance_mass_against_quantus(spec) -> float:
    import quantus

    a, masks = _pointing_inputs()
    ours = testing.score(spec, maps_context(a, masks))["relevance_mass_accuracy"]
    return max_abs_difference(ours, _quantus_call(quantus.RelevanceMassAccuracy(**QUANTUS_OFF), a, masks))


def emd_against_linprog(spec) -> float:
    """The exact optimal-transport problem between the top-|s| pixels and the mask, uniform mass,
    squared Euclidean cost, solved as a transport LP by scipy.optimize.linprog."""
    from scipy.optimize import linprog

    g = torch.Generator().manual_seed(3)
    gt = torch.zeros(3, 6, 6, dtype=torch.bool)
    gt[0, 1:3, 1:4] = True
    gt[1, 2:5, 0:2] = True
    gt[2, 0:2, 3:6] = True
    a = torch.rand(3, 6, 6, generator=g)
    ours = testing.score(spec, maps_context(a, gt))["emd"]
    theirs = []
    for i in range(len(gt)):
        dst = np.argwhere(gt[i].numpy())
        p = len(dst)
        top = np.argsort(-a[i].numpy().ravel(), kind="stable")[:p]  # continuous map: no ties
        src = np.stack(np.unravel_index(top, a[i].shape), 1)
        cost = ((src[:, None, :] - dst[None, :, :]) ** 2).sum(-1).astype(float)
        rows, cols = np.kron(np.eye(p), np.ones(p)), np.kron(np.ones(p), np.eye(p))
        theirs.append(linprog(cost.ravel(), A_eq=np.vstack([rows, cols]), b_eq=np.full(2 * p, 1 / p),
                              bounds=(0, None)).fun)
    return max_abs_difference(ours, theirs)


@hookimpl
def xbench_verifications():
    yield VerificationSpec(
        name="tpr-tnr.quantus", plugin="tpr-tnr", kind="metrics", library="quantus",
        reference="quantus.RelevanceRankAccuracy and quantus.TopKIntersection (k = |mask|)",
        check=tpr_against_quantus, tolerance=1e-9,
        inputs="24 random 16×16 maps on rectangular masks of several sizes; 16 on 4×4 planted masks",
        differences="TPR only (Quantus has no TNR); normalise and abs off; continuous maps, so no ties to break")
    yield VerificationSpec(
        name="pointing-game.quantus", plugin="pointing-game", kind="metrics", library="quantus",
        reference="quantus.PointingGame", check=pointing_game_against_quantus, tolerance=0.0,
        inputs="32 random 16×16 maps (every 4th with tied maxima) and random masks (30 % of pixels)",
        differences="with tolerance = 0 and ties = \"any\" (Quantus' hit: a maximum in the mask); normalise and "
                    "abs off")
    yield VerificationSpec(
        name="pointing-game.torchray", plugin="pointing-game", kind="metrics",
        reference="TorchRay's PointingGame.evaluate, re-implemented from torchray/benchmark/pointing_game.py",
        check=pointing_game_against_torchray, tolerance=0.0,
        inputs="60 one-hot 20×20 maps, sparse random masks, tolerances 1, 2, 5, 15 px; 16 maps with many tied "
               "maxima (4 constant), tolerance 3 px",
        differences="TorchRay tests one point: with tied maxima, xbench's ties = \"split\" is compared with "
                    "the share of the maxima that TorchRay's test hits; tolerance_rule \"torchray\" (τ in this "
                    "image's pixels, TorchRay's rule) and \"scaled\" (15 px at a 224-px side, compared with "
                    "TorchRay's test at 15·20/224 px)")
    yield VerificationSpec(
        name="relevance-mass-accuracy.quantus", plugin="relevance-mass-accuracy", kind="metrics", library="quantus",
        reference="quantus.RelevanceMassAccuracy", check=relevance_mass_against_quantus, tolerance=1e-6,
        inputs="32 random non-negative 16×16 maps and random masks",
        differences="Quantus sums in float32, xbench in float64 (measured 6e-8); normalise and abs off")
    yield VerificationSpec(
        name="emd.linprog", plugin="emd", kind="metrics", library="scipy",
        reference="the transport problem solved as a linear programme by scipy.optimize.linprog",
        check=emd_against_linprog, tolerance=1e-9,
        inputs="3 random 6×6 maps and rectangular masks of 6 pixels",
        differences="none: the same top-|mask| pixels, uniform mass and squared Euclidean cost")
