"""Resumable sweeps: a grid of overrides x seeds, run on a local process pool or a Dask cluster.

A sweep folder holds ``index.sqlite`` (one row per run, see :class:`deeplinear.store.SweepIndex`)
and ``runs/<run_id>/`` (one run folder each). The run id is a hash of the experiment name and the
merged config, so re-running the same grid finds the runs already finished and only runs the rest.

Seeds, one convention for every experiment: ``seed`` is the base seed of a run and ``seeds`` (where
an experiment has replicas inside one run, e.g. vmapped GD) the number of replicas, which use
``seed, seed + 1, ...``. A grid's ``seeds = [...]`` makes one run per listed base seed.
"""

from __future__ import annotations

import difflib
import importlib
import itertools
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeplinear._optional import needs_extra
from deeplinear.config import (
    MAX_SEED,
    ConfigError,
    build_config,
    config_dict,
    load_toml,
    merge,
    one_line,
    parse_override,
    run_id,
    short,
    short_key,
    short_path,
    validate,
)
from deeplinear.experiments.base import REGISTRY, Experiment, NullProgress, Progress, Status
from deeplinear.store import (
    RunOutcome,
    SweepIndex,
    check_output,
    claim,
    clean_partials,
    execute_run,
    is_finished,
    read_status,
)

__all__ = [
    "build_spec",
    "DASK_CONNECT_TIMEOUT",
    "expand",
    "get_experiment",
    "Grid",
    "GRID_KEYS",
    "load_experiments",
    "load_grid",
    "MAX_RUNS",
    "PLUGIN_ENV",
    "preset_of",
    "run_spec",
    "run_sweep",
    "RunSpec",
    "suggest_experiment",
    "SweepResult",
    "varying_values",
]

PLUGIN_ENV = "DEEPLINEAR_EXPERIMENTS"
DASK_CONNECT_TIMEOUT = "20s"


def _import_plugin(module: str, where: str) -> None:
    """Import an experiment module; any failure is one :class:`ConfigError` line naming it."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        missing = short(err.name or module)
        raise ConfigError(
            f"{where}: cannot import {short(module)} (no module named {missing}); "
            "fix the module name or its PYTHONPATH"
        ) from None
    except Exception as err:  # noqa: BLE001 - a plugin may fail in any way
        raise ConfigError(
            f"{where}: importing {short(module)} failed: {type(err).__name__}: "
            f"{one_line(str(err), 120)}; fix or remove that module"
        ) from None


def load_experiments() -> dict[str, Experiment]:
    """Import the registered experiments (and any modules named in ``$DEEPLINEAR_EXPERIMENTS``,
    comma separated, e.g. your own experiments) and return the registry.

    A module that cannot be imported is a :class:`ConfigError` naming it."""
    importlib.import_module("deeplinear.experiments")
    for name in filter(None, (m.strip() for m in os.environ.get(PLUGIN_ENV, "").split(","))):
        _import_plugin(name, PLUGIN_ENV)
    return REGISTRY


def get_experiment(name: str, module: str | None = None) -> Experiment:
    """Look ``name`` up in the registry (importing ``module`` first if it is not there)."""
    registry = load_experiments()
    if not isinstance(name, str):
        raise ConfigError(f"experiment: must be a name (a string), got {short(name)}")
    if name not in registry and module:
        _import_plugin(module, f"experiment {short(name)}")
    if name not in registry:
        known = one_line(", ".join(sorted(registry)) or "none", 150)
        guess = suggest_experiment(name, registry)
        if guess is not None:  # the suggestion alone: the whole list no longer fits one line
            raise ConfigError(f"experiment {short(name)} is not registered; did you mean "
                              f"{short(guess)}? (see `deeplinear list`)")
        raise ConfigError(f"experiment {short(name)} is not registered (known: {known}); "
                          "see `deeplinear list`")
    return registry[name]


def suggest_experiment(name: str, known: Iterable[str]) -> str | None:
    """The registered name ``name`` was probably meant to be: the same name in another case
    (``Fig3`` -> ``fig3``), else the closest by :func:`difflib.get_close_matches`; ``None``."""
    by_lower: dict[str, str] = {}
    for k in sorted(known):
        by_lower.setdefault(k.lower(), k)
    wanted = name[:100].lower()
    if wanted in by_lower:
        return by_lower[wanted]
    close = difflib.get_close_matches(wanted, list(by_lower), n=1)
    return by_lower[close[0]] if close else None


def preset_of(experiment: Experiment, preset: str) -> dict[str, Any]:
    """The overrides of a size preset: ``default`` (none), ``quick`` or ``paper``."""
    if preset == "default":
        return {}
    if preset in ("quick", "paper"):
        return dict(getattr(experiment, preset))
    raise ConfigError(f"preset: must be 'default', 'quick' or 'paper', got {short(preset)}")


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: the experiment, its validated config as a plain dict, and its id.

    ``module`` is where the experiment is defined, so a fresh worker process can import it.
    """

    experiment: str
    config: dict[str, Any]
    run_id: str
    module: str | None = None


