"""Fuzz the real CLI with a generated table of malformed inputs (issue 9, "Bad input, everywhere").

Every case drives ``deeplinear.cli.app`` in-process (``CliRunner``) and must be refused before any
work starts with exit status 2, no traceback, and exactly ONE stderr line of at most 300
characters. The table covers every registered experiment's every config field (wrong types,
inf/nan, negative, huge, booleans, nesting, long strings), config files that are not UTF-8 or
nest too deeply, malformed grid files, bad ``sweep`` options, unknown experiments, bad ``--set``
syntax, unimportable plugin modules and click usage errors. (``report`` on damaged folders and
``--out`` paths are tested elsewhere.)
"""

from __future__ import annotations

import os
import random
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deeplinear.cli import app
from deeplinear.experiments.base import REGISTRY
from deeplinear.sweep import PLUGIN_ENV, load_experiments

MAX_LINE = 300
DEEP = 3000  # nesting depth of the "deeply nested" inputs
HUGE_INT = "99999999999999999999"
LONG = "x" * 100_000


@dataclass
class Case:
    """One malformed input: CLI arguments (``{tmp}`` is the fuzz folder), environment, and files
    (name -> bytes) written into the fuzz folder first."""

    id: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


REAL = {name: exp for name, exp in load_experiments().items()
        if exp.run.__module__.startswith("deeplinear.experiments.")}
CASES: list[Case] = []


def add(id_: str, args: list[str], env: dict[str, str] | None = None,
        files: dict[str, bytes] | None = None) -> None:
    CASES.append(Case(id_, args, env or {}, files or {}))


# ------------------------------------------------------------------ every field of every experiment

ZERO_OK = {"seed", "weight_decay", "nuclear_tol", "dxd", "momentum", "noise", "dropout",
           "positive_label", "holdout", "patience", "reg_distance", "reg_samples",
           "coefficients", "distances"}  # 0 (or [0] for a list) is valid
NESTED_LIST = "[" * DEEP + "]" * DEEP
NESTED_TABLE = "{a = " * DEEP + "1" + "}" * DEEP

COMMON_BAD = ["inf", "-inf", "nan", "1e400", "{a = 1}", NESTED_LIST, NESTED_TABLE, HUGE_INT,
              "-" + HUGE_INT, "-1", "1979-05-27", "[[1, 2], [3]]"]


def _kind(annotation: typing.Any) -> str:
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return "bool"
    if origin is list:
        return "list"
    if origin is typing.Literal:
        return "choice"
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _kind(args[0]) if len(args) == 1 else "other"
    if isinstance(annotation, type) and issubclass(annotation, str):
        return "str"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    inner = typing.get_args(annotation)
    return _kind(inner[0]) if inner else "other"


def _field_values(name: str, kind: str) -> list[str]:
    values = list(COMMON_BAD)
    if kind != "bool":
        values.append("true")
    if kind in ("int", "float", "list", "bool"):
        values += [f'"{LONG}"', '"1"']
    if kind in ("int", "float") and name not in ZERO_OK:
        values.append("0")
    if kind == "int":
        values += ["1.5", "[1]"]
    if kind == "float":
        values += ["[0.5]", "1e13"]
    if kind == "choice":
        values += ['"no-such-choice"', '""', f'"{LONG}"', "[]"]
    if kind == "str":
        values += ['""', f'"{"p" * 5000}"', "[]"]
    if kind == "list":
        values += ["[]", "[true, false]", "[inf]", "[nan]", "[-1]",
                   *([] if name in ZERO_OK else ["[0]"]), f"[{HUGE_INT}]",
                   "[" + ", ".join(["2"] * 2000) + "]", '["a"]', "[[2]]", "5"]
    return values


