"""Retrieval evaluation: exact metrics (:func:`evaluate`), protocols (:func:`run_protocol`) and exports.

Attributes load on first use, so that importing the package (e.g. for the protocol registry) pulls in
neither torch nor faiss until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fashion_bench.retrieval.export import write_cirr_submission
    from fashion_bench.retrieval.metrics import evaluate
    from fashion_bench.retrieval.engine import EvalInputs, EvalResult, run_protocol
    from fashion_bench.retrieval.protocols import PROTOCOLS, Protocol, get_protocol

_EXPORTS = {
    "evaluate": "metrics",
    "Protocol": "protocols",
    "EvalInputs": "engine",
    "EvalResult": "engine",
    "PROTOCOLS": "protocols",
    "get_protocol": "protocols",
    "run_protocol": "engine",
    "write_cirr_submission": "export",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
