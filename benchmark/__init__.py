"""xbench: does a saliency map point at what really drives the model's decision?

Plugins implement the hooks in :mod:`xbench.hookspecs` and yield the spec objects exported here.
"""

from importlib.metadata import PackageNotFoundError, version

from .hookspecs import hookimpl
from .sources import DataSource, RemoteFile
from .specs import (
    Dataset,
    DatasetInfo,
    DatasetSpec,
    ExecutorSpec,
    Family,
    FitContext,
    FitReport,
    LazyArray,
    MethodSpec,
    MetricContext,
    MetricSpec,
    ModelSpec,
    Param,
    Split,
    TrainedModel,
    VerificationSpec,
)
from .store import load_results

try:
    __version__ = version("xbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "DataSource",
    "Dataset",
    "DatasetInfo",
    "DatasetSpec",
    "ExecutorSpec",
    "Family",
    "FitContext",
    "FitReport",
    "LazyArray",
    "MethodSpec",
    "MetricContext",
    "MetricSpec",
    "ModelSpec",
    "Param",
    "RemoteFile",
    "Split",
    "TrainedModel",
    "VerificationSpec",
    "__version__",
    "hookimpl",
    "load_results",
]
