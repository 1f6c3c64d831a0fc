"""The ``deeplinear`` command line: run, list, sweep, report, verify and reproduce (docs/cli.md)."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import wraps
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, TypeVar

import rich.progress as rp
import typer
import typer.exceptions
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from deeplinear.config import ConfigError, dump_toml, one_line, short, short_path, validate
from deeplinear.experiments.base import Experiment, NullProgress, Status
from deeplinear.report import dumps_checks, fmt, write_report
from deeplinear.store import (
    RunOutcome,
    atomic_write,
    check_output,
    claim,
    clean_partials,
    execute_run,
)
from deeplinear.sweep import (
    build_spec,
    expand,
    get_experiment,
    load_experiments,
    load_grid,
    varying_values,
)
from deeplinear.sweep import run_sweep as _run_sweep

__all__ = ["app", "main"]

MAX_ERROR_LINE = 300
"""Longest error line the CLI prints for bad input (``error: `` included)."""


def error_line(message: str) -> str:
    """``error: MESSAGE`` on one line of at most :data:`MAX_ERROR_LINE` characters."""
    return one_line(f"error: {message}", MAX_ERROR_LINE)


def _cli_error_classes() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(usage errors, aborts) of the click that typer runs on: typer >= 0.20 ships its own copy
    (``typer.exceptions.TyperException``), older typer uses the ``click`` package."""
    usage: list[type[BaseException]] = []
    aborts: list[type[BaseException]] = [typer.Abort]
    if hasattr(typer.exceptions, "TyperException"):
        usage.append(typer.exceptions.TyperException)
    try:
        import click
    except ImportError:  # pragma: no cover - typer without click
        pass
    else:
        usage.append(click.ClickException)
        aborts.append(click.exceptions.Abort)
    return tuple(usage), tuple(aborts)


_USAGE_ERRORS, _ABORTS = _cli_error_classes()


class OneLineErrorsGroup(TyperGroup):
    """The command group: a usage error (unknown option, missing argument, a value of the wrong
    type) is ONE stderr line naming the problem and pointing at ``--help``, exit status 2, not
    typer's multi-line box. Everything else behaves as click's standalone mode."""

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _USAGE_ERRORS as err:
            if type(err).__name__ == "NoArgsIsHelpError":  # bare `deeplinear`: the help page
                err.show()  # type: ignore[attr-defined]
            else:
                typer.echo(_usage_error_line(err), err=True)
            sys.exit(getattr(err, "exit_code", 2))
        except _ABORTS:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _usage_error_line(err: BaseException) -> str:
    ctx = getattr(err, "ctx", None)
    command = getattr(ctx, "command_path", None) or "deeplinear"
    format_message = getattr(err, "format_message", None)
    message = one_line(format_message() if format_message else str(err), 200)
    return error_line(f"{message} (see `{command} --help`)")


EXAMPLES: dict[str, list[str]] = {
    "": [
        "deeplinear list",
        "deeplinear run fig3 --quick",
        "deeplinear reproduce --quick --out runs/demo",
        "deeplinear verify -k balancedness",
        "deeplinear --version",
    ],
    "run": [
        "deeplinear run fig3 --quick",
        "deeplinear run fig3 --quick --set 'lrs=[20.0, 2.0, 1.0]' --print-config",
        "deeplinear run fig2 --config examples/fig2-small.toml --set max_steps=2000",
        "deeplinear run fig1-regression --quick --set steps=2000 --out runs/fig1-short",
    ],
    "list": ["deeplinear list"],
    "sweep": [
        "deeplinear sweep examples/sweep-fig3.toml --out runs/sweep-fig3 --workers 2",
        "deeplinear sweep examples/sweep-fig2.toml --quick --set max_steps=1000",
    ],
    "report": ["deeplinear report runs/demo"],
    "verify": ["deeplinear verify", "deeplinear verify -k balancedness --json"],
    "reproduce": [
        "deeplinear reproduce --quick --out runs/demo",
        "deeplinear reproduce --only fig2 --only fig3 --no-verify",
    ],
    "complete": [
        "deeplinear complete examples/incomplete.csv --out completed.csv --max-steps 500",
        "deeplinear complete examples/incomplete.csv --out completed.npy --depth 2 --seed 1",
        "deeplinear complete examples/ratings.csv --predict examples/pairs.csv --out predicted.csv "
        "--max-steps 500",
    ],
}
"""The example command lines each ``--help`` page shows (key: the command, "" = the group); a
test runs every one of them (tests/test_cli.py)."""


