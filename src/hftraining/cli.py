"""Command line: the only module that reads argv and prints for humans.

Every command exits 0 on success and 2 on a mistake the user can fix, with one line on stderr
that names the file, key or column.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hftraining.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _cmd_train(args: argparse.Namespace) -> int:
    from hftraining.config import load_config
    from hftraining.train.logging import setup_console_logging
    from hftraining.train.trainer import train

    overrides = list(args.overrides)
    if args.resume:
        overrides.append("training.resume_from_checkpoint=auto")
    cfg = load_config(args.config, overrides)
    setup_console_logging()
    train(cfg)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from hftraining.eval.evaluate import evaluate_model_dir, format_table

    result = evaluate_model_dir(args.path, args.data, args.split)
    print(json.dumps(result, indent=2) if args.json else format_table(result, args.split))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from hftraining.inference.forecaster import Forecaster

    table = Forecaster.from_pretrained(args.model_dir).predict(args.data)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
        print(f"wrote {len(table)} forecasts for {table['symbol'].nunique()} symbol(s) to {args.out}")
    else:
        table.to_csv(sys.stdout, index=False)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "models":
        from hftraining import models

        names = models.model_names() if hasattr(models, "model_names") else {n: "" for n in models.MODELS.names()}
        for name, desc in (names.items() if isinstance(names, dict) else ((n, "") for n in names)):
            print(f"{name:<16}{desc}")
    elif args.what == "optimizers":
        from hftraining import optim

        names = optim.optimizer_names() if hasattr(optim, "optimizer_names") else optim.OPTIMIZERS.names()
        print("\n".join(names))
    else:
        from hftraining.data.features import FEATURES

        print("\n".join(FEATURES.names()))
    return 0


def _data_config(args: argparse.Namespace, data_dir=None):
    """The data section of ``--config`` with ``--set`` overrides (``data.`` may be left out)."""
    from hftraining.config import load_config

    sets = [s if s.startswith(("data.", "model.", "training.", "evaluation.", "output.")) else f"data.{s}" for s in args.set]
    d = load_config(args.config, sets).data
    if data_dir is not None:
        d.data_dir = data_dir
    return d


def _cmd_data_check(args: argparse.Namespace) -> int:
    from hftraining.data.validate import check_paths, format_report

    reports, errors = check_paths(args.paths, _data_config(args))
    if args.json:
        print(json.dumps({"files": reports, "errors": errors}, indent=2))
    else:
        for rep in reports:
            print(format_report(rep))
    for line in errors:
        print(f"hftraining: error: {line}", file=sys.stderr)
    return 2 if errors else 0


def _cmd_data_features(args: argparse.Namespace) -> int:
    from hftraining.data.export import write_feature_table

    rows, symbols = write_feature_table(_data_config(args, args.path), args.out)
    print(f"wrote {rows} rows of {symbols} symbol(s) to {args.out}")
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from hftraining.data.synth import write_synth

    paths = write_synth(args.out, args.symbols, args.rows, seed=args.seed, freq=args.freq, fmt=args.format)
    print(f"wrote {len(paths)} file(s) of {args.rows} rows to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hftraining", description="Train and honestly evaluate forecasters on OHLCV data.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model, then evaluate it on the test split")
    t.add_argument("--config", help="YAML or JSON config file (default: built-in defaults)")
    t.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint of the run folder")
    t.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="score a trained model beside naive forecasts")
    e.add_argument("path", metavar="RUN_OR_MODEL_DIR")
    e.add_argument("--data", help="file, folder or glob (default: the data the model was trained on)")
    e.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.set_defaults(func=_cmd_evaluate)

    pr = sub.add_parser("predict", help="forecast from the latest window of each symbol")
    pr.add_argument("model_dir", metavar="MODEL_DIR")
    pr.add_argument("--data", required=True, help="file, folder or glob of OHLCV data")
    pr.add_argument("--out", help="CSV file to write (default: stdout)")
    pr.set_defaults(func=_cmd_predict)

    ls = sub.add_parser("list", help="list registered models, optimizers or features")
    ls.add_argument("what", choices=["models", "optimizers", "features"])
    ls.set_defaults(func=_cmd_list)

    data = sub.add_parser("data", help="check, featurise or synthesise OHLCV files")
    dsub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    for name, helptext in (("check", "validate files and report every dropped or repaired row"),
                           ("features", "write the feature table (CSV or Parquet by --out's extension)")):
        d = dsub.add_parser(name, help=helptext)
        if name == "check":
            d.add_argument("paths", nargs="+", metavar="PATH", help="files, folders or globs")
            d.add_argument("--json", action="store_true", help="print the reports as JSON")
            d.set_defaults(func=_cmd_data_check)
        else:
            d.add_argument("path", metavar="PATH", help="file, folder or glob")
            d.add_argument("--out", required=True, help="output file: .csv or .parquet")
            d.set_defaults(func=_cmd_data_features)
        d.add_argument("--config", help="YAML or JSON config whose data section applies")
        d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="data setting, e.g. --set invalid_values=ffill (repeatable)")
    sy = dsub.add_parser("synth", help="write synthetic OHLCV files (one per symbol)")
    sy.add_argument("--symbols", type=int, required=True)
    sy.add_argument("--rows", type=int, required=True, help="rows per symbol")
    sy.add_argument("--out", required=True, metavar="DIR")
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--freq", default="B", help="pandas frequency of the bars (B: business days, 1min, ...)")
    sy.add_argument("--format", default="csv", choices=["csv", "parquet"])
    sy.set_defaults(func=_cmd_data_synth)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"hftraining: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("hftraining: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
