"""Pathfinder images (Linsley et al. 2018), generated here: are two circles on the same path? (§E8)

Each image shows two curved dashed paths of ``path_length`` dashes, a few short distractor
paths, and two circles (markers). Label 1: both markers sit on the two ends of one path; label
0: they sit on one end of each of the two paths. Telling them apart needs following a path from
one marker to the other, a long-range dependency: the longer the paths, the farther apart the
pixels that must be related, and the harder the task is for a network biased towards locality.

Geometry, in pixels of a ``size x size`` canvas: a path is a polyline of ``path_length``
segments, each ``dash + gap`` long (the last one ``dash``), of which the first ``dash`` is drawn;
its direction turns by a uniform angle in ``[-max_turn, max_turn]`` degrees at every vertex
(the paths' continuity). Distractors are such paths of ``max(1, path_length // 3)`` dashes, about
``distractor_dashes`` dashes in all (as in RMC22's generator: distractor length a third of the
path length, their total length fixed). Every two different curves (and a marker and any
curve it is not on) stay at least ``clearance`` pixels apart, which makes the label exact: with
the gaps filled in (``solid=True``) the markers are in one 8-connected component of the image if
and only if the label is 1. Lines are one pixel wide and the images binary.

Generation is vectorized over candidate images (rejection sampling of whole images, then of
distractors), deterministic for a seed, and cached as ``.npz`` under the deeplinear cache folder
(``$DEEPLINEAR_CACHE``, default ``$XDG_CACHE_HOME/deeplinear`` or ``~/.cache/deeplinear``).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["PAPER", "PathfinderSpec", "cache_path", "pathfinder", "render"]

VERSION = 1  # bump when the drawing changes: part of the cache key
_STEP = 0.5  # spacing of the points on which clearances are checked
_DRAW_STEP = 0.2  # spacing of the points that are rasterized


@dataclass(frozen=True)
class PathfinderSpec:
    """What a Pathfinder image looks like (module docstring); lengths in pixels, angles in degrees."""

    size: int = 48
    dash: float = 2.0
    gap: float = 1.5
    max_turn: float = 30.0
    marker_radius: float = 1.5
    clearance: float = 3.5
    distractor_dashes: int = 6

    def __post_init__(self) -> None:
        if not 12 <= self.size <= 512:
            raise ValueError(f"size must be in [12, 512], got {self.size}")
        if not (self.dash > 0 and self.gap >= 0 and 0 <= self.max_turn <= 180):
            raise ValueError("dash must be > 0, gap >= 0 and max_turn in [0, 180]")
        if self.clearance <= 3.34:
            # rendered pixels lie within 0.71 of the curve and the checks sample it every 0.5:
            # a clearance above 2 * 0.71 + 0.5 + sqrt(2) keeps different curves 8-disconnected
            raise ValueError(f"clearance must exceed 3.34 pixels, got {self.clearance}")


PAPER = PathfinderSpec(size=150, dash=2.5, gap=1.5, max_turn=30.0, marker_radius=1.5,
                       clearance=3.5, distractor_dashes=30)
"""RMC22's images at the size the network sees: drawn at 300 px with 5 px dashes, 3 px gaps,
markers of radius 3 and 30 distractor dashes, then resized to 150 px."""


def _paths(rng: np.random.Generator, n: int, dashes: int, spec: PathfinderSpec) -> np.ndarray:
    """Vertices ``(n, dashes + 1, 2)`` of random paths, each placed uniformly among the positions
    where its bounding box fits inside the margin (NaN where it cannot fit)."""
    seg = np.full(dashes, spec.dash + spec.gap)
    seg[-1] = spec.dash
    turn = np.deg2rad(rng.uniform(-spec.max_turn, spec.max_turn, size=(n, dashes)))
    turn[:, 0] = rng.uniform(-np.pi, np.pi, size=n)
    theta = np.cumsum(turn, axis=1)
    steps = seg[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=-1)  # (n, dashes, 2)
    rel = np.concatenate([np.zeros((n, 1, 2)), np.cumsum(steps, axis=1)], axis=1)
    lo, hi = spec.marker_radius + 1.0, spec.size - 2.0 - spec.marker_radius
    first, last = lo - rel.min(axis=1), hi - rel.max(axis=1)  # (n, 2): range of the start
    start = first + rng.uniform(size=(n, 2)) * (last - first)
    start[(last < first).any(axis=1)] = np.nan
    return rel + start[:, None, :]


def _inside(v: np.ndarray) -> np.ndarray:
    return ~np.isnan(v).any(axis=(-1, -2))


def _points(v: np.ndarray, spec: PathfinderSpec, step: float, drawn: bool) -> np.ndarray:
    """Points every ``step`` of arc along each segment, and at ``dash``: on its dash only
    (``drawn``, arcs clipped at ``dash``) or on all of it. The dash's points are a subset of the
    segment's, so a dashed image is its solid image with the gaps left out."""
    a, b = v[..., :-1, :], v[..., 1:, :]
    length = np.linalg.norm(b - a, axis=-1, keepdims=True)[..., None]  # (..., segs, 1, 1)
    arcs = np.append(np.arange(int(np.ceil((spec.dash + spec.gap) / step)) + 1) * step, spec.dash)
    arcs = np.minimum(arcs, spec.dash) if drawn else arcs
    arcs = np.minimum(arcs[:, None], length)  # (..., segs, k, 1)
    u = (b - a)[..., None, :] / np.maximum(length, 1e-12)
    pts = a[..., None, :] + arcs * u  # (..., segs, k, 2)
    return pts.reshape(*v.shape[:-2], -1, 2)


