"""deeplinear.torch: the PyTorch version of overparameterize / collapse, on the shared cases and
tolerances of tests/_overparam_cases.py (the equinox version runs them in test_overparam.py),
plus what only PyTorch has: dtype/device, state_dict, torch.compile, nn.Conv2d options; and the
fig1-cnn twin: the same CNN, weights and batches in both frameworks."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")  # the [torch] extra; `make test` installs it

import _overparam_cases as spec  # noqa: E402
from torch import nn  # noqa: E402

from deeplinear.torch import (  # noqa: E402
    FactorizedConv2d,
    FactorizedLinear,
    balanced_factors,
    collapse,
    count_parameters,
    end_to_end_weights,
    overparameterize,
)

torch.set_num_threads(1)  # deterministic reductions; the tolerances below assume nothing more
D = torch.float64


def _perturb(model: nn.Module, scale: float = 0.1, seed: int = 2) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def _imbalance(factors) -> float:
    """max_j ‖W_{j+1}ᵀ W_{j+1} - W_j W_jᵀ‖ (Def 2): zero for balanced factors."""
    factors = [f.detach() for f in factors]
    return max((float(torch.linalg.norm(b.T @ b - a @ a.T)) for a, b in
                zip(factors[:-1], factors[1:], strict=True)), default=0.0)


# ------------------------------------------------------------------------------ shared cases

@pytest.mark.parametrize("init", spec.INITS)
@pytest.mark.parametrize("n_in,n_out,depth,width", spec.LINEAR_CASES)
def test_shared_linear_cases(n_in, n_out, depth, width, init):
    torch.manual_seed(n_in * 10 + n_out)
    lin = nn.Linear(n_in, n_out, dtype=D)
    x = torch.randn(5, n_in, dtype=D)
    deep = overparameterize(lin, depth, width=width, init=init)
    assert isinstance(deep, FactorizedLinear)
    assert [tuple(f.shape) for f in deep.factors] == spec.factor_shapes(n_in, n_out, depth, width)
    torch.testing.assert_close(deep(x), lin(x), atol=spec.ATOL, rtol=0)
    assert count_parameters(deep) - count_parameters(lin) == spec.extra_parameters(
        n_in, n_out, depth, width)
    if init == "balanced":
        assert _imbalance(list(deep.factors)) < spec.ATOL
    trained = _perturb(deep)
    torch.testing.assert_close(collapse(trained)(x), trained(x), atol=spec.ATOL, rtol=0)


@pytest.mark.parametrize("init", spec.INITS)
@pytest.mark.parametrize("c_in,c_out,kernel,depth,width", spec.CONV_CASES)
def test_shared_conv_cases(c_in, c_out, kernel, depth, width, init):
    torch.manual_seed(c_in + c_out)
    conv = nn.Conv2d(c_in, c_out, kernel, padding="same", dtype=D)
    x = torch.randn(2, c_in, 6, 6, dtype=D)
    deep = overparameterize(conv, depth, width=width, conv=True, init=init)
    n_in = c_in * kernel * kernel
    assert [tuple(f.shape) for f in deep.factors] == spec.factor_shapes(n_in, c_out, depth, width)
    torch.testing.assert_close(deep(x), conv(x), atol=spec.ATOL, rtol=0)
    assert count_parameters(deep) - count_parameters(conv) == spec.extra_parameters(
        n_in, c_out, depth, width)
    trained = _perturb(deep)
    torch.testing.assert_close(collapse(trained)(x), trained(x), atol=spec.ATOL, rtol=0)


@pytest.mark.parametrize("depth", spec.E2E_DEPTHS)
def test_shared_end_to_end_trajectory(depth):
    """One plain SGD step at a time on balanced factors: the collapsed weight follows
    `dynamics.end_to_end_update` (the notes' discrete end-to-end rule, §2.6) to O(η²)."""
    W0, X, Y = spec.e2e_problem()
    n_out, n_in = W0.shape
    lin = nn.Linear(n_in, n_out, bias=False, dtype=D)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(W0))
    Xt, Yt = torch.as_tensor(X), torch.as_tensor(Y)
    gaps = []
    for eta in spec.E2E_ETAS:
        deep = overparameterize(lin, depth)
        opt = torch.optim.SGD(deep.parameters(), lr=eta)
        for _ in range(spec.E2E_STEPS):
            opt.zero_grad()
            (0.5 * ((deep(Xt) - Yt) ** 2).sum(-1).mean()).backward()
            opt.step()
        W = collapse(deep).weight.detach().numpy()
        gaps.append(float(np.max(np.abs(W - spec.e2e_reference(depth, eta)))))
    spec.check_first_order(gaps)


