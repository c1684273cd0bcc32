"""The load-time check of a weight decay that zeroes or flips the weights refuses only what no gradient
saves, and gives the same verdict whatever the run's random generator holds; a single value YAML reads
as a boolean or number where a list of text is needed is named with the quotes it needs."""

from __future__ import annotations

import pytest
import torch

from hftraining.core.config import TrainingConfig, config_from_dict, load_config
from hftraining.core.errors import ConfigError
from hftraining.optim import check_compatibility, decay_factor


def _load(training: dict) -> None:
    check_compatibility(config_from_dict({"training": training}).training)


@pytest.mark.parametrize(("lr", "wd"), [(0.01, 0.2), (3e-3, 0.5), (0.1, 0.05)])
def test_adams_decay_divided_by_the_gradients_scale_is_accepted_at_a_usual_rate_and_decay(lr, wd):
    """AdamS multiplies a weight by 1 - lr x wd / RMS(gradient): on the probe's gradient of 1e-3 alone,
    0.01 x 0.2 (a product of 0.002) was refused as a flip of every weight, which a run's gradients decide."""
    _load({"optimizer": "adams", "learning_rate": lr, "weight_decay": wd})
    factor = decay_factor(TrainingConfig(optimizer="adams", learning_rate=lr, weight_decay=wd))
    assert factor is not None and 0.9 < factor < 1


@pytest.mark.parametrize(("optimizer", "lr", "wd"), [("adams", 0.5, 3.0), ("adamw", 0.01, 200.0),
                                                     ("sgd", 0.5, 2.0)])
def test_a_decay_that_flips_the_weights_at_any_gradient_scale_is_still_refused(optimizer, lr, wd):
    with pytest.raises(ConfigError, match=r"^training\.learning_rate/weight_decay: "):
        _load({"optimizer": optimizer, "learning_rate": lr, "weight_decay": wd})


def test_the_measured_decay_does_not_depend_on_the_runs_random_generator():
    """Kron draws random vectors in its first step: the probe with and without the decay drew different
    ones, and the factor (so the verdict near the bound) moved with whatever the generator held."""
    t = TrainingConfig(optimizer="kron", learning_rate=0.01, weight_decay=0.5)
    factors = set()
    for seed in range(4):
        torch.manual_seed(seed)
        state = torch.random.get_rng_state()
        factors.add(decay_factor(t))
        assert torch.equal(torch.random.get_rng_state(), state)  # the run's draws are left as they were
    assert len(factors) == 1 and factors.pop() == pytest.approx(1 - 0.01 * 0.5, abs=1e-4)


@pytest.mark.parametrize(("text", "hint"), [("data:\n  symbols: ON\n", "as a boolean: quote the text"),
                                            ("data:\n  symbols: 1e3\n", "as a number: quote the text")])
def test_one_item_yaml_reads_as_a_boolean_or_number_where_text_items_are_needed_is_named_with_quotes(
        tmp_path, text, hint):
    """``symbols: 1e3`` was told "one item is written as a list too: [1000.0]", a list the next load refused
    as "expected a string, got 1000.0": the fix named was not one."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "data.symbols: expected a list, got " in msg and "\n" not in msg
    assert "one item is written as a list too" in msg and hint in msg
    assert "[1000.0]" not in msg and "[True]" not in msg
    path.write_text(text.replace("ON", '["ON"]').replace("1e3", '["1e3"]'))
    assert load_config(path).data.symbols in (["ON"], ["1e3"])


def test_one_number_where_a_list_of_numbers_is_needed_is_still_shown_as_that_list():
    with pytest.raises(ConfigError, match=r"one item is written as a list too: \[0\.5\]"):
        load_config(None, ["model.quantiles=0.5"])
