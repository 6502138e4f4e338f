"""The worker's pure logic: statuses, logs, config arguments, build system choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from bbot.manifest import Result
from bbot.manifest.status import Status
from bbot.worker.buildsystems import choose_build_system
from bbot.worker.buildsystems.make import make_test_target
from bbot.worker.buildsystems.python import has_python_tests
from bbot.worker.cli import parse_host_port
from bbot.worker.logs import (
    LogTail,
    command_line,
    compile_warning_regexes,
    matches_warning,
    note_line,
)
from bbot.worker.operations import (
    Command,
    Outcome,
    PlanError,
    describe_exit,
    operation_status,
    split_config_args,
)
from bbot.worker.run import unreadable_task_result
from bbot.worker.source import split_repository_url

CMD = Command(("make",), cwd=Path("/"))
PYTEST = Command(("pytest",), cwd=Path("/"), no_tests_exit_codes=frozenset({5}))


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([], Status.SUCCESS),
        ([(CMD, Outcome(0))], Status.SUCCESS),
        ([(CMD, Outcome(0, warned=True))], Status.WARNING),
        ([(CMD, Outcome(0)), (CMD, Outcome(2))], Status.ERROR),
        ([(CMD, Outcome(0, warned=True)), (CMD, Outcome(1))], Status.ERROR),
        ([(CMD, Outcome(-9))], Status.ERROR),
        ([(CMD, Outcome(None))], Status.ERROR),
        ([(PYTEST, Outcome(5))], Status.SUCCESS),
        ([(PYTEST, Outcome(1))], Status.ERROR),
        ([(CMD, Outcome(5))], Status.ERROR),
    ],
)
def test_operation_status(outcomes: list[tuple[Command, Outcome]], expected: Status) -> None:
    assert operation_status(outcomes) is expected


def test_describe_exit() -> None:
    assert describe_exit(0) is None
    assert describe_exit(None) is None
    assert describe_exit(2) == "exit code 2"
    assert describe_exit(-9) == "terminated by signal 9"


def test_split_config_args() -> None:
    env, rest = split_config_args(
        ["CFLAGS=-O2 -g", "-DFOO=ON", "CC=gcc", "config.cc.coptions=-O3", "--enable-x", "_X=", "1A=b"]
    )
    assert env == {"CFLAGS": "-O2 -g", "CC": "gcc", "_X": ""}
    assert rest == ["-DFOO=ON", "config.cc.coptions=-O3", "--enable-x", "1A=b"]


def test_warning_regexes_default_and_invalid() -> None:
    regexes, problems = compile_warning_regexes([])
    assert problems == []
    assert matches_warning("hello.c:3:7: warning: unused variable 'x'", regexes)
    assert not matches_warning("WARNING: pip is old", regexes)
    assert not matches_warning("all good", regexes)

    regexes, problems = compile_warning_regexes(["deprecated", "(unclosed"])
    assert len(regexes) == 1 and len(problems) == 1
    assert "(unclosed" in problems[0]
    assert matches_warning("this is deprecated", regexes)
    assert not matches_warning("x.c:1: warning: y", regexes)


def test_transcript_lines() -> None:
    assert command_line(["cmake", "-S", "/a b", "-DX=1"]) == "$ cmake -S '/a b' -DX=1\n"
    assert note_line("one\ntwo") == "# one\n# two\n"


def test_log_tail_keeps_everything_under_the_limit() -> None:
    tail = LogTail(1000)
    tail.add("$ make\n")
    tail.add("no newline at the end")
    assert tail.text() == "$ make\nno newline at the end\n"
    assert tail.dropped_bytes == 0
    assert LogTail(10).text() == ""


def test_log_tail_keeps_the_end_and_says_so() -> None:
    tail = LogTail(100)
    for number in range(1000):
        tail.add(f"line {number:04}\n")
    text = tail.text()
    first, *kept = text.splitlines()
    assert first.startswith("# log truncated: the first ")
    assert kept[-1] == "line 0999"
    assert len("".join(f"{line}\n" for line in kept).encode()) <= 100
    assert tail.dropped_bytes + len("".join(f"{k}\n" for k in kept).encode()) == 10 * 1000


def test_log_tail_cuts_a_huge_line_and_multibyte_text() -> None:
    tail = LogTail(50)
    tail.add("é" * 1000 + "\n")
    text = tail.text()
    assert text.startswith("# log truncated")
    body = text.split("\n", 1)[1]
    assert body.endswith("é\n") and len(body.encode()) <= 50


def test_make_test_target() -> None:
    assert make_test_target("all:\n\tcc x.c\ncheck test: all\n\t./t\n") == "check"
    assert make_test_target("test: all\n\t./t\n") == "test"
    assert make_test_target("check-am: all-am\ncheck: check-am\n") == "check"
    assert make_test_target("all:\n\techo test: no\n# check:\n") is None
    assert make_test_target("CHECK := x\ntest ?= y\ncheck::= z\n") is None
    assert make_test_target("test:: a\n") == "test"


def test_has_python_tests() -> None:
    assert has_python_tests(["pkg/__init__.py", "tests/test_pkg.py"])
    assert has_python_tests(["pkg/core_test.py"])
    assert not has_python_tests(["pkg/__init__.py", "pkg/testing.py", "test_data.txt"])


def test_choose_build_system() -> None:
    assert choose_build_system({"CMakeLists.txt", "Makefile"}) == "cmake"
    assert choose_build_system({"Makefile", "pyproject.toml"}) == "make"
    assert choose_build_system({"configure", "README"}) == "make"
    assert choose_build_system({"GNUmakefile"}) == "make"
    assert choose_build_system({"pyproject.toml"}) == "python"
    assert choose_build_system({"CMakeLists.txt", "Makefile"}, "make") == "make"
    with pytest.raises(PlanError, match="no build system found"):
        choose_build_system({"README.md"})
    with pytest.raises(PlanError, match="not a known build system"):
        choose_build_system({"Makefile"}, "ninja")
    with pytest.raises(PlanError, match=r"no CMakeLists\.txt"):
        choose_build_system({"Makefile"}, "cmake")


def test_split_repository_url() -> None:
    assert split_repository_url("https://h/r.git") == ("https://h/r.git", None)
    assert split_repository_url("https://h/r.git#v1.0") == ("https://h/r.git", "v1.0")
    assert split_repository_url("/srv/r#0123abc") == ("/srv/r", "0123abc")
    with pytest.raises(ValueError, match="empty ref"):
        split_repository_url("https://h/r.git#")
    with pytest.raises(ValueError, match="no repository"):
        split_repository_url("#main")


def test_parse_host_port() -> None:
    assert parse_host_port("10.0.2.2:6969") == ("10.0.2.2", 6969)
    assert parse_host_port("[::1]:69") == ("::1", 69)
    for bad, message in [
        ("10.0.2.2", "not HOST:PORT"),
        (":69", "not HOST:PORT"),
        ("h:x", "not a number"),
        ("h:70000", "outside"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_host_port(bad)


def test_unreadable_task_result_keeps_name_and_version() -> None:
    result = unreadable_task_result(b": 1\nname: libfoo\nversion: 1.2.3\nbogus\n", ValueError("x"))
    assert (result.name, result.version, result.status) == ("libfoo", "1.2.3", Status.ABNORMAL)
    assert [r.operation for r in result.results] == ["configure"]
    assert "cannot be read: x" in result.results[0].log
    assert Result.from_text(result.to_text()) == result

    anonymous = unreadable_task_result(b"\xff\xfe garbage", ValueError("bad"))
    assert (anonymous.name, anonymous.version) == ("unknown", "0")
