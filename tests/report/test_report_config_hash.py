"""One row = one configuration: provenance.config_hash and the report's rows per config_hash."""

from __future__ import annotations

import copy
from pathlib import Path

from report_fixtures import cir, results, write_run

from fashion_bench.provenance import EXCLUDED_KEYS, config_hash
from fashion_bench.report.collect import collect
from fashion_bench.report.tables import build_tables, render_table, runs_csv

CONFIG = {
    "seed_everything": 0,
    "experiment": "clip__synth-cir",
    "trainer": {"max_epochs": 3, "default_root_dir": "runs/clip__synth-cir/20240101-000000_seed0",
                "logger": {"class_path": "CSVLogger", "init_args": {"save_dir": "/tmp/x"}},
                "enable_progress_bar": True},
    "model": {"class_path": "ClipMethod", "init_args": {"encoder": {"model": "tiny-vit-64", "cache_dir": "/c"},
                                                        "optim": {"lr": 1e-5, "betas": [0.9, 0.98]}}},
    "data": {"dataset": "synth-cir", "seed": 0, "num_workers": 2, "batch_size": 64},
    "evaluator": {"save_rankings": 10, "progress": True},
    "ckpt_path": "runs/x/checkpoints/best.ckpt",
}


def _with(path: str, value) -> dict:
    config = copy.deepcopy(CONFIG)
    *parents, leaf = path.split(".")
    node = config
    for key in parents:
        node = node[key]
    node[leaf] = value
    return config


def test_hash_ignores_key_order_seed_paths_logging_and_workers() -> None:
    digest = config_hash(CONFIG)
    assert len(digest) == 64 and int(digest, 16) >= 0
    reordered = {key: CONFIG[key] for key in reversed(list(CONFIG))}
    assert config_hash(reordered) == digest
    for path, value in [("seed_everything", 3), ("data.seed", 3), ("experiment", "other"),
                        ("trainer.default_root_dir", "elsewhere"), ("trainer.logger", None),
                        ("trainer.enable_progress_bar", False), ("data.num_workers", 0),
                        ("model.init_args.encoder.cache_dir", "/d"), ("evaluator.save_rankings", 0),
                        ("ckpt_path", None)]:
        assert config_hash(_with(path, value)) == digest, path


def test_hash_changes_with_what_is_computed() -> None:
    digest = config_hash(CONFIG)
    for path, value in [("trainer.max_epochs", 4), ("model.init_args.optim.lr", 2e-5),
                        ("model.init_args.optim.betas", [0.98, 0.9]), ("data.batch_size", 32),
                        ("model.init_args.encoder.model", "ViT-B-32")]:
        assert config_hash(_with(path, value)) != digest, path
    assert config_hash(CONFIG, exclude=()) != digest
    assert config_hash(_with("data.root", Path("/data"))) == config_hash(_with("data.root", "/data"))
    assert "seed_everything" in EXCLUDED_KEYS


def test_runs_of_different_configurations_are_separate_rows(tmp_path: Path) -> None:
    for seed, config, headline in ((0, "a" * 64, 0.5), (1, "a" * 64, 0.6), (0, "b" * 64, 0.3)):
        write_run(tmp_path, results("clip__synth-cir", seed, cir(headline, 0.1, 0.2, 0.3, 0.4), config_hash=config),
                  run=f"{config[0]}_seed{seed}")
    write_run(tmp_path, results("clip__synth-cir", 2, cir(0.9, 0.1, 0.2, 0.3, 0.4)), run="old_seed2")
    collection = collect([tmp_path])
    assert not collection.superseded  # the same seed under two configurations is not a repetition
    (table,) = build_tables(collection.runs)
    assert [(row.label, len(row.runs)) for row in table.rows] == [
        ("clip__synth-cir [no config_hash]", 1), ("clip__synth-cir [aaaaaaaa]", 2), ("clip__synth-cir [bbbbbbbb]", 1)]
    text = render_table(table)
    assert "| clip__synth-cir [aaaaaaaa] | 55.00 ± 7.07 |" in text
    assert ("- clip__synth-cir: runs of 3 different configurations (config_hash no config_hash, aaaaaaaa, bbbbbbbb) "
            "are separate rows, never averaged.") in text
    assert "a" * 64 in runs_csv(collection.runs)


def test_one_configuration_keeps_the_plain_name(tmp_path: Path) -> None:
    for seed in (0, 1):
        write_run(tmp_path, results("clip__synth-cir", seed, cir(0.5, 0.1, 0.2, 0.3, 0.4), config_hash="c" * 64))
    (table,) = build_tables(collect([tmp_path]).runs)
    assert [row.label for row in table.rows] == ["clip__synth-cir"]
    assert "different configurations" not in render_table(table)


def test_malformed_config_hash_is_skipped_with_the_reason(tmp_path: Path) -> None:
    write_run(tmp_path, results("clip__synth-cir", 0, cir(0.5, 0.1, 0.2, 0.3, 0.4), config_hash=""))
    (skipped,) = collect([tmp_path]).skipped
    assert skipped.reason == "config_hash '' is not a non-empty string"
