"""Per-query diagnostics of test runs (``query_diagnostics.jsonl``, e.g. progressive's image / text weights).

For every run that has the file: one figure with each value's distribution per query category and, where the file
says which attributes a query asks to change (the synthetic world's composed queries), per change type (box plots,
means marked); and a leaderboard section with the group means and links to the figures.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from fashion_bench.contracts import QUERY_DIAGNOSTICS_NAME
from fashion_bench.report.collect import Run, safe_name
from fashion_bench.data.schema import DataError
from fashion_bench.retrieval.diagnostics import read_query_diagnostics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GROUPINGS = {"category": "query category", "changed": "attributes changed"}


@dataclass(frozen=True)
class RunDiagnostics:
    """The diagnostics file of one run."""

    run: Run
    rows: list[dict[str, Any]] = field(repr=False)

    @property
    def names(self) -> list[str]:
        return sorted({name for row in self.rows for name in row["values"]})

    @property
    def filename(self) -> str:
        return f"{safe_name(self.run.experiment)}__{self.run.run_name}__diagnostics.png"

    @property
    def label(self) -> str:
        return f"{self.run.experiment} ({self.run.split}, seed {self.run.seed})"

    def groupings(self) -> list[str]:
        """The fields the queries can be grouped by (``changed`` only when some query says what it changes)."""
        return [g for g in GROUPINGS if any(g in row for row in self.rows)]

    def groups(self, name: str, by: str) -> dict[str, list[float]]:
        """The values of ``name`` per group of field ``by``, groups sorted by name."""
        out: dict[str, list[float]] = {}
        for row in self.rows:
            if name in row["values"] and by in row:
                out.setdefault(str(row[by]), []).append(float(row["values"][name]))
        return dict(sorted(out.items()))


def load_diagnostics(runs: Iterable[Run]) -> tuple[list[RunDiagnostics], list[str]]:
    """The diagnostics of every run that has a file (sorted by experiment, seed), and warnings for unreadable ones."""
    found, warnings = [], []
    for run in sorted(runs, key=lambda r: (r.experiment, r.seed, r.run_name)):
        path = run.path.parent / QUERY_DIAGNOSTICS_NAME
        if not path.is_file():
            continue
        try:
            rows = read_query_diagnostics(path)
        except (OSError, DataError) as err:
            warnings.append(f"no diagnostics plot for {path}: {err}")
            continue
        if rows:
            found.append(RunDiagnostics(run, rows))
    return found, warnings


def diagnostics_figure(diagnostics: RunDiagnostics) -> Figure:
    """One row of axes per value, one column per grouping: box plots of the value per group, means as triangles."""
    from matplotlib.figure import Figure

    names, groupings = diagnostics.names, diagnostics.groupings()
    widest = max(len(diagnostics.groups(n, g)) for n in names for g in groupings)
    fig = Figure(figsize=(max(4.0, 0.7 * widest + 1.5) * len(groupings), 2.8 * len(names) + 0.6), layout="constrained")
    axes = fig.subplots(len(names), len(groupings), squeeze=False)
    for row, name in zip(axes, names):
        for ax, by in zip(row, groupings):
            groups = diagnostics.groups(name, by)
            ax.boxplot(list(groups.values()), tick_labels=[f"{g}\n(n={len(v)})" for g, v in groups.items()],
                       showmeans=True, widths=0.6)
            ax.tick_params(axis="x", labelsize="small", labelrotation=30 if len(groups) > 4 else 0)
            ax.set_ylabel(name)
            ax.set_xlabel(GROUPINGS[by])
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Per-query diagnostics: {diagnostics.label}")
    return fig


def render_diagnostics(found: Sequence[RunDiagnostics], plots: Mapping[str, str]) -> str:
    """The leaderboard section: per run, the mean of each value per group, and a link to its figure
    (``plots``: figure file name -> relative link; runs without one get no link)."""
    if not found:
        return ""
    lines = ["## Per-query diagnostics", "",
             "Values a method reports per test query (e.g. progressive's image / text weights), by query category and, "
             "where known, by the attributes the query asks to change. Means; the plots show the distributions.", ""]
    for diagnostics in found:
        link = plots.get(diagnostics.filename)
        lines += [f"### {diagnostics.label}" + (f" ([plot]({link}))" if link else ""), ""]
        names = diagnostics.names
        lines += ["| group | queries | " + " | ".join(f"mean {n}" for n in names) + " |",
                  "|---|---:|" + "---:|" * len(names)]
        for by in diagnostics.groupings():
            per_name = {n: diagnostics.groups(n, by) for n in names}
            for group in sorted({g for groups in per_name.values() for g in groups}):
                counts = max(len(per_name[n].get(group, ())) for n in names)
                means = [f"{statistics.fmean(per_name[n][group]):.3f}" if per_name[n].get(group) else "" for n in names]
                lines.append(f"| {by}: {group} | {counts} | " + " | ".join(means) + " |")
        lines.append("")
    return "\n".join(lines)


def diagnostics_plots(found: Sequence[RunDiagnostics]) -> dict[str, bytes]:
    """Figure file name -> PNG bytes, one per run."""
    from fashion_bench.report.plots import figure_png

    return {d.filename: figure_png(diagnostics_figure(d)) for d in found}
