"""The global random number generators a training step may draw from, captured and restored.

Captured: torch's CPU generator, every CUDA generator when CUDA is initialised, numpy's legacy
global ``RandomState`` and Python's ``random``. A step that draws from any other generator is not
replayable from committed state, and replay will say so by landing elsewhere.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from trainwitness.errors import MalformedInputError
from trainwitness.tensors.state import FlatState, digest_tensors

__all__ = ["seed_everything", "capture_rng", "restore_rng", "rng_digest"]


def seed_everything(seed: int) -> None:
    """Seed every captured generator from one integer (the run's declared seed)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), not {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA generators when present


def capture_rng() -> FlatState:
    """A copy of every global generator's state, as tensors plus a skeleton."""
    tensors: dict[str, torch.Tensor] = {"rng/torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/torch_cuda/{i}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    tensors["rng/numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, py_state, gauss_next = random.getstate()
    # via numpy: a third of the time torch.tensor takes over a tuple of 625 ints (runs every step)
    tensors["rng/python_state"] = torch.from_numpy(np.array(py_state, dtype=np.int64))
    skeleton = {
        "cuda_devices": sum(1 for n in tensors if n.startswith("rng/torch_cuda/")),
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "gauss_next": gauss_next},
    }
    return FlatState(tensors=tensors, skeleton=skeleton)


def restore_rng(flat: FlatState) -> None:
    """Set every global generator from a captured state (read from a verified checkpoint)."""
    try:
        sk: dict[str, Any] = flat.skeleton
        torch.set_rng_state(flat.tensors["rng/torch_cpu"].to(torch.uint8))
        cuda_states = [flat.tensors[f"rng/torch_cuda/{i}"] for i in range(int(sk["cuda_devices"]))]
        if cuda_states:
            if not torch.cuda.is_available():
                raise MalformedInputError("the state holds CUDA generators but no CUDA device is present")
            torch.cuda.set_rng_state_all(cuda_states)
        npy = sk["numpy"]
        keys = flat.tensors["rng/numpy_keys"].numpy().astype(np.uint32)
        np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
        py = sk["python"]
        py_state = tuple(int(v) for v in flat.tensors["rng/python_state"].tolist())
        random.setstate((py["version"], py_state, py["gauss_next"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise MalformedInputError(f"RNG state cannot be restored: {e}") from e


def rng_digest(flat: FlatState) -> str:
    return digest_tensors("rng", flat.tensors, flat.skeleton)
