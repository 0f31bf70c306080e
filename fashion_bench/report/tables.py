"""Aggregate runs into leaderboard tables and render them as markdown and CSV.

One table per (task, dataset, split, protocol name); one row per experiment and configuration (``config_hash``:
runs of differing configurations are never averaged); each cell is the mean and the sample standard deviation
over the row's seeds (one run per seed, see ``collect.latest_per_seed``), shown in percent, with a 95 % bootstrap
interval over queries when the runs saved per-query outcomes (:mod:`fashion_bench.report.stats`). The papers'
published numbers are rendered in their own section and never enter these tables.
"""

from __future__ import annotations

import csv
import io
import re
import statistics
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from fashion_bench.report.collect import Collection, GroupKey, Run, Superseded, display_path, safe_name
from fashion_bench.report.stats import Bootstrap, Comparison, Interval, RowSamples, compare, row_samples

_RECALL = re.compile(r"^(?:(?P<prefix>[^/]+)/)?(?P<family>R|Rsubset)@(?P<k>\d+)$")
_PREFIX_RANK = {"": 0, "t2i": 1, "i2t": 2}
_NAMED_RANK = {"headline": 0, "mean_recall": 2, "mAP": 3, "rank1": 4}
TASK_TITLES = {"t2i": "text-image retrieval", "id": "instance retrieval", "cir": "composed retrieval"}


def metric_order(name: str) -> tuple:
    """Sort key: headline, R@K by K, Rsubset@K, t2i/ and i2t/ recalls, mean_recall, mAP, rank1, others."""
    match = _RECALL.match(name)
    if match:
        prefix = match["prefix"] or ""
        return (1, _PREFIX_RANK.get(prefix, 3), prefix, match["family"], int(match["k"]), name)
    return (_NAMED_RANK.get(name, 5), 0, "", "", 0, name)


def recall_k(name: str) -> tuple[str, int] | None:
    """``("t2i/R", 5)`` for ``t2i/R@5``: the curve a Recall@K metric belongs to and its K; else None."""
    match = _RECALL.match(name)
    if not match:
        return None
    prefix = f"{match['prefix']}/" if match["prefix"] else ""
    return f"{prefix}{match['family']}", int(match["k"])


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (None for one value) of a metric over seeds, as fractions."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, len(values))

    def percent(self, interval: Interval | None = None) -> str:
        text = f"{100 * self.mean:.2f}"
        text = text if self.std is None else f"{text} ± {100 * self.std:.2f}"
        return text if interval is None else f"{text} [{100 * interval.low:.2f}, {100 * interval.high:.2f}]"


CONFIG_PREFIX = 8  # hex digits of config_hash naming a configuration


@dataclass(frozen=True)
class Row:
    experiment: str
    subset: str | None
    cells: Mapping[str, Stat]
    runs: Sequence[Run]
    config: str | None = None  # set when the experiment has several configurations here: config_hash prefix

    @property
    def label(self) -> str:
        return self.experiment if self.config is None else f"{self.experiment} [{self.config}]"


