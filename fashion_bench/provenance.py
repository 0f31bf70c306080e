"""Which configuration a run computed: :func:`config_hash` of its resolved config.

Runs with the same hash ran the same computation up to the seed, so the report averages them over seeds; runs
whose hashes differ are different configurations and are never averaged, whatever their experiment name.
"""

from __future__ import annotations

import hashlib
import json
from fnmatch import fnmatchcase
from typing import Any, Iterable, Mapping

# Dotted key paths (fnmatch patterns; ``*`` also crosses dots) left out of the hash: the seed, where outputs go,
# logging and progress display, checkpoint file naming, evaluator exports, loader workers and caches. They do
# not change what is computed. Inputs stay in: another data root, weights file or checkpoint monitor is another
# configuration.
EXCLUDED_KEYS = (
    "seed_everything", "data.seed",  # the seed (the report's seeds axis)
    "experiment", "config", "ckpt_path", "verbose", "weights_only",  # names, config file paths, the resumed file
    "trainer.default_root_dir", "trainer.logger", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.log_every_n_steps", "trainer.enable_autolog_hparams", "trainer.model_registry", "trainer.profiler",
    "checkpoint.dirpath", "checkpoint.filename", "checkpoint.verbose", "checkpoint.save_last",
    "checkpoint.save_on_exception", "checkpoint.save_weights_only", "checkpoint.enable_version_counter",
    "checkpoint.auto_insert_metric_name",
    "evaluator.save_rankings", "evaluator.cirr_export", "evaluator.results_file", "evaluator.progress",
    "data.num_workers", "*cache_dir", "model.init_args.export_path", "model.init_args.publish_to",
)


def config_hash(config: Mapping[str, Any], exclude: Iterable[str] = EXCLUDED_KEYS) -> str:
    """SHA-256 (hex) of ``config`` without the ``exclude`` key paths, independent of key order.

    ``config`` is the resolved config as nested mappings (e.g. jsonargparse's ``Namespace.as_dict()``); leaves
    are JSON values, other objects (paths) count by their ``str``. Lists keep their order.
    """
    patterns = tuple(exclude)
    canonical = json.dumps(_kept(config, "", patterns), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _kept(value: Any, prefix: str, patterns: tuple[str, ...]) -> Any:
    """``value`` without the excluded paths below ``prefix`` (list items share their list's path)."""
    if isinstance(value, (list, tuple)):
        return [_kept(item, prefix, patterns) for item in value]
    if not isinstance(value, Mapping):
        return value
    kept = {}
    for key, item in value.items():
        path = f"{prefix}{key}"
        if not any(fnmatchcase(path, pattern) for pattern in patterns):
            kept[str(key)] = _kept(item, f"{path}.", patterns)
    return kept