for exp_name, exp in REAL.items():
    for fname, info in exp.config_model.model_fields.items():
        kind = _kind(info.annotation)
        for i, value in enumerate(_field_values(fname, kind)):
            add(f"set-{exp_name}-{fname}-{i}", ["run", exp_name, "--print-config", "--set",
                                                  f"{fname}={value}"])
        # the same through a config file, and once without --print-config (a real run)
        add(f"file-{exp_name}-{fname}", ["run", exp_name, "-c", "{tmp}/" + f"{exp_name}-{fname}.toml",
                                         "--print-config"],
            files={f"{exp_name}-{fname}.toml": f"{fname} = {NESTED_LIST}\n".encode()})
        add(f"file-inf-{exp_name}-{fname}", ["run", exp_name, "-c",
                                             "{tmp}/" + f"inf-{exp_name}-{fname}.toml"],
            files={f"inf-{exp_name}-{fname}.toml": f"{fname} = -inf\n".encode()})
    add(f"unknown-key-{exp_name}", ["run", exp_name, "--set", "no_such_key=1"])
    add(f"unknown-nested-{exp_name}", ["run", exp_name, "--set", "a.b.c=1"])
    add(f"quick-and-paper-{exp_name}", ["run", exp_name, "--quick", "--paper"])


# the examples, literally
for args in (["run", "fig3", "--quick", "--set", "seed=73786976294838206464"],
             ["run", "fig3", "--set", "n=99999999999999999999"],
             ["run", "fig3", "--set", "steps=[10000000000,1,1]"],
             ["run", "fig3", "--set", "seed=4294967296"],
             ["run", "fig3", "--set", "seed=-1"],
             ["run", "fig3", "--set", "seed=true"],
             ["run", "fig3", "--quick", "--set", "lrs=[inf,1,1]"],
             ["run", "norms", "--set", "flow_t1=inf"],
             ["run", "norms", "--set", "stop_loss=nan"],
             ["run", "fig2", "--set", "observations=[0]"],
             ["run", "fig2", "--set", "rank=101"],
             ["run", "fig2", "--set", "n=10", "--set", "observations=[101]"],
             ["run", "fig3", "--set", "depths=[1,2]"],
             ["run", "fig3", "--set", "top_k=200"],
             ["run", "fig3", "--set", "depths=[1,1,2]"],
             ["run", "fig1-regression", "--set", "depths=[2,3]"],
             ["run", "fig1-regression", "--set", "p_values=[3]"],
             ["run", "fig1-cnn", "--set", "dataset=digits", "--set", "data_path=x"],
             ["run", "norms", "--set", "dxd=1"],
             ["run", "fig3", "--set", "problems=[\"sensing\",\"sensing\"]"]):
    add("issue-" + "-".join(args[1:])[:60], args)

# many unknown keys, a 10 MB value: the message names a few and says how many
add("unknown-20000-keys", ["run", "fig2", "-c", "{tmp}/many.toml"],
    files={"many.toml": "".join(f"k{i} = 1\n" for i in range(20_000)).encode()})
add("value-10MB-file", ["run", "fig2", "-c", "{tmp}/big.toml"],
    files={"big.toml": b'optimizer = "' + b"y" * 10_000_000 + b'"\n'})
add("value-10MB-set", ["run", "fig2", "--set", "n=" + "9" * 10_000_000])


# ------------------------------------------------------------------ config files

