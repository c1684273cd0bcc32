"""Command line: the only module that reads argv and prints for humans.

Every command exits 0 on success and 2 on a mistake the user can fix, with one line on stderr
that names the file, key or column.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import glob
import importlib
import logging
import os
import re
import stat
import sys
from pathlib import Path, PurePath

from hftraining.core.config import (MAX_SEED, SECTIONS, Config, ServeConfig, TrainingConfig, load_config,
                                    parse_override, section_from_dict, validate)
from hftraining.core.errors import ConfigError, UserError, WriteError, io_cause, is_io_error
from hftraining.core.jsonio import dumps
from hftraining.data.synth import DEFAULT_SESSION, DEFAULT_TZ, write_synth
from hftraining.data.synth import FORMATS as SYNTH_FORMATS
from hftraining.train.logging import Terminated, sigterm_as_interrupt, sigterm_by_default
from hftraining.workflows import ett_protocol

_LAZY = {
    "torch": "torch", "models": "hftraining.models", "optim": "hftraining.optim",
    "write_feature_table": "hftraining.data.feature_table", "FEATURES": "hftraining.data.features",
    "RowsNeeded": "hftraining.data.rows", "check_paths": "hftraining.data.sources",
    "format_report": "hftraining.data.validate", "format_backtest": "hftraining.eval.backtest",
    "format_table": "hftraining.eval.forecasts", "format_intervals": "hftraining.eval.intervals",
    "write_report": "hftraining.eval.report", "build_ensemble": "hftraining.inference.ensemble",
    "export_onnx": "hftraining.inference.export", "run_folder": "hftraining.inference.folders",
    "is_ensemble": "hftraining.inference.folders", "resolve_model_dir": "hftraining.inference.folders",
    "Forecaster": "hftraining.inference.forecaster", "iso_as_of": "hftraining.inference.forecaster",
    "build_server": "hftraining.inference.serve",
    "resolve_api_key": "hftraining.inference.serve", "run_server": "hftraining.inference.serve",
    "setup_console_logging": "hftraining.train.logging", "ett": "hftraining.workflows.ett",
    "evaluate_and_backtest": "hftraining.workflows.evaluate_run", "evaluation_config": "hftraining.workflows.evaluate_run",
    "report_dir": "hftraining.workflows.evaluate_run", "train_seeds": "hftraining.workflows.seeds",
    "train": "hftraining.workflows.train_run", "check_report_importable": "hftraining.workflows.train_run",
    "run_tune": "hftraining.workflows.tune",
    "format_walkforward": "hftraining.workflows.walkforward", "walk_forward": "hftraining.workflows.walkforward",
}
"""What the commands use, by the module that defines it: imported by the command that needs it, not by
every command (the training stack, torch, pytorch-optimizer, matplotlib cost seconds; `list features` or
`data check` needs none of them). An import error of one surfaces when its command runs."""


def __getattr__(name: str):
    """``cli.<name>`` of :data:`_LAZY`, its module imported on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if module == name or module.endswith(f".{name}") else getattr(mod, name)
    globals()[name] = value
    return value


def _lazy(*names: str):
    """The values of ``names`` for a command (one name: its value): a value set on this module
    (``cli.Forecaster = ...``) as before, else :func:`__getattr__`'s import."""
    values = tuple(globals()[n] if n in globals() else __getattr__(n) for n in names)
    return values[0] if len(names) == 1 else values


def _one_line(text: str) -> str:
    """``text`` on one line: a line break in what it quotes (a path or value holding one) as a space, so that
    an error stays the one line on stderr that a script reads."""
    return " ".join(text.splitlines())


def _given(text: str) -> str:
    """A text argument as given; an empty one (`--out "$OUT"` with OUT unset) is refused. It was read as not
    given (`--config ""`: the defaults, `predict --out ""`: the CSV on standard output, `--report-dir ""`: the
    run folder) or as the working folder (`evaluate ""`, `--data ""`, `data synth --out ""`)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is empty (an unset variable?); give a value")
    return text


def _file_or_stdout(text: str) -> str | None:
    """``--out -``: standard output, as most commands read it (None: as not given); it wrote a file named ``-``."""
    return None if text == "-" else _given(text)


class _Once(argparse.Action):
    """A flag that stores one value: given twice (`--out a.csv ... --out b.csv`, `--config a.yaml --config
    b.yaml`), an error, not the last one silently winning (as for a flag and its `--set`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = namespace.__dict__.setdefault("_flags_given", set())
        if self.dest in seen:
            raise argparse.ArgumentError(self, "given twice; give it once")
        seen.add(self.dest)
        setattr(namespace, self.dest, values)


class _Parser(argparse.ArgumentParser):
    def parse_known_args(self, args=None, namespace=None):
        self._words = list(sys.argv[1:] if args is None else args)  # for error(): what this parser was given
        return super().parse_known_args(args, namespace)

    def error(self, message: str):  # one line and exit 2, not argparse's usage block
        # a flag where a command is awaited (`hftraining --version`, `hftraining data --json`) was said as
        # "the following arguments are required: command", naming neither the flag nor its mistake
        unknown = self._unknown_flags() if message.startswith("the following arguments are required") else []
        if unknown:
            message = f"unrecognized arguments: {' '.join(unknown)}"
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see --help)\n")

    def _unknown_flags(self) -> list[str]:
        """The words given to this parser before ``--`` that read as flags it does not have (nor abbreviate)."""
        words = getattr(self, "_words", [])
        words = words[:words.index("--")] if "--" in words else words
        known = self._option_string_actions
        return [w for w in words if w.startswith("-") and len(w) > 1 and not self._negative_number_matcher.match(w)
                and not any(o.startswith(w.split("=", 1)[0]) for o in known)]

    def add_argument(self, *names, **kwargs):
        """argparse's, with a text argument refused empty (:func:`_given`) unless it has a type of its own,
        and a flag that stores one value refused twice (:class:`_Once`)."""
        if kwargs.get("action") in (None, "store", "append") and "type" not in kwargs:
            kwargs["type"] = _given
        if names and names[0].startswith("-") and kwargs.get("action") in (None, "store"):
            kwargs["action"] = _Once
        return super().add_argument(*names, **kwargs)


