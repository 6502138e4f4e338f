"""``python3 -m bbot.worker``: the worker alone, as build machines run it.

A machine carries only ``bbot`` and ``tftpy`` (the agent puts them there), not
the controller's and agent's dependencies that ``python -m bbot`` imports, so
its init runs this. Same arguments as ``bbot worker``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from bbot.worker import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bbot.worker")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["worker", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("tftpy").setLevel(logging.CRITICAL)  # bbot.tftp says what matters
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
