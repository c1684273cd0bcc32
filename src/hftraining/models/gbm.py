"""LightGBM on the same inputs as ridge (:mod:`hftraining.models.ridge`): the last row's scaled
features and the target's recent 1-step returns, one gradient-boosted model per forecast step,
each early-stopped on the validation windows. In Qlib's CSI300/Alpha158 benchmark LightGBM reaches
IC 0.045 against the Transformer's 0.026: the bar a deep model has to clear.

Persistence without pickle: each step's booster is LightGBM's own text model format, kept as the
UTF-8 bytes of a uint8 buffer, so the model folder is ``config.json`` + ``model.safetensors`` like
any other and loads through :meth:`ForecastModel.from_pretrained`. Prediction runs the boosters on
the CPU inside the one batched forward; there is no ONNX graph for it (export says so).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hftraining.core.config import ModelConfig
from hftraining.core.errors import ConfigError
from hftraining.data.windows import WindowSet
from hftraining.models.outputs import ForecastOutput
from hftraining.models.registry import MODELS
from hftraining.models.ridge import RidgeForecaster

if TYPE_CHECKING:
    import lightgbm as lgb


def _lgb():
    """The lightgbm module, imported where a booster is fitted or loaded: registering the model type (every
    ``import hftraining.models``, `hftraining list models`) does not pay for it."""
    import lightgbm

    return lightgbm

# fixed, not settings: a fixed thread count and seed keep a fit reproducible on any machine
# (the model's settings are model.lightgbm_* in the config tree)
FIXED: dict[str, Any] = {
    "objective": "regression", "bagging_freq": 1, "num_threads": 2, "seed": 0, "deterministic": True,
    "force_row_wise": True, "verbosity": -1,
}


LIMITS = {"lightgbm_num_leaves": 131_072, "lightgbm_min_data_in_leaf": 2**31 - 1, "lightgbm_rounds": 2**31 - 1,
          "lightgbm_rounds_without_validation": 2**31 - 1}
"""The most LightGBM takes of each ``model.lightgbm_*`` setting (its own checks, and the C++ int of the round count
and the leaf size): past them ``lgb.train`` raised "Check failed" at the fit, after the run's features were built."""


def lightgbm_params(cfg: ModelConfig) -> dict[str, Any]:
    """LightGBM's parameters for ``cfg``: its ``lightgbm_*`` settings and the :data:`FIXED` ones."""
    return {
        "learning_rate": cfg.lightgbm_learning_rate, "num_leaves": cfg.lightgbm_num_leaves,
        "min_data_in_leaf": cfg.lightgbm_min_data_in_leaf, "feature_fraction": cfg.lightgbm_feature_fraction,
        "bagging_fraction": cfg.lightgbm_bagging_fraction, "lambda_l2": cfg.lightgbm_lambda_l2, **FIXED,
    }


_INTERNAL = ("split_feature", "split_gain", "threshold", "decision_type", "left_child", "right_child",
             "internal_value", "internal_weight", "internal_count")  # one value per split: num_leaves - 1
_LEAF = ("leaf_value", "leaf_weight", "leaf_count")  # one value per leaf
_INTS = ("split_feature", "decision_type", "left_child", "right_child", "internal_count", "leaf_count")
# the numbers as LightGBM writes them and reads them back: Python's int/float also read "0_1", "0.1e1", "١"
# (Arabic-Indic one) or a tab or NBSP between values, which LightGBM's parser reads as other numbers (a root
# whose left child LightGBM reads as 0 loops for ever at the first forecast) or ends the process on
_INT_LINE = re.compile(r"(?:-?[0-9]+(?: -?[0-9]+)*)?")  # one space apart, as LightGBM writes them
# with these characters only (no "_"), what float() reads is a decimal number, nan, inf or infinity: as LightGBM
_FLOAT_CHARS = re.compile(r"[-+.0-9eEnNaAiIfFtTyY ]*")


