"""``python -m runstream sync [PATH ...]``: upload spooled runs."""

from __future__ import annotations

import sys

from .sync import main as sync_main

USAGE = "usage: python -m runstream sync [--url URL] [--token TOKEN] [PATH ...]"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    if args[0] != "sync":
        print(f"unknown command {args[0]!r}\n{USAGE}", file=sys.stderr)
        return 2
    return sync_main(args[1:], prog="python -m runstream sync")


if __name__ == "__main__":
    sys.exit(main())
