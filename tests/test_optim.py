"""Optimizer registry, GPro, Sophia wiring and optimizer-state persistence (table-driven)."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from hftraining.core.config import TrainingConfig
from hftraining.core.errors import ConfigError
from hftraining.optim import (
    OPTIMIZERS,
    GPro,
    Sophia,
    build_optimizer,
    check_compatibility,
    hessian_context,
    needs_create_graph,
    optimizer_names,
    optimizer_state_from_flat,
    optimizer_state_to_flat,
    param_groups,
    set_train_mode,
)

# Learning rate and extra kwargs per optimizer for the small regression problem below.
OURS = {
    "adafactor": (3e-2, {}),
    "adamw": (3e-2, {}),
    "adan": (3e-2, {}),
    "gpro": (3e-2, {}),
    "lamb": (3e-2, {}),
    "lion": (3e-3, {}),
    "sgd": (3e-2, {}),
    "sophia": (3e-2, {"update_period": 2}),
}
# A few of pytorch-optimizer's, reached by name only.
LIBRARY = {
    "ScheduleFreeAdamW": (3e-2, {}),
    "prodigy": (1.0, {}),
    "soap": (3e-2, {}),
    "muon": (3e-2, {"adamw_lr": 3e-2}),
}


def make_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 8, generator=g)
    y = torch.tanh(x @ torch.randn(8, 1, generator=g)) + 0.5
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.LayerNorm(32), nn.Tanh(), nn.Linear(32, 1))
    return model, x, y


def train_steps(model, opt, x, y, steps, start=0, bf16=False, clip=1.0):
    """The trainer's order: backward (create_graph when asked), clip, step, zero_grad."""
    losses = []
    for step in range(start, start + steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = ((model(x).float() - y) ** 2).mean()
        loss.backward(create_graph=needs_create_graph(opt, step))
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def config(name, lr, kwargs):
    return TrainingConfig(optimizer=name, learning_rate=lr, optimizer_kwargs=dict(kwargs), weight_decay=0.01)


def test_table_covers_every_registered_optimizer():
    assert sorted(OURS) == OPTIMIZERS.names()


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", list(OURS) + list(LIBRARY))
def test_reduces_loss(name, bf16):
    lr, kwargs = {**OURS, **LIBRARY}[name]
    model, x, y = make_problem()
    opt = build_optimizer(model, config(name, lr, kwargs))
    set_train_mode(opt, True)
    losses = train_steps(model, opt, x, y, 40, bf16=bf16)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0], losses[::8]


def _roundtrip(state_dict):
    tensors, meta = optimizer_state_to_flat(state_dict)
    tensors = st_load(st_save(tensors))  # through the safetensors format, as the checkpointer writes it
    meta = json.loads(json.dumps(meta, allow_nan=False))
    return optimizer_state_from_flat(tensors, meta)


@pytest.mark.parametrize("name", list(OURS) + ["ScheduleFreeAdamW", "muon"])
def test_state_roundtrip_resumes_exactly(name):
    lr, kwargs = {**OURS, **LIBRARY}[name]
    cfg = config(name, lr, kwargs)
    model, x, y = make_problem()
    opt = build_optimizer(model, cfg)
    set_train_mode(opt, True)
    train_steps(model, opt, x, y, 4)  # sophia: the next step (4) refreshes the Hessian

    resumed = copy.deepcopy(model)
    opt2 = build_optimizer(resumed, cfg)
    opt2.load_state_dict(_roundtrip(opt.state_dict()))
    set_train_mode(opt2, True)

    torch.manual_seed(123)  # Sophia's Hutchinson probe vectors
    train_steps(model, opt, x, y, 1, start=4)
    torch.manual_seed(123)
    train_steps(resumed, opt2, x, y, 1, start=4)
    moved = False
    for a, b, before in zip(model.parameters(), resumed.parameters(), make_problem()[0].parameters()):
        assert torch.equal(a, b)
        moved |= not torch.equal(a, before)
    assert moved


