"""Look at a report the way a reader does: headless Chromium (Debian package ``chromium``).

    python scripts/check_report.py runs/demo/report.html [--out runs/demo/browser]

Writes a screenshot of the first screen at width 1400 (``first-screen.png``), prints the page to
PDF (``report.pdf``), and checks for horizontal overflow at the screen width (1400 px) and at the
printable width of an A4 page (700 px): every element must fit the page width (tables wrap their
cells, figures scale). Prints one line per width; exit status 1 when anything overflows.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTHS = {"screen": 1400, "print (A4)": 700}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]

# Runs in the page after layout: elements whose right edge passes the viewport, or whose content
# is wider than their box without a scrollbar of their own (a cut table or image).
_PROBE = """<script>
addEventListener('load', () => {
  const width = document.documentElement.clientWidth, bad = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('details:not([open])') && el.tagName !== 'SUMMARY'
        && el.tagName !== 'DETAILS') continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    const style = getComputedStyle(el);
    const clipped = el.scrollWidth > el.clientWidth + 1 && style.overflowX !== 'visible'
                    && el.tagName !== 'PRE';
    if (r.right > width + 1 || clipped)
      bad.push(el.tagName + (el.className ? '.' + el.className : '') + ' ' +
               Math.round(r.right) + '>' + width);
  }
  const out = document.createElement('pre');
  out.id = 'overflow-probe';
  out.textContent = JSON.stringify({width, page: document.documentElement.scrollWidth, bad});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], profile: str) -> str:
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True).stdout


def overflow(html_path: Path, width: int) -> dict:
    """Lay the page out at ``width`` px; returns ``{"width", "page", "bad": [...]}``."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(html_path.read_text().replace("</body>", _PROBE + "</body>", 1))
        dom = _run([f"--window-size={width},1000", "--dump-dom", probe.as_uri()], tmp + "/p")
    found = re.search(r'<pre id="overflow-probe">(.*?)</pre>', dom, re.S)
    if not found:
        raise RuntimeError("the overflow probe did not run")
    return json.loads(found.group(1).replace("&gt;", ">").replace("&lt;", "<")
                      .replace("&amp;", "&").replace("&quot;", '"'))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if chromium() is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    html_path = args.report.resolve()
    out = (args.out or html_path.parent / "browser").resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        _run(["--window-size=1400,1100", f"--screenshot={out / 'first-screen.png'}",
              html_path.as_uri()], tmp + "/a")
        _run(["--no-pdf-header-footer", f"--print-to-pdf={out / 'report.pdf'}",
              html_path.as_uri()], tmp + "/b")
    status = 0
    for name, width in WIDTHS.items():
        result = overflow(html_path, width)
        ok = not result["bad"] and result["page"] <= result["width"]
        status |= not ok
        print(f"{name} {width}px: {'no overflow' if ok else 'OVERFLOW'} (page {result['page']} px)"
              + ("" if ok else f": {result['bad'][:5]}"))
    print(f"wrote {out / 'first-screen.png'} and {out / 'report.pdf'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