_rng = random.Random(9)
BAD_FILES: dict[str, bytes] = {
    "latin1": "n = 5 # caf\u00e9\n".encode("latin-1"),
    "utf16": "n = 5\n".encode("utf-16"),
    "utf16be": "n = 5\n".encode("utf-16-be"),
    "utf32": "n = 5\n".encode("utf-32"),
    "binary": bytes(_rng.randrange(256) for _ in range(512)),
    "binary-high": bytes(_rng.randrange(128, 256) for _ in range(64)),
    "nul": b"n = 5\x00\n",
    "only-nul": b"\x00" * 100,
    "png": b"\x89PNG\r\n\x1a\n" + bytes(64),
    "gzip": b"\x1f\x8b\x08\x00" + bytes(32),
    "bad-toml-eq": b"n = \n",
    "bad-toml-bracket": b"[n\n",
    "dup-key": b"n = 1\nn = 2\n",
    "no-key": b"= 1\n",
    "unterminated-string": b'optimizer = "gd\n',
    "unterminated-array": b"depths = [1,\n",
    "nested-array": f"depths = {NESTED_LIST}\n".encode(),
    "nested-inline": f"n = {NESTED_TABLE}\n".encode(),
    "nested-dotted": (".".join(["a"] * DEEP) + " = 1\n").encode(),
    "nested-header": ("[" + ".".join(["a"] * DEEP) + "]\nx = 1\n").encode(),
    "array-of-tables": b"[[n]]\nx = 1\n",
    "table-for-value": b"[n]\nx = 1\n",
    "empty-key": b'"" = 1\n',
    "string-for-int": b'n = "5"\n',
    "bool-for-int": b"n = true\n",
    "float-for-int": b"n = 5.0\n",
    "date": b"n = 1979-05-27T07:32:00Z\n",
    "bom-then-binary": b"\xef\xbb\xbf\xff\xfe",
    "huge-int": f"n = {HUGE_INT}\n".encode(),
    "huge-list": ("observations = [" + ", ".join(["5"] * 5000) + "]\n").encode(),
    "long-key": (LONG + " = 1\n").encode(),
    "control-key": b'"\\u0007bell" = 1\n',
}
for label, content in BAD_FILES.items():
    add(f"config-{label}", ["run", "fig2", "-c", f"{{tmp}}/cfg-{label}.toml", "--print-config"],
        files={f"cfg-{label}.toml": content})
add("config-too-big", ["run", "fig2", "-c", "{tmp}/huge.toml"],
    files={"huge.toml": b"# " + b"z" * (17 * 2**20) + b"\n"})
add("config-missing", ["run", "fig2", "-c", "{tmp}/does-not-exist.toml"])
add("config-missing-long", ["run", "fig2", "-c", "{tmp}/" + "d" * 200 + "/" + "n" * 200 + ".toml"])
add("config-is-folder", ["run", "fig2", "-c", "{tmp}"])
add("config-is-fifo", ["run", "fig2", "-c", "{tmp}/fifo.toml"])
if os.path.exists("/dev/zero"):
    add("config-dev-zero", ["run", "fig2", "-c", "/dev/zero"])
add("config-second-bad", ["run", "fig2", "-c", "{tmp}/cfg-latin1.toml", "-c",
                          "{tmp}/cfg-nested-array.toml"])


# ------------------------------------------------------------------ grid files (sweep)