@dataclass
class Grid:
    """A parsed sweep grid file (see docs/cli.md, "Sweeps")."""

    experiment: str
    preset: str = "default"
    configs: list[Path] = field(default_factory=list)
    set: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] | None = None


GRID_KEYS = {"experiment", "preset", "configs", "set", "grid", "seeds"}
MAX_RUNS = 100_000
"""Most runs one grid may expand to (the product of the grid's list lengths times the seeds)."""


def load_grid(path: str | Path) -> Grid:
    """Read a grid TOML file; config paths are relative to the grid file's folder.

    Every key's type is checked here, so a malformed grid is one :class:`ConfigError` line naming
    the file and the key."""
    path = Path(path)
    data = load_toml(path, what="grid file")
    where = f"grid file {short_path(path)}"
    unknown = sorted(set(data) - GRID_KEYS)
    if unknown:
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        raise ConfigError(f"{where}: {short_key(unknown[0])}{more}: unknown key "
                          f"(allowed: {', '.join(sorted(GRID_KEYS))})")
    experiment = data.get("experiment")
    if not isinstance(experiment, str) or not experiment:
        raise ConfigError(f"{where}: experiment: required, the name of a registered experiment "
                          f"(a string), got {short(experiment)}")
    preset = data.get("preset", "default")
    if preset not in ("default", "quick", "paper"):
        raise ConfigError(f"{where}: preset: must be 'default', 'quick' or 'paper', "
                          f"got {short(preset)}")
    sets = data.get("set", {})
    if not isinstance(sets, dict):
        raise ConfigError(f"{where}: set: must be a table of config keys, e.g. [set] steps = 100; "
                          f"got {short(sets)}")
    grid = data.get("grid", {})
    if not isinstance(grid, dict):
        raise ConfigError(f"{where}: grid: must be a table of lists, e.g. [grid] lr = [0.1, 0.2]; "
                          f"got {short(grid)}")
    n_runs = 1
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid.{short_key(key)}: must be a non-empty list of values, "
                              f"got {short(values)}")
        n_runs *= len(values)
        if n_runs > MAX_RUNS:
            raise ConfigError(f"{where}: grid: more than {MAX_RUNS} combinations; "
                              "split it into smaller grids")
    seeds = data.get("seeds")
    if seeds is not None and (
        not isinstance(seeds, list) or not seeds or len(seeds) > MAX_RUNS
        or not all(type(s) is int and 0 <= s < MAX_SEED for s in seeds)
    ):
        raise ConfigError(f"{where}: seeds: must be a non-empty list of integers in [0, 2**32), "
                          f"e.g. seeds = [0, 1, 2]; got {short(seeds)}")
    if seeds is not None and n_runs * len(seeds) > MAX_RUNS:
        raise ConfigError(f"{where}: grid x seeds: more than {MAX_RUNS} runs; "
                          "split it into smaller grids")
    configs = data.get("configs", [])
    if isinstance(configs, str):
        configs = [configs]
    if not isinstance(configs, list) or not all(isinstance(c, str) and c for c in configs):
        raise ConfigError(f"{where}: configs: must be a file name or a list of file names "
                          f"(relative to the grid file); got {short(configs)}")
    return Grid(
        experiment=experiment,
        preset=preset,
        configs=[(path.parent / c) for c in configs],
        set=sets,
        grid=grid,
        seeds=seeds,
    )


