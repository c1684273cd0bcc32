"""A model is given bars of the frequency it trained on: new data spaced otherwise (minute bars to a
model of daily bars) is named in a warning, since every feature and the horizon would span other periods."""

import logging

import pytest

from hftraining.data.synth import synth_ohlcv
from hftraining.inference.forecaster import Forecaster
from test_inference_serve import make_model


@pytest.fixture(scope="module")
def daily_model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("m") / "model")


def _warned(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "bars are" in r.getMessage()]


def test_daily_model_given_minute_bars_says_so(daily_model, caplog):
    f = Forecaster.from_pretrained(daily_model)
    assert f.preprocessing.bar_seconds == pytest.approx(86_400)  # the bundled data: daily bars
    caplog.set_level(logging.WARNING, logger="hftraining")
    f.predict({"AEM": synth_ohlcv(300, freq="min")})
    said = _warned(caplog)
    assert len(said) == 1 and "1 minute apart" in said[0] and "1 day apart" in said[0], said


def test_daily_model_given_daily_bars_says_nothing(daily_model, caplog):
    caplog.set_level(logging.WARNING, logger="hftraining")
    Forecaster.from_pretrained(daily_model).predict({"AEM": synth_ohlcv(300, freq="B")})
    assert _warned(caplog) == []
