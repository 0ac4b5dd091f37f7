"""A third-party plugin that reuses a built-in name: xbench must refuse and name both providers."""

from xbench import MethodSpec, hookimpl


@hookimpl
def xbench_methods():
    yield MethodSpec(name="saliency", explain=lambda model, x, target, params: x)