@dataclass(frozen=True)
class Table:
    key: GroupKey
    protocol: Mapping[str, Any]
    columns: Sequence[str]
    rows: Sequence[Row]
    subset_columns: Sequence[str]
    subset_rows: Sequence[Row]
    superseded: Sequence[Superseded]
    samples: Mapping[str, RowSamples | str] | None = None  # row label -> bootstrap samples, or why none; None: off
    bootstrap: Bootstrap | None = None

    @property
    def task(self) -> str:
        return self.key[0]

    @property
    def dataset(self) -> str:
        return self.key[1]

    @property
    def split(self) -> str:
        return self.key[2]

    @property
    def slug(self) -> str:
        """A file-name-safe identifier of the table."""
        return "__".join(map(safe_name, self.key))

    @property
    def sort_metric(self) -> str | None:
        """The metric rows are ranked by (and the bar charts show): headline, else primary, else first."""
        return self.columns[0] if self.columns else None

    def interval(self, row: Row, metric: str) -> Interval | None:
        samples = (self.samples or {}).get(row.label)
        return samples.interval(metric) if isinstance(samples, RowSamples) else None

    def comparisons(self, metric: str | None = None) -> list[Comparison]:
        """Paired comparisons of every row with every lower-ranked row on ``metric`` (the ranking metric)."""
        metric = metric or self.sort_metric
        rows = [row for row in self.rows if isinstance((self.samples or {}).get(row.label), RowSamples)]
        pairs = [self.compare(a, b, metric) for i, a in enumerate(rows) for b in rows[i + 1:]]
        return [pair for pair in pairs if isinstance(pair, Comparison)]

    def compare(self, first: Row, second: Row, metric: str) -> Comparison | str:
        """first - second on ``metric`` over the same resampled queries (of rows, or of subset rows of one subset),
        or why it cannot be computed."""
        samples = self.samples or {}
        for row in (first, second):
            if not isinstance(samples.get(row.label), RowSamples):
                return f"no interval for {row.label}: {samples.get(row.label, 'bootstrap off')}"
        if metric not in first.cells or metric not in second.cells:
            return f"{metric} is not reported by both rows"
        points = (first.cells[metric].mean, second.cells[metric].mean)
        key = metric if first.subset is None else f"{first.subset}/{metric}"
        return compare((first.label, samples[first.label]), (second.label, samples[second.label]), key, points)

    def compare_runs(self, first: Run, second: Run, metric: str, subset: str | None = None) -> Comparison | str:
        """first - second on ``metric`` (of ``subset``) between two single runs (e.g. one seed of each row),
        paired over the same resampled queries, or why it cannot be computed."""
        if self.bootstrap is None:
            return "bootstrap off"
        samples = [row_samples([run], self.bootstrap) for run in (first, second)]
        for run, sample in zip((first, second), samples):
            if isinstance(sample, str):
                return f"no interval for {run.experiment} seed {run.seed}: {sample}"
        key = f"{subset}/{metric}" if subset else metric
        values = [run.per_subset.get(subset, {}) if subset else run.metrics for run in (first, second)]
        if metric not in values[0] or metric not in values[1]:
            return f"{key} is not reported by both runs"
        return compare((f"{first.experiment} seed {first.seed}", samples[0]),
                       (f"{second.experiment} seed {second.seed}", samples[1]), key,
                       (values[0][metric], values[1][metric]))


def build_tables(
    runs: Iterable[Run], superseded: Iterable[Superseded] = (), bootstrap: Bootstrap | None = None
) -> list[Table]:
    """Group runs into tables, ordered by task, dataset, split and protocol; with ``bootstrap``, each row gets
    bootstrap samples from its runs' per-query files."""
    groups: dict[GroupKey, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group_key, []).append(run)
    dropped: dict[GroupKey, list[Superseded]] = {}
    for item in superseded:
        dropped.setdefault(item.run.group_key, []).append(item)
    return [_table(key, groups[key], dropped.get(key, []), bootstrap) for key in sorted(groups)]


def _table(key: GroupKey, runs: list[Run], superseded: list[Superseded], bootstrap: Bootstrap | None) -> Table:
    latest = max(runs, key=lambda r: r.started_at)
    protocol = latest.protocol
    columns = _columns({m for run in runs for m in run.metrics}, protocol)
    rows = [Row(experiment, None, _stats(group, lambda r: r.metrics), group, config)
            for (experiment, config), group in _configurations(runs).items()]
    rows.sort(key=lambda row: _rank(row, columns))
    subsets = sorted({s for run in runs for s in run.per_subset})
    subset_rows = [
        Row(row.experiment, subset, _stats(row.runs, lambda r, s=subset: r.per_subset.get(s, {})), row.runs,
            row.config)
        for row in rows
        for subset in subsets
        if any(subset in run.per_subset for run in row.runs)
    ]
    subset_columns = sorted({m for run in runs for values in run.per_subset.values() for m in values},
                            key=metric_order)
    superseded = sorted(superseded, key=lambda s: (s.run.experiment, s.run.seed, s.run.started_at))
    samples = None if bootstrap is None else {row.label: row_samples(row.runs, bootstrap) for row in rows}
    return Table(key, protocol, columns, rows, subset_columns, subset_rows, superseded, samples, bootstrap)


