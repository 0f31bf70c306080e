"""The ``fashion-bench`` entry point.

``fit | validate | test | predict`` go to the LightningCLI (``fashion_bench.lightning_cli``), ``eval`` composes
its ``test`` (``fashion_bench.evaluate``); ``data`` and ``report`` are light subcommands that never import torch or
Lightning before they need them, and neither does ``--help``. An error of ours raised while a run starts is
printed alone, as one message (``fashion_bench.user_errors``; ``--verbose`` shows the traceback).
"""

from __future__ import annotations

import sys

USAGE = """usage: fashion-bench <command> [options]

Train and evaluate (LightningCLI; repeat --config, then dotted overrides):
  fit        train a method:        fashion-bench fit --config configs/experiment/clip__synth-t2i.yaml
  validate   evaluate on val:       fashion-bench validate --config ... [--ckpt_path last|best|FILE]
  test       evaluate on test:      fashion-bench test --config ... --ckpt_path best
  predict    embed the test gallery into the run directory
  eval       any model on your own catalogue, one command:
             fashion-bench eval --model ViT-B-32 --pretrained weights.pt --catalogue shop.csv --task t2i
             (--model: open_clip name[:tag] | hf-hub:org/repo | configs/encoder/*.yaml | a run directory or checkpoint)
  --verbose  (any of these) print the full traceback of an error instead of its message alone

Data and results:
  data synth   generate the synthetic fashion world:  fashion-bench data synth --preset small --out DIR
  data verify  check a dataset copy, print its counts: fashion-bench data verify --config configs/data/cirr.yaml --data.root DIR
  data wab-frames  extract WAB's annotated video frames: fashion-bench data wab-frames --root DIR
  report       runs -> leaderboard, plots, galleries:   fashion-bench report [--runs DIR] [--out docs]
  kg build     FashionKLIP's concept knowledge graph:   fashion-bench kg build --config configs/data/synth-t2i.yaml --out DIR

Search your catalogue (docs/search.md):
  index      embed a catalogue with a trained method:  fashion-bench index --run RUN_DIR --catalogue FILE --out DIR [--add]
  search     query an index:                           fashion-bench search --index DIR --text "red striped dress" [--image FILE] [--json | --html out.html]
  serve      a search page + JSON API (docs/serve.md):  fashion-bench serve --index DIR [--host 127.0.0.1 --port 8000]

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
    if command in ("index", "search"):
        from fashion_bench.search import cli as search_cli

        return (search_cli.index_main if command == "index" else search_cli.search_main)(rest)
    if command == "serve":
        from fashion_bench.serve.cli import main as serve_main

        return serve_main(rest)
    if command in LIGHTNING_VERBS or command == "eval":
        from fashion_bench.user_errors import UserErrors

        verbose = "--verbose" in rest
        rest = [a for a in rest if a != "--verbose"]
        with UserErrors(command, verbose):
            if command == "eval":
                from fashion_bench.evaluate import main as eval_main

                return eval_main(rest)
            from fashion_bench.lightning_cli import run

            return run([command, *rest])
    print(f"fashion-bench: unknown command '{command}'\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
