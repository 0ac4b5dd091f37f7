"""What expanding methods share: a memory budget that bounds how many model inputs run at once,
a back-off on CUDA out-of-memory, and random draws seeded from the runner's generator.

Expanding methods (SmoothGrad, VarGrad, Integrated Gradients, GradientSHAP, DeepLiftShap,
occlusion, feature ablation, LIME, KernelSHAP, RISE, Score-CAM) turn each input into many model
inputs (noisy copies, path points, perturbations, masks). Captum evaluates all of them at once
unless told otherwise, which runs a large model out of memory (Captum #245, #538, #1350). Here every
such method takes the param ``memory_mb`` and evaluates at most :func:`rows_within` model inputs at
a time:

- the cost of one input row is measured once per model and input shape, by a forward pass of one
  row with hooks on every leaf module: the bytes of all their outputs (what autograd keeps for the
  backward pass) times 2 when gradients flow (the gradients of the same size), or the two largest
  outputs times 2 without gradients (a forward frees each activation once the next is computed);
- rows = budget // cost, at least 1. On a CPU the budget is at most ``CPU_CHUNK_MB`` (128 MiB
  with gradients, 32 without): larger chunks fall out of the caches and run slower, not faster.
  Measured on the 2-core CPU, one thread, small CNN on 3×32×32 images: RISE (500 masks, 16
  images) 12.7 s at 1024 MiB, 3.7 s at 128, 2.6 s at 32, 3.1 s at 8; Integrated Gradients (50
  steps, 32 images) 1.55 s at 1024, 1.44 s at 512, 1.19 s at 128, 1.57 s at 32.

:func:`with_backoff` runs a chunked computation and, on ``torch.cuda.OutOfMemoryError``, empties
the CUDA cache, halves the rows and tries again from the same random state, down to one row.

:func:`seeded` runs library code that draws from the global torch, NumPy and ``random`` generators
(Captum's NoiseTunnel, GradientShap, Lime, KernelShap) from seeds drawn from the runner's
per-batch ``torch.Generator``, and restores the global states afterwards: the draws are the same
in every run, whatever ran before (Captum's GradientShap draws from NumPy's global state, which
nothing else seeds while explaining).
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from xbench import Param
from xbench.errors import XbenchError

T = TypeVar("T")

MEMORY_PARAM = Param(1024.0, "memory budget in MiB for the model inputs evaluated at once (the expanded copies of "
                           "the batch); the method chunks them to fit and halves the chunk on a CUDA "
                           "out-of-memory error", gt=0)

CPU_CHUNK_MB = {True: 128, False: 32}  # with gradients, without

_ROW_BYTES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def row_bytes(module: nn.Module, x: torch.Tensor, grad: bool = True) -> int:
    """Estimated bytes one input row of ``x``'s shape costs in ``module`` (see the module doc);
    measured once per module, row shape, dtype and device."""
    key = (tuple(x.shape[1:]), x.dtype, str(x.device), bool(grad))
    known = _ROW_BYTES.setdefault(module, {})
    if key in known:
        return known[key]
    sizes: list[int] = []

    def keep(_module, _inputs, output):
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                sizes.append(t.numel() * t.element_size())

    hooks = [m.register_forward_hook(keep) for m in module.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            module(x[:1].detach())
    finally:
        for h in hooks:
            h.remove()
    own = x[:1].numel() * x.element_size()
    if grad:
        cost = 2 * (sum(sizes) + own)
    else:
        top = sorted(sizes, reverse=True)[:2]
        cost = 2 * sum(top) + own
    known[key] = max(1, int(cost))
    return known[key]


def rows_within(module: nn.Module, x: torch.Tensor, memory_mb: float, grad: bool = True) -> int:
    """How many model inputs of ``x``'s row shape fit in ``memory_mb`` MiB (on a CPU at most
    ``CPU_CHUNK_MB``), at least 1."""
    budget = float(memory_mb) if x.device.type != "cpu" else min(float(memory_mb), CPU_CHUNK_MB[bool(grad)])
    return max(1, int(budget * 2**20) // row_bytes(module, x, grad))


def with_backoff(attempt: Callable[[int], T], rows: int, what: str) -> T:
    """``attempt(rows)``, retried with half the rows after a CUDA out-of-memory error (the RNG
    states restored first, so a retry draws what the first try drew); the error, with what to do,
    once even one row does not fit."""
    states = _rng_states()
    while True:
        try:
            return attempt(rows)
        except torch.cuda.OutOfMemoryError as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if rows <= 1:
                raise XbenchError(
                    f"{what} ran out of GPU memory even with one model input at a time ({exc}). Use a device "
                    "with more memory, a smaller model or smaller images, or run on the CPU (--device cpu)."
                ) from exc
            rows = max(1, rows // 2)
            _set_rng_states(states)


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` with at most ``size`` items each."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@contextmanager
def seeded(generator: torch.Generator | None) -> Iterator[None]:
    """The global torch (CPU and the generator's CUDA device), NumPy and ``random`` generators
    seeded from ``generator`` inside the block and restored after it; no-op when it is None."""
    if generator is None:
        yield
        return
    states = _rng_states()
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    torch.manual_seed(seed)  # every device's generator too
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        _set_rng_states(states)


def _rng_states():
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda, np.random.get_state(), random.getstate()


def _set_rng_states(states) -> None:
    cpu, cuda, numpy_state, python_state = states
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(numpy_state)
    random.setstate(python_state)
