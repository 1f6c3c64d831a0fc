"""Input validation (issue 9, parts 3 and 5): the shared config constraints, defensive file reading,
one-line messages, the console entry point, and the library-level checks (zero observations,
init scales, booleans for integers, seeds, bounded MNIST decompression)."""

from __future__ import annotations

import gzip
import math
import os
import struct
import tomllib
from pathlib import Path
from typing import Annotated

import jax
import numpy as np
import pytest
from pydantic import Field, ValidationError

import deeplinear.cli as cli
from deeplinear import data, network, problems
from deeplinear.config import (
    MAX_MESSAGE,
    ConfigError,
    ConfigModel,
    Depth,
    Finite,
    NonEmptyList,
    NonNegativeFloat,
    PositiveFloat,
    Seed,
    Size,
    Steps,
    Tolerance,
    load_toml,
    parse_override,
    short,
    validate,
)
from deeplinear.experiments._regularization import check_depths
from deeplinear.sweep import load_experiments

# ------------------------------------------------------------------ shared constraint types


class Model(ConfigModel):
    seed: Seed = 0
    steps: Steps = 10
    width: Size = 4
    depth: Depth = 2
    lr: PositiveFloat = 0.1
    decay: NonNegativeFloat = 0.0
    rtol: Tolerance = 1e-6
    x: Finite = 0.0
    lrs: NonEmptyList[PositiveFloat] = [0.1]


@pytest.mark.parametrize(("key", "value"), [
    ("seed", -1), ("seed", 2**32), ("seed", 2**66), ("seed", True), ("seed", 1.0), ("seed", "1"),
    ("steps", 0), ("steps", 10**9 + 1), ("steps", False),
    ("width", 0), ("width", 100_001), ("depth", 0), ("depth", 101),
    ("lr", 0.0), ("lr", -1e-3), ("lr", math.inf), ("lr", -math.inf), ("lr", math.nan),
    ("lr", 1e13), ("lr", True), ("lr", "0.1"),
    ("decay", -1e-9), ("decay", math.nan), ("rtol", 0.0), ("rtol", 1.0), ("x", math.inf),
    ("x", -1e13), ("lrs", []), ("lrs", [0.1] * 1001), ("lrs", [0.1, math.inf]), ("lrs", [True]),
    ("bogus", 1),
])
def test_constraint_types_reject(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}") as info:
        validate(Model, {key: value})
    message = str(info.value)
    assert "\n" not in message and len(message) <= MAX_MESSAGE


def test_constraint_types_accept_edges() -> None:
    m = validate(Model, {"seed": 2**32 - 1, "steps": 10**9, "width": 100_000, "lr": 3,
                         "decay": 0, "x": -1e12, "lrs": [1e-30] * 1000})
    assert m.lr == 3.0 and isinstance(m.lr, float) and m.seed == 2**32 - 1


def test_every_experiment_config_uses_the_base_model() -> None:
    """Every registered experiment validates through ConfigModel: unknown keys, inf/nan and
    booleans for numbers are refused, and every numeric field carries a stated range."""
    real = {n: e for n, e in load_experiments().items()
            if e.run.__module__.startswith("deeplinear.experiments.")}  # not other tests' fakes
    assert real
    for name, exp in real.items():
        model = exp.config_model
        assert issubclass(model, ConfigModel), name
        properties = model.model_json_schema()["properties"]
        for key in model.model_fields:
            schema = properties[key]
            text = str(schema)
            if "'integer'" in text or "'number'" in text:
                assert "maximum" in text or "exclusiveMaximum" in text, (name, key, schema)
                assert "minimum" in text or "exclusiveMinimum" in text, (name, key, schema)
        with pytest.raises(ConfigError):
            validate(model, {"no_such_key": 1})


def test_narrowing_a_shared_type() -> None:
    class Narrow(ConfigModel):
        n: Annotated[Size, Field(ge=2)] = 2

    with pytest.raises(ConfigError, match="greater than or equal to 2"):
        validate(Narrow, {"n": 1})
    with pytest.raises(ConfigError, match="less than or equal to 100000"):
        validate(Narrow, {"n": 100_001})


def test_pydantic_errors_are_not_leaked() -> None:
    with pytest.raises(ConfigError) as info:
        validate(Model, {"lr": "x" * 10_000_000})
    assert len(str(info.value)) <= MAX_MESSAGE and "10000000 characters" in str(info.value)
    assert not isinstance(info.value, ValidationError)