def test_flat_state_keeps_types_without_pickle():
    sd = {
        "state": {0: {"step": torch.tensor(3.0), "buf": [torch.ones(2), torch.zeros(1, 2)]}},
        "param_groups": [{"params": [0], "betas": (0.9, 0.99), "dtype": torch.bfloat16, "clip": float("inf"), "name": None}],
    }
    back = _roundtrip(sd)
    assert back["param_groups"][0]["betas"] == (0.9, 0.99)
    assert back["param_groups"][0]["dtype"] is torch.bfloat16
    assert back["param_groups"][0]["clip"] == float("inf")
    assert list(back["state"]) == [0]
    assert torch.equal(back["state"][0]["buf"][1], torch.zeros(1, 2))
    with pytest.raises(TypeError):
        optimizer_state_to_flat({"state": {0: {"f": object()}}, "param_groups": []})


def test_flat_state_separates_shared_memory():
    base = torch.arange(6.0)
    tensors, _ = optimizer_state_to_flat({"state": {0: {"a": base, "b": base.view(2, 3)}}, "param_groups": []})
    st_load(st_save(tensors))  # safetensors refuses tensors that share memory


# ---------------------------------------------------------------------------------------------
# GPro against a hand computation


def gpro_reference(p0, grads, lr, b1, b2, eps, wd, rho, projection, amsgrad):
    p = np.array(p0, dtype=np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    vmax = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, dtype=np.float64)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        vhat = (vmax if amsgrad else v) / (1 - b2**t)
        u = (m / (1 - b1**t)) / (np.sqrt(vhat) + eps)
        size = np.sqrt(np.mean(u * u)) if projection == "rms" else np.sqrt(np.sum(u * u))
        if size > rho:
            u = u * rho / size
        p = p * (1 - lr * wd) - lr * u
    return p


GPRO_CASES = [
    dict(projection="rms", rho=None, amsgrad=False),  # default ρ = 1: inactive on this problem
    dict(projection="rms", rho=0.6, amsgrad=False),
    dict(projection="rms", rho=0.6, amsgrad=True),
    dict(projection="frobenius", rho=None, amsgrad=False),  # default ρ = 0.5
    dict(projection="frobenius", rho=2.0, amsgrad=True),
]


@pytest.mark.parametrize("impl", ["numba", "fused", "foreach"])
@pytest.mark.parametrize("case", GPRO_CASES, ids=lambda c: f"{c['projection']}-{c['rho']}-ams{int(c['amsgrad'])}")
def test_gpro_matches_hand_computation(case, impl):
    p0 = [[0.5, -1.0, 2.0], [0.0, 0.25, -0.75]]
    # Step 3 flips signs and shrinks gradients, so v_max differs from v (AMSGrad matters).
    grads = [
        [[0.1, -0.2, 0.3], [0.05, 0.0, -0.4]],
        [[0.3, 0.1, -0.2], [-0.1, 0.2, 0.1]],
        [[-0.01, 0.02, 0.05], [0.02, -0.03, 0.01]],
    ]
    lr, wd = 0.1, 0.05
    p = nn.Parameter(torch.tensor(p0))
    opt = GPro([p], lr=lr, weight_decay=wd, implementation=impl, **case)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    rho = case["rho"] if case["rho"] is not None else {"rms": 1.0, "frobenius": 0.5}[case["projection"]]
    ref = gpro_reference(p0, grads, lr, 0.9, 0.999, 1e-8, wd, rho, case["projection"], case["amsgrad"])
    np.testing.assert_allclose(p.detach().numpy(), ref, rtol=2e-6, atol=2e-7)


def test_gpro_projection_caps_the_update_size():
    p = nn.Parameter(torch.zeros(64, 64))
    opt = GPro([p], lr=1.0, weight_decay=0.0, projection="frobenius", rho=0.5)
    p.grad = torch.randn(64, 64)
    opt.step()
    assert p.detach().norm().item() == pytest.approx(0.5, rel=1e-5)  # the first Adam step has |u| ≈ 1 everywhere


