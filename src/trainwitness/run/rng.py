"""The random number generators a training step may draw from, captured and restored.

Captured: torch's CPU generator, the generator of the run's device when it is an accelerator (CUDA:
``rng/torch_cuda/0``, whichever ``cuda:N`` the run declared; MPS: ``rng/mps``), numpy's legacy
global ``RandomState``, Python's ``random``, and the private ``torch.Generator`` objects a spec
registers (``TrainingSpec.generators``: ``rng/generator/<name>``). A step that draws from any other
generator is not replayable from committed state: the prover refuses it before signing
(``run/guard.py``, ``prover/selfcheck.py``).

A replay on another kind of device than the recorded one cannot use the recorded device's
generator; it carries that state unchanged (``carried``), which is exact as long as the step never
draws from it, and the verifier checks that from the committed checkpoints before replaying.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from trainwitness.errors import MalformedInputError
from trainwitness.tensors.state import FlatState, digest_tensors

__all__ = ["seed_everything", "capture_rng", "restore_rng", "rng_digest", "device_generator_state"]


def seed_everything(seed: int) -> None:
    """Seed every captured global generator from one integer (the run's declared seed)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), not {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA (and MPS) generators when present


def _device_state(device: torch.device | None) -> tuple[str, torch.Tensor] | None:
    if device is None or device.type == "cpu":
        return None
    if device.type == "cuda":
        return "rng/torch_cuda/0", torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return "rng/mps", torch.mps.get_rng_state()
    raise ValueError(f"no generator capture for device {device}")


def device_generator_state(flat: FlatState) -> tuple[str, torch.Tensor] | None:
    """The accelerator generator's (name, state) in a captured state, or None for a CPU run."""
    for name in ("rng/torch_cuda/0", "rng/mps"):
        if name in flat.tensors:
            return name, flat.tensors[name]
    return None


def capture_rng(
    device: torch.device | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    carried: tuple[str, torch.Tensor] | None = None,
) -> FlatState:
    """A copy of every generator's state, as tensors plus a skeleton.

    ``device``: the run's device (its generator is captured when it is an accelerator);
    ``carried``: instead, a recorded accelerator generator's state, carried unchanged by a replay
    on another kind of device; ``generators``: the spec's registered private generators.
    """
    tensors: dict[str, torch.Tensor] = {"rng/torch_cpu": torch.get_rng_state()}
    accelerator = carried if carried is not None else _device_state(device)
    if accelerator is not None:
        tensors[accelerator[0]] = accelerator[1]  # a host copy (get_rng_state), or the carried one, never written to
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    tensors["rng/numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, py_state, gauss_next = random.getstate()
    # via numpy: a third of the time torch.tensor takes over a tuple of 625 ints (runs every step)
    tensors["rng/python_state"] = torch.from_numpy(np.array(py_state, dtype=np.int64))
    skeleton: dict[str, Any] = {
        "cuda_devices": 1 if "rng/torch_cuda/0" in tensors else 0,
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "gauss_next": gauss_next},
    }
    if "rng/mps" in tensors:
        skeleton["mps"] = True
    if generators:
        skeleton["generators"] = sorted(generators)
        for name in sorted(generators):
            tensors[f"rng/generator/{name}"] = generators[name].get_state()
    return FlatState(tensors=tensors, skeleton=skeleton)


_MT_WORDS = 624  # MT19937's state: 624 32-bit words, then a position in 0..624


def _words(flat: FlatState, name: str, count: int) -> list[int]:
    """The I64 tensor ``name`` of ``count`` values, as ints; anything else is refused."""
    tensor = flat.tensors.get(name)
    if tensor is None or tensor.dtype != torch.int64 or tuple(tensor.shape) != (count,):
        raise MalformedInputError(f"RNG state: {name} is not {count} 64-bit integers")
    return [int(v) for v in tensor.tolist()]


def _check_mt_words(words: list[int], name: str) -> None:
    if not all(0 <= w < 2**32 for w in words[:_MT_WORDS]):
        raise MalformedInputError(f"RNG state: {name} holds a word outside 0..2**32-1 (an MT19937 state word is 32 bits)")


def _check_restorable(flat: FlatState) -> None:
    """Every field of a committed state against the generators' own ranges, before any is set.

    ``random.setstate`` raises ``OverflowError`` for a word of -1 and silently truncates one of
    2**32; numpy wraps a negative key: such a state is refused, never applied in part.
    """
    sk: Any = flat.skeleton
    if not isinstance(sk, dict) or not isinstance(sk.get("numpy"), dict) or not isinstance(sk.get("python"), dict):
        raise MalformedInputError("RNG state: the skeleton does not hold numpy and python generator fields")
    for name in ("rng/torch_cpu", *(n for n in flat.tensors if n.startswith("rng/generator/") or n in ("rng/torch_cuda/0", "rng/mps"))):
        tensor = flat.tensors.get(name)
        if tensor is None or tensor.dtype != torch.uint8 or tensor.dim() != 1:
            raise MalformedInputError(f"RNG state: {name} is not a byte tensor")
    npy, py = sk["numpy"], sk["python"]
    _check_mt_words(_words(flat, "rng/numpy_keys", _MT_WORDS), "rng/numpy_keys")
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


def restore_rng(
    flat: FlatState, device: torch.device | None = None, generators: Mapping[str, torch.Generator] | None = None
) -> tuple[str, torch.Tensor] | None:
    """Set every generator from a captured state (read from a verified checkpoint).

    Returns the recorded accelerator generator's state when ``device`` is not of its kind (the
    caller carries it, see ``capture_rng``), else None. Every field is checked against the
    generators' own ranges first (``_check_restorable``): a state out of range is refused with
    ``MalformedInputError``, never applied in part.
    """
    _check_restorable(flat)
    try:
        sk: dict[str, Any] = flat.skeleton
        torch.set_rng_state(flat.tensors["rng/torch_cpu"].to(torch.uint8))
        carried = None
        accelerator = device_generator_state(flat)
        if int(sk["cuda_devices"]) not in (0, 1) or (accelerator is not None and accelerator[0] == "rng/torch_cuda/0") != (sk["cuda_devices"] == 1):
            raise MalformedInputError("the RNG state's cuda_devices does not match its tensors")
        if accelerator is not None:
            kind = "cuda" if accelerator[0] == "rng/torch_cuda/0" else "mps"
            if device is not None and device.type == kind:
                state = accelerator[1].to(torch.uint8)
                if kind == "cuda":
                    torch.cuda.set_rng_state(state, device)
                else:
                    torch.mps.set_rng_state(state)
            else:
                carried = accelerator
        names = list(sk.get("generators", []))
        if sorted(names) != sorted(generators or {}):
            raise MalformedInputError(
                f"the checkpoint's private generators {names} are not the ones the spec registers {sorted(generators or {})}"
            )
        for name in names:
            (generators or {})[name].set_state(flat.tensors[f"rng/generator/{name}"].to(torch.uint8))
        npy = sk["numpy"]
        keys = flat.tensors["rng/numpy_keys"].numpy().astype(np.uint32)
        np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
        py = sk["python"]
        py_state = tuple(int(v) for v in flat.tensors["rng/python_state"].tolist())
        random.setstate((py["version"], py_state, py["gauss_next"]))
        return carried
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise MalformedInputError(f"RNG state cannot be restored: {e}") from e


def rng_digest(flat: FlatState) -> str:
    return digest_tensors("rng", flat.tensors, flat.skeleton)