def test_many_errors_are_counted_not_listed() -> None:
    data = {f"k{i}": 1 for i in range(20_000)} | {"lr": -1, "steps": 0, "seed": -1, "width": 0}
    with pytest.raises(ConfigError) as info:
        validate(Model, data)
    message = str(info.value)
    assert "k0, k1, k2: unknown keys (and 19997 more)" in message
    assert len(message) <= MAX_MESSAGE


def test_unknown_key_suggests_the_close_one() -> None:
    with pytest.raises(ConfigError, match=r"^stesp: unknown key \(did you mean 'steps'\?\)$"):
        validate(Model, {"stesp": 3})


def test_short() -> None:
    assert short("abc") == "'abc'"
    s = short("x" * 10_000_000)
    assert len(s) <= 60 and "10000000 characters" in s
    assert len(short(list(range(100_000)))) <= 60
    nested: list = []
    for _ in range(5000):
        nested = [nested]
    assert len(short(nested)) <= 60  # no RecursionError


# ------------------------------------------------------------------ reading files


@pytest.mark.parametrize(("content", "message"), [
    ("n = 5 # café\n".encode("latin-1"), "is not UTF-8 text"),
    ("n = 5\n".encode("utf-16"), "looks like UTF-16"),
    (bytes(range(256)), "not"),
    (b"n = " + b"[" * 3000 + b"]" * 3000 + b"\n", "nested more than 16 levels"),
    (b"n = " + b"{a = " * 3000 + b"1" + b"}" * 3000 + b"\n", "nested more than 16 levels"),
    (b".".join([b"a"] * 3000) + b" = 1\n", "nested more than 16 levels"),
    (b"n = " + b"9" * 5000 + b"\n", "is not valid TOML"),
])
def test_load_toml_refuses_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    f = tmp_path / "c.toml"
    f.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_toml(f)
    assert "c.toml" in str(info.value) and len(str(info.value)) <= MAX_MESSAGE


def test_load_toml_refuses_non_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        load_toml(tmp_path)
    fifo = tmp_path / "fifo.toml"
    if hasattr(os, "mkfifo"):
        os.mkfifo(fifo)
        with pytest.raises(ConfigError, match="not a regular file"):
            load_toml(fifo)  # must not block
    f = tmp_path / "bom.toml"
    f.write_bytes(b"\xef\xbb\xbfn = 5\n")
    assert load_toml(f) == {"n": 5}  # a UTF-8 BOM is fine


@pytest.mark.parametrize("text", ["n=" + "[" * 3000 + "]" * 3000, "a." * 3000 + "b=1",
                                  "n=1\nm=2", "n=1\rm=2"])
def test_parse_override_refuses_nesting_and_newlines(text: str) -> None:
    with pytest.raises(ConfigError, match="nested|one line"):
        parse_override(text)


def test_parse_override_long_number_is_a_string() -> None:
    assert parse_override("n=" + "9" * 5000) == {"n": "9" * 5000}


# ------------------------------------------------------------------ console entry point


def test_console_script_is_main() -> None:
    """The command enters through ``deeplinear.__main__`` (one line when the cli extra is
    missing), which runs ``deeplinear.cli.main``."""
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["deeplinear"] == "deeplinear.__main__:main"
    from deeplinear.__main__ import main

    assert main(["list"]) == 0


@pytest.mark.parametrize("argv", [["run"], ["run", "fig2", "--bogus"], ["nosuchcmd"],
                                  ["sweep", "g.toml", "--workers", "abc"],
                                  ["sweep", "g.toml", "--workers", "-1"],
                                  ["sweep", "g.toml", "--scheduler", "garbage"],
                                  ["run", "fig2", "--set", "n=inf"]])
def test_main_usage_errors_are_one_line(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) <= 300
    assert "Traceback" not in captured.err + captured.out


def test_main_help_and_success(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["--help"]) == 0
    assert "Usage" in capsys.readouterr().out
    assert cli.main(["run", "fig3", "--quick", "--print-config"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["n"] == 20


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "10.0.0.5:8786", "tls://host.x:1",
                                     "tcp://[::1]:8786", "scheduler-0.cluster.local:65535"])
def test_scheduler_addresses_that_look_right(address: str) -> None:
    cli._check_sweep_options(address, 0)


# ------------------------------------------------------------------ library checks