def expand(grid: Grid, *, preset: str | None = None, sets: Iterable[str] = ()) -> list[RunSpec]:
    """All runs of ``grid``: the cartesian product of ``grid.grid`` values, times the seeds.

    Each run's config is preset <- ``configs`` files <- ``set`` <- ``sets`` (CLI ``--set``) <- the
    grid point <- the seed, validated by the experiment's model. Duplicates collapse (same id).
    """
    exp = get_experiment(grid.experiment)
    fields = exp.config_model.model_fields
    base = merge(
        preset_of(exp, preset or grid.preset),
        *[load_toml(c) for c in grid.configs],
        grid.set,
        *[parse_override(s) for s in sets],
    )
    if grid.seeds is None:
        seed_layers: list[dict[str, Any]] = [{}]
    elif "seed" in fields:
        seed_layers = [{"seed": s} for s in grid.seeds]
    else:
        raise ConfigError(f"seeds: experiment {exp.name!r} has no 'seed' field (every experiment "
                          "takes a base seed 'seed'; add one to its config model)")
    keys = list(grid.grid)
    specs: dict[str, RunSpec] = {}
    for values in itertools.product(*(grid.grid[k] for k in keys)):
        point = dict(zip(keys, values, strict=True))
        for seed_layer in seed_layers:
            config = validate(exp.config_model, merge(base, point, seed_layer))
            rid = run_id(exp.name, config)
            specs[rid] = RunSpec(exp.name, config_dict(config), rid, exp.run.__module__)
    return list(specs.values())


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are values, not tables)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def varying_values(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """What tells the runs of a sweep apart: ``run_id -> {key: value}`` for the config keys
    (dotted, in config order) whose values differ between the runs in ``configs`` (``run_id ->
    config``), e.g. the grid's keys and ``seed``. One run, or identical configs: no keys."""
    flat = {rid: _flat(cfg) for rid, cfg in configs.items()}
    keys: list[str] = []
    for f in flat.values():
        keys += [k for k in f if k not in keys]
    missing = object()
    varying = [k for k in keys
               if len({repr(f.get(k, missing)) for f in flat.values()}) > 1]
    return {rid: {k: f.get(k) for k in varying} for rid, f in flat.items()}


def run_spec(spec: RunSpec, runs_root: str) -> RunOutcome:
    """Worker entry point (picklable): validate, run and store one run under ``runs_root``."""
    exp = get_experiment(spec.experiment, spec.module)
    config = validate(exp.config_model, spec.config)
    return execute_run(exp, config, Path(runs_root) / spec.run_id, progress=NullProgress())


@dataclass
class SweepResult:
    """Outcome of :func:`run_sweep`: every run's final status and what this call did."""

    outcomes: list[RunOutcome]
    skipped: int
    counts: dict[str, int]


def _reconcile(index: SweepIndex, specs: list[RunSpec], runs_root: Path) -> list[RunSpec]:
    """Trust the folders: a finished folder is done/diverged whatever the index says; anything
    else (pending, a stale 'running' from a killed sweep, failed) is pending again."""
    todo = []
    for spec in specs:
        index.add(spec.run_id, spec.experiment, spec.config)
        run_dir = runs_root / spec.run_id
        if is_finished(run_dir, spec.run_id):
            status = (read_status(run_dir) or {}).get("status", Status.DONE)
            if index.status(spec.run_id) != status:
                index.set_status(spec.run_id, status)
        else:
            index.set_status(spec.run_id, Status.PENDING)
            todo.append(spec)
    return todo


def run_sweep(
    specs: list[RunSpec],
    out_dir: str | Path,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    on_outcome: Callable[[RunOutcome], None] | None = None,
    on_submit: Callable[[RunSpec], None] | None = None,
) -> SweepResult:
    """Run every spec not yet finished in ``out_dir``; safe to kill and re-run at any moment.

    Args:
        specs: the runs (from :func:`expand`).
        out_dir: sweep folder (``index.sqlite`` and ``runs/``).
        scheduler: ``tcp://HOST:PORT`` of a Dask scheduler; ``None`` uses a local process pool
            (``spawn`` context, JAX is not fork-safe).
        workers: local pool size (default: CPU count); ``0`` runs in this process, in order.
        progress: receives one task ``runs`` advanced per finished run.
        on_outcome: called in the driver with each finished run's outcome.
        on_submit: called in the driver when a run is handed to a worker.
    """
    out_dir = check_output(out_dir)
    claim(out_dir, "sweep")
    runs_root = out_dir / "runs"
    runs_root.mkdir(parents=True, exist_ok=True)
    clean_partials(runs_root)
    outcomes: list[RunOutcome] = []
    with SweepIndex(out_dir / "index.sqlite") as index:
        todo = _reconcile(index, specs, runs_root)
        bar = (progress or NullProgress()).task("runs", total=len(todo))

        def record(outcome: RunOutcome) -> None:
            index.set_status(
                outcome.run_id, outcome.status, finished=time.time(),
                seconds=outcome.seconds, error=outcome.error,
            )
            outcomes.append(outcome)
            bar.advance()
            if on_outcome is not None:
                on_outcome(outcome)

        def submitted(spec: RunSpec) -> None:
            index.set_status(spec.run_id, Status.RUNNING, submitted=time.time())
            if on_submit is not None:
                on_submit(spec)

        def crashed(spec: RunSpec, err: BaseException) -> RunOutcome:
            msg = f"{type(err).__name__}: {err}".splitlines()[0]
            return RunOutcome(spec.run_id, spec.experiment, Status.FAILED, 0.0,
                              str(runs_root / spec.run_id), msg)

        if scheduler is not None:
            _run_dask(todo, str(runs_root), scheduler, submitted, record, crashed)
        elif workers == 0:
            for spec in todo:
                submitted(spec)
                record(run_spec(spec, str(runs_root)))
        else:
            _run_pool(todo, str(runs_root), workers, submitted, record, crashed)
        counts = index.counts()
    return SweepResult(outcomes, len(specs) - len(todo), counts)


def _run_pool(todo, runs_root, workers, submitted, record, crashed) -> None:  # noqa: ANN001
    if not todo:
        return
    n = min(workers or os.cpu_count() or 1, len(todo))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        futures: dict[Future, RunSpec] = {}
        for spec in todo:
            submitted(spec)
            futures[pool.submit(run_spec, spec, runs_root)] = spec
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                spec = futures[fut]
                err = fut.exception()
                record(crashed(spec, err) if err is not None else fut.result())


def _run_dask(todo, runs_root, scheduler, submitted, record, crashed) -> None:  # noqa: ANN001
    if not todo:
        return
    with needs_extra("--scheduler (a Dask cluster)"):
        from distributed import Client, as_completed

    try:
        client = Client(scheduler, timeout=DASK_CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as err:
        raise ConfigError(f"--scheduler {scheduler}: cannot connect ({err})".splitlines()[0]
                          ) from None
    with client:
        futures, specs = [], {}
        for spec in todo:
            submitted(spec)
            fut = client.submit(run_spec, spec, runs_root, key=f"deeplinear-run-{spec.run_id}",
                                pure=False)
            futures.append(fut)
            specs[fut.key] = spec
        for fut in as_completed(futures):
            spec = specs[fut.key]
            if fut.status == "error":
                record(crashed(spec, fut.exception()))
            else:
                record(fut.result())


def build_spec(
    experiment: Experiment, *, preset: str = "default", files: Iterable[str | Path] = (),
    sets: Iterable[str] = (),
) -> RunSpec:
    """A single run's spec from CLI-style layers (used by ``run`` and ``reproduce``)."""
    config = build_config(
        experiment.config_model, preset=preset_of(experiment, preset), files=files, sets=sets
    )
    return RunSpec(experiment.name, config_dict(config), run_id(experiment.name, config),
                   experiment.run.__module__)
