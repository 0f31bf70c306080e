"""Find ``results.json`` files under run folders, validate them, and keep one run per seed.

A file that cannot be used (unreadable, corrupt JSON, another ``schema_version``, a missing or malformed
field) becomes a :class:`Skipped` entry naming the file and the reason; nothing here raises on bad input.
When several runs of one experiment, configuration (``config_hash``), split and protocol share a seed, the
latest (by ``started_at``) is used and the others are kept as :class:`Superseded` so that the report can say so.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from fashion_bench.contracts import PER_QUERY_NAME, RESULTS_NAME, SCHEMA_VERSION, TASKS

RANKINGS_NAME = "rankings.jsonl"
SPLITS = ("val", "test")
REQUIRED_FIELDS = (
    "schema_version", "experiment", "method", "dataset", "task", "split", "protocol", "seed", "metrics",
    "started_at",
)
PROTOCOL_FIELDS = ("name", "task", "ks", "headline", "primary_metric")

GroupKey = tuple[str, str, str, str]  # (task, dataset, split, protocol name)


class InvalidResults(ValueError):
    """A results.json cannot be used; the message is the reason."""


@dataclass(frozen=True)
class Run:
    """One validated results.json."""

    path: Path
    experiment: str
    method: str
    dataset: str
    task: str
    split: str
    protocol: Mapping[str, Any]
    seed: int
    metrics: Mapping[str, float]
    per_subset: Mapping[str, Mapping[str, float]]
    started_at: datetime
    raw: Mapping[str, Any] = field(repr=False)
    config_hash: str | None = None  # hash of the resolved config (fashion_bench.provenance); None in older files

    @property
    def run_name(self) -> str:
        """The run directory's name, e.g. ``20240101-120000_seed0``."""
        return self.path.parent.name

    @property
    def protocol_name(self) -> str:
        return str(self.protocol["name"])

    @property
    def group_key(self) -> GroupKey:
        """The leaderboard table this run belongs to."""
        return (self.task, self.dataset, self.split, self.protocol_name)

    @property
    def rankings_path(self) -> Path:
        return self.path.parent / RANKINGS_NAME

    @property
    def per_query_path(self) -> Path:
        return self.path.parent / PER_QUERY_NAME


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass(frozen=True)
class Superseded:
    """A run replaced by a later run of the same experiment, split, protocol and seed."""

    run: Run
    kept: Run


@dataclass
class Collection:
    found: int
    runs: list[Run]
    superseded: list[Superseded]
    skipped: list[Skipped]
    missing_roots: list[Path]


def collect(roots: Iterable[str | Path]) -> Collection:
    """Load every results.json under ``roots`` (folders searched recursively, or results files)."""
    paths: list[Path] = []
    missing: list[Path] = []
    for root in map(Path, roots):
        if not root.exists():
            missing.append(root)
        paths.extend(find_results(root))
    paths = list(dict.fromkeys(paths))  # overlapping roots find a file twice
    valid: list[Run] = []
    skipped: list[Skipped] = []
    for path in paths:
        try:
            valid.append(load_run(path))
        except InvalidResults as err:
            skipped.append(Skipped(path, str(err)))
    used, superseded = latest_per_seed(valid)
    return Collection(len(paths), used, superseded, skipped, missing)


def find_results(root: Path) -> list[Path]:
    """``root`` itself when it is a file, else every results.json below it, in a stable order."""
    if root.is_file():
        return [root.resolve()]
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        if RESULTS_NAME in files:
            found.append((Path(folder) / RESULTS_NAME).resolve())
    return found