def _min_dist(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Smallest distance between the point sets ``p (..., P, 2)`` and ``q (..., Q, 2)``."""
    p, q = np.nan_to_num(p, nan=-1e3), np.nan_to_num(q, nan=-1e3)  # a NaN path: distance 0
    d2 = ((p * p).sum(-1)[..., :, None] + (q * q).sum(-1)[..., None, :]
          - 2.0 * (p @ np.swapaxes(q, -1, -2)))
    return np.sqrt(np.maximum(d2.min(axis=(-1, -2)), 0.0))


def _disk(radius: float) -> np.ndarray:
    r = int(np.floor(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = dy ** 2 + dx ** 2 <= radius ** 2
    return np.stack([dy[keep], dx[keep]], axis=-1)


def render(curves: list[np.ndarray], markers: np.ndarray, spec: PathfinderSpec,
           solid: bool = False) -> np.ndarray:
    """Binary images ``(n, size, size)``: each curve's vertices ``(n, k, 2)`` (row, column)
    drawn as dashes (``solid``: whole segments), and filled disks at ``markers (n, 2, 2)``."""
    n, s = markers.shape[0], spec.size
    img = np.zeros((n, s, s), dtype=np.uint8)
    for v in curves:
        pts = np.rint(_points(v, spec, _DRAW_STEP, drawn=not solid)).astype(np.int64)
        pts = np.clip(pts, 0, s - 1)
        rows = np.repeat(np.arange(n), pts.shape[1])
        img[rows, pts[..., 0].ravel(), pts[..., 1].ravel()] = 1
    centers = np.rint(markers).astype(np.int64)[:, :, None, :] + _disk(spec.marker_radius)
    centers = np.clip(centers, 0, s - 1).reshape(n, -1, 2)
    rows = np.repeat(np.arange(n), centers.shape[1])
    img[rows, centers[..., 0].ravel(), centers[..., 1].ravel()] = 1
    return img


def _batch(rng: np.random.Generator, n: int, length: int, positive: bool,
           spec: PathfinderSpec) -> tuple[list[np.ndarray], np.ndarray]:
    """Up to ``n`` valid images' geometry: curves (two paths, then distractors) and markers."""
    a, b = _paths(rng, n, length, spec), _paths(rng, n, length, spec)
    pa, pb = _points(a, spec, _STEP, False), _points(b, spec, _STEP, False)
    ok = _inside(a) & _inside(b) & (_min_dist(pa, pb) >= spec.clearance)
    markers = np.stack([a[:, 0], a[:, -1] if positive else b[:, 0]], axis=1)  # (n, 2, 2)
    reach = spec.clearance + spec.marker_radius
    if positive:  # both markers on a: b must keep clear of them
        ok &= _min_dist(markers, pb) >= reach
    else:
        ok &= (_min_dist(markers[:, :1], pb) >= reach) & (_min_dist(markers[:, 1:], pa) >= reach)
    a, b, pa, pb, markers = a[ok], b[ok], pa[ok], pb[ok], markers[ok]
    m = a.shape[0]
    d_len = max(1, length // 3)
    count = max(1, round(spec.distractor_dashes / d_len))
    tries = 4 * count
    d = _paths(rng, m * tries, d_len, spec).reshape(m, tries, d_len + 1, 2)
    pd = _points(d, spec, _STEP, False)  # (m, tries, P, 2)
    main = np.concatenate([pa, pb], axis=1)[:, None]  # (m, 1, P, 2)
    fine = (_inside(d) & (_min_dist(pd, main) >= spec.clearance)
            & (_min_dist(pd, markers[:, None]) >= reach))
    enough = fine.sum(axis=1) >= count
    # the first `count` distractors that fit, for each image that has enough of them
    order = np.argsort(~fine, axis=1, kind="stable")[:, :count]
    chosen = np.take_along_axis(d, order[:, :, None, None], axis=1)[enough]
    curves = [a[enough], b[enough]] + [chosen[:, i] for i in range(count)]
    return curves, markers[enough]


def _generate(n: int, length: int, spec: PathfinderSpec, seed: int,
              solid: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, length, VERSION])
    images, labels = [], []
    for positive, want in ((True, n // 2), (False, n - n // 2)):
        got, chunks, empty = 0, [], 0
        while got < want:
            curves, markers = _batch(rng, min(1024, 4 * want + 16), length, positive, spec)
            empty = empty + 1 if markers.shape[0] == 0 else 0
            if empty == 20:
                raise ValueError(f"paths of {length} dashes of {spec.dash + spec.gap:g} px hardly "
                                 f"ever fit twice on a {spec.size}-px image; use a larger size "
                                 "or shorter paths")
            img = render(curves, markers, spec, solid)[: want - got]
            chunks.append(img)
            got += img.shape[0]
        images.append(np.concatenate(chunks) if chunks else np.zeros((0, spec.size, spec.size),
                                                                    np.uint8))
        labels.append(np.full(want, int(positive), dtype=np.int64))
    perm = rng.permutation(n)
    return np.concatenate(images)[perm], np.concatenate(labels)[perm]


def cache_path(n: int, path_length: int, spec: PathfinderSpec, seed: int, solid: bool) -> Path:
    """The ``.npz`` file caching one dataset (named by a hash of everything that draws it)."""
    from deeplinear._fetch import cache_dir

    key = json.dumps(dict(asdict(spec), n=n, path_length=path_length, seed=seed, solid=solid,
                          version=VERSION), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "pathfinder" / f"pathfinder-L{path_length}-n{n}-{digest}.npz"


def pathfinder(n: int, path_length: int, *, spec: PathfinderSpec = PathfinderSpec(),
               seed: int = 0, solid: bool = False,
               cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``n`` Pathfinder images with paths of ``path_length`` dashes and their labels.

    Returns:
        images ``(n, 1, size, size)`` float32 in {0, 1} and labels ``(n,)`` int64, half of them 1
        (``n // 2``), in an order drawn from ``seed``. The same arguments give the same arrays;
        with ``cache`` they are read from (or written to) :func:`cache_path`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(path_length, bool) or not isinstance(path_length, int) or path_length < 1:
        raise ValueError(f"path_length must be an integer >= 1, got {path_length!r}")
    path = cache_path(n, path_length, spec, seed, solid) if cache else None
    if path is not None and path.is_file():
        try:
            with np.load(path) as f:
                images, labels = f["images"], f["labels"]
            if images.shape == (n, spec.size, spec.size) and labels.shape == (n,):
                return images[:, None].astype(np.float32), labels.astype(np.int64)
        except (OSError, ValueError, KeyError):
            pass  # unreadable or foreign file: regenerate and replace it
    images, labels = _generate(n, path_length, spec, seed, solid)
    if path is not None:
        from deeplinear.store import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, images=images, labels=labels)
        atomic_write(path, buffer.getvalue())
    return images[:, None].astype(np.float32), labels