@pytest.mark.parametrize("kwargs", [{"projection": "spectral"}, {"rho": 0.0}, {"betas": (0.9, 1.0)}, {"eps": -1.0}])
def test_gpro_bad_arguments_are_config_errors(kwargs):
    with pytest.raises(ValueError):
        GPro([nn.Parameter(torch.zeros(2))], **kwargs)
    model, _, _ = make_problem()
    with pytest.raises(ConfigError, match=r"training\.optimizer_kwargs.*gpro"):
        build_optimizer(model, TrainingConfig(optimizer="gpro", optimizer_kwargs=kwargs))


def test_gpro_fused_without_a_fused_kernel_for_the_device_is_a_clear_error(monkeypatch):
    # implementation="fused" where torch has no fused Adam for the device: the error looked for a
    # non-float tensor only, found none and ended in a bare StopIteration
    import hftraining.optim.gpro as gpro_mod

    monkeypatch.setattr(gpro_mod, "_get_fused_kernels_supported_devices", lambda: ["cuda"])
    p = nn.Parameter(torch.zeros(3))
    p.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match=r"implementation='fused' cannot update a torch.float32 tensor on cpu"):
        GPro([p], implementation="fused").step()


def test_gpro_bf16_parameters():
    for impl in ("auto", "fused", "foreach"):
        p = nn.Parameter(torch.ones(4, 4, dtype=torch.bfloat16))
        opt = GPro([p], lr=0.1, implementation=impl)
        p.grad = torch.ones(4, 4, dtype=torch.bfloat16)
        opt.step()
        assert p.dtype == torch.bfloat16 and (p < 1).all()
    p.grad = torch.ones(4, 4, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="numba.*bfloat16"):  # asked for explicitly: an error, not a fallback
        GPro([p], implementation="numba").step()