def test_matrix_completion_needs_observations() -> None:
    with pytest.raises(ValueError, match="at least one observation"):
        problems.MatrixCompletion([], [], [], (3, 3))
    with pytest.raises(ValueError, match="values must be finite"):
        problems.MatrixCompletion([0], [0], [np.nan], (3, 3))
    with pytest.raises(ValueError, match="integer indices"):
        problems.MatrixCompletion([0.5], [0], [1.0], (3, 3))
    with pytest.raises(ValueError, match="shape"):
        problems.MatrixCompletion([0], [0], [1.0], (True, 3))
    key = jax.random.PRNGKey(0)
    W = problems.low_rank_ground_truth(key, (4, 4), 2)
    for m in (0, True, 2.0, 17):
        with pytest.raises(ValueError, match="m \\(observations\\)"):
            problems.sample_completion(key, W, m)
    with pytest.raises(ValueError, match="at least one measurement|m \\(measurements\\)"):
        problems.sample_sensing(key, W, 0)
    with pytest.raises(ValueError, match="at least one measurement"):
        problems.MatrixSensing(np.zeros((0, 2, 2)), np.zeros(0))
    with pytest.raises(ValueError, match="rank"):
        problems.low_rank_ground_truth(key, (4, 4), True)
    with pytest.raises(ValueError, match="d must be"):
        problems.completion_dxd(True)
    with pytest.raises(ValueError, match="at least one example"):
        problems.LpRegression(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError, match="p must be"):
        problems.LpRegression(np.ones((2, 2)), np.ones(2), p=True)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf, -math.inf, math.nan, True, "1"])
def test_inits_refuse_bad_scales(scale: object) -> None:
    key = jax.random.PRNGKey(0)
    dims = (2, 2, 2)
    for make in (lambda: network.identity_init(dims, scale),
                 lambda: network.orthogonal_init(key, dims, scale),
                 lambda: network.gaussian_init(key, dims, scale),
                 lambda: network.balanced_init(key, dims, scale)):
        with pytest.raises(ValueError, match="scale must be a finite number > 0"):
            make()


@pytest.mark.parametrize("dims", [(2, True), (2, 2.5), (2, "2"), (2, 0), (2,), 5])
def test_dims_must_be_positive_integers(dims: object) -> None:
    with pytest.raises(ValueError, match="dims"):
        network.identity_init(dims, 1.0)


def test_with_det_sign_refuses_bools() -> None:
    init = lambda k: network.identity_init((2, 2), 1.0)  # noqa: E731
    with pytest.raises(ValueError, match="sign"):
        network.with_det_sign(jax.random.PRNGKey(0), init, True)
    with pytest.raises(ValueError, match="max_tries"):
        network.with_det_sign(jax.random.PRNGKey(0), init, 1, max_tries=0)


def test_regularization_checks() -> None:
    assert check_depths("depths", [3, 1, 2]) == [1, 2, 3]
    with pytest.raises(ValueError):
        check_depths("depths", [True, 2])
    with pytest.raises(ValueError):
        check_depths("depths", [2, 2])


def test_gas_sensor_refuses_bool_gas(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gas must be one of"):
        data.load_gas_sensor(tmp_path, gas=True)


def _idx_header(shape: tuple[int, ...], type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def test_read_idx_refuses_oversized_header_without_decompressing(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    bomb.write_bytes(gzip.compress(_idx_header((65536, 65536)) + bytes(1024)))
    with pytest.raises(ValueError, match="more than the .* bytes allowed"):
        data.read_idx(bomb)


def test_read_idx_refuses_more_data_than_the_header_says(tmp_path: Path) -> None:
    f = tmp_path / "x-idx1-ubyte.gz"
    f.write_bytes(gzip.compress(_idx_header((4,)) + bytes(10_000_000)))  # 10 MB, header says 4
    with pytest.raises(ValueError, match="header says shape \\(4,\\) \\(4 data bytes\\) but the "
                                         "file holds more than 4"):
        data.read_idx(f)
    f.write_bytes(gzip.compress(_idx_header((4,)) + bytes(3)))
    with pytest.raises(ValueError, match="holds 3 data bytes"):
        data.read_idx(f)


def test_read_idx_limit_and_roundtrip(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    f = tmp_path / "ok-idx3-ubyte.gz"
    f.write_bytes(gzip.compress(_idx_header(arr.shape) + arr.tobytes()))
    np.testing.assert_array_equal(data.read_idx(f), arr)
    with pytest.raises(ValueError, match="more than the 10 bytes allowed"):
        data.read_idx(f, max_bytes=10)
    f.write_bytes(b"\x1f\x8b" + bytes(20))
    with pytest.raises(ValueError, match="corrupt gzip|bad magic"):
        data.read_idx(f)
