"""PNG plots of leaderboard tables, rendered with matplotlib's Agg canvas (imported lazily, no pyplot state).

Per table: Recall@K curves (one axes per recall family, e.g. ``R``, ``Rsubset``, ``t2i/R``; one line per
experiment, error bars = std over seeds), a bar chart of the table's ranking metric (headline, else the
primary metric) and, when rows have bootstrap samples, the paired differences of that metric with their 95 %
intervals.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from fashion_bench.report.collect import safe_name
from fashion_bench.report.stats import Comparison
from fashion_bench.report.tables import Table, recall_k

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def table_plots(table: Table) -> dict[str, bytes]:
    """File name -> PNG bytes for the plots this table supports (none when it has no recall or no rows)."""
    plots = {}
    curves = _recall_families(table)
    if curves:
        plots[f"{table.slug}__recall.png"] = figure_png(_recall_figure(table, curves))
    if table.sort_metric and table.rows:
        plots[f"{table.slug}__{safe_name(table.sort_metric)}.png"] = figure_png(_bar_figure(table))
    comparisons = table.comparisons()
    if comparisons:
        plots[f"{table.slug}__paired.png"] = figure_png(_paired_figure(table, comparisons))
    return plots


def _recall_families(table: Table) -> dict[str, list[tuple[int, str]]]:
    families: dict[str, list[tuple[int, str]]] = {}
    for name in table.columns:
        parsed = recall_k(name)
        if parsed:
            families.setdefault(parsed[0], []).append((parsed[1], name))
    return {family: sorted(points) for family, points in families.items()}


def _title(table: Table) -> str:
    task, dataset, split, protocol = table.key
    return f"{dataset} ({split}, {task}, protocol {protocol})"


def _recall_figure(table: Table, families: dict[str, list[tuple[int, str]]]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(families), 3.4 + 0.25 * ((len(table.rows) + 2) // 3)), layout="constrained")
    axes = fig.subplots(1, len(families), squeeze=False)[0]
    for ax, (family, points) in zip(axes, families.items()):
        for row in table.rows:
            present = [(k, row.cells[name]) for k, name in points if name in row.cells]
            if not present:
                continue
            ks = [k for k, _ in present]
            ax.errorbar(ks, [100 * s.mean for _, s in present], yerr=[100 * (s.std or 0.0) for _, s in present],
                        marker="o", capsize=3, label=row.experiment)
        ax.set_xscale("log")
        ax.set_xticks([k for k, _ in points], labels=[str(k) for k, _ in points])
        ax.minorticks_off()
        ax.set_xlabel("K")
        ax.set_ylabel(f"{family}@K (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Recall@K: {_title(table)}")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3), fontsize="small")
    return fig


def _bar_figure(table: Table) -> Figure:
    from matplotlib.figure import Figure

    metric = table.sort_metric
    rows = [row for row in table.rows if metric in row.cells]
    fig = Figure(figsize=(max(4.0, 0.9 * len(rows) + 2.0), 3.8), layout="constrained")
    ax = fig.subplots()
    stats = [row.cells[metric] for row in rows]
    bars = ax.bar(range(len(rows)), [100 * s.mean for s in stats], yerr=[100 * (s.std or 0.0) for s in stats],
                  capsize=4, color="#4c72b0")
    ax.bar_label(bars, labels=[f"{100 * s.mean:.1f}" for s in stats], padding=2, fontsize="small")
    ax.set_xticks(range(len(rows)), labels=[row.experiment for row in rows], rotation=30, ha="right",
                  fontsize="small")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{metric}: {_title(table)}", fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    return fig


def _paired_figure(table: Table, comparisons: list[Comparison]) -> Figure:
    """One line per pair of rows: the difference and its 95 % paired bootstrap interval, in points."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 1.2 + 0.35 * len(comparisons)), layout="constrained")
    ax = fig.subplots()
    y = list(range(len(comparisons)))[::-1]
    diffs = [100 * c.difference for c in comparisons]
    low = [d - 100 * c.interval.low for d, c in zip(diffs, comparisons)]
    high = [100 * c.interval.high - d for d, c in zip(diffs, comparisons)]
    ax.errorbar(diffs, y, xerr=[low, high], fmt="o", capsize=3, color="#4c72b0")
    ax.axvline(0.0, color="grey", linewidth=1)
    ax.set_yticks(y, labels=[f"{c.first} − {c.second}" for c in comparisons], fontsize="small")
    ax.set_xlabel(f"difference in {comparisons[0].metric} (percentage points, 95 % paired bootstrap)")
    ax.set_title(f"Paired comparisons: {_title(table)}", fontsize="medium")
    ax.grid(axis="x", alpha=0.3)
    return fig


def figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