def _examples(command: str) -> str:
    """The help epilog: ``Examples:`` and the command lines, one paragraph each (a line wrapped
    on a narrow terminal stays apart from the next), rich markup escaped so that TOML lists
    (``[...]``) show as written."""
    return "Examples:\n\n" + "\n\n".join(escape(line) for line in EXAMPLES[command])


def package_version() -> str:
    """The installed distribution's version, else ``deeplinear.__version__``."""
    try:
        return importlib.metadata.version("deeplinear")
    except importlib.metadata.PackageNotFoundError:
        import deeplinear

        return str(getattr(deeplinear, "__version__", "unknown"))


app = typer.Typer(
    cls=OneLineErrorsGroup,
    help="Linear neural networks (Cohen & Razin): experiments, sweeps, theory checks, report.",
    epilog=_examples(""),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
out_console = Console()
err_console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"deeplinear {package_version()}")
        raise typer.Exit()


@app.callback()
def _group(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version,
                     help="Print `deeplinear VERSION` and exit."),
    ] = False,
) -> None:
    """Linear neural networks (Cohen & Razin): experiments, sweeps, theory checks, report."""


F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(fn: F) -> F:
    """Turn a :class:`ConfigError` (bad config, file, grid, name) into one stderr line + exit 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as err:
            typer.echo(error_line(str(err)), err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------- progress


class _Handle:
    def __init__(self, progress: rp.Progress, task_id: rp.TaskID, total: int | None) -> None:
        self._p, self._id, self._total, self._done = progress, task_id, total, 0

    def advance(self, n: int = 1) -> None:
        self._p.advance(self._id, n)
        self._done += n
        if self._total is not None and self._done >= self._total:
            self._p.update(self._id, visible=False)  # finished inner loops get out of the way


class RichProgress:
    """The experiments' ``Progress`` protocol drawn as rich progress bars (on stderr)."""

    def __init__(self, progress: rp.Progress) -> None:
        self._p = progress

    def task(self, description: str, total: int | None) -> _Handle:
        return _Handle(self._p, self._p.add_task(description, total=total), total)

    def outer(self, description: str, total: int) -> rp.TaskID:
        """A bar that stays visible (runs, experiments)."""
        return self._p.add_task(description, total=total)

    def advance_outer(self, task_id: rp.TaskID) -> None:
        self._p.advance(task_id)

    def describe(self, task_id: rp.TaskID, description: str) -> None:
        self._p.update(task_id, description=description)


class PlainProgress:
    """Progress for a log (stderr is not a terminal): no bars; the CLI prints one plain line
    when each experiment, sweep run and theory check starts and ends (see :func:`log_line`)."""

    def task(self, description: str, total: int | None) -> NullProgress:
        return NullProgress().task(description, total)

    def outer(self, description: str, total: int) -> int:
        return 0

    def advance_outer(self, task_id: int) -> None:
        return None

    def describe(self, task_id: int, description: str) -> None:
        return None


@contextmanager
def rich_progress() -> Iterator[RichProgress | PlainProgress]:
    """Bars on a terminal; plain start/end lines (:func:`log_line`) otherwise."""
    if not err_console.is_terminal:
        yield PlainProgress()
        return
    columns = [rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
               rp.TimeElapsedColumn(), rp.TimeRemainingColumn()]
    with rp.Progress(*columns, console=err_console) as progress:
        yield RichProgress(progress)


