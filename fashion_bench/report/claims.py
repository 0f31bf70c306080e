"""Claims as data: the orderings the methods' papers claim, checked with paired bootstrap intervals.

The file (``configs/report/claims.yaml``) is a YAML list; each entry says that experiment ``better`` beats
experiment ``worse`` on ``metric`` (``subset`` picks a ``per_subset`` value) of ``split``::

    - {better: clip4cir__synth-cir, worse: clip4cir-stage1__synth-cir, split: test, metric: headline,
       source: "CLIP4Cir: the Combiner improves on the stage-1 fine-tune"}

Verdicts: ``holds`` (the 95 % interval of better - worse is above zero), ``not significant`` (it contains zero),
``reversed`` (below zero), ``missing runs`` (an experiment has no run on that split), ``not judged`` (the two
runs are not in one table, an experiment has several configurations there, or a run has no per-query file).
With several seeds a claim is judged seed by seed as well (the runs of one seed paired over the same queries):
it holds only when it holds in every seed both experiments ran, and is reversed when any seed reverses it (or
the pooled interval, over the seeds' mean, lies below zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence


from fashion_bench.report.collect import SPLITS
from fashion_bench.report.regression import ExpectedFileError, read_yaml
from fashion_bench.report.stats import Comparison
from fashion_bench.report.tables import Row, Table, md_row

_KEYS = {"better", "worse", "split", "metric", "subset", "source", "note"}
MISSING, NOT_JUDGED = "missing runs", "not judged"
HOLDS, NOT_SIGNIFICANT, REVERSED = "holds", "not significant", "reversed"


@dataclass(frozen=True)
class Claim:
    better: str
    worse: str
    split: str
    metric: str
    subset: str | None
    source: str

    @property
    def key(self) -> str:
        """The metric as the report's bootstrap names it (``<subset>/<metric>`` for per_subset values)."""
        return f"{self.subset}/{self.metric}" if self.subset else self.metric

    @property
    def name(self) -> str:
        return f"{self.better} > {self.worse} [{self.split}] {self.key}"


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    verdict: str  # holds | not significant | reversed | missing runs | not judged
    comparison: Comparison | None  # pooled: the rows' means over their seeds
    reason: str = ""
    per_seed: tuple[tuple[int, Comparison | str], ...] = ()  # (seed, comparison or why none), seeds both ran

    @property
    def seeds_summary(self) -> str:
        """``2/3 seeds hold`` (``—`` for fewer than two seeds)."""
        if len(self.per_seed) < 2:
            return "—"
        holding = sum(isinstance(c, Comparison) and c.verdict == HOLDS for _, c in self.per_seed)
        return f"{holding}/{len(self.per_seed)} seeds hold"

    def line(self) -> str:
        if self.comparison is None:
            return f"claim {self.claim.name}: {self.verdict} ({self.reason})"
        c = self.comparison
        text = (f"claim {self.claim.name}: {self.verdict} (difference {100 * c.difference:+.2f} pp, 95 % interval "
                f"[{100 * c.interval.low:+.2f}, {100 * c.interval.high:+.2f}], {100 * c.share_positive:.1f} % of "
                "resamples > 0)")
        if len(self.per_seed) > 1:
            text += f"; {self.seeds_summary}: " + ", ".join(
                f"seed {seed} {_short(comparison)}" for seed, comparison in self.per_seed)
        return text


def load_claims(path: str | Path) -> list[Claim]:
    """Parse a claims file; raises :class:`ExpectedFileError` naming the file, entry and field."""
    return parse_claims(read_yaml(Path(path)), str(path))


def parse_claims(data: Any, source: str) -> list[Claim]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise ExpectedFileError(f"{source}: expected a YAML list of claims, got {type(data).__name__}")
    return [_claim(entry, f"{source}: claim {index}") for index, entry in enumerate(data)]