def _cmd_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.resume:
        if "training.resume_from_checkpoint" in _set_keys(overrides):  # two answers to "resume from what": neither wins
            raise ConfigError("--resume: also given as training.resume_from_checkpoint; give one of them")
        overrides.append("training.resume_from_checkpoint=auto")
    cfg = load_config(args.config, overrides)
    _refuse_folder_is_data(cfg.run_dir(), cfg.data.data_dir,
                           "output.output_dir" if cfg.output.output_dir else "the run folder (output.experiment_name)")
    if args.seeds is not None and args.seeds > 1 and cfg.training.seed + args.seeds - 1 > MAX_SEED:
        raise ConfigError(f"--seeds {args.seeds}: the seeds training.seed + 0..{args.seeds - 1} would pass the largest seed "
                          f"{MAX_SEED} (training.seed={cfg.training.seed}); lower training.seed")
    setup_console_logging, train, train_seeds = _lazy("setup_console_logging", "train", "train_seeds")
    setup_console_logging()
    if args.seeds is not None:  # with --resume, every seed-<k>/ resumes and ensemble/ is rebuilt
        root = train_seeds(cfg, args.seeds)
        if args.seeds == 1:  # no ensemble of one: the run folder to evaluate, predict or serve is the seed's own
            print(f"trained 1 seed into {root / 'seed-0'} (no ensemble of one seed: give that folder to evaluate or predict)")
        else:
            print(f"trained {args.seeds} seeds into {root}/seed-<k>/; ensemble: {root / 'ensemble'}")
        return 0
    train(cfg)
    return 0