def log_line(text: str) -> None:
    """One plain stderr line, only when stderr is not a terminal (a CI log, ``make demo > log``),
    where no progress bar is drawn; flushed at once so the log shows life."""
    if not err_console.is_terminal:
        print(f"[deeplinear {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- helpers


MAX_WORKERS = 1024
_SCHEDULER = re.compile(
    r"(?:(?:tcp|tls|ws|wss|ucx)://)?"  # protocol (Dask's default is tcp)
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)"  # host or [IPv6]
    r":([0-9]{1,5})"  # port
)


def _check_sweep_options(scheduler: str | None, workers: int | None) -> None:
    """``--scheduler`` must look like ``[tcp://]HOST:PORT``, ``--workers`` lie in [0, 1024]."""
    if workers is not None and not 0 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers {short(workers)}: must be an integer in [0, {MAX_WORKERS}] "
                          "(0 = run in this process; leave it out for one per CPU)")
    if scheduler is not None:
        match = _SCHEDULER.fullmatch(scheduler.strip())
        if match is None or not 1 <= int(match.group(1)) <= 65535:
            raise ConfigError(f"--scheduler {short(scheduler)}: not a Dask scheduler address; "
                              "expected tcp://HOST:PORT with a port in 1..65535, "
                              "e.g. tcp://10.0.0.5:8786")


def _preset(quick: bool, paper: bool) -> str:
    if quick and paper:
        raise ConfigError("--quick and --paper: choose one size preset")
    return "quick" if quick else "paper" if paper else "default"


def _theory() -> ModuleType | None:
    try:
        return importlib.import_module("deeplinear.theory")
    except ModuleNotFoundError as err:
        if err.name in ("deeplinear.theory",):
            return None
        raise


def _summary_table(title: str, summary: dict[str, Any]) -> Table:
    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(str(key), fmt(value))
    return table


def _outcomes_table(outcomes: list[RunOutcome],
                    values: dict[str, dict[str, Any]] | None = None) -> Table:
    """One row per run; ``values`` (``run_id -> {key: value}``, see
    :func:`deeplinear.sweep.varying_values`) adds one column per key: what tells the runs apart."""
    values = values or {}
    keys = list(dict.fromkeys(k for v in values.values() for k in v))
    table = Table(title="runs")
    for col in ("experiment", "run id", *keys, "status", "seconds", "note"):
        table.add_column(escape(col), overflow="fold")
    for o in outcomes:
        style = {Status.DONE: "green", Status.PARTIAL: "yellow"}.get(o.status, "red")
        note = "already done" if o.skipped else (o.error or "")
        if o.divergences:
            note = "; ".join(filter(None, [note, f"{len(o.divergences)} diverged: "
                                                 f"{o.divergences[0]}"]))
        row = values.get(o.run_id, {})
        cells = [escape(_cell(row[k])) if k in row else "" for k in keys]
        table.add_row(o.experiment, o.run_id, *cells, f"[{style}]{o.status}[/]",
                      f"{o.seconds:.1f}", escape(note))
    return table