def _claim(entry: Any, where: str) -> Claim:
    if not isinstance(entry, dict):
        raise ExpectedFileError(f"{where}: not a mapping")
    unknown = sorted(set(map(str, entry)) - _KEYS)
    if unknown:
        raise ExpectedFileError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_KEYS))})")
    for key in ("better", "worse", "split", "metric", "source"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise ExpectedFileError(f"{where}: '{key}' must be a non-empty string")
    if entry["split"] not in SPLITS:
        raise ExpectedFileError(f"{where}: split {entry['split']!r} is not one of {', '.join(SPLITS)}")
    if entry["better"] == entry["worse"]:
        raise ExpectedFileError(f"{where}: 'better' and 'worse' name the same experiment")
    subset = entry.get("subset")
    if subset is not None and (not isinstance(subset, str) or not subset):
        raise ExpectedFileError(f"{where}: 'subset' must be a non-empty string")
    return Claim(entry["better"], entry["worse"], entry["split"], entry["metric"], subset, entry["source"])


def check_claims(claims: Sequence[Claim], tables: Sequence[Table]) -> list[ClaimResult]:
    return [check_claim(claim, tables) for claim in claims]


def check_claim(claim: Claim, tables: Sequence[Table]) -> ClaimResult:
    """The verdict of one claim from the table holding both experiments on its split."""
    found = {name: [t for t in tables if t.split == claim.split and _rows(t, name)] for name in (claim.better,
                                                                                                 claim.worse)}
    absent = [name for name, where in found.items() if not where]
    if absent:
        return ClaimResult(claim, MISSING, None, f"no {claim.split} run of {', '.join(absent)}")
    shared = [t for t in found[claim.better] if t in found[claim.worse]]
    if len(shared) != 1:
        return ClaimResult(claim, NOT_JUDGED, None, f"the two experiments share {len(shared)} tables, not one")
    (table,) = shared
    better, worse = _rows(table, claim.better), _rows(table, claim.worse)
    if len(better) > 1 or len(worse) > 1:
        return ClaimResult(claim, NOT_JUDGED, None, "an experiment has several configurations (config_hash)")
    if claim.subset:
        better, worse = _subset_rows(table, better[0], claim.subset), _subset_rows(table, worse[0], claim.subset)
        if not better or not worse:
            return ClaimResult(claim, NOT_JUDGED, None, f"subset {claim.subset!r} is not reported by both")
    comparison = table.compare(better[0], worse[0], claim.metric)
    if isinstance(comparison, str):
        return ClaimResult(claim, NOT_JUDGED, None, comparison)
    per_seed = _per_seed(table, better[0], worse[0], claim)
    return ClaimResult(claim, _verdict(comparison, per_seed), comparison, per_seed=per_seed)


def _per_seed(table: Table, better: Row, worse: Row, claim: Claim) -> tuple[tuple[int, Comparison | str], ...]:
    """The claim in each seed both rows ran (only when some row has several seeds)."""
    if len(better.runs) < 2 and len(worse.runs) < 2:
        return ()
    worse_by_seed = {run.seed: run for run in worse.runs}
    return tuple((run.seed, table.compare_runs(run, worse_by_seed[run.seed], claim.metric, claim.subset))
                 for run in better.runs if run.seed in worse_by_seed)


def _verdict(pooled: Comparison, per_seed: Sequence[tuple[int, Comparison | str]]) -> str:
    verdicts = [c.verdict if isinstance(c, Comparison) else NOT_JUDGED for _, c in per_seed]
    if pooled.verdict == REVERSED or REVERSED in verdicts:
        return REVERSED
    if len(verdicts) > 1 and any(v != HOLDS for v in verdicts):
        return NOT_SIGNIFICANT
    return pooled.verdict


def _short(comparison: Comparison | str) -> str:
    if isinstance(comparison, str):
        return f"not judged ({comparison})"
    c = comparison
    return f"{100 * c.difference:+.2f} [{100 * c.interval.low:+.2f}, {100 * c.interval.high:+.2f}] {c.verdict}"


def _rows(table: Table, experiment: str) -> list[Row]:
    return [row for row in table.rows if row.experiment == experiment]


def _subset_rows(table: Table, row: Row, subset: str) -> list[Row]:
    return [r for r in table.subset_rows if r.label == row.label and r.subset == subset]


def render_claims(results: Sequence[ClaimResult]) -> str:
    """The leaderboard's claims section: one line per claim of ``configs/report/claims.yaml``."""
    lines = ["## Claims (from the papers, checked on our runs)", "",
             "Each claim: `better` beats `worse` on the metric. Verdict from the 95 % paired bootstrap interval of "
             "the difference over the same queries: holds (above zero), not significant (contains zero), reversed "
             "(below zero). With several seeds the difference and interval are of the seeds' mean, and the claim is "
             "also judged in each seed (its runs paired over the same queries): it holds only when it holds in "
             "every seed.", "",
             md_row(["claim", "split", "metric", "difference", "95 % interval", "resamples > 0", "seeds", "verdict",
                     "source"]),
             md_row([":---"] * 3 + ["---:"] * 4 + [":---"] * 2)]
    for r in results:
        c = r.comparison
        numbers = (["—", "—", "—"] if c is None else
                   [f"{100 * c.difference:+.2f}", f"[{100 * c.interval.low:+.2f}, {100 * c.interval.high:+.2f}]",
                    f"{100 * c.share_positive:.1f} %"])
        verdict = r.verdict if not r.reason else f"{r.verdict}: {r.reason}"
        cells = [f"{r.claim.better} > {r.claim.worse}", r.claim.split, r.claim.key, *numbers, r.seeds_summary, verdict,
                 r.claim.source]
        lines.append(md_row(cells))
    return "\n".join(lines) + "\n"
