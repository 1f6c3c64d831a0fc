"""The documentation tells the truth.

* every § reference (README, docs, the package's source) is an entry of docs/notes.md;
* every ```python block of docs/*.md runs (README's: tests/test_readme.py), unless an HTML comment
  right above it says why it cannot (e.g. it needs a cluster or a user's data file);
* the cheap `deeplinear` command lines the docs show (`list`, `--help`, `--print-config`) work;
* every number block (`<!-- numbers:NAME -->`) matches what scripts/docs_numbers.py computes
  from the saved results in docs/results/, so a quoted number cannot drift from its source.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NOTES = ROOT / "docs" / "notes.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
SOURCES = sorted((ROOT / "src" / "deeplinear").rglob("*.py"))


@functools.cache
def _numbers_module():
    """scripts/docs_numbers.py, imported once (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("docs_numbers", ROOT / "scripts" / "docs_numbers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_numbers"] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- § references

# "§2.6", "§E3", "§4 pitfall 6" / "§4\n  pitfall 12", ranges "§2.6–§2.8", "§2.12-2.13", "§E1-§E5";
# a bare "pitfall 7" names the same entries. "(Boyd et al. 2011, §3.4.1)" cites another text.
_LABEL = r"(E\d+|\d+(?:\.\d+)*)"
_REF = re.compile(r"(?<!et al\. \d{4}, )§" + _LABEL
                  + r"(?:\s+pitfalls?\s+(\d+))?(?:\s*[-–]\s*§?" + _LABEL + r")?")
_BARE_PITFALL = re.compile(r"\bpitfalls?\s+(\d+)")


def anchor(label: str, pitfall: str | None = None) -> str:
    """The id of a label's entry in docs/notes.md: §2.6 -> s2-6, §E3 -> e3, §4 pitfall 6 ->
    s4-pitfall-6."""
    if pitfall:
        return f"s4-pitfall-{pitfall}"
    if label.startswith("E"):
        return label.lower()
    return "s" + label.replace(".", "-")


def section_refs(text: str) -> set[tuple[str, str]]:
    """``{(cited text, anchor id)}`` of every § reference in ``text``."""
    out = set()
    for m in _REF.finditer(text):
        label, pitfall, upper = m.groups()
        out.add((m.group(0), anchor(label, pitfall)))
        if upper:
            out.add((m.group(0), anchor(upper)))
    for m in _BARE_PITFALL.finditer(text):
        out.add((m.group(0), anchor("4", m.group(1))))
    return out


def notes_anchors() -> dict[str, str]:
    """``{anchor id: heading}`` of docs/notes.md (an anchor is followed by its heading)."""
    text = NOTES.read_text(encoding="utf-8")
    return dict(re.findall(r'<a id="([^"]+)"></a>\n\n#+ (.+)', text))


def test_section_reference_parser():
    refs = {a for _, a in section_refs(
        "see §2.6–§2.8, §2.12-2.13 and §E1-§E5; §4 pitfall 6, §4\n  pitfall 12, §4 pitfalls, "
        "pitfall 7, §2.1. (Boyd et al. 2011, §3.4.1) §E3 Fig. 2")}
    assert refs == {"s2-6", "s2-8", "s2-12", "s2-13", "e1", "e5", "s4-pitfall-6",
                    "s4-pitfall-12", "s4", "s4-pitfall-7", "s2-1", "e3"}


def test_every_section_reference_is_a_notes_entry():
    anchors = notes_anchors()
    assert len(anchors) > 40, "docs/notes.md lost its entries"
    missing = []
    for path in [README, *DOCS, *SOURCES]:
        for cited, target in sorted(section_refs(path.read_text(encoding="utf-8"))):
            if target not in anchors:
                missing.append(f"{path.relative_to(ROOT)}: {cited!r} (no <a id=\"{target}\">)")
    assert not missing, "§ references without an entry in docs/notes.md:\n" + "\n".join(missing)


def test_notes_headings_name_their_label():
    for target, heading in notes_anchors().items():
        if m := re.fullmatch(r"s4-pitfall-(\d+)", target):
            label = f"§4 pitfall {m.group(1)}"
        elif re.fullmatch(r"s[\d-]+", target):
            label = "§" + target[1:].replace("-", ".")
        elif re.fullmatch(r"e\d+", target):
            label = "§" + target.upper()
        else:  # a group heading, e.g. "experiments"
            continue
        assert re.match(re.escape(label) + r"\b", heading), f"entry {target!r} is headed {heading!r}"


def test_notes_name_every_check_and_experiment():
    """The map says where each statement lives: every theory check and registered experiment is
    named in docs/notes.md (a renamed check shows up here)."""
    from deeplinear.experiments import REGISTRY
    from deeplinear.theory import CHECKS

    text = NOTES.read_text(encoding="utf-8")
    assert not [n for n in CHECKS if f"`{n}`" not in text]
    assert not [n for n in REGISTRY if f"`{n}`" not in text]


def test_docs_point_to_the_notes_map_not_the_spec():
    for path in [README, *DOCS, ROOT / "BENCHMARKS.md"]:
        text = path.read_text(encoding="utf-8")
        assert "`theory.md` (shared" not in text and "specification `theory.md`" not in text
        assert not re.search(r"\bissues? \d", text), f"{path.name}: an internal issue number"
    assert "docs/notes.md" in README.read_text(encoding="utf-8")
    assert "(notes.md)" in (ROOT / "docs" / "theory.md").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- code snippets

_BLOCK = re.compile(r"(?:<!--([^\n]*?)-->\n)?```python\n(.*?)```", re.S)


def python_blocks(path: Path) -> list[tuple[str | None, str]]:
    """``[(skip reason or None, code)]`` of a Markdown file's ```python blocks, in order; a block
    is skipped only when an HTML comment directly above it starts with "not run:"."""
    out = []
    for m in _BLOCK.finditer(path.read_text(encoding="utf-8")):
        comment = (m.group(1) or "").strip()
        reason = comment[len("not run:"):].strip() if comment.startswith("not run:") else None
        out.append((reason, m.group(2)))
    return out


@pytest.mark.parametrize("path", [p for p in DOCS if python_blocks(p)], ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    """The blocks of one page run in order, in one namespace, in a fresh folder that has the
    repository's examples/ (so relative paths in them work and nothing lands in the checkout)."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    ran = 0
    for reason, code in python_blocks(path):
        if reason is not None:
            assert len(reason) > 10, f"{path.name}: a skipped block must say why"
            compile(code, str(path), "exec")  # still valid Python
            continue
        exec(compile(code, str(path), "exec"), namespace)  # noqa: S102
        ran += 1
    assert ran, f"{path.name}: every python block is skipped"


def test_snippets_import_the_modules_they_use():
    """The defect that motivated these tests: `deeplinear.experiments.REGISTRY` in a snippet
    that never imported `deeplinear`."""
    for path in [README, *DOCS]:
        for _, code in python_blocks(path):
            body = [ln for ln in code.splitlines() if not re.match(r"\s*(from|import) ", ln)]
            if any(re.search(r"(?<![\w.])deeplinear\.\w", ln.split("#")[0]) for ln in body):
                assert re.search(r"^import deeplinear\b", code, re.M), path.name


# --------------------------------------------------------------------------- CLI examples

def _cheap_commands() -> list[tuple[str, str]]:
    """Command lines in the docs' shell blocks that only print: `deeplinear list`, `--help`,
    `--version` and `--print-config` (lines with placeholders such as NAME or [--quick] skipped)."""
    out = []
    for path in [README, *DOCS]:
        for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", path.read_text(encoding="utf-8"),
                                re.S):
            for line in block.splitlines():
                line = re.split(r"\s#", line)[0].strip()
                if not line.startswith("deeplinear "):
                    continue
                try:
                    words = shlex.split(line)
                except ValueError:
                    continue
                if any(re.match(r"\[|[A-Z]{3,}|.*\.\.\.|\|", w) for w in words[1:]):
                    continue  # a synopsis with placeholders, not a command
                if words[1:] == ["list"] or {"--help", "--version", "--print-config"} & set(words):
                    out.append((path.name, line))
    return sorted(set(out))


@pytest.mark.parametrize(("page", "line"), _cheap_commands())
def test_cheap_cli_examples_run(page, line, monkeypatch):
    from typer.testing import CliRunner

    from deeplinear.cli import app

    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, shlex.split(line)[1:])
    assert result.exit_code == 0, f"{page}: `{line}` -> {result.exit_code}\n{result.output}"
    assert result.output.strip()


def test_some_cli_examples_are_checked():
    assert any("--print-config" in line for _, line in _cheap_commands())
    assert any(line == "deeplinear list" for _, line in _cheap_commands())


# --------------------------------------------------------------------------- numbers

def test_numbers_in_the_docs_match_the_saved_results():
    numbers = _numbers_module()
    diffs = numbers.stale()
    assert not diffs, ("numbers in the docs differ from docs/results (run `python "
                       "scripts/docs_numbers.py` after saving new results):\n"
                       + "\n".join(diffs.values()))


def test_the_docs_quote_saved_numbers():
    """The pages with measured numbers carry the generated blocks (not hand-written copies)."""
    numbers = _numbers_module()
    used = {name for path in numbers.doc_files() for name in
            numbers.block_names(path.read_text(encoding="utf-8"))}
    assert used <= set(numbers.BLOCKS)
    for page, names in {"README.md": {"fig2-paper", "fig3-paper", "norms-readme", "demo-timing",
                                      "fig1-regression-readme", "fig1-cnn-readme", "verify",
                                      "test-timing"},
                        "docs/regularization.md": {"fig2-default", "fig3-default", "norms-table"},
                        "docs/acceleration.md": {"fig1-regression-methods", "fig1-cnn-models"},
                        "docs/cli.md": {"demo-timing"}}.items():
        assert names <= set(numbers.block_names((ROOT / page).read_text(encoding="utf-8"))), page


def test_drift_is_detected(tmp_path):
    """Change one number inside a block: the check reports that file with a diff."""
    numbers = _numbers_module()
    page = tmp_path / "README.md"
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- numbers:fig2-paper -->\n(.*?)<!-- /numbers -->", text, re.S)
    assert block
    tampered = block.group(1).replace("e-", "e-1", 1)
    page.write_text(text.replace(block.group(1), tampered), encoding="utf-8")
    diffs = numbers.stale([page], root=tmp_path)
    assert list(diffs) == [page]
    assert "-" in diffs[page] and "+" in diffs[page]
    numbers.write([page])
    assert not numbers.stale([page], root=tmp_path)


def test_unknown_block_name_is_an_error(tmp_path):
    numbers = _numbers_module()
    page = tmp_path / "x.md"
    page.write_text("<!-- numbers:no-such-block -->\nx\n<!-- /numbers -->\n", encoding="utf-8")
    with pytest.raises(KeyError, match="no-such-block"):
        numbers.stale([page], root=tmp_path)


def test_check_mode_exit_status(tmp_path, monkeypatch, capsys):
    numbers = _numbers_module()
    assert numbers.main(["--check"]) == 0
    page = tmp_path / "README.md"
    page.write_text(README.read_text(encoding="utf-8").replace(
        "<!-- numbers:verify -->\n", "<!-- numbers:verify -->\nstale line\n"), encoding="utf-8")
    monkeypatch.setattr(numbers, "doc_files", lambda root=None: [page])
    monkeypatch.setattr(numbers, "ROOT", tmp_path)
    assert numbers.main(["--check"]) == 1
    assert "stale line" in capsys.readouterr().out


def test_saved_results_are_complete_and_relative():
    numbers = _numbers_module()
    for exp in numbers.EXPERIMENTS:
        for name in ("summary.json", "status.json"):
            text = (numbers.DEFAULT / exp / name).read_text(encoding="utf-8")
            assert str(ROOT) not in text and os.sep + "work" + os.sep not in text, (exp, name)
    assert (numbers.DEFAULT / "verify.json").is_file()
    assert (numbers.DEFAULT / "run.json").is_file()
