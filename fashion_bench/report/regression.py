"""Check runs against an expected-results file (``fashion-bench report --check FILE``).

The file is a YAML list; each entry names an experiment, a split and a metric (as in results.json, a
fraction in [0, 1]; ``subset`` selects a ``per_subset`` value) and its band, either ``value`` +- ``tol`` or
``min`` and/or ``max`` (inclusive)::

    - {experiment: clip__synth-t2i, split: val, metric: mean_recall, value: 0.52, tol: 0.03}
    - {experiment: clip4cir__synth-cir, split: val, metric: R@10, subset: dress, min: 0.30, max: 0.80}

Every used run (one per seed) of the entry's experiment and split must fall inside the band. An entry with
no matching run is a warning (a failure with ``strict``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from fashion_bench.report.collect import SPLITS, Run, display_path

_KEYS = {"experiment", "split", "metric", "subset", "value", "tol", "min", "max", "note"}
_EPS = 1e-9  # float slack at the band's edges


class ExpectedFileError(ValueError):
    """The expected-results file is malformed; the message names the file, the entry and the field."""


@dataclass(frozen=True)
class Expectation:
    experiment: str
    split: str
    metric: str
    subset: str | None
    low: float
    high: float
    band: str

    @property
    def name(self) -> str:
        metric = f"{self.subset}/{self.metric}" if self.subset else self.metric
        return f"{self.experiment} [{self.split}] {metric}"

    def value_of(self, run: Run) -> float | None:
        metrics = run.per_subset.get(self.subset, {}) if self.subset else run.metrics
        return metrics.get(self.metric)


@dataclass
class RegressionResult:
    checked: int = 0
    passed: int = 0
    failures: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def ok(self, strict: bool = False) -> bool:
        return not self.failures and not (strict and self.missing)

    def summary(self) -> str:
        return (f"regression: {self.checked} result(s) checked, {self.passed} passed, {len(self.failures)} "
                f"failed, {len(self.missing)} expectation(s) without a run")


def read_yaml(path: Path) -> Any:
    """A YAML file's data; an unreadable file or invalid YAML raises :class:`ExpectedFileError` naming it."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ExpectedFileError(f"{path}: cannot read ({err})") from None
    except yaml.YAMLError as err:
        raise ExpectedFileError(f"{path}: invalid YAML ({err})") from None


def load_expected(path: str | Path) -> list[Expectation]:
    """Parse an expected-results file; an empty file is an empty list."""
    return parse_expected(read_yaml(Path(path)), str(path))


def parse_expected(data: Any, source: str) -> list[Expectation]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise ExpectedFileError(f"{source}: expected a YAML list of entries, got {type(data).__name__}")
    return [_entry(entry, f"{source}: entry {index}") for index, entry in enumerate(data)]


def _entry(entry: Any, where: str) -> Expectation:
    def fail(reason: str) -> ExpectedFileError:
        return ExpectedFileError(f"{where}: {reason}")

    if not isinstance(entry, dict):
        raise fail("not a mapping")
    unknown = sorted(set(map(str, entry)) - _KEYS)
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_KEYS))})")
    for key in ("experiment", "split", "metric"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise fail(f"'{key}' must be a non-empty string")
    if entry["split"] not in SPLITS:
        raise fail(f"split {entry['split']!r} is not one of {', '.join(SPLITS)}")
    subset = entry.get("subset")
    if subset is not None and not isinstance(subset, str):
        raise fail("'subset' must be a string")
    numbers = {key: entry[key] for key in ("value", "tol", "min", "max") if key in entry}
    for key, number in numbers.items():
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise fail(f"'{key}' must be a finite number")
    if {"value", "tol"} & numbers.keys():
        if numbers.keys() != {"value", "tol"}:
            raise fail("give 'value' with 'tol', or 'min' and/or 'max', not a mix")
        if numbers["tol"] < 0:
            raise fail("'tol' must be >= 0")
        low, high = numbers["value"] - numbers["tol"], numbers["value"] + numbers["tol"]
        band = f"{numbers['value']:.4f} ± {numbers['tol']:.4f}"
    elif numbers:
        low, high = numbers.get("min", -math.inf), numbers.get("max", math.inf)
        if low > high:
            raise fail("'min' is larger than 'max'")
        band = f"[{_bound(low)}, {_bound(high)}]"
    else:
        raise fail("no band: give 'value' and 'tol', or 'min' and/or 'max'")
    return Expectation(entry["experiment"], entry["split"], entry["metric"], subset, low, high, band)


def _bound(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else ("-inf" if value < 0 else "inf")


def check_expected(expectations: Sequence[Expectation], runs: Iterable[Run]) -> RegressionResult:
    """Check every matching run against its expectation's band."""
    runs = list(runs)
    result = RegressionResult()
    for expected in expectations:
        matching = sorted((r for r in runs if (r.experiment, r.split) == (expected.experiment, expected.split)),
                          key=lambda r: (r.seed, str(r.path)))
        if not matching:
            result.missing.append(f"no run for expected {expected.name}")
        for run in matching:
            result.checked += 1
            value = expected.value_of(run)
            where = display_path(run.path.parent)
            if value is None:
                result.failures.append(f"FAIL {expected.name}: not reported by {where}")
            elif not expected.low - _EPS <= value <= expected.high + _EPS:
                result.failures.append(f"FAIL {expected.name} = {value:.4f}, outside {expected.band} ({where})")
            else:
                result.passed += 1
    return result