def _cmd_ensemble(args: argparse.Namespace) -> int:
    build_ensemble = _lazy("build_ensemble")
    out = build_ensemble(args.model_dirs, args.out, args.method, overwrite=args.overwrite)
    print(f"wrote an ensemble ({args.method}) of {len(args.model_dirs)} models to {out}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    setup_console_logging, run_tune = _lazy("setup_console_logging", "run_tune")
    if args.out:
        _refuse_folder_is_data(args.out, load_config(args.config, args.overrides).data.data_dir, "--out")
    setup_console_logging()
    report = run_tune(args.config, args.trials, storage=args.storage, study_name=args.study, workers=args.workers,
                      out=args.out, overrides=args.overrides)
    print(report)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    export_onnx = _lazy("export_onnx")
    path = export_onnx(args.model_dir, args.out, check=not args.no_check)
    print(f"wrote {path}")
    return 0


_SERVE_FLAGS = {"host": "host", "port": "port", "max_body_bytes": "max_body_bytes", "max_symbols": "max_symbols",
                "max_rows": "max_rows", "request_timeout": "request_timeout_s", "keep_alive_timeout": "keep_alive_timeout_s",
                "header_timeout": "header_timeout_s", "max_connections": "max_connections",
                "max_predictions": "max_predictions", "cors_origin": "cors_origins", "docs": "docs"}


def _cmd_serve(args: argparse.Namespace) -> int:
    # the serve section's defaults, with the flags that were given; the API key never enters the config
    given = {key: getattr(args, flag) for flag, key in _SERVE_FLAGS.items() if getattr(args, flag) is not None}
    cfg = section_from_dict(ServeConfig, given, "serve")
    validate(Config(serve=cfg))
    build_server, resolve_api_key, run_server, setup_console_logging = _lazy(
        "build_server", "resolve_api_key", "run_server", "setup_console_logging")
    prepared = build_server(args.model_dir, cfg, api_key=resolve_api_key(args.api_key, os.environ), insecure=args.insecure)
    setup_console_logging()  # the access log: one JSON line per request on stderr
    with sigterm_by_default():  # uvicorn's own: a graceful shutdown, then the process ends by SIGTERM
        run_server(prepared)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    evaluation_config, evaluate_and_backtest, report_dir, write_report, run_folder = _lazy(
        "evaluation_config", "evaluate_and_backtest", "report_dir", "write_report", "run_folder")
    is_ensemble, resolve_model_dir = _lazy("is_ensemble", "resolve_model_dir")
    format_table, format_intervals, format_backtest = _lazy("format_table", "format_intervals", "format_backtest")
    ev = evaluation_config(args.path, args.set)
    if args.report_dir and (args.no_report or not ev.report):  # asked where to write a report that is not written
        raise ConfigError("--report-dir: no report is written " + (
            "with --no-report" if args.no_report else
            "with --set evaluation.report=false; give one of them" if "evaluation.report" in _set_keys(args.set) else
            "(evaluation.report=false, the run's setting); add --set evaluation.report=true"))
    if args.no_report and ev.report and "evaluation.report" in _set_keys(args.set):  # the last --set said true
        raise ConfigError("--no-report: contradicts --set evaluation.report=true; give one of them")
    if sys.stdout is None and not ev.report:  # evaluation.report=false (the run's or --set): the scores printed only
        raise ConfigError("standard output is closed: the evaluation printed there would be lost (no report is written: "
                          "evaluation.report=false); redirect it to a file")
    if ev.report and not args.no_report:  # said before the scoring, not after it
        _lazy("check_report_importable")(instead=" (or give --no-report)")
    result, fc, bt = evaluate_and_backtest(args.path, args.data, args.split, ev)
    if ev.report and not args.no_report:
        # the run's own report (beside eval.json) only for its own evaluation; others in <run>/evaluations/<name>/
        where = report_dir(args.path, args.report_dir, args.split, args.data, ev, result=result)
        changed = ["data changed since training"] if result.get("data_changes") else []
        what = ", ".join([f"{args.split} split", *([f"data {args.data}"] if args.data else changed), *args.set])
        # an ensemble folder is no run folder, but its report states its method and members (ensemble.json)
        own = run_folder(args.path) or (ens if is_ensemble(ens := resolve_model_dir(args.path)) else None)
        html_path, _ = write_report(where, result, fc, bt, own,
                                    title=f"hftraining evaluate: {args.path} ({what})")
        result["report"] = str(html_path)
    if args.json:
        print(dumps(result))
    else:
        print(format_table(result, args.split))
        if "intervals" in result:
            print("\n".join(format_intervals(result["intervals"])))
        print(format_backtest(bt))
        if "report" in result:
            print(f"report: {result['report']}")
    return 0


def _set_keys(sets: list[str]) -> set[str]:
    """The ``section.key`` names that ``KEY=VALUE`` overrides set (a malformed one: ConfigError)."""
    return {".".join(parse_override(text)[0]) for text in sets}


_BACKTEST_FLAGS = (("positions", "backtest_positions"), ("max_gross", "backtest_max_gross"),
                   ("cost_bps", "backtest_cost_bps"), ("slippage_bps", "backtest_slippage_bps"),
                   ("signal", "backtest_signal"), ("long_only", "backtest_long_only"),
                   ("portfolio", "backtest_portfolio"), ("topk", "backtest_topk"),
                   ("topk_dropout", "backtest_topk_dropout"), ("rebalance", "backtest_rebalance"))
"""backtest's flags → the evaluation key each one sets."""


def _cmd_backtest(args: argparse.Namespace) -> int:
    evaluation_config, evaluate_and_backtest, format_backtest = _lazy("evaluation_config", "evaluate_and_backtest", "format_backtest")
    sets, given = list(args.set), _set_keys(args.set)
    for flag, key in _BACKTEST_FLAGS:
        if getattr(args, flag) is not None:
            if f"evaluation.{key}" in given:  # two values for one setting: neither silently wins
                named = f"--{flag.replace('_', '-')}" if flag != "long_only" else "--long-only" if args.long_only else "--long-short"
                raise ConfigError(f"{named}: also given as --set evaluation.{key}; give one of them")
            sets.append(f"evaluation.{key}={str(getattr(args, flag)).lower()}")
    ev = evaluation_config(args.path, sets)
    result, _, bt = evaluate_and_backtest(args.path, args.data, args.split, ev)
    if args.json:
        print(dumps({"split": args.split, "model_dir": result["model_dir"], **result["backtest"]}))
    else:
        print(format_backtest(bt))
    return 0


def _cmd_walkforward(args: argparse.Namespace) -> int:
    setup_console_logging, walk_forward, format_walkforward = _lazy("setup_console_logging", "walk_forward", "format_walkforward")
    cfg = load_config(args.config, args.overrides)
    setup_console_logging()
    res = walk_forward(cfg, args.folds, scheme=args.scheme, mode=args.mode)
    if res:  # the main rank of a torchrun group prints, the others return {}
        print(dumps(res) if args.json else format_walkforward(res))
    return 0


def _refuse_out_in_inputs(out: str, folders: list[str], data: str) -> None:
    """A ConfigError when the output file ``out`` would overwrite or join what the command reads: a
    file inside one of ``folders`` (the model folder), or a file of ``data`` (a file, a folder
    whose data files the next read would include, or a glob that ``out`` matches)."""
    target = Path(out).resolve()
    for folder in folders:
        if Path(folder).is_dir() and target.is_relative_to(Path(folder).resolve()):
            raise ConfigError(f"--out {out}: inside the input folder {folder}; choose an --out outside it")
    matched = glob.glob(data) if glob.has_magic(data) else [data]
    for p in map(Path, matched):
        if (p.is_dir() and target.is_relative_to(p.resolve())) or (not p.is_dir() and target == p.resolve()):
            raise ConfigError(f"--out {out}: would overwrite or join the input data {p}; choose an --out outside it")
    if glob.has_magic(data) and fnmatch.fnmatch(str(target), str(Path(data).absolute())):
        raise ConfigError(f"--out {out}: matches the input data {data}; choose an --out outside it")


def _refuse_folder_is_data(folder: str | Path, data: str | None, named: str) -> None:
    """A ConfigError when the output folder ``folder`` is a folder that the data ``data`` (data.data_dir: a
    file, folder or glob) are read from: a command writes files at its top (metrics.csv with
    output.report_to csv, tune's trials.csv) that every later read of the data took for a data file, and
    refused (the run just trained could no longer be evaluated, the tune not resumed)."""
    if data is None:
        return
    out = Path(folder).resolve()
    p = Path(data)
    # taken as the reader takes it (io.resolve_paths): a folder or a file that exists before a glob, so that a folder
    # named with brackets (`prices[2024]`) is that folder, not a glob read from its parent
    if p.is_dir() or p.is_file() or not glob.has_magic(data):
        hit = p.is_dir() and p.resolve() == out
    else:  # the folders whose files the glob reads: its folder part, links and `..` of its fixed part followed
        parts = p.absolute().parent.parts
        fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
        pattern = Path(os.path.realpath(Path(*parts[:fixed]))).joinpath(*parts[fixed:])
        if fixed == len(parts):
            hit = out == pattern
        else:  # also a folder not made yet that the pattern would read (the run folder), and a link it matches
            hit = PurePath(out).match(str(pattern)) or any(
                Path(f).is_dir() and Path(f).resolve() == out for f in glob.glob(str(pattern)))
    if hit:
        raise ConfigError(f"{named} {folder}: the folder the data are read from (data.data_dir={data}); the files "
                          "written there would be read as data from then on: choose another folder")


def _write_csv(table, out: str) -> bool:
    """Write ``table`` to ``out`` through a hidden sibling renamed into place: a reader of the file (a
    scheduled job picking up the forecasts) never sees it half written, and a failed write (a full disk)
    leaves the earlier file as it was and no temporary behind; the failure is one line naming ``out``.
    A link at ``out`` is written through, as before, not replaced; so is anything that is not a regular
    file (``/dev/stdout``, ``/dev/null``, a FIFO), which a rename would replace by a file. A file
    replaced keeps its permission bits."""
    try:
        st = os.stat(out)
    except OSError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"--out {out}: a folder; give a CSV file name")
    # the file standard output goes to (`--out /dev/stdout > log`, a regular file then): through stdout, at its
    # position; renamed over, the file the shell opened lost what it held and the lines written after the CSV
    if st is not None and _is_stdout(st):
        try:
            sys.stdout.flush()
            table.to_csv(sys.stdout, index=False)
            sys.stdout.flush()
        except OSError as e:
            raise WriteError(f"{out}: cannot write ({io_cause(e)})") from None
        return True
    # a device, pipe or terminal, or a descriptor named by path (/dev/fd/N): written to, as before
    if st is not None and (not stat.S_ISREG(st.st_mode) or os.path.abspath(out).startswith(("/dev/", "/proc/"))):
        try:
            table.to_csv(out, index=False)
        except OSError as e:
            raise WriteError(f"{out}: cannot write ({io_cause(e)})") from None
        return False
    path = Path(os.path.realpath(out))
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(tmp, index=False)
        if st is not None:
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise WriteError(f"{out}: cannot write ({io_cause(e)})") from None
        raise
    return False