@settings(max_examples=spec.HYPOTHESIS_EXAMPLES, deadline=None)
@given(
    n_in=st.integers(1, spec.MAX_FEATURES), n_out=st.integers(1, spec.MAX_FEATURES),
    extra=st.integers(0, spec.MAX_EXTRA_WIDTH), depth=st.integers(1, spec.MAX_DEPTH),
    init=st.sampled_from(spec.INITS), conv=st.booleans(), seed=st.integers(0, 2**16),
)
def test_property_same_outputs_at_init(n_in, n_out, extra, depth, init, conv, seed):
    """Any shape, depth and hidden width >= min(in, out): the same outputs, and collapse gives
    the original weight back."""
    torch.manual_seed(seed)
    if conv:
        layer = nn.Conv2d(n_in, n_out, 3, padding=1, dtype=D)
        x = torch.randn(2, n_in, 5, 5, dtype=D)
        rows = 9 * n_in
    else:
        layer = nn.Linear(n_in, n_out, dtype=D)
        x = torch.randn(3, n_in, dtype=D)
        rows = n_in
    width = min(rows, n_out) + extra
    deep = overparameterize(layer, depth, conv=conv, width=width, init=init)
    torch.testing.assert_close(deep(x), layer(x), atol=spec.ATOL, rtol=0)
    torch.testing.assert_close(collapse(deep).weight, layer.weight, atol=spec.ATOL, rtol=0)


# ------------------------------------------------------------------------------ torch specifics

def _mlp(dtype=D) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 7, dtype=dtype), nn.ReLU(), nn.Linear(7, 7, dtype=dtype),
                         nn.Tanh(), nn.Linear(7, 3, bias=False, dtype=dtype))


def test_model_copy_and_original_untouched():
    mlp = _mlp()
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    deep = overparameterize(mlp, 3)
    assert all(isinstance(m, nn.Linear) for m in mlp if not isinstance(m, nn.ReLU | nn.Tanh))
    assert all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())
    assert [type(m).__name__ for m in deep] == ["FactorizedLinear", "ReLU", "FactorizedLinear",
                                                "Tanh", "FactorizedLinear"]
    assert deep[4].bias is None and len(end_to_end_weights(deep)) == 3
    x = torch.randn(4, 12, dtype=D)
    torch.testing.assert_close(deep(x), mlp(x), atol=spec.ATOL, rtol=0)
    # re-factorizing starts from the end-to-end layers
    again = overparameterize(deep, 2)
    assert all(len(m.factors) == 2 for m in again if isinstance(m, FactorizedLinear))
    torch.testing.assert_close(again(x), mlp(x), atol=spec.ATOL, rtol=0)


def test_float32_and_device():
    mlp = _mlp(torch.float32)
    deep = overparameterize(mlp, 2)
    x = torch.randn(8, 12)
    assert all(p.dtype == torch.float32 and p.device == x.device for p in deep.parameters())
    torch.testing.assert_close(deep(x), mlp(x), atol=spec.ATOL_FLOAT32, rtol=0)
    assert collapse(deep)[0].weight.dtype == torch.float32
    half = overparameterize(mlp.to(torch.bfloat16), 2)  # the SVD runs in float32, then casts
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda():
    mlp = _mlp(torch.float32).cuda()
    deep = overparameterize(mlp, 2)
    assert all(p.is_cuda for p in deep.parameters()) and all(
        p.is_cuda for p in collapse(deep).parameters())
    x = torch.randn(8, 12, device="cuda")
    torch.testing.assert_close(deep(x), mlp(x), atol=1e-4, rtol=1e-4)


