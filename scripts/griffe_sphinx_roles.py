"""A griffe extension for the API site (mkdocs.yml): the docstrings' Sphinx roles become links.

The package's docstrings cite other objects as ``:func:`train```, ``:class:`~deeplinear.train.Status```
or ``:data:`deeplinear.config.Seed```. Each is rewritten to an mkdocs-autorefs cross-reference:
the name is resolved from the docstring's own scope (as Python would), shown as code (``~``: its
last part only), and linked where the site documents it; a name the site does not document (a
private helper) stays code without a link. A reST ``text::`` before an indented block (a code
block in Markdown too) loses its second colon."""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_LITERAL = re.compile(r"(?<=\S)::$", re.M)  # reST "text::" before an indented block
_ROLE = re.compile(r":(?:func|class|mod|data|attr|meth|exc|obj|const|py:\w+):`(~?)([^`<>]+)`")


def _resolve(obj: griffe.Object, name: str) -> str | None:
    if name.startswith("deeplinear"):
        return name
    head, _, rest = name.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:
        try:
            full = scope.resolve(head)
        except (griffe.NameResolutionError, AttributeError, KeyError):
            scope = scope.parent
            continue
        return f"{full}.{rest}" if rest else full
    return None


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`name``` in every docstring into an optional autorefs link."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None:
            return
        obj.docstring.value = _LITERAL.sub(":", obj.docstring.value)
        if ":`" not in obj.docstring.value:
            return

        def link(match: re.Match[str]) -> str:
            tilde, name = match.groups()
            shown = name.rsplit(".", 1)[-1] if tilde else name
            full = _resolve(obj, name)
            code = f"<code>{html.escape(shown)}</code>"
            if full is None:
                return code
            return f'<autoref identifier="{html.escape(full)}" optional>{code}</autoref>'

        obj.docstring.value = _ROLE.sub(link, obj.docstring.value)
