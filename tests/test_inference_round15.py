"""The path to production: what an ensemble and a Forecaster serve is what was scored, and a frame, a folder
or a request that cannot be what it claims is a one-line error naming it."""

import json
import shutil

import pandas as pd
import pytest
import torch

from hftraining.core.config import ModelConfig, load_config
from hftraining.core.errors import DataError
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.inference.ensemble import build_ensemble
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model
from test_inference_settled_rows import model_dir  # noqa: F401  (an untrained seeded AEM model: every input shows)


def _tail(symbol: str, n: int) -> pd.DataFrame:
    return pd.read_csv(sample_data_dir() / f"{symbol}.csv").tail(n).reset_index(drop=True)


def test_a_frame_under_one_symbol_whose_symbol_column_names_others_is_refused(model_dir):  # noqa: F811
    """``{"AEM": frame}`` whose ``symbol`` column names other symbols was read as AEM's rows whatever the
    column said: WPM's prices forecast as AEM, or a long frame of AEM and WPM forecast as one symbol "AEM"
    (every date's second row dropped as a duplicate, the forecast from whichever came first). Now a one-line
    DataError naming the key and the symbols of the column; a column equal to the key reads as before."""
    fc = Forecaster.from_pretrained(model_dir)
    aem, wpm = _tail("AEM", 200), _tail("WPM", 200)
    long = pd.concat([wpm.assign(symbol="WPM"), aem.assign(symbol="AEM")], ignore_index=True)
    for frame, named in ((long, "WPM"), (wpm.assign(symbol="WPM"), "WPM"),
                         (aem.assign(symbol=["AEM"] * 100 + ["aem "] * 100), "aem")):
        with pytest.raises(DataError) as e:
            fc.predict({"AEM": frame})
        assert str(e.value).startswith(f"AEM: the frame's 'symbol' column names {named}, not AEM"), str(e.value)
        assert "\n" not in str(e.value)
    want = fc.predict({"AEM": aem})
    got = fc.predict({"AEM": aem.assign(symbol=" AEM")})  # the column equal to the key: the same forecast
    pd.testing.assert_frame_equal(got, want)
    grouped = fc.predict(dict(tuple(long.groupby("symbol"))))  # each symbol's rows under its name
    assert list(grouped.loc[grouped.symbol == "AEM", "forecast_return"]) == pytest.approx(list(want["forecast_return"]), rel=1e-6)


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Three untrained seeded model folders of AEM and WPM sharing one preprocessing: a transformer, another
    transformer and a DLinear (members of different types)."""
    root = tmp_path_factory.mktemp("members")
    cfg = load_config(None, ["data.symbols=[AEM, WPM]", "data.sequence_length=20", "data.prediction_horizon=3"])
    pre = prepare(cfg.data).preprocessing
    out = []
    for k, spec in enumerate([{}, {}, {"type": "dlinear", "moving_avg": 5}]):
        torch.manual_seed(k)
        d = root / f"m{k}"
        build_model(ModelConfig(hidden_size=16, num_heads=2, num_layers=1, **spec), len(pre.feature_columns),
                    pre.horizon, pre.seq_len).save_pretrained(d, preprocessing=pre.to_dict())
        out.append(d)
    return out


def _panel() -> dict[str, pd.DataFrame]:
    return {s: _tail(s, 200) for s in ("AEM", "WPM")}


def test_a_member_whose_files_changed_after_the_ensemble_was_built_is_refused_naming_it(members, tmp_path):
    """An ensemble's weights, validation MSE and intervals are fit on the members it copied. A member whose
    files were replaced since (another model's final/ copied over members/member-0) was loaded and served
    silently, with the old weights and intervals. Now the folder records each member's digest and such a
    member is a one-line DataError naming it, from predict and from the server alike; a folder written
    before the digests were recorded loads as before, and a digest that is not one is refused naming the key."""
    ens = build_ensemble(members[:2], tmp_path / "ens", "median")
    want = Forecaster.from_pretrained(ens).predict(_panel())
    moved = shutil.copytree(ens, tmp_path / "moved" / "ens")  # the whole folder moved: it forecasts as before
    pd.testing.assert_frame_equal(Forecaster.from_pretrained(moved).predict(_panel()), want)
    shutil.copy(members[2] / "model.safetensors", moved / "members" / "member-1" / "model.safetensors")
    shutil.copy(members[2] / "config.json", moved / "members" / "member-1" / "config.json")  # a DLinear now
    with pytest.raises(DataError) as e:
        Forecaster.from_pretrained(moved)
    error = str(e.value)
    assert error.startswith(f"{moved / 'members' / 'member-1'}: its config.json, model.safetensors, "
                            "preprocessing.json are not those the ensemble was built with"), error
    assert "member_digests" in error and "--overwrite" in error and "\n" not in error, error
    pytest.importorskip("fastapi")
    from hftraining.core.config import ServeConfig
    from hftraining.inference.serve import create_app
    with pytest.raises(DataError, match="member-1: its config.json"):
        create_app(moved, ServeConfig())
    meta = json.loads((moved / "ensemble.json").read_text())
    (moved / "ensemble.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "member_digests"}))
    old = Forecaster.from_pretrained(moved).predict(_panel())  # no digests recorded: loads, its member-1 a DLinear
    assert not old["forecast_return"].equals(want["forecast_return"])
    (moved / "ensemble.json").write_text(json.dumps({**meta, "member_digests": ["x", 1]}))
    with pytest.raises(DataError, match=r"ensemble.json: member_digests: expected 2 sha256 digests"):
        Forecaster.from_pretrained(moved)


def test_an_ensemble_whose_member_is_an_ensemble_is_refused_saying_so(members, tmp_path):
    """A member folder that is itself an ensemble (an ensemble folder copied into members/) was refused as
    "no config.json", as if a model's file were missing; `hftraining ensemble` of an ensemble says what it
    is. Now loading it says so too, naming the member, in one line."""
    inner = build_ensemble(members[:2], tmp_path / "inner", "mean")
    outer = build_ensemble([members[0], members[2]], tmp_path / "outer", "mean")
    shutil.rmtree(outer / "members" / "member-1")
    shutil.copytree(inner, outer / "members" / "member-1")
    with pytest.raises(DataError) as e:
        Forecaster.from_pretrained(outer)
    error = str(e.value)
    assert error.startswith(f"{outer / 'members' / 'member-1'}: is an ensemble; members must be single model folders"), error
    assert "\n" not in error
    with pytest.raises(DataError, match="inner: is an ensemble; members must be single model folders"):
        build_ensemble([members[0], inner], tmp_path / "again")


def test_a_folder_s_unread_files_are_among_the_warnings_a_caller_gathers(model_dir, tmp_path):  # noqa: F811
    """``Forecaster.predict(folder, warnings=w)`` of a folder holding a symbol's prices in a file the readers
    do not take (XPO.csv.zip) forecast the other symbols and left ``w`` empty: the line naming the file went
    to the log alone, as if every symbol sent had been forecast. Now it is in ``w`` too, once; without
    ``warnings`` it is logged once, as before."""
    import gzip
    import logging

    (tmp_path / "AEM.csv").write_text(_tail("AEM", 200).to_csv(index=False))
    (tmp_path / "XPO.csv.zip").write_bytes(gzip.compress(_tail("XPO", 200).to_csv(index=False).encode()))
    fc = Forecaster.from_pretrained(model_dir)
    w: list[str] = []
    table = fc.predict(str(tmp_path), warnings=w)
    assert set(table["symbol"]) == {"AEM"}
    unread = [line for line in w if "XPO.csv.zip: not read" in line]
    assert len(unread) == 1, w
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    h = Keep(logging.WARNING)
    logging.getLogger("hftraining").addHandler(h)
    try:
        fc.predict(str(tmp_path))
    finally:
        logging.getLogger("hftraining").removeHandler(h)
    assert sum("XPO.csv.zip: not read" in m for m in seen) == 1, seen
