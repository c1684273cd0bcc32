"""Which folder holds what: run folders, model folders and ensemble folders."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from hftraining.core.config import TrainingConfig, resolved_precision, section_from_dict
from hftraining.core.errors import ConfigError, DataError
from hftraining.core.files import ENSEMBLE_NAME
from hftraining.data.io import link_chain
from hftraining.models import folder
from hftraining.models.base import CONFIG_NAME as MODEL_CONFIG
from hftraining.models.base import WEIGHTS_NAME as MODEL_WEIGHTS


FITTED_BASELINES_DIR = "baselines"
"""The folder of a run (or of an ensemble of runs' models) that holds the fitted baselines it is scored
against, one model folder each (``baselines/ridge/``, ``baselines/lightgbm/``)."""


RUN_MARKS = (FITTED_BASELINES_DIR, "data_report.json", "checkpoints", "eval.json")
"""What a training run writes beside its ``final/``: a folder holding ``final/`` and any of them is a run folder."""


def is_ensemble(directory: str | Path) -> bool:
    return (Path(directory) / ENSEMBLE_NAME).exists()


def resolve_model_dir(path: str | Path) -> Path:
    """A run folder (uses its ``final/`` or ``ensemble/``), a model folder or an ensemble folder."""
    p = Path(path)
    if (p / "final" / MODEL_CONFIG).exists():
        return p / "final"
    if is_ensemble(p):
        return p
    if is_ensemble(p / "ensemble"):  # the run folder of ``train --seeds N``
        return p / "ensemble"
    if (p / MODEL_CONFIG).exists() and (p / MODEL_WEIGHTS).exists():
        return p
    if not p.exists():
        _not_a_link_loop(p)
        raise DataError(f"{p}: no such run or model folder")
    if any((p / "checkpoints").glob("step-*")):  # a run stopped before its end: nothing to forecast with yet
        raise DataError(f"{p}: an unfinished run (checkpoints/, no final/): finish it with `hftraining train` "
                        "and --resume, then give the run folder")
    if p.is_dir() and any(c.is_dir() and c.name.startswith("seed-") and c.name[5:].isdigit() for c in p.iterdir()):
        raise DataError(f"{p}: the folder of a `train --seeds` run without ensemble/ (one seed, or stopped before the "
                        "ensemble was built): give one of its seed-<k>/ folders, or finish it with --resume")
    if (p / "trainer_state.json").exists() and p.name.startswith("step-"):
        raise DataError(f"{p}: a training checkpoint, not a model folder: give the run folder once the run is "
                        "finished (its final/)")
    raise DataError(
        f"{p}: neither a run folder (with final/), a model folder ({MODEL_CONFIG} + {MODEL_WEIGHTS}) "
        f"nor an ensemble folder ({ENSEMBLE_NAME})"
    )


def check_training_data(spec: Any, where: str, remedy: str) -> None:
    """The training data of a model, read again from its recorded ``data.data_dir`` ``spec``, must be
    there: a relative path is read from the current folder, so from another one the one-line DataError
    says where the path came from (``where``: its preprocessing.json) and what to do (``remedy``),
    where the reader's own error would name a path the user never typed."""
    if not isinstance(spec, str) or any(ch in spec for ch in "*?[") or Path(spec).exists():
        return  # the bundled sample (None), a list or a glob: read (and refused) as training read them
    raise DataError(f"{where}: data.data_dir={spec} (the data the model was trained on) is not there"
                    + (f" from {Path.cwd()}" if not Path(spec).is_absolute() else "") + f"; {remedy}")


def run_folder(path: str | Path) -> Path | None:
    """The run folder of a run path or of a run's ``final/`` (the one holding config.json and final/),
    or None. Only ``final/`` is a run's own model: any other folder inside a run folder (an ensemble
    written there with ``ensemble --out <run>/x``, a copied model) is not that run's, and evaluating it
    with the run's config.json, fitted baselines and report place would score it as another model. A link
    to a run's ``final/`` is that run's: its precision, settings and fitted baselines, as the path it names.
    A run folder (:data:`RUN_MARKS` beside ``final/``) without its config.json is a DataError."""
    p = Path(path)
    if p.name in ("", ".."):  # "." or "..": the folder itself, whose name tells a run's final/ from a bare folder
        p = p.resolve()
    if p.is_symlink():  # a link to a run's final/ (current -> runs/x/final) is that run's model, not a bare folder
        p = _link_target(p)
    for cand in ((p, p.parent) if p.name == "final" else (p,)):
        if (cand / "final").is_dir() and (cand / "config.json").exists():
            return cand
        if (cand / "final").is_dir() and any((cand / name).exists() for name in RUN_MARKS):
            # read as a bare model, it would drop the run's evaluation settings and fitted baselines
            raise DataError(f"{cand}: a run folder without config.json; restore it, or copy final/ out to use it as a "
                            "model folder")
    return None


def _not_a_link_loop(p: Path) -> None:
    """A DataError for a model path ``p`` that is a link leading back into itself (``a -> b -> a``, a link to
    itself), with its chain of links: there is no folder to restore, where "no such run or model folder" said so."""
    chain = link_chain(p)
    if chain[-1].is_symlink():  # back at a link of the chain, or too many links to follow (the system's ELOOP)
        raise DataError(f"{p}: a link loop ({' -> '.join(map(str, chain))}): point the link at the model folder "
                        "itself, or remove it")


def _link_target(p: Path) -> Path:
    """The folder the link ``p`` leads to; a link loop is a DataError naming ``p`` (``resolve`` raised
    ``RuntimeError: Symlink loop`` before Python 3.13, and leaves a loop unresolved since)."""
    _not_a_link_loop(p)
    try:
        return p.resolve()
    except (OSError, RuntimeError) as e:  # a loop further on, in a folder of the path a link names
        if isinstance(e, OSError) and e.errno != errno.ELOOP:
            raise
        raise DataError(f"{p}: a link into a link loop ({p} -> {p.readlink()}): point the link at the model folder "
                        "itself, or remove it") from None


def baselines_dir(path: str | Path) -> Path | None:
    """Where the fitted baselines of the model of ``path`` are: ``<run>/baselines/`` of a run (or its
    ``final/``), ``<ensemble>/baselines/`` of an ensemble folder (copied from its members' run by
    :func:`~hftraining.inference.ensemble.build_ensemble`); None for a bare model folder."""
    run = run_folder(path)
    if run is not None:
        return run / FITTED_BASELINES_DIR
    d = resolve_model_dir(path)
    return d / FITTED_BASELINES_DIR if is_ensemble(d) else None


def run_section(path: str | Path, section: type, name: str) -> dict[str, Any]:
    """The keys of section ``name`` (dataclass ``section``) in the config.json of the run folder of
    ``path`` ({} for a bare model folder). A config written by an older version may lack newer keys
    (their defaults apply); keys this version does not know are left out."""
    run = run_folder(path)
    if run is None:
        return {}
    # untrusted like the model folder: read bounded, as a regular file inside the run folder
    cfg = folder.read_json(run, "config.json")
    if not isinstance(cfg, dict):
        raise ConfigError(f"{run / 'config.json'}: cannot read (expected a JSON object)")
    raw = cfg.get(name) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{run / 'config.json'}: {name}: expected a mapping of keys, got {type(raw).__name__}")
    return {k: v for k, v in raw.items() if k in section.__dataclass_fields__}


def run_config_section(path: str | Path, section: type, name: str) -> Any:
    """Section ``name`` (dataclass ``section``) of the config.json of the run folder of ``path``, checked
    (the defaults for a bare model folder); a bad value is a ConfigError naming the file and the key."""
    run = run_folder(path)
    where = f"{run / 'config.json'}: {name}" if run is not None else name
    return section_from_dict(section, run_section(path, section, name), where)


def run_precision(path: str | Path) -> str:
    """The autocast precision the run of ``path`` trained and scored its test split with (fp32 for a
    bare model folder): forecasting in it reproduces the forecasts eval.json scored. An ensemble
    folder records its members' in its ensemble.json (:func:`hftraining.inference.ensemble.load_ensemble`), and
    a member folder of one (``<ensemble>/members/member-<k>``, not a run's) forecasts in the precision that
    ensemble recorded (:func:`hftraining.inference.ensemble.member_precision`, which predict, serve and export use)."""
    return resolved_precision(run_config_section(path, TrainingConfig, "training"))
