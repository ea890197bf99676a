"""The execution environment that changes a step's low-order bits, recorded and re-applied."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import version

import numpy as np
import torch

from trainwitness.commit.canonical import JSONValue

__all__ = ["capture_environment", "apply_execution_settings", "environment_differences"]

# Fields whose difference can change results bitwise; the rest are for the reader.
RESULT_AFFECTING = ("torch", "numpy", "torch_threads", "device", "deterministic_algorithms", "machine")


def capture_environment() -> dict[str, JSONValue]:
    device = "cpu"
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        device = f"cuda:{torch.cuda.get_device_name()}"
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "trainwitness": version("trainwitness") if _installed() else "source",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "device": device,
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
    torch.set_num_threads(torch_threads)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def environment_differences(recorded: dict[str, JSONValue]) -> dict[str, tuple[JSONValue, JSONValue]]:
    """Result-affecting fields where this machine differs from the recorded environment."""
    here = capture_environment()
    return {k: (recorded.get(k), here[k]) for k in RESULT_AFFECTING if recorded.get(k) != here[k]}
