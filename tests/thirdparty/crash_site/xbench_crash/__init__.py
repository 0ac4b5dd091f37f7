"""Sample methods that do what a run must measure or survive, on request of a test.

``crash.gradient`` ends its own process once: how the tests kill (SIGKILL) or pre-empt (SIGUSR2, as
SLURM does before a time limit) an executor's task at a known point. The request is a file named by
``XBENCH_CRASH_MARKER`` holding the signal's name; the first process that removes it sends that
signal to itself, so exactly one task ends, once. Without it, it is an ordinary gradient method.

``crash.slow-start`` is the same gradient, whose first call in a process takes a second more (as a
method whose library is imported on first use): that second is not the method's cost.
"""

import os
import signal
import time

import torch

from xbench import MethodSpec, hookimpl


def gradient_or_crash(model, x, target, params):
    marker = os.environ.get("XBENCH_CRASH_MARKER")
    if marker:
        try:
            with open(marker, encoding="ascii") as fh:
                name = fh.read().strip()
            os.unlink(marker)
        except FileNotFoundError:
            pass
        else:
            os.kill(os.getpid(), getattr(signal, f"SIG{name}"))
    x = x.detach().requires_grad_(True)
    grad, = torch.autograd.grad(model.module(x).gather(1, target[:, None]).sum(), x)
    return grad.abs()


_started = False


def slow_start(model, x, target, params):
    global _started
    if not _started:
        time.sleep(1.0)
        _started = True
    x = x.detach().requires_grad_(True)
    grad, = torch.autograd.grad(model.module(x).gather(1, target[:, None]).sum(), x)
    return grad.abs()


@hookimpl
def xbench_methods():
    yield MethodSpec(name="crash.gradient", explain=gradient_or_crash, requires=frozenset({"gradients"}),
                     description="The absolute gradient; ends its own process once on request (tests).")
    yield MethodSpec(name="crash.slow-start", explain=slow_start, requires=frozenset({"gradients"}),
                     description="The absolute gradient; its first call in a process takes a second more (tests).")