def _cell(value: Any) -> str:
    """A config value in a table cell: numbers as :func:`fmt`, lists as ``[a, b]``."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return fmt(value)


def _run_checks(pattern: str | None) -> list[dict[str, Any]]:
    """Run the theory checks with a progress bar; returns their ``as_dict()`` rows."""
    theory = _theory()
    if theory is None:
        raise ConfigError("verify: deeplinear.theory is not installed in this tree yet")
    names = list(getattr(theory, "CHECKS", {}))
    total = sum(pattern is None or pattern in n for n in names) or None  # -k is a substring
    started = [0.0]

    def on_start(name: str) -> None:
        started[0] = time.perf_counter()
        log_line(f"check {name}: start")

    with rich_progress() as progress:
        bar = progress.task("theory checks", total)

        def on_result(r: Any) -> None:
            bar.advance()
            log_line(f"check {r.name}: {'PASS' if r.passed else 'FAIL'} "
                     f"({time.perf_counter() - started[0]:.1f} s)")

        try:
            results = theory.run_checks(pattern, on_result=on_result, on_start=on_start)
        except ValueError as err:
            raise ConfigError(f"-k {pattern!r}: {err}") from None
    return [r.as_dict() for r in results]


ALSO = "; also "
"""Separates a check's relation from a condition the numbers do not show in its ``comparison``
(the same as ``deeplinear.theory._base.ALSO``; not imported, the theory loads only for verify)."""


def _checks_table(checks: list[dict[str, Any]]) -> Table:
    """One row per check: the relation tested (``comparison``, e.g. ``measured <= tolerance``)
    next to the three numbers it compares, and whether it held. A condition the numbers do not
    show (``comparison``'s ``; also ...`` part) is marked ``*`` and given in the table's caption."""
    table = Table(title="theory checks", caption_justify="left")
    table.add_column("check", overflow="fold")  # never cut a check name
    table.add_column("result")
    table.add_column("measured", overflow="fold")
    table.add_column("test", overflow="fold", max_width=36)  # long relations wrap, names less
    table.add_column("predicted", overflow="fold")
    table.add_column("tolerance", overflow="fold")
    notes = []
    for c in checks:
        ok = "[green]PASS[/]" if c["passed"] else "[red]FAIL[/]"
        relation, also, condition = str(c.get("comparison") or "").partition(ALSO)
        if also:
            relation += " *"
            notes.append(f"* {c['name']}: also {condition}")
        table.add_row(c["name"], ok, fmt(c["measured"]), escape(relation), fmt(c["predicted"]),
                      fmt(c["tolerance"]))
    if notes:
        table.caption = escape("\n".join(notes))
    return table


# ---------------------------------------------------------------- commands

ConfigOpt = Annotated[
    list[Path] | None,
    typer.Option("--config", "-c", help="TOML config file; repeat to layer (later files win)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one config key with a TOML value, e.g. --set "
                 "max_steps=2000 (fig2); repeatable; --print-config shows the keys."),
]
QuickOpt = Annotated[bool, typer.Option("--quick", help="Smoke-test size (seconds).")]
PaperOpt = Annotated[bool, typer.Option("--paper", help="The notes' full sizes (slow).")]


@app.command("run", epilog=_examples("run"))
@one_line_errors
def run_cmd(
    experiment: Annotated[str, typer.Argument(help="Registered experiment (see `list`).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quick: QuickOpt = False,
    paper: PaperOpt = False,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/NAME-ID).")] = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the merged config and exit.")
    ] = False,
) -> None:
    """Run one experiment with layered configs; store config, tables, arrays and figures."""
    exp = get_experiment(experiment)
    spec = build_spec(exp, preset=_preset(quick, paper), files=config or [], sets=set_ or [])
    cfg = validate(exp.config_model, spec.config)
    if print_config:
        typer.echo(dump_toml(cfg), nl=False)
        return
    run_dir = out or Path("runs") / f"{exp.name}-{spec.run_id}"
    check_output(run_dir, create=False, run=True)  # refuse a file, device, link or foreign folder first
    with rich_progress() as progress:
        log_line(f"{exp.name}: start")
        outcome = execute_run(exp, cfg, run_dir, progress=progress, replace=True)
        _log_outcome(outcome)
    _finish_run(outcome)


def _log_outcome(outcome: RunOutcome) -> None:
    where = f" run {outcome.run_id}" if outcome.run_id != "-" else ""
    log_line(f"{outcome.experiment}{where}: {outcome.status} ({outcome.seconds:.1f} s)")


def _divergence_lines(outcome: RunOutcome, limit: int = 10) -> list[str]:
    lines = [f"  {d}" for d in outcome.divergences[:limit]]
    if len(outcome.divergences) > limit:
        lines.append(f"  ... and {len(outcome.divergences) - limit} more (see status.json)")
    return lines


def _finish_run(outcome: RunOutcome) -> None:
    path = Path(outcome.path)
    if outcome.status == Status.FAILED:
        typer.echo(f"error: {outcome.experiment} failed: {outcome.error} "
                   f"(traceback in {path / 'error.txt'})", err=True)
        raise typer.Exit(1)
    summary = json.loads((path / "summary.json").read_text())["summary"]
    out_console.print(_summary_table(f"{outcome.experiment} ({outcome.status})", summary))
    typer.echo(f"run folder: {path}  ({outcome.seconds:.1f} s)")
    if outcome.status != Status.DONE:
        what = ("some training runs diverged; the other results are valid"
                if outcome.status == Status.PARTIAL else "no valid result (every training run diverged)")
        typer.echo("\n".join([f"error: {outcome.experiment} {outcome.status}: {what}",
                              *_divergence_lines(outcome)]), err=True)
        raise typer.Exit(1)


@app.command("list", epilog=_examples("list"))
@one_line_errors
def list_cmd() -> None:
    """List the registered experiments with a one-line description."""
    table = Table(title="experiments")
    table.add_column("name")
    table.add_column("description")
    for name, exp in load_experiments().items():
        table.add_row(name, exp.description.strip().splitlines()[0] if exp.description else "")
    out_console.print(table)


@app.command("sweep", epilog=_examples("sweep"))
@one_line_errors
def sweep_cmd(
    grid: Annotated[Path, typer.Argument(help="Grid TOML: experiment, [set], [grid], seeds.")],
    out: Annotated[
        Path | None, typer.Option(help="Sweep folder (default runs/sweep-GRIDNAME).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address tcp://HOST:PORT (default: local).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Local processes (default: CPU count; 0 = in-process).")
    ] = None,
    set_: SetOpt = None,
    quick: QuickOpt = False,
    paper: PaperOpt = False,
) -> None:
    """Run a grid of overrides x seeds; resumable (re-run the same command to finish it)."""
    _check_sweep_options(scheduler, workers)
    g = load_grid(grid)
    preset = _preset(quick, paper)
    specs = expand(g, preset=None if preset == "default" else preset, sets=set_ or [])
    out_dir = out or Path("runs") / f"sweep-{grid.stem}"
    with rich_progress() as progress:
        result = _run_sweep(specs, out_dir, scheduler=scheduler, workers=workers,
                            progress=progress, on_outcome=_log_outcome,
                            on_submit=lambda s: log_line(f"{s.experiment} run {s.run_id}: queued"))
    if result.outcomes:
        values = varying_values({s.run_id: s.config for s in specs})
        out_console.print(_outcomes_table(result.outcomes, values))
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items() if v)
    typer.echo(f"sweep {out_dir}: {len(specs)} runs ({counts}); "
               f"{result.skipped} were already finished")
    if any(result.counts.get(k) for k in (Status.FAILED, Status.PARTIAL, Status.DIVERGED)):
        typer.echo("error: some runs are not done (see the status column above)", err=True)
        raise typer.Exit(1)


@app.command("report", epilog=_examples("report"))
@one_line_errors
def report_cmd(
    directory: Annotated[Path, typer.Argument(help="Runs folder (reproduce or sweep output).")],
) -> None:
    """Write DIR/report.html (self-contained) and DIR/report.md.

    Damaged run folders are left out, listed in the report and on stderr, and give exit status 1.
    """
    try:
        result = write_report(directory)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for damaged in result.damaged:
        typer.echo(f"damaged: {damaged.line(directory)}", err=True)
    typer.echo(f"wrote {result.html} and {result.md}")
    if result.damaged:
        typer.echo(f"error: {len(result.damaged)} damaged run folder(s) or file(s) left out of "
                   "the report (listed above and under 'Damaged runs'); re-run or remove them",
                   err=True)
        raise typer.Exit(1)


@app.command("verify", epilog=_examples("verify"))
@one_line_errors
def verify_cmd(
    k: Annotated[
        str | None, typer.Option("-k", help="Only checks whose name matches NAME.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Run the theory checks; exit code 1 if any fails."""
    checks = _run_checks(k)
    if as_json:
        typer.echo(dumps_checks(checks))
    else:
        out_console.print(_checks_table(checks))
    n_fail = sum(not c["passed"] for c in checks)
    if not as_json:
        typer.echo(f"{len(checks) - n_fail} passed, {n_fail} failed")
    if n_fail:
        raise typer.Exit(1)


@app.command("reproduce", epilog=_examples("reproduce"))
@one_line_errors
def reproduce_cmd(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/reproduce"),
    quick: QuickOpt = False,
    paper: PaperOpt = False,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Only this experiment (repeatable).")
    ] = None,
    verify: Annotated[bool, typer.Option(help="Run the theory checks too.")] = True,
) -> None:
    """The main job: every registered experiment, the theory checks, then the report.

    Default sizes finish in minutes on 2 CPU cores; --paper uses the notes' sizes. Finished runs
    with the same config are kept, so an interrupted reproduce resumes where it stopped.
    """
    preset = _preset(quick, paper)
    registry = load_experiments()
    names = list(only) if only else list(registry)
    for name in names:
        get_experiment(name)  # unknown --only names fail before any work
    if not names:
        raise ConfigError("reproduce: no experiment is registered")
    check_output(out)
    claim(out, "reproduce")
    clean_partials(out)
    outcomes: list[RunOutcome] = []
    with rich_progress() as progress:
        outer = progress.outer("experiments", len(names))
        for name in names:
            progress.describe(outer, f"experiments: {name}")
            log_line(f"{name}: start")
            outcomes.append(_reproduce_one(registry[name], preset, out / name, progress))
            _log_outcome(outcomes[-1])
            progress.advance_outer(outer)
    checks = None
    if verify:
        if _theory() is None:
            err_console.print("deeplinear.theory is not available: skipping the theory checks")
        else:
            checks = _run_checks(None)
            atomic_write(out / "verify.json", dumps_checks(checks) + "\n")
    html_path, md_path = write_report(out)
    out_console.print(_outcomes_table(outcomes))
    n_fail = 0
    if checks is not None:
        out_console.print(_checks_table(checks))
        n_fail = sum(not c["passed"] for c in checks)
    typer.echo(f"report: {html_path} and {md_path}")
    # a partial experiment has valid results and the report shows its diverged sub-runs (e.g.
    # init-balance, whose layer-wise starts are expected to diverge at the larger scales): named
    # here, not a failure of the main job
    for o in outcomes:
        if o.status == Status.PARTIAL:
            typer.echo("\n".join([f"note: {o.experiment} partial: some training runs diverged; "
                                  "the other results are valid", *_divergence_lines(o, limit=3)]),
                       err=True)
    bad = [o for o in outcomes if o.status not in (Status.DONE, Status.PARTIAL)]
    if bad or n_fail:
        lines = [f"error: {len(bad)} experiment(s) not done, {n_fail} check(s) failed"]
        for o in bad:
            lines.append(f"  {o.experiment}: {o.status}" + (f" ({o.error})" if o.error else ""))
            lines += _divergence_lines(o, limit=3)
        typer.echo("\n".join(lines), err=True)
        raise typer.Exit(1)


