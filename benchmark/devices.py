"""Choosing and describing the device: CUDA when present, else the CPU; ``--device`` overrides."""

from __future__ import annotations

import os
import platform

from .errors import UsageError


def resolve_device(name: str):
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"Unknown device {name!r}. Use auto, cpu, cuda or cuda:<index>.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"Device {name!r} was asked for, but torch sees no CUDA GPU here. Use --device cpu or auto.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"Device {name!r} does not exist: torch sees {torch.cuda.device_count()} GPU(s).")
    return device


def describe_device(device) -> dict:
    import torch

    info = {"device": str(device), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine()}
    if device.type == "cuda":
        index = device.index or 0
        info["gpu"] = torch.cuda.get_device_name(index)
        info["cuda"] = torch.version.cuda
    return info
