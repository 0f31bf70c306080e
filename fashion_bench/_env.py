"""Process-wide environment defaults and the torchvision import guard.

Two facts of CPU-only machines shape this module:

* ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``: without them a missing pretrained tag retries the hub for
  ~45 s and ``datasets`` pings it on every load. We default to offline unless the user set the variables
  (``FASHION_BENCH_ONLINE=1`` turns the default off).
* The torchvision wheel from the package registry can be a CUDA build whose C extension does not load beside
  a CPU torch: importing it fails in ``torchvision._meta_registrations`` with ``operator torchvision::nms does
  not exist``. Lightning imports torchmetrics, which imports torchvision, so this breaks ``import lightning``.
  We only need torchvision's pure-Python transforms, so an import hook lets that one module fail softly (it only
  describes the C++ detection operators to the compiler). The hook is installed when ``fashion_bench`` is
  imported and costs nothing until torchvision itself is imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import types

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
GUARDED_MODULE = "torchvision._meta_registrations"


def apply_offline_defaults() -> None:
    if os.environ.get("FASHION_BENCH_ONLINE") == "1":
        return
    for var in OFFLINE_VARS:
        os.environ.setdefault(var, "1")


class _SoftFailLoader(importlib.abc.Loader):
    """Runs the real module; an unloadable torchvision operator leaves it partially initialised instead."""

    def __init__(self, real: importlib.abc.Loader) -> None:
        self.real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.real.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        try:
            self.real.exec_module(module)
        except RuntimeError as err:
            if "torchvision::" not in str(err):
                raise


class _TorchvisionGuard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[override]
        if name != GUARDED_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _SoftFailLoader(spec.loader)
        return spec


def install_torchvision_guard() -> None:
    if not any(isinstance(f, _TorchvisionGuard) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionGuard())


def import_torchvision() -> types.ModuleType:
    install_torchvision_guard()
    return importlib.import_module("torchvision")


def import_open_clip() -> types.ModuleType:
    import_torchvision()
    return importlib.import_module("open_clip")
