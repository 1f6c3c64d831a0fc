"""Layered configs, ``--set`` parsing, validation errors (one line, exit 2), TOML round trip."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from typer.testing import CliRunner

from deeplinear.cli import app
from deeplinear.config import (
    ConfigError,
    build_config,
    dump_toml,
    load_toml,
    merge,
    parse_override,
    run_id,
    validate,
)
from deeplinear.experiments.base import REGISTRY, Experiment, Results
from deeplinear.sweep import load_experiments, preset_of


class Train(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(100, ge=1)
    lr: float = Field(0.1, gt=0)


class Cfg(BaseModel):
    """Carries the same kinds of validators as the real experiments' models."""

    model_config = ConfigDict(extra="forbid")
    depth: int = Field(2, ge=1)
    n: int = Field(4, ge=1)
    observations: int = Field(8, ge=1)
    p: int = 4
    name: str = "gd"
    train: Train = Train()

    @field_validator("p")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("p must be an even integer")
        return v

    @model_validator(mode="after")
    def _fits(self) -> Cfg:
        if self.observations > self.n * self.n:
            raise ValueError(
                f"observations ({self.observations}) exceed the n*n = {self.n * self.n} entries"
            )
        return self


def _noop(config: BaseModel, progress: object) -> Results:
    return Results(summary={"x": 1.0})


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Experiment:
    exp = Experiment("cfgfake", "config test experiment", Cfg, _noop, lambda r, d: [])
    monkeypatch.setitem(REGISTRY, exp.name, exp)
    return exp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("depth=3", {"depth": 3}),
        ("train.lr=1e-3", {"train": {"lr": 1e-3}}),
        ("a.b.c=true", {"a": {"b": {"c": True}}}),
        ("dims=[2, 3]", {"dims": [2, 3]}),
        ("name=gd", {"name": "gd"}),  # not a TOML literal: kept as a string
        ('name="3"', {"name": "3"}),  # quoted: a string even though it looks numeric
        ("name = group rmsprop ", {"name": "group rmsprop"}),
    ],
)
def test_parse_override(text: str, expected: dict) -> None:
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["depth", "=3", "a..b=1", ".a=1"])
def test_parse_override_rejects_malformed(text: str) -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override(text)


@given(st.one_of(st.integers(-(2**62), 2**62), st.floats(allow_nan=False, allow_infinity=False)))
def test_parse_override_roundtrips_numbers(x: float) -> None:
    """Any int or finite float written with repr() comes back with its type and exact value."""
    value = parse_override(f"a.b={x!r}")["a"]["b"]
    assert value == x and type(value) is type(x)


def test_merge_is_left_to_right_and_deep() -> None:
    out = merge({"a": {"x": 1, "y": 2}, "b": 1}, {"a.y": 3}, {"a": {"z": 4}, "b": 5})
    assert out == {"a": {"x": 1, "y": 3, "z": 4}, "b": 5}


def test_build_config_layers_in_order(tmp_path) -> None:
    f1 = tmp_path / "one.toml"
    f1.write_text("depth = 3\n[train]\nsteps = 7\nlr = 0.5\n")
    f2 = tmp_path / "two.toml"
    f2.write_text("[train]\nlr = 0.25\n")
    cfg = build_config(Cfg, preset={"depth": 5, "n": 9}, files=[f1, f2], sets=["train.steps=9"])
    # preset < file 1 < file 2 < --set; untouched keys keep the model defaults
    assert (cfg.depth, cfg.n, cfg.train.steps, cfg.train.lr, cfg.p) == (3, 9, 9, 0.25, 4)


def test_dump_toml_roundtrip_and_run_id() -> None:
    cfg = build_config(Cfg, sets=["depth=4", "train.lr=0.03"])
    again = validate(Cfg, tomllib.loads(dump_toml(cfg)))
    assert again == cfg
    assert run_id("e", cfg) == run_id("e", again)
    assert run_id("e", cfg) != run_id("e", build_config(Cfg, sets=["depth=5"]))
    assert run_id("e", cfg) != run_id("other", cfg)
    assert len(run_id("e", cfg)) == 12


