"""``python -m deeplinear`` and the ``deeplinear`` console command.

The command line needs the ``cli`` extra; without it this prints one line saying so (exit 2)
instead of a traceback."""

from __future__ import annotations

import sys

from deeplinear._optional import MissingExtraError, needs_extra


def main(argv: list[str] | None = None) -> int:
    """Run :func:`deeplinear.cli.main`, or say which extra is missing."""
    try:
        with needs_extra("the deeplinear command"):
            from deeplinear.cli import main as cli_main
    except MissingExtraError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return cli_main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
