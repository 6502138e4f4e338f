"""`bbot manifest check|parse`, through bbot.manifest.cli.main and as a real process."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bbot.manifest import cli
from tests.manifest.test_conformance import FILES

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_check_accepts_the_corpus(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["manifest", "check", *map(str, FILES)]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_check_reports_each_broken_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path / "good.manifest", ": 1\na: b\n")
    bad_name = write(tmp_path / "name.manifest", ": 1\na: b\nc d: e\n")
    bad_bytes = write(tmp_path / "bytes.manifest", b": 1\na: \xff\n")
    missing = tmp_path / "missing.manifest"
    status = cli.main(["check", str(good), str(bad_name), str(bad_bytes), str(missing)])
    assert status == 1
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        f"{bad_name}:3:3: error: ':' expected after name",
        f"{bad_bytes}:2:4: error: invalid manifest: invalid UTF-8 sequence first byte (0xFF)",
        f"{missing}: error: cannot read: No such file or directory",
    ]


def test_check_as_a_bbot_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = write(tmp_path / "result.manifest", ": 1\nname: a\nversion: 1\nstatus: fine\n")
    assert cli.main(["check", str(result)]) == 0
    assert cli.main(["check", "--as", "result", str(result)]) == 1
    assert capsys.readouterr().err == (
        f"{result}:4:9: error: invalid result status value 'fine': expected one of "
        "skip, success, warning, error, abort, abnormal, interrupt\n"
    )
    header = write(tmp_path / "header.manifest", ": 1\nid: i\nname: n\nsummary: s\nx: y\n")
    assert cli.main(["check", "--as", "machine-header", str(header)]) == 1
    assert "unknown name 'x'" in capsys.readouterr().err
    arguments = ["check", "--as", "machine-header", "--ignore-unknown", str(header)]
    assert cli.main(arguments) == 0


def test_parse_prints_the_stream_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write(
        tmp_path / "in.manifest",
        ": 1\n# comment\nname : libhello\ndescription:\\\nline 1\nline 2\n\\\n:\nx: y\n",
    )
    assert cli.main(["parse", str(source)]) == 0
    assert capsys.readouterr().out == (": 1\nname: libhello\ndescription:\n\\\nline 1\nline 2\n\\\n:\nx: y\n")


def test_parse_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write(tmp_path / "in.manifest", ": 1\na: 1\nb:\n\\\nx\ny\n\\\na: 2\n:\nc: \u00e9\n")
    assert cli.main(["manifest", "parse", "--json", str(source)]) == 0
    assert json.loads(capsys.readouterr().out) == [
        [["a", "1"], ["b", "x\ny"], ["a", "2"]],
        [["c", "\u00e9"]],
    ]
    empty = write(tmp_path / "empty.manifest", "")
    assert cli.main(["parse", "--json", str(empty)]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_parse_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write(tmp_path / "bad.manifest", ": 2\n")
    assert cli.main(["parse", str(source)]) == 1
    assert capsys.readouterr().err == f"{source}:1:3: error: unsupported format version 2\n"
    trailing = write(tmp_path / "trailing.manifest", ": 1\na: b\n:\n")
    assert cli.main(["parse", str(trailing)]) == 1
    assert "empty manifest cannot end" in capsys.readouterr().err
    assert cli.main(["parse", "--json", str(trailing)]) == 0
    assert json.loads(capsys.readouterr().out) == [[["a", "b"]], []]


def test_add_parser_sets_func_for_the_bbot_command() -> None:
    parser = argparse.ArgumentParser(prog="bbot")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["manifest", "parse", "--json", "-"])
    assert args.func is cli.run_parse
    assert (args.file, args.json) == ("-", True)
    args = parser.parse_args(["manifest", "check", "a", "b"])
    assert args.func is cli.run_check
    assert args.files == ["a", "b"]
    with pytest.raises(SystemExit):
        parser.parse_args(["manifest", "check"])  # FILE... is required


def run(arguments: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "bbot.manifest.cli", *arguments],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_stdin_in_a_real_process() -> None:
    done = run(["parse", "--json", "-"], b": 1\r\na: b\r\n")
    assert (done.returncode, json.loads(done.stdout)) == (0, [[["a", "b"]]])
    done = run(["check", "-"], b": 1\na\n")
    assert done.returncode == 1
    assert done.stderr.decode() == "stdin:2:2: error: ':' expected after name\n"