def _is_stdout(st: os.stat_result) -> bool:
    """Whether ``st`` is the file this process's standard output writes to."""
    try:
        return os.path.samestat(st, os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError):  # stdout replaced by an object without a descriptor
        return False


def _refuse_other_format(out: str) -> None:
    """A ConfigError for a ``--out`` file name whose suffix names another format than the CSV text
    ``predict`` writes (``forecasts.parquet``, ``.json``): it wrote CSV text under that name and exited
    0, and the reader of the file failed later. A name without a suffix, one whose last dot starts a
    number rather than a format (``forecasts.2024.06.01``, ``run.1``: no letter), and what is not a
    regular file (``/dev/stdout``, a FIFO), are written as they are."""
    suffix = Path(out).suffix.lower()
    if not any(c.isalpha() for c in suffix):
        suffix = ""
    try:
        special = not stat.S_ISREG(os.stat(out).st_mode)
    except OSError:
        special = False
    if suffix and suffix != ".csv" and not special:
        raise ConfigError(f"--out {out}: predict writes CSV text; give a .csv file name (a {suffix} file would hold "
                          "CSV)")


def _cmd_predict(args: argparse.Namespace) -> int:
    setup_console_logging, Forecaster, iso_as_of = _lazy("setup_console_logging", "Forecaster", "iso_as_of")
    if args.out:
        _refuse_out_in_inputs(args.out, [args.model_dir], args.data)
        _refuse_other_format(args.out)
    setup_console_logging(logging.WARNING)  # warnings on stderr (e.g. fewer rows than settled_rows); stdout: the CSV
    table = iso_as_of(Forecaster.from_pretrained(args.model_dir).predict(args.data))  # as the server writes it
    if args.out:
        into_stdout = _write_csv(table, args.out)
        # not after the CSV when the CSV is standard output (`--out /dev/stdout | consumer`)
        print(f"wrote {len(table)} forecasts for {table['symbol'].nunique()} symbol(s) to {args.out}",
              file=sys.stderr if into_stdout else sys.stdout)
    else:
        table.to_csv(sys.stdout, index=False)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "models":
        models = _lazy("models")
        for name, desc in models.model_names().items():
            print(f"{name:<16}{desc}")
    elif args.what == "optimizers":
        # each name is built on a probe, so a name whose optional package is missing is listed with why
        # instead of offered as if it worked. The names need pytorch-optimizer (about 0.6 s to import, on top
        # of torch's second); the probes take 0.05 s for all, after the 0.6 s import of torch._dynamo that
        # torch's first optimizer pays (Optimizer.add_param_group), as a training run's does
        optim = _lazy("optim")
        for name in optim.optimizer_names():
            try:
                optim.check_compatibility(TrainingConfig(optimizer=name))
            except ConfigError as e:
                print(f"{name:<20}cannot be used here: {str(e).split(': ', 1)[-1]}")
            else:
                print(name)
    else:
        print("\n".join(_lazy("FEATURES").names()))
    return 0