def _reproduce_one(exp: Experiment, preset: str, run_dir: Path,
                   progress: RichProgress) -> RunOutcome:
    """One experiment of ``reproduce``; a bad preset or folder is this run's failure only."""
    try:
        spec = build_spec(exp, preset=preset)
        cfg = validate(exp.config_model, spec.config)
        return execute_run(exp, cfg, run_dir, progress=progress)
    except ValueError as err:  # ConfigError included
        return RunOutcome("-", exp.name, Status.FAILED, 0.0, str(run_dir), " ".join(str(err).split()))


@app.command("complete", epilog=_examples("complete"))
@one_line_errors
def complete_cmd(
    input_: Annotated[Path, typer.Argument(
        metavar="INPUT", help="Incomplete matrix: .csv (empty cells or NaN missing), .npy, .npz "
        "or MatrixMarket .mtx (stored entries observed); or a ratings file of user,item,rating "
        "lines (.csv with a header, .tsv, .data, .dat, .txt; further columns ignored).")],
    out: Annotated[Path, typer.Option(help="New file for the completed matrix (.csv, .npy, .npz "
                                      "or .mtx), or with --predict the predicted ratings (.csv); "
                                      "an existing file is never replaced.")],
    depth: Annotated[int, typer.Option(min=1, max=10, help="Number of factors N.")] = 3,
    width: Annotated[int | None, typer.Option(
        min=1, help="Hidden width (default: 2 x the rank the observations determine).")] = None,
    max_steps: Annotated[int, typer.Option(min=1, max=10_000_000,
                                           help="Cap on gradient steps.")] = 20_000,
    validation_fraction: Annotated[float, typer.Option(
        min=0.01, max=0.5, help="Observed entries held out for early stopping.")] = 0.1,
    seed: Annotated[int, typer.Option(min=0, max=2**31 - 2, help="Split and init seed.")] = 0,
    dtype: Annotated[str, typer.Option(help="float32 or float64.")] = "float32",
    ratings: Annotated[bool, typer.Option(
        "--ratings", help="Read INPUT as user,item,rating lines (automatic for a .csv with a "
        "header and for .tsv/.data/.dat/.txt).")] = False,
    predict: Annotated[Path | None, typer.Option(
        help="Ratings only: a file of user,item pairs whose ratings --out receives (without it, "
        "--out gets the whole users x items matrix, ids in sorted order).")] = None,
    biases: Annotated[bool | None, typer.Option(
        "--biases/--no-biases", help="Global mean + row/column biases under the factorization "
        "(default: on for ratings, column means for a matrix).")] = None,
    clip: Annotated[bool | None, typer.Option(
        "--clip/--no-clip", help="Clip predictions to the observed range (default: on for "
        "ratings).")] = None,
    seeds: Annotated[int, typer.Option(min=1, max=100, help="Fits averaged (independent "
                                       "inits).")] = 3,
) -> None:
    """Complete a matrix or a ratings file with deep matrix factorization (deeplinear.completion;
    docs/completion.md)."""
    import numpy as np

    from deeplinear import completion_io as cio
    from deeplinear.completion import DeepMatrixCompletion

    if dtype not in ("float32", "float64"):
        raise ConfigError(f"--dtype {short(dtype)}: must be float32 or float64")
    triplets = ratings or predict is not None or cio.looks_like_ratings(input_)
    formats = cio.RATINGS_FORMATS if triplets else cio.MATRIX_FORMATS
    out_formats = (".csv",) if predict is not None else cio.MATRIX_FORMATS
    for label, path, allowed in (("INPUT", input_, formats), ("--out", out, out_formats),
                                 ("--predict", predict, cio.RATINGS_FORMATS)):
        if path is not None and path.suffix.lower() not in allowed:
            raise ConfigError(f"{label} {short_path(path)}: unknown format "
                              f"{path.suffix or '(no extension)'!r}; use one of "
                              f"{', '.join(allowed)}")
    _check_new_file(out)
    pairs = None
    try:
        if triplets:
            table = cio.read_ratings(input_)
        else:
            from deeplinear.observations import Observations

            obs = Observations.from_matrix(cio.read_matrix(input_))
            if obs.size == 0:
                raise ValueError(f"X has no observed entry (shape {obs.shape}): nothing to "
                                 "complete from")
    except (ValueError, OSError) as err:
        raise ConfigError(f"INPUT {short_path(input_)}: {' '.join(str(err).split())}") from None
    if predict is not None:
        try:
            pairs = cio.read_pairs(predict)
        except (ValueError, OSError) as err:
            raise ConfigError(f"--predict {short_path(predict)}: "
                              f"{' '.join(str(err).split())}") from None
    est = DeepMatrixCompletion(depth=depth, width=width, max_steps=max_steps,
                               validation_fraction=validation_fraction, random_state=seed,
                               dtype=dtype, biases=biases, clip=clip, n_seeds=seeds)
    with rich_progress() as progress:
        log_line(f"complete: {short_path(input_)} (depth {depth})")
        handle = progress.task("fitting (early stopping)", max_steps)
        done = [0]

        def report(step: int) -> None:
            if step > done[0]:
                handle.advance(step - done[0])
                done[0] = step

        try:
            if triplets:
                est.fit_triplets(cio.parse_ids(table.user), cio.parse_ids(table.item),
                                 table.rating, progress=report)
            else:
                est.fit(obs, progress=report)
        except ValueError as err:
            raise ConfigError(f"INPUT {short_path(input_)}: {err}") from None
    n_obs = len(table) if triplets else obs.size
    shape = est.shape_
    if pairs is not None:
        result = est.predict_triplets(*pairs)
        data = cio.ratings_csv(pairs[0], pairs[1], result)
    else:
        result = est.completion() if triplets else est.transform(obs)
        data = cio.write_matrix(out, result)
    if not np.all(np.isfinite(result)):
        typer.echo(error_line("the completion is not finite; nothing written (try --dtype "
                              "float64 or a smaller --max-steps)"), err=True)
        raise typer.Exit(1)
    cold = [f"{n} {what}{'s' * (n != 1)}" for n, what in (
        (est.cold_rows_.size, "user" if triplets else "row"),
        (est.cold_cols_.size, "item" if triplets else "column")) if n]
    if pairs is not None:
        known_u = np.isin(pairs[0], est.users_.astype(str))
        known_i = np.isin(pairs[1], est.items_.astype(str))
        new = [f"{n} {what}{'s' * (n != 1)}" for n, what in (
            (np.unique(pairs[0][~known_u]).size, "new user"),
            (np.unique(pairs[1][~known_i]).size, "new item")) if n]
        if new:
            typer.echo(f"cold start: {' and '.join(new)} in --predict: predicted from the "
                       f"{'biases' if est.biases_ else 'column means'} alone")
    if cold:
        typer.echo(f"cold start: {' and '.join(cold)} with no observed entry: predicted from "
                   f"the {'biases' if est.biases_ else 'column means'} alone")
    _check_new_file(out)
    _write_new_file(out, data)
    val = (f"{est.validation_error_:.6g}" if np.isfinite(est.validation_error_)
           else "- (too few observations to hold any out)")
    typer.echo(f"validation RMSE: {val}  effective rank: "
               f"{est.effective_rank_:.3g}  steps: {est.n_iter_}  shape: {shape[0]} x "
               f"{shape[1]}  observed: {n_obs}")
    what = f"{len(result)} predicted ratings" if pairs is not None else "the completed matrix" + (
        " (rows: users, columns: items, ids in sorted order)" if triplets else "")
    typer.echo(f"wrote {short_path(out)}: {what}  ({est.fit_seconds_:.1f} s)")


