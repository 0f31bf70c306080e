"""Bad input raises ValueError with a message that says what is wrong and where."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from fashion_bench.retrieval import evaluate

Q = np.ones((2, 3), np.float32)
G = np.ones((5, 3), np.float32)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"positives": [[0], [7]]}, "positives[1] contains 7, outside the gallery index range [0, 5)"),
        ({"positives": [[0], [-1]]}, "positives[1] contains -1"),
        ({"positives": [[0], [1]], "exclude": [[2], [1, 5]]}, "exclude[1] contains 5"),
        ({"positives": [[0]]}, "positives has 1 entries for 2 queries"),
        ({"positives": [[0.5], [1]]}, "positives must hold integer gallery indices"),
        ({"positives": [[0], [1]], "ks": (1, 0)}, "ks must be positive integers, got [0]"),
        ({"positives": [[0], [1]], "backend": "gpu"}, "unknown backend 'gpu'"),
    ],
)
def test_bad_lists(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate(Q, G, **kwargs)


def test_dimension_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=re.escape("query_emb has shape (2, 3), gallery_emb has shape (4, 5)")):
        evaluate(Q, np.ones((4, 5), np.float32), [[0], [1]])


def test_non_finite_embeddings_name_side_and_rows():
    q = torch.ones(4, 3)
    q[1, 0], q[3, 2] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=re.escape("query_emb has 2 of 4 rows with NaN or infinite values (first: row 1)")):
        evaluate(q, G, [[0]] * 4)
    g = G.copy()
    g[4, 1] = -np.inf
    with pytest.raises(ValueError, match=re.escape("gallery_emb has 1 of 5 rows with NaN or infinite values")):
        evaluate(Q, g, [[0], [1]])


def test_shapes_and_types():
    with pytest.raises(ValueError, match="the gallery is empty"):
        evaluate(Q, np.ones((0, 3), np.float32), [[], []])
    with pytest.raises(ValueError, match=re.escape("gallery_emb must be 2-D [N, D], got shape (5,)")):
        evaluate(Q, np.ones(5, np.float32), [[0], [1]])
    with pytest.raises(ValueError, match="query_emb must hold floats, got torch.int64"):
        evaluate(torch.ones(2, 3, dtype=torch.int64), G, [[0], [1]])
    with pytest.raises(ValueError, match="too large to score in float32"):
        evaluate(Q, np.full((5, 3), 1e30), [[0], [1]])


def test_importing_the_package_stays_light():
    code = "import sys, fashion_bench.retrieval as r; r.Protocol; print('torch' in sys.modules, 'lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