def _data_config(args: argparse.Namespace, data_dir=None):
    """The data section of ``--config`` with ``--set`` overrides (``data.`` may be left out)."""
    # a key with a section of its own keeps it: `--set dat.jumps=drop` was read as data.dat.jumps and said so
    # and one without "=" is refused as written: `--set jumps` was said as "override 'data.jumps': ..."
    sets = [s if "." in s.partition("=")[0] or "=" not in s else f"data.{s}" for s in args.set]
    for text in sets:  # `--set training.max_steps=3` was accepted and did nothing
        (section, key), _ = parse_override(text)
        if section in SECTIONS and section != "data":
            raise ConfigError(f"{section}.{key}: only data.* settings apply here")
    d = load_config(args.config, sets).data
    if data_dir is not None:
        d.data_dir = data_dir
    return d


def _cmd_data_check(args: argparse.Namespace) -> int:
    check_paths, RowsNeeded, format_report = _lazy("check_paths", "RowsNeeded", "format_report")
    d = _data_config(args)
    reports, errors, stamps = check_paths(args.paths, d, RowsNeeded.of(d))
    if args.json:  # the stamp warnings too (mixed_stamps, zoneless_stamps), for a script that reads the JSON only
        print(dumps({"files": reports, "errors": errors, **stamps}))
    else:
        for rep in reports:
            print(format_report(rep))
    for line in errors:
        print(f"hftraining: error: {_one_line(line)}", file=sys.stderr)
    return 2 if errors else 0


def _cmd_data_features(args: argparse.Namespace) -> int:
    write_feature_table = _lazy("write_feature_table")
    _refuse_out_in_inputs(args.out, [], args.path)
    rows, symbols = write_feature_table(_data_config(args, args.path), args.out)
    print(f"wrote {rows} rows of {symbols} symbol(s) to {args.out}")
    return 0


def _check_seed(seed: int) -> None:
    """``--seed`` in NumPy's range (a negative one was its traceback)."""
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed: must be in 0..{MAX_SEED}, got {seed}")


def _cmd_data_synth(args: argparse.Namespace) -> int:
    _check_seed(args.seed)
    paths = write_synth(args.out, args.symbols, args.rows, seed=args.seed, freq=args.freq, fmt=args.format,
                        session=args.session, tz=args.tz)
    what = "a Parquet dataset" if args.format == "parquet-dataset" else f"{len(paths)} file(s)"
    print(f"wrote {what} of {args.symbols} symbol(s) × {args.rows} rows to {args.out}")
    return 0


MODEL_FLAGS = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "dropout", "patch_len", "patch_stride", "moving_avg")


def _cmd_bench_ett(args: argparse.Namespace) -> int:
    torch, ett = _lazy("torch", "ett")
    if args.threads < 1:
        raise ConfigError(f"--threads: must be >= 1, got {args.threads}")
    _check_seed(args.seed)
    # a flag of a trained model the chosen --model does not have is an error, not ignored
    given = [f"--{k.replace('_', '-')}" for k in MODEL_FLAGS if getattr(args, k) is not None]
    given += [flag for flag, on in (("--subtract-last", args.subtract_last), ("--on-linear", args.on_linear),
                                    ("--head-dropout", args.head_dropout is not None)) if on]
    only = {"linear": given, "dlinear": [f for f in given if f in ("--on-linear", "--head-dropout")]}.get(args.model, [])
    if only:
        raise ConfigError(f"{only[0]}: not a setting of --model {args.model}"
                          + (" (the closed-form map trains nothing)" if args.model == "linear" else " (patchtst only)"))
    torch.set_num_threads(args.threads)
    kwargs: dict[str, object] = {}
    if args.subtract_last:
        kwargs["subtract_last"] = True
    if args.on_linear:
        kwargs["on_linear"] = True
    if args.head_dropout is not None:
        kwargs["head_dropout"] = args.head_dropout
    settings = ett.TrainSettings(args.epochs, args.batch_size, args.lr, args.weight_decay, args.patience,
                                 args.evals_per_epoch, args.bf16, args.seed)
    results = ett.run_suite(
        args.data, args.dataset, args.horizon, args.model, args.seq_len,
        {k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k) is not None}, kwargs, settings, args.ridge,
        not args.no_ensemble, tuple(args.linear_lookbacks), not args.no_time_of_day, args.out, args.save_predictions,
        args.run_dir, log=lambda line: print(line, flush=True),
    )
    print()
    print("ETT, multivariate, all test windows, MSE/MAE on z-scored data; published figures from PAPER_TABLES.md; "
          f"torch threads {torch.get_num_threads()}")
    print(ett.format_table(results))
    return 0


