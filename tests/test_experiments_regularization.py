"""Quick sizes of the implicit-regularization experiments (fig2, fig3, norms; §2.12-2.13, §E3, §E5)."""

import numpy as np
import pytest
from pydantic import ValidationError

from deeplinear.experiments import REGISTRY
from deeplinear.experiments.fig3 import rise_steps
from deeplinear.experiments.norms import count_sign_flips


@pytest.fixture
def fig2(quick_runs):
    return REGISTRY["fig2"], quick_runs["fig2"]


@pytest.fixture
def fig3(quick_runs):
    return REGISTRY["fig3"], quick_runs["fig3"]


@pytest.fixture
def norms(quick_runs):
    return REGISTRY["norms"], quick_runs["norms"]


def test_fig2_depth_beats_nuclear_norm_with_few_observations(fig2):
    _, res = fig2
    m = int(res.arrays["observations"][0])
    nuc = res.summary[f"recon_error_nuclear_m{m}"]
    d2 = res.summary[f"recon_error_depth2_m{m}"]
    d3 = res.summary[f"recon_error_depth3_m{m}"]
    assert d3 < d2 < nuc, (d3, d2, nuc)
    assert d3 < 0.1 * d2  # depth 3 is much better (§E3: 2.6e-5 vs 5.9e-2 at n=100)
    # every method fits the observations: the nuclear-norm table and the runs agree
    assert res.arrays["recon_error"].shape == (3, len(res.arrays["observations"]), 1)
    assert all(r["status"] != "diverged" for r in res.tables["runs"])


def test_fig2_plot_writes_png_and_pdf(fig2, tmp_path):
    exp, res = fig2
    paths = exp.plot(res, tmp_path)
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    assert all(p.stat().st_size > 1000 for p in paths)


def test_fig3_singular_values_learned_one_after_another(fig3):
    _, res = fig3
    for kind in ("completion", "sensing"):
        d3 = [res.summary[f"rise_step_{kind}_depth3_sigma{r}"] for r in (1, 2, 3)]
        assert d3[0] < d3[1] < d3[2], (kind, d3)
        # deeper = more incremental: the spread of the rises grows with depth
        d1 = [res.summary[f"rise_step_{kind}_depth1_sigma{r}"] for r in (1, 2, 3)]
        assert d3[2] - d3[0] > d1[2] - d1[0]
        # depth 3 recovers the rank-3 ground truth: error far below depth 1
        assert res.summary[f"recon_error_{kind}_depth3"] < 1e-2 * res.summary[
            f"recon_error_{kind}_depth1"]


def test_fig3_plot(fig3, tmp_path):
    exp, res = fig3
    assert {p.suffix for p in exp.plot(res, tmp_path)} == {".png", ".pdf"}


def test_norms_gradient_flow_no_flip_and_w11_law(norms):
    _, res = norms
    gf = [r for r in res.tables["runs"] if r["method"] == "gradient flow"]
    assert gf and all(r["sign_flips"] == 0 and r["det"] > 0 for r in gf)
    for r in gf:
        loss = res.arrays[f"loss_{r['run']}"]
        w11 = res.arrays[f"abs_w11_{r['run']}"]
        fitted = loss < 0.1
        # |W11| increases as the loss decreases (along the flow, after the initial transient)
        assert np.all(np.diff(w11[fitted]) > 0)
        # §2.13 quantitative form: |W11| ~ 1/sqrt(2 l) once det is ~0+ (within 5%)
        assert abs(r["w11_times_sqrt_2loss"] - 1) < 0.05
        # ...and the bound |W11| > (1 - sqrt(2l))^2 / sqrt(2l) holds all along
        q = np.sqrt(2 * loss[fitted])
        assert np.all(w11[fitted] >= (1 - q) ** 2 / q * (1 - 1e-6))
    assert res.summary["gf_depth3plus_sign_flips"] == 0


def test_norms_gd_balanced_depth3_tracks_the_flow(norms):
    _, res = norms
    rows = [r for r in res.tables["runs"] if r["run"].startswith("gd_balanced_depth3")]
    assert rows
    for r in rows:
        if r["status"] == "converged":
            assert r["sign_flips"] == 0
            assert r["abs_w11_at_loss_1e-02"] == pytest.approx(1 / np.sqrt(2e-2), rel=0.05)


def test_norms_plot(norms, tmp_path):
    exp, res = norms
    paths = exp.plot(res, tmp_path)
    assert sorted(p.name for p in paths) == ["norms_all.pdf", "norms_all.png", "norms_w11.pdf",
                                             "norms_w11.png"]


def test_helpers():
    assert count_sign_flips(np.array([1.0, 0.5, 0.0, -0.1, -1, 2])) == 2
    assert count_sign_flips(np.array([1.0, 2.0])) == 0
    steps = np.array([0, 10, 20, 30])
    sig = np.array([[0, 0], [1, 0], [2, 0.1], [2, 2]], dtype=float)
    np.testing.assert_array_equal(rise_steps(steps, sig), [10, 30])


@pytest.mark.parametrize(
    ("name", "override", "field"),
    [
        ("fig2", {"observations": [20000]}, "observations"),
        ("fig2", {"depths": [0, 2]}, "depths"),
        ("fig2", {"lr": -1.0}, "lr"),
        ("fig2", {"rank": 500}, "rank"),
        ("fig2", {"bogus": 1}, "bogus"),
        ("fig3", {"lrs": [1.0, 2.0]}, "lrs"),
        ("fig3", {"observations": 10001}, "observations"),
        ("fig3", {"init_scale": 0.0}, "init_scale"),
        ("norms", {"depths": [1, 2]}, "depths"),
        ("norms", {"lr": 0.0}, "lr"),
        ("norms", {"dxd": 1}, "dxd"),
    ],
)
def test_config_validation_names_the_field(name, override, field):
    with pytest.raises(ValidationError, match=field):
        REGISTRY[name].config_model(**override)


def test_paper_and_quick_overrides_validate():
    for name in ("fig2", "fig3", "norms"):
        exp = REGISTRY[name]
        exp.config_model(**exp.quick)
        exp.config_model(**exp.paper)
        assert exp.reported
