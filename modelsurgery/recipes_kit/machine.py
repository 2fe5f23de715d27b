"""Where a measurement ran: one description of the machine, for the benchmarks and the recipes.

Timings only mean something beside the machine that produced them, so every results file
carries the same record: the platform, the CPU model, the core count, the Python and torch
versions, torch's intra-op thread count, the CUDA device when there is one, and the load
average when it was taken (a busy machine skews every wall-time ratio).

Example:
    >>> from modelsurgery.recipes_kit.machine import machine_info
    >>> sorted(machine_info())[:3]
    ['cpu_count', 'cuda', 'cuda_device']
"""

from __future__ import annotations

import os
import platform
from typing import Any

__all__ = ["machine_info", "cpu_model", "load_average"]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("model name"), else `platform.processor()`.

    Example:
        >>> cpu_model()
        'Intel(R) Xeon(R) Processor'
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, rounded to 0.01, or None where the OS has none.

    Example:
        >>> load_average()
        [0.48, 1.23, 2.08]
    """
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    """What the timings depend on, taken now.

    Returns:
        `platform`, `processor` (the CPU model), `cpu_count`, `python`, `torch`, `threads`
        (torch's intra-op threads), `cuda` (bool), `cuda_device` (its name, or None) and
        `loadavg` (see `load_average`).

    Example:
        >>> machine_info()["threads"]
        2
    """
    import torch  # here, not at the top: `load_average` alone must not load torch (bench's child processes)

    cuda = torch.cuda.is_available()
    return {"platform": platform.platform(), "processor": cpu_model(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": cuda, "cuda_device": torch.cuda.get_device_name() if cuda else None,
            "loadavg": load_average()}
