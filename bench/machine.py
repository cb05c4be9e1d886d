"""The machine a benchmark ran on, for its report: every figure is recorded with the CPU (machines of one kind
differ: some lack bf16 instructions) and the load at the time."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch


def cpu_description() -> dict[str, Any]:
    name = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return {"model_name": name, "capability": torch.backends.cpu.get_cpu_capability(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def machine() -> str:
    """One line: CPU model (instruction set), cores, torch threads, torch version."""
    cpu = cpu_description()
    return (f"{cpu['model_name']} ({cpu['capability']}), {cpu['cpu_count']} cores, {cpu['torch_threads']} torch threads; "
            f"torch {torch.__version__}")
