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


_MT_WORDS = 624  # MT19937's state: 624 32-bit words, then a position in 0..624
_MAX_CUDA_DEVICES = 1024


def _words(flat: FlatState, name: str, count: int) -> list[int]:
    """The I64 tensor ``name`` of ``count`` values, as ints; anything else is refused."""
    tensor = flat.tensors.get(name)
    if tensor is None or tensor.dtype != torch.int64 or tuple(tensor.shape) != (count,):
        raise MalformedInputError(f"RNG state: {name} is not {count} 64-bit integers")
    return [int(v) for v in tensor.tolist()]


def _check_mt_words(words: list[int], name: str) -> None:
    if not all(0 <= w < 2**32 for w in words[:_MT_WORDS]):
        raise MalformedInputError(f"RNG state: {name} holds a word outside 0..2**32-1 (an MT19937 state word is 32 bits)")


def restore_rng(flat: FlatState) -> None:
    """Set every global generator from a captured state (read from a verified checkpoint).

    Every field is checked against the generators' own ranges before any generator is set
    (``random.setstate`` raises ``OverflowError`` for a word of -1 and silently truncates one of
    2**32, numpy wraps a negative key): an out-of-range committed state is refused with
    ``MalformedInputError``, never applied in part.
    """
    sk: Any = flat.skeleton
    if not isinstance(sk, dict) or not isinstance(sk.get("numpy"), dict) or not isinstance(sk.get("python"), dict):
        raise MalformedInputError("RNG state: the skeleton does not hold numpy and python generator fields")
    devices = sk.get("cuda_devices")
    if not isinstance(devices, int) or isinstance(devices, bool) or not 0 <= devices <= _MAX_CUDA_DEVICES:
        raise MalformedInputError(f"RNG state: cuda_devices {devices!r} is not a device count")
    torch_cpu = flat.tensors.get("rng/torch_cpu")
    if torch_cpu is None or torch_cpu.dtype != torch.uint8 or torch_cpu.dim() != 1:
        raise MalformedInputError("RNG state: rng/torch_cpu is not a byte tensor")
    npy, py = sk["numpy"], sk["python"]
    keys = _words(flat, "rng/numpy_keys", _MT_WORDS)
    _check_mt_words(keys, "rng/numpy_keys")
    if (
        npy.get("kind") != "MT19937"
        or not isinstance(npy.get("pos"), int) or not 0 <= npy["pos"] <= _MT_WORDS
        or npy.get("has_gauss") not in (0, 1) or isinstance(npy.get("has_gauss"), bool)
        or not isinstance(npy.get("cached_gaussian"), float)
    ):
        raise MalformedInputError("RNG state: numpy's kind, pos, has_gauss or cached_gaussian is out of range")
    py_state = _words(flat, "rng/python_state", _MT_WORDS + 1)
    _check_mt_words(py_state, "rng/python_state")
    if not 0 <= py_state[-1] <= _MT_WORDS:
        raise MalformedInputError(f"RNG state: rng/python_state's position {py_state[-1]} is outside 0..{_MT_WORDS}")
    if py.get("version") != 3 or isinstance(py.get("version"), bool) or not (py.get("gauss_next") is None or isinstance(py["gauss_next"], float)):
        raise MalformedInputError("RNG state: Python random's version is not 3 or its gauss_next is not a float")
    cuda_states = []
    for i in range(devices):
        state = flat.tensors.get(f"rng/torch_cuda/{i}")
        if state is None or state.dtype != torch.uint8 or state.dim() != 1:
            raise MalformedInputError(f"RNG state: rng/torch_cuda/{i} is missing or not a byte tensor")
        cuda_states.append(state)
    if cuda_states and not torch.cuda.is_available():
        raise MalformedInputError("the state holds CUDA generators but no CUDA device is present")
    try:
        torch.set_rng_state(torch_cpu)
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)
        np.random.set_state(("MT19937", np.asarray(keys, dtype=np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
        random.setstate((3, tuple(py_state), py["gauss_next"]))
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise MalformedInputError(f"RNG state cannot be restored: {e}") from e


def rng_digest(flat: FlatState) -> str:
    return digest_tensors("rng", flat.tensors, flat.skeleton)