def _configurations(runs: Iterable[Run]) -> dict[tuple[str, str | None], list[Run]]:
    """(experiment, configuration label) -> its runs by seed; the label is None when the experiment's runs share
    one configuration, else the config_hash prefix ("no config_hash" for older files)."""
    by_config: dict[str, dict[str | None, list[Run]]] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        by_config.setdefault(run.experiment, {}).setdefault(run.config_hash, []).append(run)
    out = {}
    for experiment, configs in by_config.items():
        for config_hash, group in configs.items():
            label = None if len(configs) == 1 else config_hash[:CONFIG_PREFIX] if config_hash else "no config_hash"
            out[(experiment, label)] = group
    return out


def _columns(metrics: set[str], protocol: Mapping[str, Any]) -> list[str]:
    first = []
    if protocol["headline"] and "headline" in metrics:
        first.append("headline")
    if protocol["primary_metric"] in metrics and protocol["primary_metric"] not in first:
        first.append(protocol["primary_metric"])
    return first + sorted(metrics - set(first), key=metric_order)


def _stats(runs: Sequence[Run], metrics_of: Callable[[Run], Mapping[str, float]]) -> dict[str, Stat]:
    values: dict[str, list[float]] = {}
    for run in runs:
        for name, value in metrics_of(run).items():
            values.setdefault(name, []).append(value)
    return {name: Stat.of(vals) for name, vals in values.items()}


def _rank(row: Row, columns: Sequence[str]) -> tuple:
    stat = row.cells.get(columns[0]) if columns else None
    return (stat is None, -(stat.mean if stat else 0.0), row.label)


# --- markdown --------------------------------------------------------------------------------------------

def render_table(table: Table, *, plots: Sequence[str] = (), published_anchor: str | None = None) -> str:
    """The markdown section of one table: heading, main table, per-subset table, notes, comparisons, plots."""
    task, dataset, split, protocol = table.key
    blocks = [f"### {dataset} · {split} · {TASK_TITLES.get(task, task)} (`{task}`, protocol `{protocol}`)",
              _markdown_table(table, ["experiment"], table.columns, table.rows)]
    if table.subset_rows:
        blocks += ["Per subset:",
                   _markdown_table(table, ["experiment", "subset"], table.subset_columns, table.subset_rows)]
    blocks.append(_notes(table, published_anchor))
    remarks = _configuration_remarks(table) + _interval_remarks(table) + [
        f"- {item.run.experiment}, seed {item.run.seed}: several runs; kept the latest "
        f"({item.kept.run_name}), ignored {item.run.run_name}." for item in table.superseded]
    if remarks:
        blocks.append("\n".join(remarks))
    comparisons = table.comparisons()
    if comparisons:
        blocks.append(render_comparisons(comparisons))
    if plots:
        blocks.append("\n".join(f"![{Path(p).stem.rsplit('__', 1)[-1]}]({p})" for p in plots))
    return "\n\n".join(blocks) + "\n"


def render_comparisons(comparisons: Sequence[Comparison]) -> str:
    """The paired comparisons table: difference in percentage points, its interval, share of resamples > 0."""
    first = comparisons[0]
    lines = [f"Paired comparisons on {first.metric} (percentage points; 95 % paired bootstrap interval over the "
             f"same {first.queries} queries):", "",
             md_row(["experiment", "vs", "difference", "95 % interval", "resamples > 0", "verdict"]),
             md_row([":---", ":---", "---:", "---:", "---:", ":---"])]
    for c in comparisons:
        lines.append(md_row([c.first, c.second, f"{100 * c.difference:+.2f}", _pp(c.interval),
                              f"{100 * c.share_positive:.1f} %", c.verdict]))
    return "\n".join(lines)


def _pp(interval: Interval) -> str:
    return f"[{100 * interval.low:+.2f}, {100 * interval.high:+.2f}]"


def _markdown_table(table: Table, keys: list[str], columns: Sequence[str], rows: Sequence[Row]) -> str:
    header = [*keys, *columns, "runs"]
    lines = [md_row(header), md_row([":---"] * len(keys) + ["---:"] * (len(columns) + 1))]
    for row in rows:
        labels = [row.label] + ([row.subset] if row.subset is not None else [])
        prefix = f"{row.subset}/" if row.subset is not None else ""
        cells = [_cell(row.cells.get(c), len(row.runs), table.interval(row, prefix + c)) for c in columns]
        lines.append(md_row([*labels, *cells, str(len(row.runs))]))
    return "\n".join(lines)