@pytest.mark.parametrize("case", GPRO_CASES[1:], ids=lambda c: f"{c['projection']}-{c['rho']}-ams{int(c['amsgrad'])}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gpro_implementations_agree_on_large_tensors(case, dtype):
    # Tensors above the kernel's parallel threshold, beside small ones; capped and uncapped tensors.
    torch.manual_seed(0)
    shapes = [(300, 300), (17,), (256, 512), (3, 5)]
    init = [torch.randn(s, dtype=dtype) for s in shapes]
    grads = [[torch.randn(s, dtype=dtype) * (10.0 if i == 0 else 0.1) for i, s in enumerate(shapes)] for _ in range(3)]
    results = {}
    for impl in ("numba", "fused", "foreach"):
        params = [nn.Parameter(t.clone()) for t in init]
        opt = GPro(params, lr=0.01, weight_decay=0.1, implementation=impl, **case)
        for step_grads in grads:
            for q, g in zip(params, step_grads):
                q.grad = g.clone()
            opt.step()
        results[impl] = [q.detach() for q in params]
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for impl in ("numba", "fused"):
        for got, want in zip(results[impl], results["foreach"]):
            torch.testing.assert_close(got, want, **tol)
    assert not torch.equal(results["numba"][0], init[0])


# ---------------------------------------------------------------------------------------------
# Registry behaviour


def test_adafactor_moves_against_the_gradient_sign():
    # The original system's Adafactor lost the gradient's sign.
    layer = nn.Linear(6, 5, bias=False)
    opt = build_optimizer(layer, TrainingConfig(optimizer="adafactor", learning_rate=1e-2, weight_decay=0.0))
    before = layer.weight.detach().clone()
    grad = torch.randn(5, 6)
    layer.weight.grad = grad.clone()
    opt.step()
    delta = layer.weight.detach() - before
    assert (torch.sign(delta) == -torch.sign(grad)).all()


def test_param_groups_exclude_biases_and_norms_from_decay():
    model, _, _ = make_problem()
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(no_decay["params"]) == 4  # two biases, LayerNorm weight and bias


def test_param_groups_give_patchtst_s_learned_positions_no_decay():
    from hftraining.core.config import ModelConfig
    from hftraining.models.patchtst import PatchTSTMultivariate

    cfg = ModelConfig(type="patchtst", hidden_size=16, num_heads=2, num_layers=1, patch_len=8, patch_stride=4)
    model = PatchTSTMultivariate(cfg, n_channels=3, horizon=4, seq_len=32)
    decay, no_decay = param_groups(model, 0.1)
    positions = model.encoder.positions
    assert positions.ndim == 2
    assert any(p is positions for p in no_decay["params"])
    assert not any(p is positions for p in decay["params"])


def test_unknown_optimizer_is_a_config_error_listing_names():
    model, _, _ = make_problem()
    with pytest.raises(ConfigError, match=r"training\.optimizer.*'adamx'.*gpro.*sophia"):
        build_optimizer(model, TrainingConfig(optimizer="adamx"))
    with pytest.raises(ConfigError, match=r"training\.optimizer: 'sam' is not supported"):
        build_optimizer(model, TrainingConfig(optimizer="sam"))


@pytest.mark.parametrize(
    "name,kwargs,pattern",
    [
        ("lion", {"betaz": (0.9, 0.99)}, r"training\.optimizer_kwargs: lion takes no argument 'betaz'"),
        ("adamw", {"lr": 0.1}, r"training\.optimizer_kwargs\.lr"),
        ("sgd", {"momentum": -1.0}, r"training\.optimizer_kwargs: sgd"),
        ("prodigy", {"nonsense": 1}, r"training\.optimizer_kwargs: prodigy takes no argument"),
    ],
)
def test_bad_optimizer_kwargs_are_config_errors(name, kwargs, pattern):
    model, _, _ = make_problem()
    cfg = TrainingConfig(optimizer=name, optimizer_kwargs=kwargs)
    with pytest.raises(ConfigError, match=pattern):
        build_optimizer(model, cfg)
    if "nonsense" in kwargs or "betaz" in kwargs:
        with pytest.raises(ConfigError, match=pattern):
            check_compatibility(cfg)


def test_optimizer_kwargs_reach_the_optimizer():
    model, _, _ = make_problem()
    opt = build_optimizer(model, TrainingConfig(optimizer="lion", optimizer_kwargs={"betas": [0.95, 0.98]}))
    assert all(g["betas"] == (0.95, 0.98) for g in opt.param_groups)
    opt = build_optimizer(model, TrainingConfig(optimizer="gpro", adam_beta2=0.95, learning_rate=2e-3))
    assert all(g["betas"] == (0.9, 0.95) and g["lr"] == 2e-3 for g in opt.param_groups)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]


def test_optimizer_names_ours_first_then_library():
    names = optimizer_names()
    ours = OPTIMIZERS.names()
    assert names[: len(ours)] == ours
    assert len(names) == len(set(names))
    assert {"muon", "schedulefreeadamw", "soap", "prodigy"} <= set(names)
    assert "sam" not in names


def test_set_train_mode_switches_schedule_free_weights():
    model, x, y = make_problem()
    opt = build_optimizer(model, config("schedulefreeadamw", 1e-2, {}))
    set_train_mode(opt, True)
    train_steps(model, opt, x, y, 3)
    train_weights = [p.detach().clone() for p in model.parameters()]
    set_train_mode(opt, False)
    assert any(not torch.equal(a, p) for a, p in zip(train_weights, model.parameters()))
    set_train_mode(opt, True)
    for a, p in zip(train_weights, model.parameters()):
        torch.testing.assert_close(a, p.detach())
    set_train_mode(build_optimizer(model, TrainingConfig()), False)  # a no-op for the others


