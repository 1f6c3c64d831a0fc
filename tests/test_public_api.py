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