def test_state_dict_round_trip():
    deep = _perturb(overparameterize(_mlp(), 2))
    buf = io.BytesIO()
    torch.save(deep.state_dict(), buf)
    buf.seek(0)
    fresh = overparameterize(_mlp(), 2)  # same architecture, other values
    fresh.load_state_dict(torch.load(buf))
    x = torch.randn(4, 12, dtype=D)
    assert torch.equal(fresh(x), deep(x))
    assert "0.factors.1" in deep.state_dict() and "0.bias" in deep.state_dict()


def test_conv_options_and_sequential_form():
    """The factorized kernel is a k x k conv to `width` channels then 1x1 convs (groups=1);
    stride, dilation, groups and padding modes are kept."""
    torch.manual_seed(3)
    x = torch.randn(2, 4, 9, 9, dtype=D)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, dtype=D)
    deep = _perturb(overparameterize(conv, 3, conv=True, width=8), 0.1)
    W1, W2, W3 = deep.factors
    y = nn.functional.conv2d(x, W1.reshape(8, 4, 3, 3), None, 2, 1)
    y = nn.functional.conv2d(y, W2[:, :, None, None])
    y = nn.functional.conv2d(y, W3[:, :, None, None], deep.bias)
    torch.testing.assert_close(deep(x), y, atol=spec.ATOL, rtol=0)
    for layer in (nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect", dtype=D),
                  nn.Conv2d(4, 6, 3, groups=2, dilation=2, bias=False, dtype=D),
                  nn.Conv2d(4, 6, (3, 1), padding="same", padding_mode="circular", dtype=D)):
        over = overparameterize(layer, 2, conv=True)
        assert isinstance(over, FactorizedConv2d)
        torch.testing.assert_close(over(x), layer(x), atol=spec.ATOL, rtol=0)
        back = collapse(_perturb(over))
        assert type(back) is nn.Conv2d and back.padding_mode == layer.padding_mode
        torch.testing.assert_close(back(x), over(x), atol=spec.ATOL, rtol=0)
    # attention reads out_proj.weight itself: left alone, the rest is factorized
    att = nn.Sequential(nn.MultiheadAttention(4, 2, dtype=D), nn.Linear(4, 4, dtype=D))
    over = overparameterize(att, 2)
    assert type(over[0].out_proj) is type(att[0].out_proj) and type(over[1]) is FactorizedLinear
    # conv=False leaves convolutions alone
    net = nn.Sequential(nn.Conv2d(4, 2, 3, dtype=D), nn.Flatten(), nn.Linear(98, 3, dtype=D))
    assert type(overparameterize(net, 2)[0]) is nn.Conv2d


def test_random_init_changes_function():
    mlp = _mlp()
    deep = overparameterize(mlp, 2, init="random", generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 12, dtype=D)
    with torch.no_grad():
        assert deep(x).shape == (4, 3) and float((deep(x) - mlp(x)).abs().max()) > 1e-3
    bound = 1 / np.sqrt(12)
    assert float(deep[0].factors[0].detach().abs().max()) <= bound


def test_balanced_factors_are_procedure_1():
    """W_1 = Σ^{1/N} Vᵀ, W_N = U Σ^{1/N} (padded) and the product is W, for wide and tall W."""
    gen = torch.Generator().manual_seed(1)
    for shape in ((3, 5), (5, 3)):
        W = torch.randn(shape, generator=gen, dtype=D)
        fs = balanced_factors(W, (shape[1], 6, 6, shape[0]))
        torch.testing.assert_close(fs[2] @ fs[1] @ fs[0], W, atol=spec.ATOL, rtol=0)
        s = torch.linalg.svdvals(W)
        torch.testing.assert_close(torch.linalg.svdvals(fs[1])[: s.numel()], s ** (1 / 3),
                                   atol=spec.ATOL, rtol=0)
        assert _imbalance(fs) < spec.ATOL
    with pytest.raises(ValueError, match="bottleneck"):
        balanced_factors(torch.ones(4, 4, dtype=D), (4, 2, 4))


