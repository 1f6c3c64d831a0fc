"""Resumable sweeps: a grid of overrides x seeds, run on a local process pool or a Dask cluster.

A sweep folder holds ``index.sqlite`` (one row per run, see :class:`deeplinear.store.SweepIndex`)
and ``runs/<run_id>/`` (one run folder each). The run id is a hash of the experiment name and the
merged config, so re-running the same grid finds the runs already finished and only runs the rest.

Seeds: when an experiment's config model has a ``seeds: list[int]`` field it batches replicas
itself (``vmap`` over a leading axis, e.g. ``train_replicas``); the sweep then makes ONE run per
grid point with ``seeds = [...]``. Otherwise, if the model has ``seed: int``, each seed is its
own run.
"""

from __future__ import annotations

import importlib
import itertools
import multiprocessing
import os
import time
import typing
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeplinear.config import (
    ConfigError,
    build_config,
    config_dict,
    load_toml,
    merge,
    parse_override,
    run_id,
    validate,
)
from deeplinear.experiments.base import REGISTRY, Experiment, NullProgress, Progress
from deeplinear.store import (
    RunOutcome,
    SweepIndex,
    clean_partials,
    execute_run,
    is_finished,
    read_status,
)

PLUGIN_ENV = "DEEPLINEAR_EXPERIMENTS"
DASK_CONNECT_TIMEOUT = "20s"


def load_experiments() -> dict[str, Experiment]:
    """Import the registered experiments (and any modules named in ``$DEEPLINEAR_EXPERIMENTS``,
    comma separated, e.g. your own experiments) and return the registry."""
    importlib.import_module("deeplinear.experiments")
    for name in filter(None, (m.strip() for m in os.environ.get(PLUGIN_ENV, "").split(","))):
        importlib.import_module(name)
    return REGISTRY


def get_experiment(name: str, module: str | None = None) -> Experiment:
    """Look ``name`` up in the registry (importing ``module`` first if it is not there)."""
    registry = load_experiments()
    if name not in registry and module:
        importlib.import_module(module)
    if name not in registry:
        known = ", ".join(sorted(registry)) or "none"
        raise ConfigError(f"experiment {name!r} is not registered (known: {known})")
    return registry[name]


def preset_of(experiment: Experiment, preset: str) -> dict[str, Any]:
    """The overrides of a size preset: ``default`` (none), ``quick`` or ``paper``."""
    if preset == "default":
        return {}
    if preset in ("quick", "paper"):
        return dict(getattr(experiment, preset))
    raise ConfigError(f"preset: must be 'default', 'quick' or 'paper', got {preset!r}")


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


def load_grid(path: str | Path) -> Grid:
    """Read a grid TOML file; config paths are relative to the grid file's folder."""
    path = Path(path)
    data = load_toml(path)
    unknown = sorted(set(data) - GRID_KEYS)
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}: unknown key (allowed: {sorted(GRID_KEYS)})")
    if not isinstance(data.get("experiment"), str):
        raise ConfigError(f"{path}: experiment: required, the name of a registered experiment")
    grid = data.get("grid", {})
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid.{key}: must be a non-empty list of values")
    seeds = data.get("seeds")
    if seeds is not None and (
        not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds) or not seeds
    ):
        raise ConfigError(f"{path}: seeds: must be a non-empty list of integers")
    configs = data.get("configs", [])
    if isinstance(configs, str):
        configs = [configs]
    return Grid(
        experiment=data["experiment"],
        preset=data.get("preset", "default"),
        configs=[(path.parent / c) for c in configs],
        set=data.get("set", {}),
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
    elif "seeds" in fields and typing.get_origin(fields["seeds"].annotation) is list:
        seed_layers = [{"seeds": list(grid.seeds)}]
    elif "seed" in fields:
        seed_layers = [{"seed": s} for s in grid.seeds]
    else:
        raise ConfigError(
            f"seeds: experiment {exp.name!r} has neither 'seed: int' nor 'seeds: list[int]'"
        )
    keys = list(grid.grid)
    specs: dict[str, RunSpec] = {}
    for values in itertools.product(*(grid.grid[k] for k in keys)):
        point = dict(zip(keys, values, strict=True))
        for seed_layer in seed_layers:
            config = validate(exp.config_model, merge(base, point, seed_layer))
            rid = run_id(exp.name, config)
            specs[rid] = RunSpec(exp.name, config_dict(config), rid, exp.run.__module__)
    return list(specs.values())


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
            status = (read_status(run_dir) or {}).get("status", "done")
            if index.status(spec.run_id) != status:
                index.set_status(spec.run_id, status)
        else:
            index.set_status(spec.run_id, "pending")
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
    """
    out_dir = Path(out_dir)
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
            index.set_status(spec.run_id, "running", submitted=time.time())

        def crashed(spec: RunSpec, err: BaseException) -> RunOutcome:
            msg = f"{type(err).__name__}: {err}".splitlines()[0]
            return RunOutcome(spec.run_id, spec.experiment, "failed", 0.0,
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
