"""The ``runs_dir`` fixture: a runs folder with known results, written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_fixtures import ID_PROTOCOL, T2I_PROTOCOL, cir, results, write_run


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """Six valid runs (one superseded by a later run with the same seed) and three bad files."""
    root = tmp_path / "runs"
    for seed, shift in ((0, 0.0), (1, 0.02)):
        metrics = cir(0.55 + shift, 0.20 + shift, 0.40 + 2 * shift, 0.50 + shift, 0.60 + shift)
        subsets = {"dress": {"R@10": 0.45 + shift, "R@50": 0.55 + shift},
                   "shirt": {"R@10": 0.55 + shift, "R@50": 0.65 + shift}}
        write_run(root, results("clip4cir__synth-cir", seed, metrics, per_subset=subsets))
    for day, metrics in (("01", cir(0.30, 0.10, 0.20, 0.25, 0.35)), ("02", cir(0.40, 0.1234, 0.30, 0.35, 0.45))):
        write_run(root, results("clip__synth-cir", 0, metrics, started_at=f"2024-01-{day}T09:00:00"),
                  run=f"202401{day}-090000_seed0")
    t2i = {"t2i/R@1": 0.30, "t2i/R@5": 0.60, "t2i/R@10": 0.70, "i2t/R@1": 0.32, "i2t/R@5": 0.62, "i2t/R@10": 0.72,
           "mean_recall": 0.5433}
    write_run(root, results("clip__synth-t2i", 0, t2i, protocol=T2I_PROTOCOL))
    write_run(root, results("reid-baseline__synth-id", 3, {"mAP": 0.41, "rank1": 0.50, "R@1": 0.50, "R@5": 0.70},
                            protocol=ID_PROTOCOL, per_subset={"intra": {"mAP": 0.61, "rank1": 0.70},
                                                              "cross": {"mAP": 0.31, "rank1": 0.40}}))
    write_run(root / "bad", '{"schema_version": 1, "experiment": ', run="corrupt")
    partial = results("clip__synth-cir", 5, cir(0.3, 0.1, 0.2, 0.3, 0.4))
    del partial["metrics"], partial["seed"]
    write_run(root / "bad", partial, run="partial")
    write_run(root / "bad", results("clip__synth-cir", 6, cir(0.3, 0.1, 0.2, 0.3, 0.4), schema_version=2),
              run="future")
    return root