BAD = [
    # (what is wrong, --set or file text, expected message fragment)
    ("unknown key", ["--set", "dpth=3"], "dpth: unknown key"),
    ("unknown nested key", ["--set", "train.stps=3"], "train.stps: unknown key"),
    ("wrong type", ["--set", "depth=deep"], "depth: Input should be a valid integer"),
    ("depth 0", ["--set", "depth=0"], "depth: Input should be greater than or equal to 1"),
    ("negative step", ["--set", "train.lr=-0.1"], "train.lr: Input should be greater than 0"),
    ("too many observations", ["--set", "observations=17"], "exceed the n*n = 16 entries"),
    ("odd p", ["--set", "p=3"], "p: p must be an even integer"),
    ("malformed --set", ["--set", "depth"], "expected KEY=VALUE"),
    ("missing file", ["--config", "MISSING/none.toml"], "does not exist"),
    ("bad TOML", ["--config", "BAD"], "is not valid TOML"),
    ("table where a value is expected", ["--set", "depth.x=1"], "depth"),
    ("quick and paper", ["--quick", "--paper"], "choose one size preset"),
]


@pytest.mark.parametrize(("kind", "args", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_one_line_exit_2(fake, tmp_path, kind, args, message) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("depth = [1,\n")
    args = [str(bad) if a == "BAD" else a for a in args]
    res = CliRunner().invoke(app, ["run", fake.name, "--print-config", *args])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert message in lines[0]
    assert "Traceback" not in res.output


def test_bad_config_in_file_names_the_key(fake, tmp_path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[train]\nsteps = -5\n")
    with pytest.raises(ConfigError, match=r"^train\.steps: Input should be greater than or equal"):
        build_config(Cfg, files=[f])


def test_unknown_experiment_exit_2(fake) -> None:
    res = CliRunner().invoke(app, ["run", "no-such-experiment"])
    assert res.exit_code == 2
    assert "'no-such-experiment' is not registered" in res.stderr
    assert fake.name in res.stderr  # lists the known names


def test_load_toml_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "nope.toml")
    (tmp_path / "x.toml").write_text("a = 1\na = 2\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(tmp_path / "x.toml")


def test_print_config_shows_merged_layers(fake, tmp_path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("depth = 6\n")
    res = CliRunner().invoke(app, ["run", fake.name, "-c", str(f), "--set", "train.steps=11",
                                   "--print-config"])
    assert res.exit_code == 0, res.output
    data = tomllib.loads(res.stdout)
    assert data["depth"] == 6 and data["train"]["steps"] == 11 and data["p"] == 4


REAL = list(load_experiments())


@pytest.mark.parametrize("name", REAL or ["(none registered yet)"])
@pytest.mark.parametrize("preset", ["default", "quick", "paper"])
def test_real_experiment_presets_roundtrip(name: str, preset: str) -> None:
    """Every registered experiment's presets validate, and its config survives config.toml."""
    if name not in REGISTRY:
        pytest.skip("no real experiment is registered yet")
    exp = REGISTRY[name]
    cfg = build_config(exp.config_model, preset=preset_of(exp, preset))
    again = validate(exp.config_model, tomllib.loads(dump_toml(cfg)))
    assert again == cfg and run_id(name, again) == run_id(name, cfg)
    assert exp.description.strip(), "list shows the first line of the description"


EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(path: Path) -> None:
    """Grid files (they name an ``experiment``) expand; config files named ``<experiment>-*.toml``
    validate against that experiment's model. Skipped while the experiment is not registered."""
    from deeplinear.sweep import expand, load_grid

    data = load_toml(path)
    if "experiment" in data:
        if data["experiment"] not in REGISTRY:
            pytest.skip(f"{data['experiment']} is not registered")
        assert expand(load_grid(path))
        return
    owners = [n for n in REGISTRY if path.stem.startswith(f"{n}-") or path.stem == n]
    if not owners:
        pytest.skip(f"no registered experiment named by {path.name}")
    exp = REGISTRY[max(owners, key=len)]
    build_config(exp.config_model, files=[path])