def _numbers(key: str, value: str) -> list[float] | list[int]:
    """The numbers of ``key=value`` in a tree block, one space apart, each in a form LightGBM reads as Python
    does (an integer array: digits only, read as ints); ValueError naming the key and what is not such a number."""
    tokens = value.split(" ") if value else []
    if key in _INTS or key == "num_leaves":
        if not _INT_LINE.fullmatch(value):
            raise ValueError(f"{key} holds {value[:40]!r}: not integers one space apart, as LightGBM writes them")
        return [int(token) for token in tokens]
    try:
        if not _FLOAT_CHARS.fullmatch(value):
            raise ValueError
        return [float(token) for token in tokens]  # an empty token (two spaces) is a ValueError too
    except ValueError:
        raise ValueError(f"{key} holds {value[:40]!r}: not numbers one space apart, as LightGBM writes them") from None


def check_booster_text(text: str, width: int) -> None:
    """Raise ValueError (naming what is wrong) unless ``text`` is a LightGBM text model of one
    regression tree per iteration over ``width`` inputs whose trees are whole: ``tree_sizes`` match
    the tree blocks, every array has the length ``num_leaves`` gives, every child and feature index
    is in range and the children make a tree (:func:`_check_tree_shape`), the text is printable ASCII
    and every number is written as LightGBM writes it (:func:`_numbers`: one LightGBM reads as another
    number made the tree checked here not the tree it walks), every leaf value is finite. LightGBM's own
    parser ends the whole process (a C++ fatal error, SIGABRT) on a malformed tree instead of raising,
    so a model folder's booster is read here first: a damaged or hostile folder is then a one-line
    error like any other.
    A leaf value is what a forecast adds up: a NaN or an infinity there (which LightGBM parses) made
    every window reaching that leaf forecast NaN or ±inf, where any other model's folder with such a
    weight is refused (:func:`hftraining.models.folder.load_weights`)."""
    odd = re.search(r"[^\n\x20-\x7e]", text)
    if odd:  # LightGBM writes printable ASCII lines; it splits lines and values on other characters than Python
        raise ValueError(f"character {odd.group()!r} at offset {odd.start()}: LightGBM writes none")
    start, end = text.find("\nTree="), text.find("\nend of trees")
    if start < 0 or end < start:
        raise ValueError("no trees (or no 'end of trees')")
    head = dict(line.split("=", 1) for line in text[:start].splitlines() if "=" in line)
    if head.get("num_class") != "1" or head.get("num_tree_per_iteration") != "1":
        raise ValueError("not a one-output regression model")
    if head.get("max_feature_idx") != str(width - 1):
        raise ValueError(f"trained on {head.get('max_feature_idx', '?')}+1 inputs, the model has {width}")
    blocks = re.split(r"(?<=\n)(?=Tree=)", text[start + 1:end + 1])  # each block with its blank lines, as sized
    sizes = head.get("tree_sizes", "").split()
    if [len(b.encode("utf-8")) for b in blocks] != [int(x) if x.isdigit() else -1 for x in sizes]:
        raise ValueError("tree_sizes does not match its trees")
    for k, block in enumerate(blocks):
        f = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        try:
            (n,) = _numbers("num_leaves", f["num_leaves"])
            arrays = {key: _numbers(key, f[key]) for key in (*_INTERNAL, *_LEAF) if key in f}
            _numbers("shrinkage", f.get("shrinkage", "1"))  # LightGBM reads it too (and ends the process on "x")
        except (KeyError, ValueError) as e:
            raise ValueError(f"tree {k}: unreadable ({e})") from None
        want = {**{key: n - 1 for key in _INTERNAL}, **{key: n for key in _LEAF}}
        if n == 1 and arrays.get("leaf_weight") == []:  # LightGBM writes no weight for a tree of one leaf
            del arrays["leaf_weight"]
        # num_cat is required: LightGBM ends the process on a tree without it
        if n < 1 or f.get("num_cat") != "0" or f.get("is_linear", "0") != "0" or "leaf_value" not in arrays:
            raise ValueError(f"tree {k}: not a plain tree of num_leaves >= 1")
        for key, values in arrays.items():
            if len(values) != want[key] or (key in _INTS and any(v != int(v) for v in values)):
                raise ValueError(f"tree {k}: {key} has {len(values)} values, num_leaves={n} needs {want[key]}")
        if not all(math.isfinite(v) for v in arrays["leaf_value"]):
            raise ValueError(f"tree {k}: leaf_value holds NaN or infinite values")
        if n > 1 and (any(key not in arrays for key in _INTERNAL[:6])
                      or any(not -n <= c <= n - 2 for c in arrays["left_child"] + arrays["right_child"])
                      or any(not 0 <= j < width for j in arrays["split_feature"])):
            raise ValueError(f"tree {k}: a split or child index out of range")
        if n > 1:
            _check_tree_shape(k, n, arrays["left_child"], arrays["right_child"])


