"""`bbot manifest ...`: check and print manifest files from the command line.

    bbot manifest check [--as KIND] FILE...   exit 0 when every file parses
    bbot manifest parse [--json] FILE|-        print the stream back (or as JSON)

Errors go to stderr as `path:line:column: error: description`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from bbot.manifest.bbot import (
    Machine,
    MachineHeader,
    Result,
    ResultRequest,
    Task,
    TaskRequest,
    TaskResponse,
)
from bbot.manifest.text import ManifestError, parse_stream, serialize_stream

# What `check --as KIND` validates a file as.
_KINDS: dict[str, Callable[..., Any]] = {
    "machine-header": MachineHeader.from_text,
    "machine": Machine.from_text,
    "task-request": TaskRequest.from_text,
    "task-response": TaskResponse.from_text,
    "task": Task.from_text,
    "result": Result.from_text,
    "result-request": ResultRequest.from_text,
}

STDIN = "-"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `manifest` and its sub-commands; each sets `func(args) -> int`."""
    parser = subparsers.add_parser(
        "manifest",
        help="check and print build2 manifest files",
        description="Check and print files in the build2 manifest format.",
    )
    commands = parser.add_subparsers(dest="manifest_command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check",
        help="check that files parse as manifest streams",
        description="Exit 0 when every FILE parses as a manifest stream (or as a bbot "
        "manifest of KIND), else print each error and exit 1.",
    )
    check.add_argument("files", nargs="+", metavar="FILE", help=f"a manifest file, {STDIN} for stdin")
    check.add_argument(
        "--as",
        dest="kind",
        choices=sorted(_KINDS),
        help="also validate each file as this bbot manifest",
    )
    check.add_argument(
        "--ignore-unknown",
        action="store_true",
        help="with --as, accept field names this bbot does not know",
    )
    check.set_defaults(func=run_check)

    parse = commands.add_parser(
        "parse",
        help="print a manifest stream back, as written by bbot or as JSON",
        description="Print the manifest stream in FILE as bbot writes it, or with --json as "
        "a JSON list of manifests, each a list of [name, value] pairs in file order.",
    )
    parse.add_argument("file", metavar="FILE", help=f"a manifest file, {STDIN} for stdin")
    parse.add_argument("--json", action="store_true", help="print JSON instead")
    parse.set_defaults(func=run_parse)


def _read(path: str, stdin: TextIO) -> bytes:
    if path == STDIN:
        return stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read().encode()
    with open(path, "rb") as file:
        return file.read()


def _stream_name(path: str) -> str:
    return "stdin" if path == STDIN else path


def run_check(args: argparse.Namespace, stdin: TextIO | None = None, stderr: TextIO | None = None) -> int:
    stdin = stdin or sys.stdin
    stderr = stderr or sys.stderr
    failed = False
    for path in args.files:
        try:
            data = _read(path, stdin)
        except OSError as error:
            print(f"{path}: error: cannot read: {error.strerror or error}", file=stderr)
            failed = True
            continue
        try:
            if args.kind:
                _KINDS[args.kind](data, _stream_name(path), ignore_unknown=args.ignore_unknown)
            else:
                parse_stream(data, _stream_name(path))
        except ManifestError as error:
            print(error, file=stderr)
            failed = True
    return 1 if failed else 0


def run_parse(
    args: argparse.Namespace,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        data = _read(args.file, stdin)
    except OSError as error:
        print(f"{args.file}: error: cannot read: {error.strerror or error}", file=stderr)
        return 1
    try:
        manifests = parse_stream(data, _stream_name(args.file))
    except ManifestError as error:
        print(error, file=stderr)
        return 1
    if args.json:
        document = [[[pair.name, pair.value] for pair in manifest.pairs] for manifest in manifests]
        stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
    else:
        try:
            text = serialize_stream(manifests)
        except ValueError as error:  # a trailing empty manifest cannot be written back
            print(f"{_stream_name(args.file)}: error: {error}", file=stderr)
            return 1
        stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`bbot manifest ...` on its own (bbot/cli.py registers the same parser)."""
    parser = argparse.ArgumentParser(prog="bbot")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_parser(subparsers)
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] != ["manifest"]:
        arguments.insert(0, "manifest")  # `python -m bbot.manifest.cli check ...`
    args = parser.parse_args(arguments)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