def test_evaluating_leaves_schedule_free_training_weights_exact():
    # The optimizer's own switch back (train()) recomputes the training weights from the averaged ones
    # with rounding: every evaluation nudged the run, and a best checkpoint's evaluation weights were
    # rebuilt only to ~1e-7. The trainer's optimizer puts back the very weights eval() replaced.
    from hftraining.optim.stepper import TrainOptimizer

    model, x, y = make_problem()
    opt = TrainOptimizer(model, config("schedulefreeadamw", 3e-2, {}))
    opt.train()
    for _ in range(5):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step(torch.zeros(()))
    train_weights = [p.detach().clone() for p in model.parameters()]
    opt.eval()
    eval_weights = [p.detach().clone() for p in model.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(train_weights, eval_weights))
    opt.train()
    for a, p in zip(train_weights, model.parameters()):
        assert torch.equal(a, p)
    opt.eval()  # the same evaluation weights again
    for a, p in zip(eval_weights, model.parameters()):
        assert torch.equal(a, p)


# ---------------------------------------------------------------------------------------------
# Sophia


def test_sophia_asks_for_create_graph_on_refresh_steps_only():
    model, x, y = make_problem()
    opt = build_optimizer(model, config("sophia", 1e-2, {"update_period": 3}))
    asked = []
    for step in range(7):
        asked.append(needs_create_graph(opt, step))
        train_steps(model, opt, x, y, 1, start=step)
    assert asked == [True, False, False, True, False, False, True]
    assert not needs_create_graph(build_optimizer(model, TrainingConfig()), 0)


def test_sophia_without_create_graph_on_a_refresh_step_fails_clearly():
    model, x, y = make_problem()
    opt = build_optimizer(model, config("sophia", 1e-2, {}))
    ((model(x) - y) ** 2).mean().backward()
    with pytest.raises(RuntimeError, match="create_graph"):
        opt.step()


def _hessian_after_one_step(model, x, y, clip, checkpoint=None):
    opt = build_optimizer(model, config("sophia", 1e-2, {}))
    with hessian_context(opt, 0):
        if checkpoint is not None:  # reentrant checkpointing gives parameters gradients only if an input needs one
            x = x.clone().requires_grad_()
        out = torch.utils.checkpoint.checkpoint(model, x, use_reentrant=checkpoint) if checkpoint is not None else model(x)
        loss = (out.mean(dim=(1, 2)) - y.squeeze(1)).pow(2).mean()
        loss.backward(create_graph=needs_create_graph(opt, 0))
    if clip:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    torch.manual_seed(7)
    opt.step()
    params = list(model.parameters())
    return [opt.state[p]["hessian"].clone() for p in params], [opt.state[p]["momentum"].clone() for p in params]


def _attention_model():
    torch.manual_seed(0)
    return nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=True)


def test_sophia_hessian_ignores_clipping_momentum_sees_it():
    x, y = torch.randn(4, 5, 16), torch.randn(4, 1)
    h_plain, m_plain = _hessian_after_one_step(_attention_model(), x, y, clip=0.0)
    h_clip, m_clip = _hessian_after_one_step(_attention_model(), x, y, clip=1e-3)
    assert any(h.abs().sum() > 0 for h in h_plain)
    for a, b in zip(h_plain, h_clip):
        torch.testing.assert_close(a, b)
    total = math.sqrt(sum(float(m.pow(2).sum()) for m in m_clip)) / (1 - 0.96)
    assert total == pytest.approx(1e-3, rel=1e-3)  # momentum = (1-β1)·clipped gradient
    assert sum(float(m.pow(2).sum()) for m in m_plain) > 100 * sum(float(m.pow(2).sum()) for m in m_clip)


def test_sophia_with_gradient_checkpointing_non_reentrant():
    # Non-reentrant checkpointing supports the double backward: same Hessian estimate.
    x, y = torch.randn(4, 5, 16), torch.randn(4, 1)
    h_plain, _ = _hessian_after_one_step(_attention_model(), x, y, clip=0.0)
    h_ckpt, _ = _hessian_after_one_step(_attention_model(), x, y, clip=0.0, checkpoint=False)
    for a, b in zip(h_plain, h_ckpt):
        torch.testing.assert_close(a, b)
    with pytest.raises(RuntimeError):  # reentrant checkpointing cannot give the Hessian
        _hessian_after_one_step(_attention_model(), x, y, clip=0.0, checkpoint=True)
    check_compatibility(TrainingConfig(optimizer="sophia", gradient_checkpointing=True))