def _check_new_file(path: Path) -> None:
    """``--out`` must be a new file in an existing, writable folder: deeplinear never replaces a
    file (its own outputs included: a second run names a new path), never writes through a link."""
    import os

    if os.path.lexists(path):
        what = "a symlink" if path.is_symlink() else "a folder" if path.is_dir() else "a file"
        raise ConfigError(f"--out {short_path(path)}: is {what} that exists; deeplinear does not "
                          "replace it, choose a new file name")
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(f"--out {short_path(path)}: folder {short_path(parent)} does not exist; "
                          "create it first")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"--out {short_path(path)}: folder {short_path(parent)} is not writable")


def _write_new_file(path: Path, data: bytes) -> None:
    """Write ``data`` to the new file ``path`` through a temporary file and a hard link, which
    fails instead of replacing a file created meanwhile."""
    import os
    import uuid

    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise ConfigError(f"--out {short_path(path)}: appeared while fitting; deeplinear does "
                              "not replace it, choose a new file name") from None
    finally:
        with suppress(OSError):
            os.unlink(tmp)


def main(argv: list[str] | None = None) -> int:
    """The ``deeplinear`` console entry point: runs :data:`app` and returns its exit status.

    Bad input of any kind (usage errors included, see :class:`OneLineErrorsGroup`) ends with one
    ``error: ...`` line on stderr and status 2."""
    try:
        app(args=argv)
    except SystemExit as exc:
        code = exc.code
        if code is None or isinstance(code, int):
            return code or 0
        typer.echo(error_line(str(code)), err=True)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
