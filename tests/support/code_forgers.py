"""Issue 11, item 4: forgers that make the code which runs differ from the code that is attested.

Each writes a small training package (a digits MLP) under the forgery's root, puts it on
``sys.path`` under a name of its own (so forgeries in one process never share modules), records a
run with it, and signs. The honest run the other forgers start from is not used: these runs need
a package outside trainwitness.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import py_compile
import shutil
import sys
from pathlib import Path

from trainwitness.prover import record_run

from .forgers import Run, _paths, sign

_counter = itertools.count()

OVERRIDES = {"total_steps": 40, "checkpoint_interval": 4}

SPEC = '''\
"""A digits MLP (issue 11 red team)."""
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from trainwitness.run.spec import TrainingSpec, training_spec
from trainwitness.workloads.digits import load_digits
{import_net}

DEFAULTS = {{"seed": 0, "data_seed": 1, "batch_size": 32, "total_steps": 40, "checkpoint_interval": 4, "hidden": 16, "lr": 0.05}}
{define_net}

@training_spec(defaults=DEFAULTS)
def spec(hp: Mapping) -> TrainingSpec:
    model = Net(int(hp["hidden"]))
    optimizer = torch.optim.SGD(model.parameters(), lr=float(hp["lr"]), momentum=0.9)

    def step(batch):
        loss = F.cross_entropy(model(batch["image"]), batch["label"]){scale}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return TrainingSpec(model=model, optimizer=optimizer, scheduler=None, dataset=load_digits(), step=step)
'''

NET = '''\
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.head(torch.{activation}(self.fc1(x)))
'''


def _package(root: Path, name: str, files: dict[str, str]) -> Path:
    package = root / "src" / name
    package.mkdir(parents=True)
    for rel, text in {"__init__.py": "", **files}.items():
        (package / rel).write_text(text)
    return package


def _on_path(root: Path) -> None:
    if str(root / "src") not in sys.path:
        sys.path.insert(0, str(root / "src"))  # stays: the verifier, later in this process, imports from here
    importlib.invalidate_caches()


def _forget(*names: str) -> None:
    for module in [m for m in sys.modules if m.partition(".")[0] in names]:
        del sys.modules[module]


def planted_bytecode(honest: Run, root: Path) -> Run:
    """The run trains with ``__pycache__/spec.cpython-*.pyc`` compiled (unchecked-hash invalidation:
    Python uses it without looking at the source) from a step that doubles the loss; ``spec.py``,
    the attested source, does not. Before issue 11 the verifier ran that bytecode and accepted."""
    run = _paths(root, keys_from=honest)
    name = f"rt_pyc_{os.getpid()}_{next(_counter)}"
    inline_net = NET.format(activation="relu").replace("import torch\nfrom torch import nn\n", "")
    honest_source = SPEC.format(import_net="", define_net=inline_net, scale="")
    package = _package(root, name, {"spec.py": SPEC.format(import_net="", define_net=inline_net, scale=" * 2.0")})
    _on_path(root)
    saved = sys.pycache_prefix
    sys.pycache_prefix = None  # the forger's interpreter reads and writes __pycache__, as Python does by default
    try:
        py_compile.compile(str(package / "spec.py"), cfile=importlib.util.cache_from_source(str(package / "spec.py")),
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH, doraise=True)
        (package / "spec.py").write_text(honest_source)  # the bytecode stays: Python does not check it against this
        module = importlib.import_module(f"{name}.spec")  # the .pyc's code: the recording below reuses this module
    finally:
        sys.pycache_prefix = saved
    assert "* 2.0" not in (package / "spec.py").read_text() and module.__cached__
    record_run(f"{name}.spec:spec", OVERRIDES, run.store, run.weights, torch_threads=1)
    sign(run)
    _forget(name)
    return run  # forged: every segment, and nothing the draw decides


def sibling_package_run(honest: Run, root: Path, trained: str = "relu", published: str = "relu") -> tuple[Run, str, Path]:
    """A run whose spec imports its network from a sibling package on PYTHONPATH: the run, the sibling's
    name and directory. The network's activation is ``trained`` while recording, ``published`` after."""
    run = _paths(root, keys_from=honest)
    tag = f"{os.getpid()}_{next(_counter)}"
    models, name = f"rt_models_{tag}", f"rt_spec_{tag}"
    _package(root, name, {"spec.py": SPEC.format(import_net=f"from {models}.net import Net", define_net="", scale="")})
    sibling = _package(root, models, {"net.py": NET.format(activation=trained)})
    _on_path(root)
    record_run(f"{name}.spec:spec", OVERRIDES, run.store, run.weights, torch_threads=1)
    sign(run)
    _forget(name, models)
    (sibling / "net.py").write_text(NET.format(activation=published))
    shutil.rmtree(sibling / "__pycache__", ignore_errors=True)
    return run, models, sibling


def swapped_sibling_package(honest: Run, root: Path) -> Run:
    """The spec imports its network from a sibling package on PYTHONPATH; the run trains with tanh
    there, and the sibling published beside the attestation (the auditor's copy) uses relu.
    Before issue 11 nothing recorded the sibling, and replay failed unexplained, or not at all."""
    return sibling_package_run(honest, root, trained="tanh", published="relu")[0]