@pytest.mark.parametrize("foreach", [False, True])
def test_sophia_weight_decay_is_lr_times_wd_as_in_adamw(foreach):
    # Algorithm 3 of the paper (and AdamW): θ ← θ(1 - η·λ). SophiaH decays by its own lr, which
    # Sophia sets to η/p for the step: without the correction the decay was 1/p = 100× too strong.
    lr, wd = 1e-3, 0.1
    w = nn.Parameter(torch.ones(4, 4))
    opt = Sophia([{"params": [w], "weight_decay": wd}], lr=lr, foreach=foreach)
    ((w - 1) ** 2).sum().backward(create_graph=True)  # zero gradient at w = 1: only the decay moves w
    opt.step()
    w_adamw = nn.Parameter(torch.ones(4, 4))
    ref = torch.optim.AdamW([w_adamw], lr=lr, weight_decay=wd)
    w_adamw.grad = torch.zeros_like(w_adamw)
    ref.step()
    torch.testing.assert_close(w.detach(), torch.full((4, 4), 1 - lr * wd))
    torch.testing.assert_close(w.detach(), w_adamw.detach())
    assert opt.param_groups[0]["lr"] == lr and opt.param_groups[0]["weight_decay"] == wd  # restored


def test_check_compatibility_rejects_impossible_combinations():
    with pytest.raises(ConfigError, match=r"training\.precision.*training\.optimizer: sophia"):
        check_compatibility(TrainingConfig(optimizer="sophia", precision="fp16"))
    with pytest.raises(ConfigError, match=r"training\.optimizer"):
        check_compatibility(TrainingConfig(optimizer="nope"))
    check_compatibility(TrainingConfig(optimizer="adamw", precision="fp16"))
    check_compatibility(TrainingConfig(optimizer="sophia", precision="bf16"))


def test_gpro_numba_workers_give_the_same_bits():
    # above 2^20 elements the numba path shares tensors out to one Python thread per torch thread;
    # each tensor is still updated by one worker alone, so the result is bitwise the same
    torch.manual_seed(0)
    shapes = [(1024, 1000), (700,), (513, 300), (31, 7), (2048,)]
    init = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(3)]
    threads = torch.get_num_threads()
    results = []
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            params = [nn.Parameter(t.clone()) for t in init]
            opt = GPro(params, lr=0.01, rho=0.5, implementation="numba")
            for step_grads in grads:
                for q, g in zip(params, step_grads):
                    q.grad = g.clone()
                opt.step()
            results.append([q.detach() for q in params])
            assert len(opt._numba_scratch[torch.float32]) == n_threads
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_muon_s_adamw_part_steps_at_training_learning_rate_under_the_schedule():
    """Muon leaves biases and norms (its ``use_muon`` False groups) to its AdamW part, which ran at the
    library's ``adamw_lr`` (3e-4) whatever ``training.learning_rate`` said. Adam's first update moves every
    coordinate by its learning rate, so the step each bias and norm takes is the rate it ran at: the
    configured one times the warmup factor, or ``optimizer_kwargs.adamw_lr`` times it when that is set."""
    from hftraining.optim.stepper import TrainOptimizer

    for kwargs, peak in (({}, 0.01), ({"adamw_lr": 0.05}, 0.05)):
        t = TrainingConfig(optimizer="muon", learning_rate=0.01, optimizer_kwargs=kwargs, lr_scheduler="constant",
                           warmup_steps=3, max_steps=10)
        model, x, y = make_problem()
        vectors = [p for p in model.parameters() if p.ndim == 1]  # two biases, the LayerNorm's weight and bias
        before = [p.detach().clone() for p in vectors]
        opt = TrainOptimizer(model, t)
        first = opt.scheduler.get_last_lr()  # the rates of the first update, per group
        ((model(x) - y) ** 2).mean().backward()
        opt.step(torch.zeros(()))
        expected = peak / (3 + 1)  # warmup's first factor, 1/(warmup_steps + 1)
        assert first[0] == pytest.approx(t.learning_rate / 4)  # the Muon part: training.learning_rate, scheduled
        for p, b in zip(vectors, before):
            torch.testing.assert_close((p.detach() - b).abs(), torch.full_like(b, expected), rtol=1e-4, atol=0)


