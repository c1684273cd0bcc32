"""``Forecasts.concat`` pools quantile forecasts as it pools intervals: kept when every part has them
at the same levels, refused with the parts' levels named when they differ, never dropped silently."""

import numpy as np
import pytest

from hftraining.eval.forecasts import Forecasts


def _forecasts(n: int, levels: list[float] | None, seed: int) -> Forecasts:
    """A hand-made Forecasts of ``n`` windows × 2 steps, with quantiles at ``levels`` (None: none)."""
    rng = np.random.default_rng(seed)
    true = rng.normal(0, 0.01, (n, 2))
    q = None if levels is None else true[:, :, None] + rng.normal(0, 0.01, (n, 2, len(levels)))
    return Forecasts(pred={"model": true + rng.normal(0, 0.01, (n, 2)), "zero": np.zeros((n, 2))}, true=true,
                     dates=np.arange(n, dtype=np.int64) + 1000 * seed, symbol_ids=np.zeros(n, dtype=np.int64),
                     symbols=["AEM"], last_return=rng.normal(0, 0.01, n), past_vol=np.full(n, 0.01),
                     last_close=np.full(n, 10.0), quantiles=q, levels=list(levels or []))


def test_pooled_parts_keep_their_quantiles_or_say_why_not():
    """Parts whose quantile levels differed were pooled without any quantiles and without a word (the
    pooled pinball loss and coverage vanished from the scores); intervals that differ already raise."""
    a, b = _forecasts(4, [0.1, 0.9], 1), _forecasts(3, [0.1, 0.9], 2)
    pooled = Forecasts.concat([a, b])
    assert pooled.levels == [0.1, 0.9] and np.array_equal(pooled.quantiles, np.concatenate([a.quantiles, b.quantiles]))
    none = Forecasts.concat([_forecasts(4, None, 1), _forecasts(3, None, 2)])
    assert none.quantiles is None and none.levels == []
    with pytest.raises(ValueError, match=r"quantiles differ \(part 1: levels 0\.1, 0\.9; part 2: levels 0\.1, 0\.5, 0\.9\)"):
        Forecasts.concat([a, _forecasts(3, [0.1, 0.5, 0.9], 2)])
    with pytest.raises(ValueError, match=r"quantiles differ \(part 1: levels 0\.1, 0\.9; part 2: none\)"):
        Forecasts.concat([a, _forecasts(3, None, 2)])
