"""The documentation site (mkdocs.yml) builds offline with ``--strict``: every page of docs/ is in
the navigation, every public module has an API page generated from its docstrings, and no
internal link or anchor of the built site is broken. Skipped where mkdocs is not installed
(``pip install 'deeplinear[docs]'``, part of ``all``)."""

from __future__ import annotations

import html.parser
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytest.importorskip("mkdocs", reason="the docs extra (mkdocs) is not installed")
pytest.importorskip("mkdocstrings", reason="the docs extra (mkdocstrings) is not installed")

import deeplinear  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                            str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600, check=False)
    assert build.returncode == 0, build.stderr[-4000:]
    return out


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("href", "src"):
                self.links.append(value)
            elif name in ("id", "name"):
                self.ids.add(value)


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_every_internal_link_and_anchor_resolves(site):
    # 404.html is served by a web server for any missing path, so its links are root-absolute
    pages = sorted(p for p in site.rglob("*.html") if p.name != "404.html")
    assert len(pages) > 25
    parsed = {p: _parse(p) for p in pages}
    broken = []
    for page, links in parsed.items():
        for link in links.links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith("//"):
                continue  # external (none is fetched)
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {link} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{page.relative_to(site)}: {link} (no such anchor)")
    assert not broken, "broken internal links:\n" + "\n".join(broken[:50])


def test_every_public_module_has_an_api_page(site):
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for module in deeplinear._SUBMODULES:
        assert f"api/{module}.md" in config, module
        page = (site / "api" / f"{module}.html").read_text(encoding="utf-8")
        assert f'id="deeplinear.{module}"' in page, module
    train = _parse(site / "api" / "train.html").ids
    assert {"deeplinear.train.train", "deeplinear.train.train_replicas",
            "deeplinear.train.Status"} <= train


def test_docstring_roles_become_links(site):
    """``:func:`train``` in a docstring is a link to train's entry, not literal reST."""
    page = (site / "api" / "train.html").read_text(encoding="utf-8")
    assert ":func:`" not in page and ":class:`" not in page
    assert re.search(r'<a [^>]*href="#deeplinear\.train\.train"', page)


def test_the_sparse_cost_model_is_stated_once_and_linked(site):
    """The measured constants of the sparse rule live in problems.sparse_is_cheaper's docstring;
    train's docstring links there instead of copying them."""
    from deeplinear import problems, train

    assert "0.025" in problems.sparse_is_cheaper.__doc__
    assert "0.025" not in train.train.__doc__ and "sparse_is_cheaper" in train.train.__doc__
    page = (site / "api" / "train.html").read_text(encoding="utf-8")
    assert re.search(r'href="problems\.html#deeplinear\.problems\.sparse_is_cheaper"', page)


def test_the_site_renders_in_a_browser(site, tmp_path):
    """Headless Chromium lays out an API page: the theme's script ran and the entry is there."""
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed")
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                          f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1000",
                          "--dump-dom", (site / "api" / "train.html").as_uri()],
                         capture_output=True, text=True, timeout=180, check=True).stdout
    assert 'id="deeplinear.train.train"' in out and "md-header" in out