@pytest.mark.parametrize("name", ["muon", "adamuon", "normuon", "adago"])
def test_muon_s_adamw_part_is_adamw_with_training_s_adam_settings_and_no_decay(name):
    """Muon's AdamW part (biases, the LayerNorm) ran with the library's betas (0.9, 0.95) and eps 1e-10,
    whatever ``training.adam_beta1/adam_beta2/adam_epsilon`` said. Its updates over a few steps equal those
    of torch's AdamW with the training settings (or the ``adamw_betas``/``adamw_eps`` the user set, which
    win) and no weight decay, given the same gradients. eps 1e-3 is large next to these gradients' scale,
    so a wrong eps shows, as do wrong betas from the second step on."""
    own_eps = "eps" if name == "adamuon" else "adamw_eps"  # AdaMuon has no adamw_eps: its eps is both parts'
    for kwargs in ({}, {"adamw_betas": [0.5, 0.9], own_eps: 1e-4}):
        t = TrainingConfig(optimizer=name, learning_rate=0.01, weight_decay=0.1, adam_beta1=0.8, adam_beta2=0.99,
                           adam_epsilon=1e-3, optimizer_kwargs=dict(kwargs))
        betas = tuple(kwargs.get("adamw_betas", (t.adam_beta1, t.adam_beta2)))
        eps = kwargs.get(own_eps, t.adam_epsilon)
        model, x, y = make_problem()
        vectors = [p for p in model.parameters() if p.ndim == 1]  # two biases, the LayerNorm's weight and bias
        ref = [p.detach().clone().requires_grad_(True) for p in vectors]
        ref_opt = torch.optim.AdamW(ref, lr=t.learning_rate, betas=betas, eps=eps, weight_decay=0.0)
        opt = build_optimizer(model, t)
        for _ in range(4):
            ((model(x) - y) ** 2).mean().backward()
            for r, p in zip(ref, vectors):
                r.grad = p.grad.clone()
            opt.step()
            ref_opt.step()
            opt.zero_grad(set_to_none=True)
        for p, r in zip(vectors, ref):
            torch.testing.assert_close(p.detach(), r.detach(), rtol=1e-5, atol=1e-7, msg=f"{name} {kwargs}")


@pytest.mark.parametrize("name", ["muon", "adamuon", "normuon"])
def test_muon_s_adamw_weight_decay_is_refused_as_it_would_decay_biases_and_norms(name):
    """``training.weight_decay`` is never applied to biases, norms and embeddings; Muon's AdamW part holds
    exactly those, so a nonzero ``optimizer_kwargs.adamw_wd`` would break that promise: a one-line
    ConfigError naming the key, before anything is built. 0 (no decay) is accepted."""
    with pytest.raises(ConfigError, match=r"^training\.optimizer_kwargs\.adamw_wd: .*never decayed") as e:
        check_compatibility(TrainingConfig(optimizer=name, optimizer_kwargs={"adamw_wd": 0.1}))
    assert "\n" not in str(e.value)
    model, x, y = make_problem()
    opt = build_optimizer(model, TrainingConfig(optimizer=name, optimizer_kwargs={"adamw_wd": 0}))
    assert [g["weight_decay"] for g in opt.param_groups if not g["use_muon"]] == [0.0]


@pytest.mark.parametrize("override", ["training.adam_beta1=1.0", "training.adam_beta2=-0.1", "training.adam_epsilon=-1e-8"])
def test_bad_adam_settings_are_a_config_error_naming_the_key(override):
    """The Adam settings reach optimizers that do not check them (Muon's AdamW groups take them as group
    values): a value out of range is refused by the config, naming its key."""
    from hftraining.core.config import load_config

    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}: must be"):
        load_config(None, [override])
