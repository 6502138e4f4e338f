"""``bbot worker``: the command a build machine runs at boot."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bbot.worker.run import run_worker


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6addr]:PORT`` too) → (host, port); ValueError saying what is wrong."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text:
        raise ValueError(f"TFTP server {text!r} is not HOST:PORT (for example 10.0.2.2:6969)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"TFTP server {text!r}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"TFTP server {text!r}: port {port} is outside 1-65535")
    return host, port


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``bbot worker``."""
    parser = subparsers.add_parser(
        "worker",
        help="build the task of one boot directory (runs inside a build machine)",
        description=(
            "Download <BOOTDIR>/task.manifest from the agent's TFTP server, build the package "
            "(configure, update, test, install), upload <BOOTDIR>/result.manifest. Exits 0 "
            "when the result was uploaded, whatever the build's status."
        ),
    )
    parser.add_argument(
        "--tftp", metavar="HOST:PORT", help="the agent's TFTP server (default: $BBOT_TFTP)"
    )
    parser.add_argument(
        "--dir",
        dest="boot_dir",
        metavar="BOOTDIR",
        help="this boot's directory on the TFTP server (default: $BBOT_DIR)",
    )
    parser.add_argument(
        "--work",
        metavar="DIR",
        type=Path,
        help="an empty directory to build in (default: $BBOT_WORK, else the current directory)",
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    tftp = args.tftp or os.environ.get("BBOT_TFTP")
    boot_dir = args.boot_dir or os.environ.get("BBOT_DIR")
    work = args.work or Path(os.environ.get("BBOT_WORK") or os.getcwd())
    if not tftp:
        return _usage_error("no TFTP server given: pass --tftp HOST:PORT or set BBOT_TFTP")
    if not boot_dir:
        return _usage_error("no boot directory given: pass --dir BOOTDIR or set BBOT_DIR")
    try:
        host, port = parse_host_port(tftp)
    except ValueError as error:
        return _usage_error(str(error))
    return run_worker(host, port, boot_dir, Path(work))


def _usage_error(message: str) -> int:
    print(f"bbot worker: {message}", file=sys.stderr)
    return 2