GRID_HEAD = 'experiment = "fig3"\npreset = "quick"\n'
BAD_GRIDS: dict[str, str] = {
    "set-int": GRID_HEAD + "set = 5\n",
    "set-list": GRID_HEAD + "set = [1, 2]\n",
    "set-string": GRID_HEAD + 'set = "n=5"\n',
    "grid-list": GRID_HEAD + "grid = [1, 2]\n",
    "grid-int": GRID_HEAD + "grid = 3\n",
    "grid-value-int": GRID_HEAD + "[grid]\nn = 5\n",
    "grid-value-empty": GRID_HEAD + "[grid]\nn = []\n",
    "grid-value-table": GRID_HEAD + "[grid]\nn = {a = 1}\n",
    "grid-bad-values": GRID_HEAD + '[grid]\nn = ["a", "b"]\n',
    "grid-inf": GRID_HEAD + "[grid]\ninit_scale = [inf]\n",
    "grid-unknown-key": GRID_HEAD + "[grid]\nbogus = [1, 2]\n",
    "grid-too-many": GRID_HEAD + "[grid]\n" + "".join(
        f"k{i} = [{', '.join(str(j) for j in range(20))}]\n" for i in range(6)),
    "configs-int": GRID_HEAD + "configs = 5\n",
    "configs-list-int": GRID_HEAD + "configs = [5]\n",
    "configs-empty-name": GRID_HEAD + 'configs = [""]\n',
    "configs-missing": GRID_HEAD + 'configs = ["missing.toml"]\n',
    "configs-table": GRID_HEAD + "configs = {a = 1}\n",
    "preset-int": 'experiment = "fig3"\npreset = 3\n',
    "preset-unknown": 'experiment = "fig3"\npreset = "huge"\n',
    "preset-list": 'experiment = "fig3"\npreset = ["quick"]\n',
    "seeds-bools": GRID_HEAD + "seeds = [true, false]\n",
    "seeds-huge": GRID_HEAD + "seeds = [73786976294838206464]\n",
    "seeds-2-32": GRID_HEAD + "seeds = [4294967296]\n",
    "seeds-negative": GRID_HEAD + "seeds = [-1]\n",
    "seeds-empty": GRID_HEAD + "seeds = []\n",
    "seeds-string": GRID_HEAD + 'seeds = "0"\n',
    "seeds-int": GRID_HEAD + "seeds = 3\n",
    "seeds-float": GRID_HEAD + "seeds = [1.5]\n",
    "seeds-nested": GRID_HEAD + "seeds = [[1]]\n",
    "experiment-int": "experiment = 5\n",
    "experiment-missing": "[grid]\nn = [10]\n",
    "experiment-unknown": 'experiment = "nope"\n',
    "experiment-empty": 'experiment = ""\n',
    "experiment-long": f'experiment = "{LONG}"\n',
    "experiment-table": "[experiment]\nname = 1\n",
    "unknown-top-key": GRID_HEAD + "bogus = 1\n",
    "many-unknown-keys": GRID_HEAD + "".join(f"u{i} = 1\n" for i in range(20_000)),
    "set-bad-value": GRID_HEAD + "[set]\nn = true\n",
    "set-unknown": GRID_HEAD + "[set]\nbogus = 1\n",
    "set-nested": GRID_HEAD + f"[set]\nn = {NESTED_LIST}\n",
    "nested": f"experiment = {NESTED_LIST}\n",
    "nested-table": GRID_HEAD + "[" + ".".join(["g"] * DEEP) + "]\nx = 1\n",
    "not-toml": "experiment = \n",
}
for label, text in BAD_GRIDS.items():
    add(f"grid-{label}", ["sweep", f"{{tmp}}/grid-{label}.toml", "--workers", "0"],
        files={f"grid-{label}.toml": text.encode()})
for label in ("latin1", "utf16", "binary", "nul", "only-nul"):
    add(f"grid-file-{label}", ["sweep", f"{{tmp}}/gridbin-{label}.toml"],
        files={f"gridbin-{label}.toml": BAD_FILES[label]})
add("grid-missing", ["sweep", "{tmp}/no-grid.toml"])
add("grid-folder", ["sweep", "{tmp}"])
add("grid-fifo", ["sweep", "{tmp}/fifo.toml"])
add("grid-plus-bad-set", ["sweep", "{tmp}/good-grid.toml", "--set", "n=inf"])
add("grid-plus-malformed-set", ["sweep", "{tmp}/good-grid.toml", "--set", "n"])
add("grid-quick-and-paper", ["sweep", "{tmp}/good-grid.toml", "--quick", "--paper"])


# ------------------------------------------------------------------ sweep options

for value in ("-1", "-5", "-99999999999", "1025", HUGE_INT, "abc", "1.5", "", "0x10", "1e3"):
    add(f"workers-{value[:12]}", ["sweep", "{tmp}/good-grid.toml", "--workers", value])
for value in ("garbage", "", " ", "tcp://", "tcp://host", "tcp://host:0", "tcp://host:99999",
              "http://host:80", "host", LONG, "tcp://:80", "tcp://ho st:80", "tcp://host:80/x",
              "tcp://host:-1", "file:///etc/passwd", "tcp://host:port", "[::1]", "tcp://h:1:2",
              "\u00e9:1", "tcp://host:80\nx"):
    add(f"scheduler-{value[:16]!r}", ["sweep", "{tmp}/good-grid.toml", "--scheduler", value])


