"""ROAD, RemOve And Debias (Rong et al., ICML 2022): perturbation curves whose removed pixels are
filled by noisy linear imputation, so that the shape of the removal mask leaks little class
information and MoRF and LeRF rank methods consistently.

Imputation, as the reference implementation (tleemann/road_evaluation ``imputations.py``, copied
into ``pytorch_grad_cam.metrics.road.NoisyLinearImputer``): every removed pixel equals the weighted
mean of its in-image 8-neighbours (weight 1/6 axial, 1/12 diagonal; neighbours outside the image
are left out of the mean), known pixels keep their values; that is a sparse linear system in the
removed pixels. Then Gaussian noise N(0, ``noise``²) is added to the removed pixels (drawn from the
seeded ``ctx.generator``). ``noise = 0`` makes it deterministic.

How it is solved: not one scipy solve per image, channel and percentage (the reference), but one
batched solve for all N images × C channels of as many removal sets (percentage and order) as fit
in ``IMPUTE_ELEMENTS`` values (on a CPU one set of 32 × 3 × 64 × 64, on a GPU every set together),
on the inputs' device. The system is
the graph Laplacian of the removed pixels with the known pixels as Dirichlet boundary, symmetric
positive definite whenever one pixel is known (at most ``100 − ε`` % are removed, and at least one
pixel is always kept). It is solved by conjugate gradients preconditioned with one geometric
multigrid V-cycle (three Jacobi sweeps before and after the coarse-grid correction, 2×2
piecewise-constant transfers, the same stencil on each coarser grid over the blocks whose four
pixels are all removed, down to a side of 8), which needs ~5–9 iterations whatever the size and
shape of the holes (plain CG needs ~150 on 64×64 at 90 %; the former V(1,1) cycle with damping 0.8
needed 11–16). Every system iterates until its residual ‖b − Au‖₂ ≤ ``tolerance``·‖b‖₂, at most
``max_iterations`` times (samples that do not converge are flagged). The operator works on a
zero-padded, flattened copy of the images, so that every neighbour is a contiguous shift, and a
Jacobi sweep is one stencil and two fused multiply-adds (e ← keep·e + jacobi·r + spread·N(e)).
What did not pay on a CPU: bilinear transfers (6 % fewer iterations, dearer cycles), all sets in
one solve (see ``IMPUTE_ELEMENTS``), ``torch.compile`` of the V-cycle (16× slower), a direct solve
(scipy's SuperLU: 4–5 ms to factorise one 64×64 system at 10–90 % and ~1 ms to build it, against
~4 ms per image and set for the whole batched solve, all on one loaded core).

Orders, for each removal percentage p of ``percentages``: the k pixels with the highest relevance
(``morf``, most relevant first) or the lowest (``lerf``) are removed; ties in relevance by a seeded
random permutation (the same for both orders). k follows ``count``: ``percentile`` (the default) is
pytorch-grad-cam's rule, whose "percentile" q = 100 − p removes the pixels at or above the q-th
percentile of the map (numpy's linear interpolation, index q·(P − 1)/100 among P sorted values):
for a map without ties that is k = P − ⌈(100 − p)(P − 1)/100⌉ = ⌊p(P − 1)/100⌋ + 1 pixels, so both
remove the same pixels at every p (computed here in exact arithmetic; numpy interpolates in floating
point, which gives the same count at the default percentages on the usual sizes, and one pixel off
in 2–4 of 7722 (size, integer p) pairs the tests try, where the index is an exact integer and the
map's last bits decide). ``round`` removes
round(p·P/100) pixels, half up (xbench's rule before; at P = 64 × 64 it removes one pixel fewer
than grad-cam at p = 20 and 40 and the same at the other seven default percentages). Both keep at
least one pixel. Where they differ in kind: grad-cam removes every pixel tied with its threshold
(all of a constant map), xbench exactly k, ties broken by the seeded permutation. f is the softmax
probability of the chosen class (param ``class``) of the imputed image, recorded as the curves
``morf/<p>`` and ``lerf/<p>`` (lower MoRF and higher LeRF are better). ``road`` is the symmetric
score: the mean over the percentages of f_LeRF(p) − f_MoRF(p), in probability units, higher is
better. pytorch-grad-cam's ``ROADCombined`` reports half of it, as the mean of the two averaged score
*differences* (f after − f before), whose f before cancels.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F

from xbench import Family, MetricContext, MetricSpec, Param, hookimpl

from ._common import CLASS_DOC, class_choice, class_probability, constant_maps, defined, explained_class
from .faithfulness import morf_ranks

PERCENTAGES = [10, 20, 30, 40, 50, 60, 70, 80, 90]
OMEGA = 1.0          # damping of the Jacobi smoother (its smoothing factor on this stencil: 1/3)
COARSEST_SIDE = 8    # the V-cycle stops coarsening at this side
COARSEST_SWEEPS = 10  # Jacobi sweeps on the coarsest grid
SWEEPS = 3           # Jacobi sweeps before and after each coarse-grid correction


# ----------------------------------------------------------------------------- the padded grid

class _Grid:
    """One grid of the V-cycle: images of ``h × w`` stored zero-padded by one pixel and flattened,
    ``(N, C, (h+2)·(w+2))``, so that the 8 neighbours of a pixel are shifts of ±1 and ±pitch."""

    def __init__(self, removed: torch.Tensor):
        # removed: (N, 1, h, w) float, 1 where the value is unknown
        self.h, self.w = removed.shape[-2:]
        self.pitch = self.w + 2
        self.m = self.flat(removed)
        self._stencil = self._transfer = None                # output buffers, made at first use
        ones = self.flat(torch.ones(1, 1, self.h, self.w, dtype=removed.dtype, device=removed.device))
        d = (self.neighbours12(ones) - 4 * ones) / 12       # in-image neighbour weight, 1 inside
        self._stencil = None
        self.a = self.m * (d + 1 / 3)                        # A u = a·u − c·neighbours12(u)
        self.c = self.m / 12
        self.jacobi = OMEGA * self.m / torch.where(self.m > 0, d, torch.ones_like(d))
        # a sweep: e ← keep·e + jacobi·r + spread·neighbours12(e)
        self.keep = 1 - self.jacobi * self.a
        self.spread = self.jacobi * self.c

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (1, 1, 1, 1)).flatten(-2)

    def image(self, u: torch.Tensor) -> torch.Tensor:
        return u.unflatten(-1, (self.h + 2, self.pitch))[..., 1:-1, 1:-1]

    def _buffer(self, name: str, like: torch.Tensor) -> torch.Tensor:
        buffer = getattr(self, name)
        if buffer is None or buffer.shape != like.shape or buffer.dtype != like.dtype:
            buffer = torch.zeros_like(like)
            setattr(self, name, buffer)
        return buffer

    def neighbours12(self, u: torch.Tensor) -> torch.Tensor:
        """12·Σ_j w_j u_j + 4u: the separable [1, 2, 1] ⊗ [1, 2, 1] filter, valid inside the padding.
        Written into a buffer that the next call overwrites (its padding stays zero)."""
        g, p = u.shape[-1], self.pitch
        s = torch.add(u[..., :-2], u[..., 2:])
        s.add_(u[..., 1:-1], alpha=2)                        # s[j] is the row filter at j + 1
        t = self._buffer("_stencil", u)
        core = t[..., p + 1:g - p - 1]
        torch.add(s[..., :g - 2 * p - 2], s[..., 2 * p:g - 2], out=core)
        core.add_(s[..., p:g - p - 2], alpha=2)
        return t

    def apply(self, u: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.a * u, self.c, self.neighbours12(u), value=-1)

    def residual(self, r: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(r, self.a, e, value=-1).addcmul_(self.c, self.neighbours12(e))

    def sweep(self, e: torch.Tensor, jr: torch.Tensor) -> torch.Tensor:
        """One damped Jacobi sweep for A e = r, given jacobi·r."""
        spread = self.neighbours12(e)
        return torch.addcmul(jr, self.keep, e).addcmul_(self.spread, spread)

    def coarse(self) -> _Grid | None:
        if min(self.h, self.w) <= COARSEST_SIDE:
            return None
        m = self.image(self.m)
        m = F.pad(m, (0, self.w % 2, 0, self.h % 2))
        coarse = (F.avg_pool2d(m, 2) == 1).to(m.dtype)       # blocks whose four pixels are all unknown
        return _Grid(coarse) if bool(coarse.any()) else None

    def restrict(self, r: torch.Tensor, coarse: _Grid) -> torch.Tensor:
        """Sums over the 2×2 blocks (the transpose of :meth:`prolong`)."""
        x = F.pad(self.image(r), (0, self.w % 2, 0, self.h % 2))
        rows = x[..., 0::2, :] + x[..., 1::2, :]
        return coarse.m * coarse.flat(rows[..., 0::2] + rows[..., 1::2])

    def prolong(self, e: torch.Tensor, coarse: _Grid) -> torch.Tensor:
        """Each coarse value onto its 2×2 block (piecewise constant), before masking; a buffer that
        the next call overwrites."""
        t = self._buffer("_transfer", e.new_empty(e.shape[:-1] + self.m.shape[-1:]))
        n, c = e.shape[:-1], coarse
        blocks = c.image(e)[..., :, None, :, None].expand(*n, c.h, 2, c.w, 2).reshape(*n, 2 * c.h, 2 * c.w)
        self.image(t).copy_(blocks[..., :self.h, :self.w])
        return t


def _vcycle(grids: list[_Grid], level: int, r: torch.Tensor) -> torch.Tensor:
    """One V-cycle for A e = r: ``SWEEPS`` damped Jacobi sweeps before and after the coarse-grid
    correction (a fixed symmetric linear operator in r, so it preconditions CG)."""
    g = grids[level]
    jr = g.jacobi * r
    e = jr.clone()
    last = level == len(grids) - 1
    for _ in range((COARSEST_SWEEPS if last else SWEEPS) - 1):
        e = g.sweep(e, jr)
    if last:
        return e
    nxt = grids[level + 1]
    e.addcmul_(g.m, g.prolong(_vcycle(grids, level + 1, g.restrict(g.residual(r, e), nxt)), nxt))
    for _ in range(SWEEPS):
        e = g.sweep(e, jr)
    return e


def impute(x: torch.Tensor, removed: torch.Tensor, *, tolerance: float = 1e-5, max_iterations: int = 200,
           noise: float = 0.0, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy linear imputation of the ``removed`` pixels ((N, H, W) bool) of ``x`` (N, C, H, W), batched.

    Returns the imputed images (the dtype of ``x``) and, per sample, whether every channel's solve
    reached the tolerance. A sample with nothing removed comes back unchanged."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    m = removed[:, None].to(dtype)
    known = x.to(dtype) * (1 - m)
    grids = [_Grid(m)]
    while (nxt := grids[-1].coarse()) is not None:
        grids.append(nxt)
    fine = grids[0]
    b = fine.c * fine.neighbours12(fine.flat(known))          # b_i = Σ_j∈known w_ij x_j
    u = torch.zeros_like(b)
    r = b.clone()
    limit = tolerance ** 2 * (b * b).sum(-1)
    rr = (r * r).sum(-1)
    z = _vcycle(grids, 0, r)
    p = z.clone()
    rz = (r * z).sum(-1)
    tiny = torch.finfo(dtype).tiny
    for _ in range(int(max_iterations)):
        if bool((rr <= limit).all()):
            break
        ap = fine.apply(p)
        alpha = (rz / (p * ap).sum(-1).clamp(min=tiny)).unsqueeze(-1)
        u.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1)
        rr = (r * r).sum(-1)
        z = _vcycle(grids, 0, r)
        rz_new = (r * z).sum(-1)
        p = torch.addcmul(z, (rz_new / rz.clamp(min=tiny)).unsqueeze(-1), p)
        rz = rz_new
    converged = (rr <= limit).all(1)
    out = known + fine.image(u)
    if noise > 0:
        out = out + noise * m * torch.randn(out.shape, generator=generator, device=out.device, dtype=dtype)
    return out.to(x.dtype), converged


# ----------------------------------------------------------------------------- the metric

COUNTS = ("percentile", "round")


def removal_count(percentage: float, pixels: int, rule: str = "percentile") -> int:
    """Pixels removed at ``percentage`` of ``pixels`` (see the module's docstring), keeping one."""
    if rule == "round":
        removed = math.floor(percentage * pixels / 100 + 0.5)
    else:
        removed = pixels - math.ceil((100 - Fraction(percentage)) * (pixels - 1) / 100)
    return min(int(removed), pixels - 1)


IMPUTE_ELEMENTS = {"cpu": 1 << 19, "cuda": 1 << 24}
"""At most this many pixel values (images × channels × pixels) in one batched solve, per device
type: removal sets of several percentages and orders are solved together up to it. On a CPU the
solve is bound by cache, not by per-operation overhead: one 32 × 3 × 64 × 64 set per solve took
5.0 s for the 18 sets, all 18 sets in one solve 6.6 s, 8 images at a time 6.0 s (one thread). On a
GPU, where each operation's launch costs as much for 32 images as for 576, all sets go together."""


def road_curves(ctx: MetricContext, a: torch.Tensor, percentages, choice, tolerance: float, max_iterations: int,
                noise: float, count: str = "percentile") -> tuple[dict, dict, torch.Tensor]:
    """f after MoRF and LeRF removal at every percentage ({p: (N,)} each) and which samples converged."""
    x = ctx.inputs
    n, _, h, w = x.shape
    ranks = morf_ranks(a.flatten(1), ctx.generator).view(n, h, w)  # 0 = most relevant
    sets = []                                                       # (order, p, removed (N, H, W))
    for pct in percentages:
        k = removal_count(pct, h * w, count)
        sets += [("morf", pct, ranks < k), ("lerf", pct, ranks >= h * w - k)]
    classes = explained_class(ctx, choice)
    module = ctx.model.module
    curves: dict[str, dict] = {"morf": {}, "lerf": {}}
    converged = torch.ones(n, dtype=torch.bool, device=x.device)
    per_chunk = max(1, IMPUTE_ELEMENTS.get(x.device.type, IMPUTE_ELEMENTS["cuda"]) // x.numel())
    for start in range(0, len(sets), per_chunk):
        chunk = sets[start:start + per_chunk]
        imputed, ok = impute(x.repeat(len(chunk), 1, 1, 1), torch.cat([removed for *_, removed in chunk]),
                             tolerance=tolerance, max_iterations=max_iterations, noise=noise, generator=ctx.generator)
        converged &= ok.view(len(chunk), n).all(0)
        for (order, pct, _), images in zip(chunk, imputed.split(n)):
            with torch.no_grad():
                curves[order][pct] = class_probability(module(images), classes)
    return curves["morf"], curves["lerf"], converged


def road(ctx: MetricContext) -> dict[str, torch.Tensor]:
    p = ctx.params
    a = ctx.attribution.float()
    morf, lerf, converged = road_curves(ctx, a, p["percentages"], p["class"], float(p["tolerance"]),
                                        int(p["max_iterations"]), float(p["noise"]), p["count"])
    ctx.flag(~converged, f"imputation did not reach tolerance {p['tolerance']} in {p['max_iterations']} iterations")
    ctx.flag(constant_maps(a) & defined(ctx), "constant attribution: pixel order is a seeded random permutation")
    score = torch.stack([lerf[q] - morf[q] for q in morf]).mean(0)
    return {"road": score, "morf": morf, "lerf": lerf}


def _percentages_problem(value) -> str | None:
    if any(not 0 < v < 100 for v in value):
        return "every percentage must lie strictly between 0 and 100"
    if len(set(value)) != len(value):
        return "percentages must not repeat"
    return None


@hookimpl
def xbench_metrics():
    yield MetricSpec(
        name="road", score=road, category="faithfulness",
        values={"road": True, "morf": Family(False, level="percent"), "lerf": Family(True, level="percent")},
        params={"percentages": Param(list(PERCENTAGES), "shares of the pixels removed, in percent", min_items=1,
                                     check=_percentages_problem),
                "count": Param("percentile", "pixels removed at p: 'percentile' as pytorch-grad-cam (those at or "
                                             "above the (100 − p)-th percentile, ⌊p(P − 1)/100⌋ + 1 of P), 'round' "
                                             "round(p·P/100)", choices=COUNTS, label=True),
                "noise": Param(0.01, "σ of the Gaussian noise added to every imputed pixel (0 = none)", ge=0),
                "class": Param("target", CLASS_DOC, check=class_choice),
                "tolerance": Param(1e-5, "stop the solve when ‖residual‖ ≤ tolerance·‖right-hand side‖", gt=0),
                "max_iterations": Param(200, "most preconditioned CG iterations per solve", ge=1)},
        description="ROAD (Rong et al. 2022): remove the most (morf/<p>) or least (lerf/<p>) relevant p % of "
                    "pixels, impute them by noisy linear imputation (batched multigrid-preconditioned CG), "
                    "f = softmax probability of the chosen class; road = mean over p of LeRF − MoRF.",
    )
