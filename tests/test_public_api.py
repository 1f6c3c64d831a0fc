"""The public API is named in one place (deeplinear/__init__.py) and every public module says
what it exports (``__all__``), with every listed name defined."""

import importlib
import pkgutil

import deeplinear


def test_every_name_in_the_package_all_resolves():
    for name in deeplinear.__all__:
        assert getattr(deeplinear, name) is not None, name


def test_every_public_module_has_a_complete_all():
    modules = [m.name for m in pkgutil.walk_packages(deeplinear.__path__, "deeplinear.")
               if not any(part.startswith("_") for part in m.name.split("."))]
    assert len(modules) > 20
    for name in modules:
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        assert exported is not None, f"{name} has no __all__"
        for item in exported:
            assert hasattr(module, item), f"{name}.__all__ names {item!r}, which is not defined"


def test_submodules_are_not_shadowed_by_functions():
    """``from deeplinear import train`` must give the module (its functions live inside it)."""
    import types

    from deeplinear import train

    assert isinstance(train, types.ModuleType) and callable(train.train)


def _documented_names() -> set[str]:
    """Every dotted ``deeplinear.x.y`` name that README.md and the docs (docs/**/*.md) mention."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pages = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    found = set()
    for page in pages:
        found |= set(re.findall(r"\bdeeplinear(?:\.[A-Za-z_][A-Za-z0-9_]*)+",
                                page.read_text(encoding="utf-8")))
    return {n for n in found if not n.endswith((".md", ".html"))}  # file names, not objects


def test_every_name_the_docs_mention_resolves_after_import_deeplinear():
    """``import deeplinear`` and attribute access alone reach each documented public name
    (modules load lazily, PEP 562): what a reader types after reading README or the docs works."""
    names = sorted(_documented_names())
    assert len(names) > 30 and "deeplinear.completion.DeepMatrixCompletion" in names
    # a private module (deeplinear._format, named in docs/architecture.md for contributors) is
    # imported by its name; every public name must resolve by attribute access alone
    code = ("import functools, importlib, deeplinear\n"
            f"for name in {names!r}:\n"
            "    parts = name.split('.')\n"
            "    private = next((i for i, p in enumerate(parts) if p.startswith('_')), None)\n"
            "    root = deeplinear if private is None else importlib.import_module(\n"
            "        '.'.join(parts[:private + 1]))\n"
            "    rest = parts[1:] if private is None else parts[private + 1:]\n"
            "    functools.reduce(getattr, rest, root)\n")
    _in_a_fresh_interpreter(code)


def test_modules_load_lazily_and_torch_only_when_used():
    _in_a_fresh_interpreter(
        "import sys, deeplinear\n"
        "assert 'deeplinear.completion' not in sys.modules and 'torch' not in sys.modules\n"
        "assert 'completion' in dir(deeplinear) and 'torch' in dir(deeplinear)\n"
        "deeplinear.tensor.cp, deeplinear.completion.DeepMatrixCompletion\n"
        "assert 'torch' not in sys.modules\n"
        "deeplinear.torch.overparameterize\n"
        "assert 'torch' in sys.modules\n")


def _in_a_fresh_interpreter(code: str) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