# ------------------------------------------------------------------ unknown experiments

for name in ("nope", "", LONG, "../../etc/passwd", "fig2\n", "FIG2", " fig2", "fig2;rm -rf /",
             "\u0444\u0438\u04332", "fig", "fig2 fig3", "-", "no-such-fake"):
    add(f"experiment-{name[:16]!r}", ["run", name])
add("reproduce-only-unknown", ["reproduce", "--only", "nope", "--no-verify"])
add("reproduce-only-empty", ["reproduce", "--only", "", "--no-verify"])
add("reproduce-only-long", ["reproduce", "--only", LONG, "--no-verify"])
add("reproduce-quick-paper", ["reproduce", "--quick", "--paper", "--no-verify"])


# ------------------------------------------------------------------ --set syntax

BAD_SETS = ["depth", "=1", "", " ", "=", "a..b=1", ".a=1", "a.=1", " =1", "n.=1",
            ".".join("abcdefghijklmnopq") + "=1", "a." * DEEP + "b=1", "n=1\nrank=2",
            "n=1\r", LONG + "=1", "n=[1,", "n=" + "[" * DEEP, "n={", "n=" + NESTED_LIST,
            "n=" + NESTED_TABLE, "lrs.0=1", "n.x=1", "n=''", "n=\"\"\"x\"\"\"", "n=0x", "n=--1",
            "n=1_", "n=+inf", "n=-nan", "n=1979-05-27", "n=" + LONG, "depths=[1, \"2\"]",
            "init_scale=1e999", "init_scale=-0.0", "init_scale=0", "lr=0", "n=2.0"]
for i, text in enumerate(BAD_SETS):
    add(f"set-syntax-{i}", ["run", "fig2", "--set", text])


# ------------------------------------------------------------------ `complete`: bad matrix files


