"""The ``fashion-bench`` entry point.

``fit | validate | test | predict`` go to the LightningCLI (``fashion_bench.lightning_cli``); ``data`` and
``report`` are light subcommands that never import torch or Lightning before they need them, and neither does
``--help``.
"""

from __future__ import annotations

import sys

USAGE = """usage: fashion-bench <command> [options]

Train and evaluate (LightningCLI; repeat --config, then dotted overrides):
  fit        train a method:        fashion-bench fit --config configs/experiment/clip__synth-t2i.yaml
  validate   evaluate on val:       fashion-bench validate --config ... [--ckpt_path last|best|FILE]
  test       evaluate on test:      fashion-bench test --config ... --ckpt_path best
  predict    embed the test gallery into the run directory

Data and results:
  data synth   generate the synthetic fashion world:  fashion-bench data synth --preset small --out DIR
  data verify  check a dataset copy, print its counts: fashion-bench data verify --config configs/data/cirr.yaml --data.root DIR
  data wab-frames  extract WAB's annotated video frames: fashion-bench data wab-frames --root DIR
  report       runs -> leaderboard, plots, galleries:   fashion-bench report [--runs DIR] [--out docs]
  kg build     FashionKLIP's concept knowledge graph:   fashion-bench kg build --config configs/data/synth-t2i.yaml --out DIR

Each command has its own --help. Runs go to runs/<experiment>/<YYYYmmdd-HHMMSS>_seed<S>/.
"""

LIGHTNING_VERBS = ("fit", "validate", "test", "predict")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "data":
        from fashion_bench.data.cli import main as data_main

        return data_main(rest)
    if command == "report":
        from fashion_bench.report.cli import main as report_main

        return report_main(rest)
    if command == "kg":
        from fashion_bench.kg.cli import main as kg_main

        return kg_main(rest)
    if command in LIGHTNING_VERBS:
        from fashion_bench.lightning_cli import run

        return run(argv)
    print(f"fashion-bench: unknown command '{command}'\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