def test_errors():
    with pytest.raises(ValueError, match="depth"):
        overparameterize(_mlp(), 0)
    with pytest.raises(ValueError, match="width=2 is below min"):
        overparameterize(_mlp(), 2, width=2)
    with pytest.raises(ValueError, match="init"):
        overparameterize(_mlp(), 2, init="orthogonal")
    with pytest.raises(ValueError, match="no nn.Linear layer"):
        overparameterize(nn.Conv2d(1, 2, 3), 2)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        overparameterize(np.eye(3), 2)


@pytest.mark.slow  # inductor compiles C++ with gcc: ~20 s unloaded, 60 s on a busy 2-core box
def test_compile_matches_eager():
    """torch.compile of an overparameterized model (forward and backward) gives the eager
    values."""
    deep = overparameterize(_mlp(torch.float32), 2)
    x = torch.randn(16, 12)
    start = time.perf_counter()
    compiled = torch.compile(deep)
    out = compiled(x)
    out.sum().backward()
    grads = [p.grad.clone() for p in deep.parameters()]
    deep.zero_grad()
    ref = deep(x)
    ref.sum().backward()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for g, p in zip(grads, deep.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, atol=1e-5, rtol=1e-5)
    print(f"torch.compile: {time.perf_counter() - start:.1f} s")


def test_importing_deeplinear_does_not_import_torch(tmp_path):
    """Without PyTorch the package (experiments and CLI included) imports; deeplinear.torch says
    in one line what to install."""
    code = ("import sys\n"
            "class NoTorch:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'torch':\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "import deeplinear, deeplinear.overparam, deeplinear.experiments, deeplinear.cli\n"
            "try:\n    import deeplinear.torch\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, cwd=tmp_path).stdout.strip()
    assert out == "deeplinear.torch needs torch, which is not installed: pip install 'deeplinear[torch]'"


# ------------------------------------------------------------------------------ fig1-cnn twin

def test_cnn_twin_same_function_as_equinox():
    """The PyTorch CNN of fig1-cnn, built from an equinox SmallCNN, gives its logits (float64);
    the two overparameterize functions give the same end-to-end weights and parameter counts."""
    import jax

    from deeplinear.experiments._fig1_cnn_torch import from_equinox
    from deeplinear.experiments.fig1_cnn import SmallCNN
    from deeplinear.overparam import count_parameters as eqx_count
    from deeplinear.overparam import end_to_end_weights as eqx_e2e
    from deeplinear.overparam import overparameterize as eqx_over

    cnn = SmallCNN((1, 8, 8), (3, 5), 3, 16, 10, key=jax.random.key(0))
    x = np.random.default_rng(0).random((4, 1, 8, 8))
    twin = from_equinox(cnn, (1, 8, 8), dtype=D)
    np.testing.assert_allclose(twin(torch.as_tensor(x)).detach().numpy(),
                               np.asarray(jax.vmap(cnn)(x)), atol=spec.ATOL)
    deep_t, deep_j = overparameterize(twin, 2), eqx_over(cnn, 2, key=jax.random.key(1))
    assert count_parameters(deep_t) == eqx_count(deep_j)
    for a, b in zip(end_to_end_weights(deep_t), eqx_e2e(deep_j), strict=True):
        np.testing.assert_allclose(a.detach().numpy(), np.asarray(b), atol=spec.ATOL)


def test_quick_run_frameworks_agree(quick_runs):
    """fig1-cnn --quick trains in JAX and PyTorch from the same weights on the same batches: the
    first batch losses agree to float32 rounding, and both report their numbers side by side."""
    r = quick_runs["fig1-cnn"]
    for name in ("original", "overparameterized"):
        jx, tc = r.arrays[f"{name}_batch_loss"], r.arrays[f"torch_{name}_batch_loss"]
        assert jx.shape == tc.shape
        np.testing.assert_allclose(jx[:, :5], tc[:, :5], rtol=1e-4)
    assert r.summary["torch_params_overparameterized"] == r.summary["params_overparameterized"]
    assert r.summary["torch_collapse_max_rel_diff"] < 1e-5
    table = r.tables["frameworks"]
    assert {"quantity", "JAX/equinox", "PyTorch"} == set(table[0])
    assert any(row["quantity"].startswith("iterations ratio") for row in table)
    assert "torch_final_loss_ratio" in {h.key for h in r.headline}