def _add_bench_ett(suites) -> None:
    """The ``bench ett`` parser: its description, choices and defaults come from
    hftraining.workflows.ett_protocol, which imports no torch (the benchmark itself, hftraining.workflows.ett,
    imports the training stack: 5 to 9 s for a ``--help``)."""
    e = ett_protocol
    p = suites.add_parser("ett", help="the ETT long-horizon benchmark under the published protocol", description=e.SUMMARY)
    p.add_argument("--data", required=True, help="folder with ETTh1.csv … ETTm2.csv")
    p.add_argument("--dataset", nargs="+", default=[e.DATASET], choices=e.DATASETS)
    p.add_argument("--horizon", nargs="+", type=int, default=[e.HORIZON])
    p.add_argument("--model", default=e.MODEL, choices=e.MODELS)
    p.add_argument("--seq-len", type=int, default=e.SEQ_LEN)
    p.add_argument("--ridge", type=float, default=e.RIDGE, help="λ of the closed-form map, relative to the Gram diagonal")
    p.add_argument("--no-ensemble", action="store_true", help="report the trained model alone")
    p.add_argument("--linear-lookbacks", nargs="*", type=int, default=[],
                   help="also fit plain and centred closed-form maps at these L; ours = the members' average chosen on val")
    p.add_argument("--no-time-of-day", action="store_true",
                   help="leave out the --linear-lookbacks members with a bias per channel and time of day")
    for flag in MODEL_FLAGS:
        p.add_argument(f"--{flag.replace('_', '-')}", type=float if flag == "dropout" else int,
                       help=f"model.{flag} of the trained model (default: PatchTST's published ETT settings)")
    p.add_argument("--head-dropout", type=float, help="patchtst: dropout before the flatten head")
    p.add_argument("--subtract-last", action="store_true", help="RevIN (patchtst) / input (dlinear) subtracts the last value")
    p.add_argument("--on-linear", action="store_true", help="patchtst: train a correction on top of the closed-form map at --seq-len")
    s = e.TrainSettings
    p.add_argument("--epochs", type=int, default=s.epochs)
    p.add_argument("--batch-size", type=int, default=s.batch_size)
    p.add_argument("--lr", type=float, default=s.lr)
    p.add_argument("--weight-decay", type=float, default=s.weight_decay)
    p.add_argument("--patience", type=int, default=s.patience, help="evaluations without a lower val MSE before stopping")
    p.add_argument("--evals-per-epoch", type=int, default=s.evals_per_epoch)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast in training and prediction")
    p.add_argument("--seed", type=int, default=s.seed)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--out", help="write the results as JSON to this file")
    p.add_argument("--save-predictions", help="write val/test forecasts to this safetensors file (one dataset × horizon)")
    p.add_argument("--run-dir", default=e.RUN_DIR, help="folder of the trained models' run folders (checkpoints, metrics.jsonl)")
    p.set_defaults(func=_cmd_bench_ett)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, ``bench ett``'s flags included, built without importing torch or the
    training stack (:func:`_add_bench_ett`): the same whatever the command line ``argv``."""
    p = _Parser(prog="hftraining", description="Train and honestly evaluate forecasters on OHLCV data.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model, then evaluate it on the test split")
    t.add_argument("--config", help="YAML or JSON config file (default: built-in defaults)")
    t.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint of the run folder")
    t.add_argument("--seeds", type=int, metavar="N",
                   help="train N seeds (training.seed + k) into <run>/seed-<k>/ and build <run>/ensemble/")
    t.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    t.set_defaults(func=_cmd_train)

    en = sub.add_parser("ensemble", help="combine trained models that share preprocessing into one model folder")
    en.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR", help="run or model folders (two or more)")
    en.add_argument("--out", required=True, metavar="DIR", help="ensemble folder to write")
    en.add_argument("--overwrite", action="store_true", help="replace an ensemble folder already at --out")
    en.add_argument("--method", default="mean", choices=["mean", "median", "weighted"],
                    help="weighted: weights proportional to 1 / validation MSE")
    en.set_defaults(func=_cmd_ensemble)

    tu = sub.add_parser("tune", help="hyperparameter search with Optuna over the config's tune.search_space")
    tu.add_argument("--config", required=True, help="YAML or JSON config with a tune section")
    tu.add_argument("--trials", type=int, required=True,
                    help="trials in total (over all workers); 0: run none, write the report of the stored study")
    tu.add_argument("--storage", help="Optuna storage shared by workers and machines: journal:///abs/path.log "
                    "(default: journal:///<out>/tune.journal), postgresql://user@host/db, mysql://user@host/db, "
                    "or sqlite:///path.db with one worker only")
    tu.add_argument("--study", help="study name (default: tune.study_name or output.experiment_name)")
    tu.add_argument("--workers", type=int, default=1, help="worker processes on this machine sharing --storage")
    tu.add_argument("--out", metavar="DIR", help="folder of the trials and the report (default: runs/tune-<study>)")
    tu.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    tu.set_defaults(func=_cmd_tune)

    ex = sub.add_parser("export", help="export a model folder to ONNX")
    ex.add_argument("model_dir", metavar="MODEL_DIR")
    ex.add_argument("--format", default="onnx", choices=["onnx"])
    ex.add_argument("--out", required=True, metavar="FILE", help="the .onnx file to write")
    ex.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison with PyTorch")
    ex.set_defaults(func=_cmd_export)

    se = sub.add_parser("serve", help="serve forecasts over HTTP (needs the serve extra)")
    se.add_argument("model_dir", metavar="MODEL_DIR")
    # --host, --cors-origin and --api-key are checked (an empty one too) as serve.host, serve.cors_origins and
    # by resolve_api_key, whose messages name them: type=str leaves them to those checks
    se.add_argument("--host", type=str, help=f"address to listen on (serve.host, default {ServeConfig.host})")
    se.add_argument("--port", type=int, help=f"TCP port (serve.port, default {ServeConfig.port})")
    se.add_argument("--max-body-bytes", type=int,
                    help=f"larger requests get 413 (serve.max_body_bytes, default {ServeConfig.max_body_bytes})")
    se.add_argument("--max-symbols", type=int,
                    help=f"most symbols per request, 413 beyond (serve.max_symbols, default {ServeConfig.max_symbols})")
    se.add_argument("--max-rows", type=int,
                    help=f"most rows per request, all symbols together, 413 beyond (serve.max_rows, default {ServeConfig.max_rows})")
    se.add_argument("--request-timeout", type=float, metavar="SECONDS",
                    help=f"408 for a slower body, 503 for a slower prediction (serve.request_timeout_s, default {ServeConfig.request_timeout_s:g})")
    se.add_argument("--keep-alive-timeout", type=float, metavar="SECONDS",
                    help=f"idle keep-alive connections close after this (serve.keep_alive_timeout_s, default {ServeConfig.keep_alive_timeout_s:g})")
    se.add_argument("--header-timeout", type=float, metavar="SECONDS",
                    help=f"a client that has not sent a request's line and headers by then is disconnected "
                         f"(serve.header_timeout_s, default {ServeConfig.header_timeout_s:g})")
    se.add_argument("--max-connections", type=int,
                    help=f"most open connections; more are closed at once (serve.max_connections, default {ServeConfig.max_connections})")
    se.add_argument("--max-predictions", type=int,
                    help=f"most predictions running at once, timed-out ones still running included; a request beyond "
                         f"waits within its timeout (serve.max_predictions, default {ServeConfig.max_predictions})")
    se.add_argument("--cors-origin", action="append", type=str, metavar="ORIGIN",
                    help="allow browser calls from ORIGIN (repeatable; serve.cors_origins, default none: no CORS headers)")
    se.add_argument("--docs", action="store_true", default=None,
                    help="serve the interactive docs /docs and /redoc, whose scripts a browser loads from a CDN "
                         "(serve.docs, default off; /openapi.json is always served)")
    se.add_argument("--api-key", type=str, metavar="KEY",
                    help="require 'Authorization: Bearer KEY' on every route but /health, /ready, /openapi.json and, with --docs, /docs and /redoc (prefer the environment "
                         "variable HFTRAINING_API_KEY: a flag shows in the process list)")
    se.add_argument("--insecure", action="store_true",
                    help="allow a non-loopback --host without an API key")
    se.set_defaults(func=_cmd_serve)

    e = sub.add_parser("evaluate", help="score a trained model beside naive forecasts")
    e.add_argument("path", metavar="RUN_OR_MODEL_DIR")
    e.add_argument("--data", help="file, folder or glob (default: the data the model was trained on)")
    e.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("--report-dir", help="where to write report.html/report.md (default: the run folder for the run's "
                   "own evaluation, the test split of its own data and settings; any other in "
                   "<run>/evaluations/<split>[-<data>-<hash>][-set-<hash>]/)")
    e.add_argument("--no-report", action="store_true",
                   help="do not write report.html/report.md (as evaluation.report=false, the run's or --set)")
    e.add_argument("--set", action="append", default=[], metavar="evaluation.KEY=VALUE",
                   help="evaluation setting, e.g. --set evaluation.backtest_cost_bps=10 (repeatable)")
    e.set_defaults(func=_cmd_evaluate)

    bt = sub.add_parser("backtest", help="trade the forecasts with costs, beside buy-and-hold and the naive forecasts")
    bt.add_argument("path", metavar="RUN_OR_MODEL_DIR")
    bt.add_argument("--data", help="file, folder or glob (default: the data the model was trained on)")
    bt.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    bt.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bt.add_argument("--positions", choices=["sign", "vol_scaled"], help="position rule (evaluation.backtest_positions)")
    side = bt.add_mutually_exclusive_group()  # both: an error, not the last one silently winning
    side.add_argument("--long-only", dest="long_only", action="store_const", const=True, help="no short positions")
    side.add_argument("--long-short", dest="long_only", action="store_const", const=False, help="long and short positions")
    bt.add_argument("--max-gross", type=float, help="cap on gross exposure, share of capital")
    bt.add_argument("--cost-bps", type=float, help="transaction cost, bps of traded notional")
    bt.add_argument("--slippage-bps", type=float, help="slippage, bps of traded notional")
    bt.add_argument("--signal", choices=["step1", "mean"], help="forecast that decides the position")
    bt.add_argument("--portfolio", choices=["auto", "per_symbol", "topk"],
                    help="per_symbol: each symbol on its own forecast; topk: long the top k, short the bottom k; "
                         "auto: topk for a cross-sectional label, else per_symbol "
                         "(evaluation.backtest_portfolio)")
    bt.add_argument("--topk", type=int, help="names per side of the topk portfolio (evaluation.backtest_topk)")
    bt.add_argument("--topk-dropout", dest="topk_dropout", type=int,
                    help="at most this many names swapped per side per rebalance, 0: no limit (evaluation.backtest_topk_dropout)")
    bt.add_argument("--rebalance", type=int, help="rebalance every this many periods (evaluation.backtest_rebalance)")
    bt.add_argument("--set", action="append", default=[], metavar="evaluation.KEY=VALUE", help="evaluation setting (repeatable)")
    bt.set_defaults(func=_cmd_backtest)

    wf = sub.add_parser("walkforward", help="retrain on successive folds and score each out of sample")
    wf.add_argument("--folds", type=int, required=True, help="number of out-of-sample test folds")
    wf.add_argument("--config", help="YAML or JSON config file (default: built-in defaults)")
    wf.add_argument("--scheme", default="expanding", choices=["expanding", "rolling", "purged_kfold"],
                    help="training windows that grow, slide, or purged k-fold over all rows (default: expanding)")
    wf.add_argument("--mode", default="retrain", choices=["retrain", "finetune"],
                    help="train each fold from scratch, or start from the previous fold's weights")
    wf.add_argument("--json", action="store_true", help="print JSON instead of a table")
    wf.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    wf.set_defaults(func=_cmd_walkforward)

    pr = sub.add_parser("predict", help="forecast from the latest window of each symbol")
    pr.add_argument("model_dir", metavar="MODEL_DIR")
    pr.add_argument("--data", required=True, help="file, folder or glob of OHLCV data")
    pr.add_argument("--out", type=_file_or_stdout, help="CSV file to write (default, or -: stdout)")
    pr.set_defaults(func=_cmd_predict)

    ls = sub.add_parser("list", help="list registered models, optimizers or features")
    ls.add_argument("what", choices=["models", "optimizers", "features"])
    ls.set_defaults(func=_cmd_list)

    be = sub.add_parser("bench", help="public benchmarks: `bench ett --help` (the ETT protocol of the papers)")
    _add_bench_ett(be.add_subparsers(dest="suite", required=True, parser_class=_Parser))

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
    sy = dsub.add_parser("synth", help="write synthetic OHLCV files (one per symbol) or a Parquet dataset")
    sy.add_argument("--symbols", type=int, required=True)
    sy.add_argument("--rows", type=int, required=True, help="rows per symbol")
    sy.add_argument("--out", required=True, metavar="DIR")
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--freq", default="B", help="pandas frequency of the bars (B: business days, 1min, ...)")
    sy.add_argument("--format", default="csv", choices=list(SYNTH_FORMATS),
                    help="csv / parquet: a file per symbol; parquet-dataset: hive folders symbol=NAME/")
    sy.add_argument("--session", default=None, metavar="HH:MM-HH:MM",
                    help=f"bars finer than a day: trading hours on business days (default {DEFAULT_SESSION}; 24h: around the clock)")
    sy.add_argument("--tz", default=None, help=f"time zone of --session (default {DEFAULT_TZ})")
    sy.set_defaults(func=_cmd_data_synth)
    return p


def _printed_result(args: argparse.Namespace) -> str | None:
    """What the command prints on standard output as its result, held nowhere else (None: a command whose
    results are files, or whose printing only sums them up)."""
    if args.command == "predict" and not args.out:
        return "the forecasts"
    if args.command == "list":
        return f"the list of {args.what}"
    if args.command == "data" and args.data_command == "check":
        return "the data reports"
    if args.command == "backtest":
        return "the backtest"
    if args.command == "evaluate" and args.no_report:  # no report.html/report.md holds the scores
        return "the evaluation"
    if args.command == "bench" and not args.out:  # the table of results is written to no file
        return "the benchmark results"
    return None


OVERRIDE = re.compile(r"[A-Za-z_]\w*\.[\w.]+=")
"""An argument that reads as a config override (``section.key=value``)."""


def main(argv: list[str] | None = None) -> int:
    # SIGTERM (a cluster pre-empting the job, `docker stop`, `kill`, torchrun stopping its workers) ends a command
    # as Ctrl-C does: it killed the process on the spot, its MLflow run RUNNING for ever and train.log silent
    with sigterm_as_interrupt():
        code = _main(argv)
    _flush_stdout()  # what is left after an error already said (a full disk mid-CSV) is dropped, not said again at exit
    return code


def _flush_stdout() -> OSError | None:
    """Standard output's buffer written out now, not as Python exits, where a full disk (`> file` on it) or a
    reader gone (`| true`) was said in two lines of "Exception ignored" and exit 120 → the error of a write that
    failed, or None (also for a reader gone: not an error of ours, as below). What could not be written is
    dropped, so that the exit does not try it again."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError as e:
        _drop_stdout()
        return None if isinstance(e, BrokenPipeError) else e
    except ValueError:  # standard output closed by the command itself: nothing left to write
        pass
    return None