def _check_tree_shape(k: int, n: int, left: list[int], right: list[int]) -> None:
    """Raise ValueError unless the child indices of tree ``k`` (``n`` leaves) make a tree: from the root
    every split and every leaf is reached exactly once. Indices in range are not enough: a child that points
    back to a split above it (``left_child=0`` at the root) made LightGBM walk that loop for ever at the
    first forecast, so ``predict`` and ``serve`` hung instead of refusing the folder; two splits sharing a
    child is no tree LightGBM writes either."""
    seen_split, seen_leaf, todo = [False] * (n - 1), [False] * n, [0]
    seen_split[0] = True
    while todo:
        node = todo.pop()
        for child in (int(left[node]), int(right[node])):
            seen, at = (seen_split, child) if child >= 0 else (seen_leaf, ~child)
            if seen[at]:
                what = f"split {at}" if child >= 0 else f"leaf {at}"
                raise ValueError(f"tree {k}: {what} is reached twice (its child indices make no tree)")
            seen[at] = True
            if child >= 0:
                todo.append(child)
    if not (all(seen_split) and all(seen_leaf)):
        raise ValueError(f"tree {k}: a split or leaf is never reached (its child indices make no tree)")


@MODELS.register("lightgbm")
class LightGBMForecaster(RidgeForecaster):
    """LightGBM per forecast step on the last row's features and the recent returns, early-stopped on validation."""

    exportable = False
    settings = frozenset({"ridge_lags", "lightgbm_learning_rate", "lightgbm_num_leaves", "lightgbm_min_data_in_leaf",
                          "lightgbm_feature_fraction", "lightgbm_bagging_fraction", "lightgbm_lambda_l2",
                          "lightgbm_rounds", "lightgbm_early_stopping", "lightgbm_rounds_without_validation"})
    fitted_how = "by gradient boosting (early-stopped on the validation windows)"  # said in the training log

    @classmethod
    def check_run_settings(cls, cfg: ModelConfig, horizon: int, seq_len: int) -> None:
        """Ridge's check of ``model.ridge_lags``, and a ``model.lightgbm_*`` setting past what LightGBM takes
        (:data:`LIMITS`) is a ConfigError naming it, before the run reads its data."""
        super().check_run_settings(cfg, horizon, seq_len)
        for key, most in LIMITS.items():
            if getattr(cfg, key) > most:
                raise ConfigError(f"model.{key}: LightGBM takes at most {most:,}, got {getattr(cfg, key):,}")

    def __init__(self, cfg: ModelConfig, n_features: int, horizon: int, seq_len: int):
        _lgb()  # a missing lightgbm is said when the model is built (the run's first check), not at its fit
        super().__init__(cfg, n_features, horizon, seq_len)
        del self.weight, self.penalty  # ridge's state; a booster per step instead
        self.boosters: list[lgb.Booster] = []
        for h in range(horizon):
            self.register_buffer(f"booster_{h}", torch.zeros(0, dtype=torch.uint8))

    def _design_matrix(self, ws: WindowSet) -> tuple[np.ndarray, np.ndarray]:
        parts, ys = [], []
        for a, y in self.design_batches(ws):
            parts.append(a[:, :-1].double().numpy())  # no bias column
            ys.append(y.double().numpy())
        return np.concatenate(parts), np.concatenate(ys)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, past: torch.Tensor | None = None) -> ForecastOutput:
        if not self.boosters:
            raise RuntimeError("lightgbm: the model has not been fitted")
        a = self.design(x, mask, past)[:, :-1].detach().double().cpu().numpy()
        pred = np.stack([bst.predict(a, num_threads=1) for bst in self.boosters], axis=1)  # (B, H)
        return ForecastOutput(prediction=torch.from_numpy(pred).to(x.device, torch.float32))

    @torch.no_grad()
    def fit_windows(self, train: WindowSet, val: WindowSet) -> dict[str, float]:
        """One booster per step on ``train``, early-stopped on ``val`` (a fixed number of rounds
        without validation windows) → {"rounds": mean rounds kept, "splits": splits in all the kept
        trees, "val_mse", "bagging_fraction": the share of the windows a round drew} (scaled units). The
        training log prints them: 0 splits is a model whose every tree is one leaf, one constant forecast
        per step whatever the window (a ``model.lightgbm_min_data_in_leaf`` more than half the windows a
        round draws). A round draws ``model.lightgbm_bagging_fraction`` of the training windows, at least
        one (the setting raised, and the log says so by the fraction drawn)."""
        lgb = _lgb()
        train, val = train.on_device("cpu"), val.on_device("cpu")  # LightGBM fits on the host
        A, Y = self._design_matrix(train)
        Av, Yv = self._design_matrix(val) if len(val) else (None, None)
        self.boosters, rounds, splits, se = [], [], 0, 0.0
        c = self.cfg
        params = lightgbm_params(c)
        if int(params["bagging_fraction"] * len(A)) < 1:
            # LightGBM bags int(fraction × windows) windows a round, and none (fewer windows than 1 / fraction: one
            # training window at the default 0.8, evaluation.baseline_max_windows=1) failed the fit with "Check
            # failed: (num_data) > (0)". A fraction of the windows, at least one: 1.5 / n bags int(1.5) = 1 whatever
            # the rounding of the product (1 / n × n can fall just below 1)
            params["bagging_fraction"] = min(1.0, 1.5 / len(A))
        # the design matrix is binned once for all steps (the same boosters as a Dataset per step); only
        # the label changes. With its raw data freed, a Dataset lgb.train would have to bin again (a
        # setting that changes the binning) is an error, not a silent rebuild per step.
        dtrain = lgb.Dataset(A, Y[:, 0], params=params, free_raw_data=True).construct()
        dval = lgb.Dataset(Av, Yv[:, 0], reference=dtrain, params=params, free_raw_data=True).construct() \
            if Av is not None else None
        for h in range(self.horizon):
            dtrain.set_label(Y[:, h])
            if dval is None:
                bst = lgb.train(params, dtrain, num_boost_round=c.lightgbm_rounds_without_validation)
            else:
                dval.set_label(Yv[:, h])
                bst = lgb.train(params, dtrain, num_boost_round=c.lightgbm_rounds, valid_sets=[dval],
                                callbacks=[lgb.early_stopping(c.lightgbm_early_stopping, verbose=False)])
                se += float(((bst.predict(Av, num_iteration=bst.best_iteration) - Yv[:, h]) ** 2).sum())
            text = bst.model_to_string(num_iteration=bst.best_iteration or None)
            self.boosters.append(lgb.Booster(model_str=text))
            setattr(self, f"booster_{h}", torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8))
            rounds.append(self.boosters[-1].current_iteration())
            splits += sum(int(n) - 1 for n in re.findall(r"^num_leaves=(\d+)$", text, re.M))  # a tree of n leaves: n - 1
        return {"rounds": float(np.mean(rounds)), "splits": float(splits),
                "val_mse": se / Yv.size if Av is not None else float("nan"),
                "bagging_fraction": float(params["bagging_fraction"])}

    def variable_shape_keys(self) -> frozenset[str]:
        return frozenset(f"booster_{h}" for h in range(self.horizon))  # each booster's text has its own length

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: D102 (nn.Module's)
        # the boosters' text has its own length: take the saved buffers as they are, then parse them
        for h in range(self.horizon):
            key = f"booster_{h}"
            if key not in state_dict:
                raise KeyError(f"lightgbm: {key} missing from the saved state")
            setattr(self, key, state_dict[key].to(torch.uint8).contiguous())
        texts = [bytes(getattr(self, f"booster_{h}").numpy()).decode("utf-8") for h in range(self.horizon)]
        for h, text in enumerate(texts):  # before LightGBM parses it (its parser aborts the process)
            try:
                check_booster_text(text, self.n_features + self.lags)  # the design matrix without its bias column
            except ValueError as e:
                raise ValueError(f"booster_{h}: {e}") from None
        self.boosters = [_lgb().Booster(model_str=text) for text in texts]
