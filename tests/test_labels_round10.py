"""The equal-weight universe's log return, log(mean exp(r)), under a return whose exp overflows: every
excess-return label of that date read −inf (a realisation no forecast is scored against) and the market
features skipped the date. Computed about the date's largest return, the other dates bit for bit."""
import numpy as np
from scipy.special import logsumexp

from hftraining.data.features import market_columns
from hftraining.data.labels import row_labels, universe_return

DAY = 86_400 * 10**9


def test_a_date_whose_exp_overflows_has_finite_excess_returns_equal_to_log_sum_exp():
    r = np.array([800.0, 0.0, 0.0, 0.01, -0.02, 0.03])  # a close multiplied by e^800 in one bar, then a normal date
    times = np.repeat([1, 2], 3) * DAY
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow, not even a warning
        labels = row_labels(r, times, "excess_return")
    want = r[:3] - (logsumexp(r[:3]) - np.log(3))
    assert np.isfinite(labels).all()
    np.testing.assert_allclose(labels[:3], want, rtol=1e-6)
    # the other date: the plain sum, exactly as before
    assert universe_return(r, np.repeat([0, 1], 3))[1] == np.log(np.exp(r[3:]).sum() / 3)


def test_the_market_features_count_an_overflowing_date_instead_of_skipping_it():
    # its universe return was +inf, which pandas' rolling sums skip as a missing value: MKT_RET5 of that
    # date read the sum of the four dates before it, as if the universe had not moved
    rng = np.random.default_rng(0)
    r = rng.normal(0, 0.01, (30, 4))
    r[10, 2] = 750.0
    times = np.repeat(np.arange(30) * DAY, 4)
    cols = market_columns(r.reshape(-1), times, windows=(5,))
    daily = [logsumexp(r[d]) - np.log(4) for d in range(30)]
    np.testing.assert_allclose(cols["MKT_RET5"][10 * 4], sum(daily[6:11]), rtol=1e-9)
    assert np.isfinite(cols["MKT_RET5"]).all() and np.isfinite(cols["MKT_STD5"]).all()