def _cell(stat: Stat | None, runs: int, interval: Interval | None = None) -> str:
    if stat is None:
        return "—"
    return stat.percent(interval) + (f" (n={stat.n})" if stat.n < runs else "")


def _configuration_remarks(table: Table) -> list[str]:
    configs: dict[str, list[str]] = {}
    for row in table.rows:
        if row.config is not None:
            configs.setdefault(row.experiment, []).append(row.config)
    return [f"- {name}: runs of {len(labels)} different configurations (config_hash {', '.join(labels)}) are "
            "separate rows, never averaged." for name, labels in configs.items()]


def _interval_remarks(table: Table) -> list[str]:
    if table.samples is None:
        return []
    return [f"- {label}: no interval ({reason})." for label, reason in table.samples.items() if isinstance(reason, str)]


def md_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _notes(table: Table, published_anchor: str | None) -> str:
    notes = ["Percent; mean ± sample standard deviation over seeds (one run per seed); "
             f"rows ranked by {table.sort_metric or 'experiment'}."]
    if any(isinstance(s, RowSamples) for s in (table.samples or {}).values()):
        notes.append("[low, high]: 95 % bootstrap interval over queries.")
    if "headline" in table.columns:
        notes.append(f"headline = mean of {', '.join(table.protocol['headline'])}.")
    notes.append(f"Primary metric (checkpointing): {table.protocol['primary_metric']}.")
    if published_anchor:
        notes.append(f"The papers' numbers for {table.dataset}: [published numbers](#{published_anchor}).")
    return " ".join(notes)


def render_leaderboard(
    tables: Sequence[Table],
    collection: Collection,
    published: PublishedSet,
    *,
    plots: Mapping[str, Sequence[str]] | None = None,
    galleries: Sequence[tuple[str, str]] = (),
    sections: Sequence[str] = (),
) -> str:
    """The whole leaderboard.md; ``plots``: table slug -> relative PNG paths; ``galleries``: (label, link);
    ``sections``: markdown placed after our runs (the claims)."""
    plots = plots or {}
    anchors = published.anchors()
    lines = ["# Leaderboard", "", _summary(collection), ""]
    lines += ["## Our runs", ""]
    if not tables:
        lines += ["No usable results.json was found.", ""]
    for table in tables:
        lines.append(render_table(table, plots=plots.get(table.slug, ()),
                                  published_anchor=anchors.get((table.task, table.dataset))))
    lines += list(sections)
    lines.append(render_published(published))
    if galleries:
        lines += ["## Retrieval galleries", "", "[All galleries](galleries/index.html)", ""]
        lines += [f"- [{label}]({link})" for label, link in galleries] + [""]
    if collection.skipped:
        lines += ["## Skipped results files", ""]
        lines += [f"- `{display_path(s.path)}`: {s.reason}" for s in collection.skipped] + [""]
    return "\n".join(lines)


def _summary(collection: Collection) -> str:
    return (
        f"Generated by `fashion-bench report` from {len(collection.runs)} runs "
        f"({collection.found} results.json found, {len(collection.superseded)} superseded by a later run "
        f"with the same seed, {len(collection.skipped)} skipped). Every run, metrics as fractions: "
        "[leaderboard.csv](leaderboard.csv)."
    )


# --- CSV -------------------------------------------------------------------------------------------------

CSV_FIELDS = (
    "experiment", "run", "used", "method", "dataset", "task", "split", "protocol", "seed", "config_hash", "started_at",
    "encoder", "pretrained", "num_queries", "num_valid_queries", "gallery_size", "wall_time_s", "git_sha",
    "ckpt_path", "path",
)


def runs_csv(runs: Iterable[Run], superseded: Iterable[Superseded] = ()) -> str:
    """One row per run (superseded ones with ``used=false``); metrics as fractions, per-subset flattened
    as ``per_subset.<subset>.<metric>``."""
    rows = [(run, True) for run in runs] + [(item.run, False) for item in superseded]
    rows.sort(key=lambda item: (item[0].group_key, item[0].experiment, item[0].seed, item[0].started_at))
    metric_names = sorted({m for run, _ in rows for m in run.metrics}, key=metric_order)
    subset_names = sorted({(s, m) for run, _ in rows for s, values in run.per_subset.items() for m in values},
                          key=lambda sm: (sm[0], metric_order(sm[1])))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*CSV_FIELDS, *metric_names, *(f"per_subset.{s}.{m}" for s, m in subset_names)])
    for run, used in rows:
        writer.writerow([
            *_csv_fields(run, used),
            *(run.metrics.get(m, "") for m in metric_names),
            *(run.per_subset.get(s, {}).get(m, "") for s, m in subset_names),
        ])
    return out.getvalue()