def _npy(array) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _npz(**arrays) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _complete_cases() -> None:
    import numpy as np

    good = np.arange(6, dtype=float).reshape(2, 3)
    bad_files = {
        "empty.csv": b"",
        "header.csv": b"a,b,c\n1,2,3\n",
        "ragged.csv": b"1,2,3\n4,5\n",
        "text.csv": b"1,2,x\n4,5,6\n",
        "inf.csv": b"1,2,inf\n4,5,6\n",
        "nothing.csv": b",,\nnan,NaN,\n",
        "latin1.csv": "1,2,\xe9\n".encode("latin-1"),
        "binary.csv": bytes(range(256)),
        "vector.npy": _npy(np.arange(4.0)),
        "cube.npy": _npy(np.zeros((2, 2, 2))),
        "strings.npy": _npy(np.array([["a", "b"]])),
        "objects.npy": _npy(np.array([[1, None]], dtype=object)),
        "complex.npy": _npy(np.ones((2, 2), complex)),
        "inf.npy": _npy(np.array([[1.0, np.inf], [2.0, 3.0]])),
        "allnan.npy": _npy(np.full((3, 3), np.nan)),
        "zerorows.npy": _npy(np.zeros((0, 3))),
        "truncated.npy": _npy(good)[:-7],
        "notnpy.npy": b"hello",
        "two.npz": _npz(a=good, b=good),
        "empty.npz": _npz(),
        "cube.npz": _npz(X=np.zeros((2, 2, 2))),
        "inf.npz": _npz(X=np.array([[np.inf, 1.0], [1.0, 1.0]])),
        "notzip.npz": b"PK\x03\x04 broken",
        "garbage.mtx": b"not a matrix market file\n",
        "truncated.mtx": b"%%MatrixMarket matrix coordinate real general\n3 3 4\n1 1 1.0\n",
        "nan.mtx": b"%%MatrixMarket matrix coordinate real general\n2 2 2\n1 1 nan\n2 2 1\n",
        "complex.mtx": b"%%MatrixMarket matrix coordinate complex general\n1 1 1\n1 1 1 2\n",
        "noentries.mtx": b"%%MatrixMarket matrix coordinate real general\n2 2 0\n",
    }
    for name, content in bad_files.items():
        add(f"complete-{name}", ["complete", "{tmp}/" + name, "--out", "{tmp}/out.csv"],
            files={name: content})
    add("complete-missing-input", ["complete", "{tmp}/no-such.csv", "--out", "{tmp}/out.csv"])
    add("complete-folder-input", ["complete", "{tmp}/dir.csv", "--out", "{tmp}/out.csv"])
    add("complete-unknown-format", ["complete", "{tmp}/in.txt", "--out", "{tmp}/out.csv"],
        files={"in.txt": b"1,2\n"})
    good_csv = {"good.csv": b"1,,3\n4,5,\n,8,9\n"}
    for i, (out, extra) in enumerate([
        ("{tmp}/good.csv", []),  # an existing file: never replaced
        ("{tmp}/out.xlsx", []),  # unknown output format
        ("{tmp}/no-such-dir/out.csv", []),
        ("{tmp}/dir.csv", []),
        ("{tmp}/out.csv", ["--depth", "0"]),
        ("{tmp}/out.csv", ["--depth", "x"]),
        ("{tmp}/out.csv", ["--width", "0"]),
        ("{tmp}/out.csv", ["--max-steps", "0"]),
        ("{tmp}/out.csv", ["--max-steps", HUGE_INT]),
        ("{tmp}/out.csv", ["--seed", "-1"]),
        ("{tmp}/out.csv", ["--dtype", "float16"]),
        ("{tmp}/out.csv", ["--validation-fraction", "1.5"]),
        ("{tmp}/out.csv", ["--validation-fraction", "nan"]),
        ("{tmp}/out.csv", ["--seeds", "0"]),
        ("{tmp}/out.csv", ["--seeds", "x"]),
        ("{tmp}/out.csv", ["--predict", "{tmp}/good.csv"]),  # a matrix file is no pairs file
    ]):
        add(f"complete-option-{i}", ["complete", "{tmp}/good.csv", "--out", out, *extra],
            files=good_csv)
    add("complete-no-out", ["complete", "{tmp}/good.csv"], files=good_csv)
    # ratings files: triplets user,item,rating (one line each, the policy named)
    bad_ratings = {
        "dup.csv": b"user,item,rating\na,x,4\nb,x,3\na,x,5\n",
        "word.tsv": b"u\ti\t4\nv\ti\tfive\n",
        "inf.tsv": b"u\ti\tinf\n",
        "nan.tsv": b"u\ti\tnan\n",
        "empty.tsv": b"",
        "blank.tsv": b"\n\n  \n",
        "headeronly.csv": b"user,item,rating\n",
        "twocols.tsv": b"1\t2\n",
        "noid.tsv": b"\t2\t3\n",
        "binary.tsv": bytes(range(256)),
        "latin1.tsv": "u\t\xe9\t3\n".encode("latin-1"),
    }
    for name, content in bad_ratings.items():
        add(f"complete-ratings-{name}", ["complete", "{tmp}/" + name, "--out", "{tmp}/out.csv"],
            files={name: content})
    ratings = {"r.tsv": b"a\tx\t4\nb\tx\t3\nb\ty\t2\n"}
    for i, (pairs, out) in enumerate([
        (b"", "{tmp}/out.csv"),  # empty pairs file
        (b"user,item\n", "{tmp}/out.csv"),  # header only
        (b"a\n", "{tmp}/out.csv"),  # one column
        (b"a,x\n", "{tmp}/out.npy"),  # predictions are written as .csv
        (b",x\n", "{tmp}/out.csv"),  # empty id
    ]):
        add(f"complete-predict-{i}", ["complete", "{tmp}/r.tsv", "--predict", "{tmp}/p.csv",
                                      "--out", out], files={**ratings, "p.csv": pairs})
    add("complete-predict-missing", ["complete", "{tmp}/r.tsv", "--predict", "{tmp}/nope.csv",
                                     "--out", "{tmp}/out.csv"], files=ratings)


