"""The `taskledger` command line (placeholder grown by later issues)."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("taskledger: no command yet", file=sys.stderr)
    return 2
