"""The experiments' figures: saved the same way, robust to missing values, laid out readably."""

from __future__ import annotations

import copy
import importlib
import inspect

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from deeplinear.experiments import REGISTRY

MODULES = {"fig1-regression": "fig1_regression", "fig1-cnn": "fig1_cnn", "fig2": "fig2",
           "fig3": "fig3", "norms": "norms"}


def _module(name: str):
    return importlib.import_module(f"deeplinear.experiments.{MODULES[name]}")


def _capture(monkeypatch, module) -> list:
    """Patch ``module.save`` to keep each figure (drawn, so the layout is final) before saving."""
    figs = []
    real = module.save

    def grab(fig, out_dir, stem):
        fig.canvas.draw()
        figs.append(fig)
        return real(fig, out_dir, stem)

    monkeypatch.setattr(module, "save", grab)
    return figs


def _with_gaps(res):
    """A copy of ``res`` with what missing values look like: trailing NaNs in every float array
    (a blow-up), every other summary value None, the first row of every table diverged."""
    res = copy.deepcopy(res)
    for key, arr in res.arrays.items():
        arr = np.array(arr)
        if arr.dtype.kind == "f" and arr.size > 3:
            flat = arr.reshape(-1)
            flat[-max(1, flat.size // 3):] = np.nan
            res.arrays[key] = arr
    for i, key in enumerate(list(res.summary)):
        if i % 2:
            res.summary[key] = None
    for rows in res.tables.values():
        if rows and "status" in rows[0]:
            rows[0]["status"] = "diverged"
    return res


def test_every_figure_goes_through_the_shared_helpers():
    for name in MODULES:
        src = inspect.getsource(_module(name))
        assert "savefig" not in src and "matplotlib.use" not in src, name
        assert _module(name).save.__module__ == "deeplinear.experiments._plotting", name


@pytest.mark.parametrize("name", sorted(MODULES))
def test_plot_survives_missing_values(name, quick_runs, tmp_path):
    paths = REGISTRY[name].plot(_with_gaps(quick_runs[name]), tmp_path)
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_fig3_legend_is_outside_every_panel(quick_runs, tmp_path, monkeypatch):
    figs = _capture(monkeypatch, _module("fig3"))
    REGISTRY["fig3"].plot(quick_runs["fig3"], tmp_path)
    (fig,) = figs
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert len(legends) == 1
    box = legends[0].get_window_extent()
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent())


def _three_depths(res):
    """The quick norms run (depth 3 only) relabelled as depths 2, 3, 4: a 3-panel figure."""
    res = copy.deepcopy(res)
    rows = []
    for depth in (2, 3, 4):
        for r in res.tables["runs"]:
            tag = r["run"].replace("depth3", f"depth{depth}")
            for key in [k for k in list(res.arrays) if k.endswith("_" + r["run"])]:
                res.arrays[key[: -len(r["run"])] + tag] = res.arrays[key]
            rows.append(dict(r, run=tag, depth=depth))
    res.tables["runs"] = rows
    res.arrays["depths"] = np.array([2, 3, 4])
    return res


def test_norms_figures_are_readable(quick_runs, tmp_path, monkeypatch):
    figs = _capture(monkeypatch, _module("norms"))
    REGISTRY["norms"].plot(_three_depths(quick_runs["norms"]), tmp_path)
    w11, every = figs
    panels = [ax for ax in w11.axes if ax.get_xscale() == "log"]
    assert len(panels) == 3
    # no y-label runs into a neighbouring panel
    for ax in panels:
        if ax.get_ylabel():
            label = ax.yaxis.label.get_window_extent()
            assert not any(label.overlaps(o.get_window_extent()) for o in panels if o is not ax)
    # the loss axis decreases to the right and ends near the smallest loss plotted
    losses = np.concatenate([ln.get_xdata() for ax in panels for ln in ax.lines
                             if ln.get_color() == "k"]
                            + [c.get_offsets()[:, 0] for ax in panels for c in ax.collections])
    left, right = panels[0].get_xlim()
    assert left > right
    assert losses.min() / 2 <= right <= losses.min() and losses.max() <= left <= 2 * losses.max()
    # legend markers are neutral (grey), the iteration is told by a colour bar
    handles = {h.get_label(): h for h in w11.legends[0].legend_handles}
    gd = [h for label, h in handles.items() if label.startswith("GD")]
    assert gd and all(len(set(np.round(to_rgb(h.get_markerfacecolor()), 3))) == 1 for h in gd)
    assert any(ax.get_ylabel() == "GD iteration" for ax in w11.axes)
    # norms_all: effective rank on its own linear axis, the distance on its own log axis
    by_label = {ax.get_ylabel(): ax for ax in every.axes if ax.get_ylabel()}
    rank = next(ax for label, ax in by_label.items() if label.startswith("effective rank"))
    assert rank.get_yscale() == "linear" and 0.5 < rank.get_ylim()[0] < 1 < rank.get_ylim()[1] < 4
    dist = next(ax for label, ax in by_label.items() if label.startswith("distance"))
    assert dist.get_yscale() == "log"
    assert not any(label.startswith(("effective", "distance")) and "/" in label
                   for label in by_label)  # not one axis for both
    # every norm has its own colour, line style and marker
    norms = [ln for ln in every.axes[0].lines if ln.get_label() and not ln.get_label().startswith("_")]
    styles = {(ln.get_color(), ln.get_linestyle(), ln.get_marker()) for ln in norms}
    assert len(norms) == 4 and len(styles) == 4
    for part in zip(*styles, strict=True):
        assert len(set(part)) == 4
