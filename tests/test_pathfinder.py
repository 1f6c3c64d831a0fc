"""The Pathfinder generator (§E8): the label is exact (markers joined by a path iff 1, checked by
connected components of the image), labels are balanced, the output is deterministic and cached,
and a small CNN finds longer paths harder."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from deeplinear.pathfinder import PAPER, PathfinderSpec, cache_path, pathfinder, render

EIGHT = np.ones((3, 3), dtype=int)  # 8-connectivity


def _marker_components(image: np.ndarray, spec: PathfinderSpec) -> tuple[int, int, int]:
    """Labels of the components holding the two markers (the only 3x3 all-on blocks of a
    binary image whose lines are one pixel wide), and the number of such components."""
    comp, _ = ndimage.label(image, structure=EIGHT)
    full = ndimage.minimum_filter(image, size=3, mode="constant") > 0
    blobs, n_blobs = ndimage.label(full, structure=EIGHT)
    ids = [int(comp[blobs == k][0]) for k in range(1, n_blobs + 1)]
    return (ids[0], ids[-1], n_blobs)


@pytest.mark.parametrize("length", [3, 6, 9])
def test_label_agrees_with_connected_components(length, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPLINEAR_CACHE", str(tmp_path))
    spec = PathfinderSpec()
    x, y = pathfinder(300, length, spec=spec, seed=1, solid=True)
    for image, label in zip(x[:, 0].astype(int), y, strict=True):
        a, b, n_blobs = _marker_components(image, spec)
        assert n_blobs == 2, "two separate markers"
        assert (a == b) == bool(label)


def test_dashed_image_is_the_solid_one_with_gaps():
    solid, y = pathfinder(200, 5, seed=3, solid=True, cache=False)
    dashed, y2 = pathfinder(200, 5, seed=3, cache=False)
    assert np.array_equal(y, y2)
    assert np.all(dashed <= solid) and dashed.sum() < 0.95 * solid.sum()
    pieces = [ndimage.label(im[0], structure=EIGHT)[1] for im in (dashed[0], solid[0])]
    assert pieces[0] > pieces[1]  # the gaps cut the paths into dashes


def test_labels_balanced_and_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPLINEAR_CACHE", str(tmp_path))
    x, y = pathfinder(501, 7, seed=0)
    assert x.shape == (501, 1, 48, 48) and x.dtype == np.float32 and set(np.unique(x)) == {0, 1}
    assert y.sum() == 250 and 0.3 < y[:100].mean() < 0.7  # balanced, and shuffled
    path = cache_path(501, 7, PathfinderSpec(), 0, False)
    assert path.is_file() and str(path).startswith(str(tmp_path))
    x2, y2 = pathfinder(501, 7, seed=0)  # read back from the cache
    x3, y3 = pathfinder(501, 7, seed=0, cache=False)  # drawn again
    assert np.array_equal(x, x2) and np.array_equal(x, x3) and np.array_equal(y, y3)
    x4, _ = pathfinder(501, 7, seed=1, cache=False)
    assert not np.array_equal(x, x4)


def test_longer_paths_are_longer():
    # ink of the two paths grows with the length (distractors' total is held fixed)
    ink = [pathfinder(200, n, seed=0, cache=False)[0].sum() / 200 for n in (3, 6, 9)]
    assert ink[0] < ink[1] < ink[2]


def test_paper_size_draws():
    x, y = pathfinder(8, 9, spec=PAPER, seed=0, cache=False)
    assert x.shape == (8, 1, 150, 150) and y.sum() == 4


def test_render_draws_markers_as_disks():
    spec = PathfinderSpec()
    curve = np.array([[[10.0, 10.0], [10.0, 13.5], [10.0, 15.5]]])
    img = render([curve], np.array([[[10.0, 10.0], [10.0, 15.5]]]), spec)
    assert img.shape == (1, 48, 48) and img[0, 9:12, 9:12].all() and img[0, 10, 12] == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="clearance"):
        PathfinderSpec(clearance=2.0)
    with pytest.raises(ValueError, match="path_length"):
        pathfinder(10, 0)