def _drop_stdout() -> None:
    """Standard output pointed at the null device: what its buffer holds is dropped at exit, not written again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _main(argv: list[str] | None) -> int:
    try:  # Ctrl-C while the parser is built is said as in a command
        parser = build_parser(sys.argv[1:] if argv is None else argv)
        # overrides may stand on both sides of a flag (`train --config q.yaml a.b=1 --resume c.d=2`): argparse takes
        # one run of a positional list, so those after a flag come back unparsed and join the list here
        args, rest = parser.parse_known_args(argv)
        if rest:
            if hasattr(args, "overrides") and all(OVERRIDE.match(a) for a in rest):
                args.overrides = [*args.overrides, *rest]
            else:
                parser.parse_args(argv)  # argparse's own error (exit 2) naming what it does not know
        # standard output closed (`>&-`): Python's print wrote nothing and predict's to_csv returned its text,
        # both without an error: the forecasts were lost and the command exited 0
        if sys.stdout is None and (lost := _printed_result(args)):
            instead = " or give --out FILE" if args.command in ("predict", "bench") else ""
            raise ConfigError(f"standard output is closed: {lost} printed there would be lost; redirect it to a file{instead}")
        code = args.func(args)
        if (failed := _flush_stdout()) is not None:
            if code == 0 and (lost := _printed_result(args)):  # the result held nowhere else: not a success
                raise WriteError(f"standard output: cannot write ({io_cause(failed)}): {lost} not written")
            # a command whose results are files (train's summary on a full disk): they stand, the lines are said lost
            print(f"hftraining: warning: standard output: cannot write ({io_cause(failed)}): lines printed there not written",
                  file=sys.stderr)
        return code
    except UserError as e:
        print(f"hftraining: error: {_one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except Terminated:  # `--resume` continues from the last checkpoint, as after Ctrl-C
        print("hftraining: terminated (SIGTERM)", file=sys.stderr)
        return 143  # 128 + SIGTERM, as a shell reports a process that SIGTERM ended
    except KeyboardInterrupt:
        print("hftraining: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout (e.g. `| head`) has gone: not an error of ours
        _drop_stdout()
        return 0
    except Exception as e:  # the file system said no (disk full, permission, read-only): one line, exit 2
        if not is_io_error(e):
            raise
        name = getattr(e, "filename", None)
        print(f"hftraining: error: {_one_line(f'{name}: ' if name else '')}{io_cause(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