_complete_cases()


# ------------------------------------------------------------------ plugins and usage errors

for i, module in enumerate(["no_such_module", "no_such_module.sub", "..bad", "deeplinear.nope",
                            "os.path.nope", "fuzz_boom_plugin", "fuzz_syntax_plugin", " ,x y, "]):
    env = {PLUGIN_ENV: module}
    add(f"plugin-{i}-list", ["list"], env=env)
    add(f"plugin-{i}-run", ["run", "fig2", "--print-config"], env=env)
    add(f"plugin-{i}-sweep", ["sweep", "{tmp}/good-grid.toml"], env=env)

USAGE = [["run"], ["run", "fig2", "--bogus"], ["sweep"], ["sweep", "g.toml", "--workers"],
         ["nosuchcmd"], ["run", "fig2", "--set"], ["run", "fig2", "-c"], ["run", "fig2", "extra"],
         ["list", "extra"], ["list", "--bogus"], ["--bogus"], ["run", "fig2", "--quick=3"],
         ["verify", "--bogus"], ["reproduce", "--only"], ["reproduce", "--bogus"],
         ["run", "fig2", "--print-config=yes"], ["sweep", "a", "b"], ["run", "--" + LONG],
         ["run", "fig2", "--set=" + "x" * 50, "--bogus" + "y" * 5000]]
for args in USAGE:
    add("usage-" + " ".join(args)[:40], args)


# ------------------------------------------------------------------ the test

FILES_NEEDED = {
    "good-grid.toml": GRID_HEAD.encode(),
    "fuzz_boom_plugin.py": b"raise RuntimeError('boom ' * 1000)\n",
    "fuzz_syntax_plugin.py": b"def (:\n",
}


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    for name, content in FILES_NEEDED.items():
        (folder / name).write_bytes(content)
    for case in CASES:
        for name, content in case.files.items():
            (folder / name).write_bytes(content)
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "fifo.toml")
    (folder / "dir.csv").mkdir()
    return folder


@pytest.fixture
def isolated(fuzz_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a scratch folder (nothing lands in the repository, even if a case were accepted)
    with the fuzz plugins importable and the registry restored afterwards."""
    work = fuzz_dir / "cwd"
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(fuzz_dir))
    monkeypatch.delenv(PLUGIN_ENV, raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    saved = dict(REGISTRY)
    yield fuzz_dir
    REGISTRY.clear()
    REGISTRY.update(saved)
    for name in ("fuzz_boom_plugin", "fuzz_syntax_plugin"):
        sys.modules.pop(name, None)


def test_at_least_300_cases() -> None:
    print(f"{len(CASES)} fuzz cases")
    assert len(CASES) >= 300
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2(case: Case, isolated: Path) -> None:
    if case.id.endswith("fifo") and not (isolated / "fifo.toml").exists():
        pytest.skip("no FIFOs here")
    args = [a.replace("{tmp}", str(isolated)) for a in case.args]
    res = CliRunner().invoke(app, args, env=case.env or None)
    err = res.stderr
    shown = (err[:500] + "...") if len(err) > 500 else err
    assert res.exit_code == 2, f"exit {res.exit_code}; stderr: {shown!r}; {res.exception!r}"
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, f"{len(lines)} stderr lines: {shown!r}"
    assert lines[0].startswith("error: "), shown
    assert len(lines[0]) <= MAX_LINE, f"{len(lines[0])} characters: {shown!r}"
    assert not res.stdout.strip(), f"stdout: {res.stdout[:300]!r}"
