"""Shared by the benchmark scripts: the machine line and the BENCHMARKS.md section writer."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from deeplinear.store import atomic_write

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def cpu_name() -> str:
    """The CPU model and core count, for the machine line of a benchmark section."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between ``<!-- name:start/end -->`` in BENCHMARKS.md
    (atomically, via the run store's writer), leaving the other scripts' sections alone."""
    text = (BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists()
            else "# Benchmarks\n\nMeasured, never asserted in tests.\n")
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body}{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write(BENCHMARKS_MD, text)