def load_run(path: Path) -> Run:
    """Read and validate one results.json; raises :class:`InvalidResults` with the reason."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InvalidResults(f"corrupt JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except UnicodeDecodeError as err:
        raise InvalidResults(f"not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise InvalidResults(f"cannot read ({err.strerror or err})") from None
    return parse_run(path, data)


def parse_run(path: Path, data: Any) -> Run:
    """Validate the decoded content of ``path``."""
    if not isinstance(data, dict):
        raise InvalidResults(f"top level is a JSON {type(data).__name__}, expected an object")
    version = data.get("schema_version")
    if "schema_version" in data and version != SCHEMA_VERSION:
        raise InvalidResults(f"schema_version {version!r} is not supported (this report reads {SCHEMA_VERSION})")
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    if missing:
        raise InvalidResults(f"missing field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    for name in ("experiment", "method", "dataset", "task", "split", "started_at"):
        _check(isinstance(data[name], str) and data[name] != "", f"field '{name}' must be a non-empty string")
    _check(data["task"] in TASKS, f"task {data['task']!r} is not one of {', '.join(TASKS)}")
    _check(data["split"] in SPLITS, f"split {data['split']!r} is not one of {', '.join(SPLITS)}")
    _check(_is_int(data["seed"]), f"seed {data['seed']!r} is not an integer")
    per_subset = data.get("per_subset") or {}
    _check(isinstance(per_subset, dict), "field 'per_subset' must be an object")
    config_hash = data.get("config_hash")
    _check(config_hash is None or isinstance(config_hash, str) and config_hash != "",
           f"config_hash {config_hash!r} is not a non-empty string")
    return Run(
        path=path,
        experiment=data["experiment"],
        method=data["method"],
        dataset=data["dataset"],
        task=data["task"],
        split=data["split"],
        protocol=_protocol(data["protocol"]),
        seed=data["seed"],
        metrics=_fractions(data["metrics"], "metrics"),
        per_subset={name: _fractions(values, f"per_subset.{name}") for name, values in per_subset.items()},
        started_at=_timestamp(data["started_at"]),
        raw=data,
        config_hash=config_hash,
    )


def latest_per_seed(runs: Iterable[Run]) -> tuple[list[Run], list[Superseded]]:
    """Keep the latest run per (experiment, configuration, table, seed); the others are returned as superseded."""
    by_key: dict[tuple, list[Run]] = {}
    for run in runs:
        by_key.setdefault((run.experiment, run.config_hash, *run.group_key, run.seed), []).append(run)
    used, superseded = [], []
    for group in by_key.values():
        group.sort(key=lambda r: (r.started_at, str(r.path)), reverse=True)
        used.append(group[0])
        superseded.extend(Superseded(run, group[0]) for run in group[1:])
    return used, superseded


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def safe_name(text: str) -> str:
    """``text`` with every run of characters other than letters, digits, ``.``, ``_``, ``-`` made ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


def _check(condition: bool, reason: str) -> None:
    if not condition:
        raise InvalidResults(reason)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _protocol(value: Any) -> Mapping[str, Any]:
    _check(isinstance(value, dict), "field 'protocol' must be an object")
    missing = [name for name in PROTOCOL_FIELDS if name not in value]
    _check(not missing, f"protocol is missing: {', '.join(missing)}")
    _check(isinstance(value["name"], str) and value["name"] != "", "protocol.name must be a non-empty string")
    _check(isinstance(value["ks"], list) and all(map(_is_int, value["ks"])), "protocol.ks must be a list of ints")
    headline = value["headline"]
    _check(isinstance(headline, list) and all(isinstance(m, str) for m in headline),
           "protocol.headline must be a list of metric names")
    _check(isinstance(value["primary_metric"], str), "protocol.primary_metric must be a string")
    return value


def _fractions(value: Any, where: str) -> dict[str, float]:
    _check(isinstance(value, dict), f"field '{where}' must be an object")
    _check(bool(value), f"field '{where}' is empty")
    fractions = {name: number for name, number in value.items() if not name.startswith("num_") and number is not None}
    for name, number in fractions.items():
        ok = _is_number(number) and math.isfinite(number) and 0.0 <= number <= 1.0
        _check(ok, f"{where}.{name} = {number!r} is not a fraction in [0, 1]")
    return {name: float(number) for name, number in fractions.items()}


def _timestamp(value: str) -> datetime:
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidResults(f"started_at {value!r} is not an ISO timestamp") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