def _csv_fields(run: Run, used: bool) -> list[Any]:
    raw = run.raw
    encoder = raw.get("encoder") if isinstance(raw.get("encoder"), dict) else {}
    return [
        run.experiment, run.run_name, str(used).lower(), run.method, run.dataset, run.task, run.split,
        run.protocol_name, run.seed, run.config_hash or "", raw["started_at"], encoder.get("name", ""),
        encoder.get("pretrained", ""),
        *(raw.get(name, "") for name in ("num_queries", "num_valid_queries", "gallery_size", "wall_time_s",
                                         "git_sha", "ckpt_path")),
        display_path(run.path),
    ]


# --- published numbers -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Published:
    """Numbers one paper reports for one setting, in percent (``kind: gain``: percentage-point gains)."""

    method: str
    task: str
    dataset: str
    split: str
    setting: str
    kind: str
    decimals: int
    metrics: Mapping[str, float]
    source: str


@dataclass(frozen=True)
class PublishedSet:
    sources: Mapping[str, str]
    entries: Sequence[Published]

    def anchors(self) -> dict[tuple[str, str], str]:
        """(task, dataset) -> the markdown anchor of its published table."""
        return {(e.task, e.dataset): f"published-{e.task}-{e.dataset}" for e in self.entries}


def load_published(path: str | Path | None = None) -> PublishedSet:
    """Read published.yaml (the packaged one by default); raises ValueError naming a malformed entry."""
    if path is None:
        text = resources.files("fashion_bench.report").joinpath("published.yaml").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    sources = data.get("sources", {})
    entries = []
    for index, entry in enumerate(data.get("entries", [])):
        try:
            item = Published(
                method=str(entry["method"]), task=str(entry["task"]), dataset=str(entry["dataset"]),
                split=str(entry.get("split") or "—"), setting=str(entry["setting"]),
                kind=entry.get("kind", "absolute"), decimals=int(entry.get("decimals", 2)),
                metrics={str(k): float(v) for k, v in entry["metrics"].items()}, source=str(entry["source"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"published numbers: entry {index} is malformed ({err!r})") from None
        if item.source not in sources or item.kind not in ("absolute", "gain"):
            raise ValueError(f"published numbers: entry {index} has an unknown source or kind")
        entries.append(item)
    return PublishedSet(sources, entries)


def render_published(published: PublishedSet) -> str:
    """The separate 'Published numbers' section: one table per (task, dataset), then the sources."""
    lines = [
        "## Published numbers (from the papers, not our runs)", "",
        "What the papers report on their own data, backbones and training budgets, in percent. They are not "
        "reproduced by this framework and are never mixed into the tables above; compare trends, not digits.",
        "",
    ]
    groups: dict[tuple[str, str], list[Published]] = {}
    for entry in published.entries:
        groups.setdefault((entry.task, entry.dataset), []).append(entry)
    anchors = published.anchors()
    for key, entries in groups.items():
        columns = list(dict.fromkeys(m for e in entries for m in e.metrics))
        lines += [f'<a id="{anchors[key]}"></a>', "", f"### {key[1]} · {TASK_TITLES.get(key[0], key[0])}", ""]
        lines.append(md_row(["method", "setting", "split", *columns, "source"]))
        lines.append(md_row([":---"] * 3 + ["---:"] * len(columns) + [":---"]))
        for e in entries:
            values = [_published_value(e, e.metrics.get(c)) for c in columns]
            lines.append(md_row([e.method, e.setting, e.split, *values, f"[{e.source}]"]))
        lines.append("")
    lines += ["Sources:", ""]
    lines += [f"- [{key}] {text}" for key, text in published.sources.items()]
    return "\n".join(lines) + "\n"


def _published_value(entry: Published, value: float | None) -> str:
    if value is None:
        return "—"
    sign = "+" if entry.kind == "gain" else ""
    return f"{value:{sign}.{entry.decimals}f}" + (" pp" if entry.kind == "gain" else "")
