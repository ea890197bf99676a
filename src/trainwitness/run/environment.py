"""The execution environment that changes a step's low-order bits, recorded and re-applied."""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import version

import numpy as np
import torch

from trainwitness.commit.canonical import JSONValue

__all__ = ["describe_device", "capture_environment", "apply_execution_settings", "environment_differences"]

# Fields whose difference can change results bitwise; the rest are for the reader.
RESULT_AFFECTING = ("torch", "numpy", "torch_threads", "device", "deterministic_algorithms", "machine")


def describe_device(device: torch.device) -> str:
    """``cpu``, ``cuda:<device name>`` or ``mps``: the kind of the run's device, then what it is."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def capture_environment(device: torch.device | None = None) -> dict[str, JSONValue]:
    """What the run executes under; ``device``: the run's declared device (default cpu)."""
    device_name = describe_device(device if device is not None else torch.device("cpu"))
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "trainwitness": version("trainwitness") if _installed() else "source",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "device": device_name,
        "torch_threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
    }


def _installed() -> bool:
    try:
        version("trainwitness")
    except Exception:
        return False
    return True


def apply_execution_settings(torch_threads: int) -> None:
    """Settings that both recording and replay run under: deterministic kernels, fixed threads."""
    # cuBLAS is deterministic only with a fixed workspace, which must be set before its first use.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(torch_threads)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def environment_differences(
    recorded: dict[str, JSONValue], device: torch.device | None = None
) -> dict[str, tuple[JSONValue, JSONValue]]:
    """Result-affecting fields where this machine (replaying on ``device``) differs from the recorded environment."""
    here = capture_environment(device)
    return {k: (recorded.get(k), here[k]) for k in RESULT_AFFECTING if recorded.get(k) != here[k]}
