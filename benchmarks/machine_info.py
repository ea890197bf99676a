"""The machine a benchmark ran on, named in every benchmark's output: CPU model, cores, BLAS, kernels.

Figures that depend on low-order bits (cross-thread replay, bounded-mode distances, exact-mode hint
counts) differ between CPUs and BLAS builds: MKL, for one, takes different code paths on Intel and
AMD processors, and the digits model replays bitwise across thread counts on an Intel Xeon but not on
an AMD EPYC. A figure without its machine cannot be compared.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["machine", "describe"]


def _cpu_model() -> str:
    """``model name`` from /proc/cpuinfo, with vendor, family and model numbers (a VM may show only "AMD EPYC")."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if not sep:
                break  # the first processor's block is enough
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "vendor_id" in fields and "cpu family" in fields:
        name += f" [{fields['vendor_id']} family {fields['cpu family']} model {fields.get('model', '?')}]"
    return name


def _sha_ni() -> bool | None:
    try:
        return bool(re.search(r"\bsha_ni\b", Path("/proc/cpuinfo").read_text()))
    except OSError:
        return None


def _blas() -> tuple[str, str]:
    """torch's BLAS (``BLAS_INFO`` of its build) and the library's own version line, as torch reports them."""
    config = torch.__config__.show()
    match = re.search(r"BLAS_INFO=([^,\s]+)", config)
    name = match.group(1) if match else "unknown"
    version = next((line.strip(" -") for line in config.splitlines() if "Math Kernel Library" in line or "OpenBLAS" in line), "")
    return name, version


def machine() -> dict[str, Any]:
    blas, blas_version = _blas()
    backend = re.search(r"ATen parallel backend: (\S+)", torch.__config__.parallel_info())
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "sha_ni": _sha_ni(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": 1,
        "blas": blas,
        "blas_version": blas_version,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the vector kernels torch dispatches to
        "parallel_backend": backend.group(1) if backend else "unknown",
    }


def describe(m: dict[str, Any]) -> str:
    """One line: ``AMD EPYC 9R14 (2 cores, SHA-NI: True), torch 2.13.0+cpu with AVX512 kernels, BLAS mkl (...)``."""
    version = f" ({m['blas_version']})" if m.get("blas_version") else ""
    return (
        f"{m['cpu']} ({m['cores']} cores, SHA-NI: {m['sha_ni']}), torch {m['torch']} with {m.get('cpu_capability', '?')} kernels "
        f"and {m.get('parallel_backend', '?')} threads, BLAS {m.get('blas', '?')}{version}"
    )
