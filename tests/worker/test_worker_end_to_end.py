"""The worker end to end: a real TftpService, git repositories made here, real builds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bbot.manifest import Result, Task
from bbot.manifest.status import Status
from bbot.tftp import RESULT_MANIFEST, TASK_MANIFEST, TftpService
from bbot.worker import run_worker
from bbot.worker.run import EXIT_NO_TASK, EXIT_OK, build

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parents[2] / "ops" / "sample" / "libhello"
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bbot test",
    "GIT_AUTHOR_EMAIL": "test@example.org",
    "GIT_COMMITTER_NAME": "bbot test",
    "GIT_COMMITTER_EMAIL": "test@example.org",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True, text=True
    )
    return completed.stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_repo(path: Path, files: dict[str, str] | None = None, sample: bool = True) -> Path:
    """A git repository at ``path``: the libhello sample (unless not wanted) plus ``files``."""
    if sample:
        shutil.copytree(SAMPLE, path, ignore=shutil.ignore_patterns("build", "*.o", "*.a"))
    else:
        path.mkdir()
    for name, text in (files or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "init", "-q", "-b", "main")
    commit_all(path, "initial")
    return path


def task_for(url: str, **fields: object) -> Task:
    values: dict[str, object] = {
        "name": "libhello",
        "version": "1.0.0",
        "repository_url": url,
        "machine": "linux_debian_12-gcc_12",
        "target": "x86_64-linux-gnu",
    }
    values.update(fields)
    return Task(**values)  # type: ignore[arg-type]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[TftpService]:
    root = tmp_path / "tftp"
    root.mkdir()
    server = TftpService(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Farm:
    """Puts a task in a boot directory, runs the worker on it, reads the result back."""

    def __init__(self, service: TftpService, tmp_path: Path) -> None:
        self.service = service
        self.tmp_path = tmp_path
        self.boots = 0

    def boot_dir(self, task_text: str) -> str:
        self.boots += 1
        name = f"boot-{self.boots}"
        directory = self.service.root / name
        directory.mkdir()
        (directory / TASK_MANIFEST).write_text(task_text)
        self.service.allow(name)
        return name

    def work_dir(self) -> Path:
        return self.tmp_path / f"work-{self.boots}"

    def result(self, boot: str) -> Result:
        return Result.from_text((self.service.root / boot / RESULT_MANIFEST).read_bytes())

    def run(self, task: Task | str) -> Result:
        boot = self.boot_dir(task if isinstance(task, str) else task.to_text())
        code = run_worker("127.0.0.1", self.service.port, boot, self.work_dir())
        assert code == EXIT_OK
        return self.result(boot)


@pytest.fixture
def farm(service: TftpService, tmp_path: Path) -> Farm:
    return Farm(service, tmp_path)


def statuses(result: Result) -> dict[str, Status]:
    return {r.operation: r.status for r in result.results}


def log_of(result: Result, operation: str) -> str:
    return next(r.log for r in result.results if r.operation == operation)


def test_sample_with_make(farm: Farm, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    result = farm.run(task_for(str(repo), target_config="BBOT_BUILD_SYSTEM=make 'CFLAGS=-O1 -g'"))
    assert result.status is Status.SUCCESS, result.to_text()
    assert list(statuses(result).items()) == [
        ("configure", Status.SUCCESS),
        ("update", Status.SUCCESS),
        ("test", Status.SUCCESS),
        ("install", Status.SUCCESS),
    ]
    assert "no configure script" in log_of(result, "configure")
    assert "build system: make" in log_of(result, "configure")
    update = log_of(result, "update")
    assert update.startswith("$ make -j")
    assert "-O1 -g" in update  # NAME=VALUE target config reached the environment
    assert "$ make check\n" in log_of(result, "test")
    assert "test_hello: ok" in log_of(result, "test")
    assert all(r.log.endswith("\n") for r in result.results)
    staged = farm.work_dir() / "install" / "usr" / "local"
    assert (staged / "lib" / "libhello.a").is_file()
    assert (staged / "include" / "hello.h").is_file()


def test_sample_with_cmake(farm: Farm, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    result = farm.run(task_for(str(repo), target_config="-DCMAKE_BUILD_TYPE=Release"))
    assert result.status is Status.SUCCESS, result.to_text()
    assert list(statuses(result)) == ["configure", "update", "test", "install"]
    configure = log_of(result, "configure")
    assert "build system: cmake" in configure
    assert "-DCMAKE_BUILD_TYPE=Release" in configure
    assert "100% tests passed" in log_of(result, "test")
    assert (farm.work_dir() / "install" / "lib" / "libhello.a").is_file()
    assert (farm.work_dir() / "install" / "include" / "hello.h").is_file()


def test_compile_error_stops_the_build(farm: Farm, tmp_path: Path) -> None:
    broken = (SAMPLE / "hello.c").read_text() + "\nint broken(void) { return }\n"
    repo = make_repo(tmp_path / "repo", {"hello.c": broken})
    result = farm.run(task_for(str(repo), target_config="BBOT_BUILD_SYSTEM=make"))
    assert result.status is Status.ERROR
    assert statuses(result) == {"configure": Status.SUCCESS, "update": Status.ERROR}
    update = log_of(result, "update")
    assert "error:" in update
    assert "# exit code 2" in update


def test_failing_test(farm: Farm, tmp_path: Path) -> None:
    wrong = (SAMPLE / "hello.c").read_text().replace('"Hello, %s!"', '"Goodbye, %s!"')
    repo = make_repo(tmp_path / "repo", {"hello.c": wrong})
    result = farm.run(task_for(str(repo)))  # cmake
    assert result.status is Status.ERROR
    assert statuses(result) == {
        "configure": Status.SUCCESS,
        "update": Status.SUCCESS,
        "test": Status.ERROR,
    }
    assert "Goodbye, World!" in log_of(result, "test")


def test_compiler_warning_gives_warning(farm: Farm, tmp_path: Path) -> None:
    warns = (SAMPLE / "hello.c").read_text() + "\nint unused_variable(void) { int x; return 0; }\n"
    repo = make_repo(tmp_path / "repo", {"hello.c": warns})
    result = farm.run(task_for(str(repo), target_config="BBOT_BUILD_SYSTEM=make"))
    assert result.status is Status.WARNING, result.to_text()
    assert statuses(result) == {
        "configure": Status.SUCCESS,
        "update": Status.WARNING,
        "test": Status.SUCCESS,
        "install": Status.SUCCESS,
    }
    assert "warning: unused variable" in log_of(result, "update")


def test_task_warning_regex_replaces_the_default(farm: Farm, tmp_path: Path) -> None:
    warns = (SAMPLE / "hello.c").read_text() + "\nint unused_variable(void) { int x; return 0; }\n"
    repo = make_repo(tmp_path / "repo", {"hello.c": warns})
    task = task_for(
        str(repo), target_config="BBOT_BUILD_SYSTEM=make", warning_regex=["^test_hello: ok$"]
    )
    result = farm.run(task)
    assert statuses(result) == {
        "configure": Status.SUCCESS,
        "update": Status.SUCCESS,  # the compiler's warning no longer counts
        "test": Status.WARNING,
        "install": Status.SUCCESS,
    }
    assert result.status is Status.WARNING


PYPROJECT = """\
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "pyhello"
version = "0.1.0"

[tool.setuptools]
packages = ["pyhello"]
"""


def test_python_project(farm: Farm, tmp_path: Path) -> None:
    files = {
        "pyproject.toml": PYPROJECT,
        "pyhello/__init__.py": "def hello(name):\n    return f'Hello, {name}!'\n",
        "tests/test_hello.py": (
            "from pyhello import hello\n\n\ndef test_hello():\n"
            "    assert hello('World') == 'Hello, World!'\n"
        ),
    }
    repo = make_repo(tmp_path / "repo", files, sample=False)
    result = farm.run(task_for(str(repo), name="pyhello", version="0.1.0"))
    assert result.status is Status.SUCCESS, result.to_text()
    assert list(statuses(result)) == ["configure", "update", "test", "install"]
    assert "build system: python" in log_of(result, "configure")
    assert "1 passed" in log_of(result, "test")
    installed = list((farm.work_dir() / "install").rglob("pyhello/__init__.py"))
    assert len(installed) == 1
    assert list((farm.work_dir() / "dist").glob("pyhello-0.1.0-*.whl"))


def test_python_project_without_tests(farm: Farm, tmp_path: Path) -> None:
    files = {"pyproject.toml": PYPROJECT, "pyhello/__init__.py": "X = 1\n"}
    repo = make_repo(tmp_path / "repo", files, sample=False)
    result = farm.run(task_for(str(repo), name="pyhello", version="0.1.0"))
    assert result.status is Status.SUCCESS, result.to_text()
    assert "no tests were found" in log_of(result, "test")


def test_refs_branch_tag_and_commit(farm: Farm, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"VERSION": "1\n"})
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "v1")
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "VERSION").write_text("feature\n")
    feature = commit_all(repo, "feature")
    git(repo, "checkout", "-q", "main")
    (repo / "VERSION").write_text("2\n")
    second = commit_all(repo, "second")
    # A commit no branch or tag reaches any more.
    git(repo, "checkout", "-q", "--detach")
    (repo / "VERSION").write_text("dangling\n")
    dangling = commit_all(repo, "dangling")
    git(repo, "checkout", "-q", "main")

    for ref, expected in [
        (None, second),
        ("main", second),
        ("v1", first),
        ("feature", feature),
        (first, first),
        (first[:10], first),
        (dangling, dangling),
    ]:
        url = str(repo) if ref is None else f"{repo}#{ref}"
        result = farm.run(task_for(url, target_config="BBOT_BUILD_SYSTEM=make"))
        assert result.status is Status.SUCCESS, (ref, result.to_text())
        assert f"source at commit {expected}" in log_of(result, "configure"), ref


def test_unknown_ref_and_missing_repository(farm: Farm, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    result = farm.run(task_for(f"{repo}#no-such-ref"))
    assert result.status is Status.ERROR
    assert list(statuses(result)) == ["configure"]
    assert "'no-such-ref' is not a branch, tag or commit" in log_of(result, "configure")

    result = farm.run(task_for(str(tmp_path / "nowhere")))
    assert statuses(result) == {"configure": Status.ERROR}
    configure = log_of(result, "configure")
    assert "$ git -c advice.detachedHead=false clone" in configure
    assert "does not exist" in configure  # git's own words


def test_no_build_system(farm: Farm, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "nothing to build\n"}, sample=False)
    result = farm.run(task_for(str(repo)))
    assert statuses(result) == {"configure": Status.ERROR}
    assert "no build system found" in log_of(result, "configure")


def test_unreadable_task_gives_an_abnormal_result(farm: Farm) -> None:
    result = farm.run(": 1\nname: libhello\nversion: 1.0.0\nthis is not a manifest\n")
    assert (result.name, result.version, result.status) == ("libhello", "1.0.0", Status.ABNORMAL)
    assert "cannot be read" in log_of(result, "configure")


def test_work_dir_must_be_empty(farm: Farm, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    boot = farm.boot_dir(task_for(str(repo)).to_text())
    (farm.work_dir() / "src").mkdir(parents=True)
    (farm.work_dir() / "src" / "mine").write_text("keep me")
    assert run_worker("127.0.0.1", farm.service.port, boot, farm.work_dir()) == EXIT_OK
    result = farm.result(boot)
    assert result.status is Status.ABNORMAL
    assert "needs an empty work directory" in log_of(result, "configure")
    assert (farm.work_dir() / "src" / "mine").read_text() == "keep me"


def test_missing_task_exits_non_zero(farm: Farm, tmp_path: Path) -> None:
    assert run_worker("127.0.0.1", farm.service.port, "not-registered", tmp_path / "w") == EXIT_NO_TASK


def test_logs_are_bounded(tmp_path: Path) -> None:
    chatty = (
        "all:\n\t@i=0; while [ $$i -lt 20000 ]; do echo \"line $$i of noise\"; i=$$((i+1)); done\n"
        "install:\n\t@true\n"
    )
    repo = make_repo(tmp_path / "repo", {"Makefile": chatty}, sample=False)
    result = build(task_for(str(repo)), tmp_path / "work", max_log_bytes=20_000)
    assert result.status is Status.SUCCESS, result.to_text()
    update = log_of(result, "update")
    assert update.startswith("# log truncated: the first ")
    assert update.endswith("line 19999 of noise\n")
    assert len(update.encode()) < 20_200
    # The whole log stays on disk.
    assert "line 0 of noise" in (tmp_path / "work" / "logs" / "update.log").read_text()


def test_worker_as_a_child_process_from_the_environment(farm: Farm, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    boot = farm.boot_dir(task_for(str(repo), target_config="BBOT_BUILD_SYSTEM=make").to_text())
    work = farm.work_dir()
    work.mkdir()
    env = {
        **os.environ,
        "BBOT_TFTP": f"127.0.0.1:{farm.service.port}",
        "BBOT_DIR": boot,
        "BBOT_WORK": str(work),
    }
    worker = subprocess.run(
        [sys.executable, "-m", "bbot", "worker"], env=env, capture_output=True, text=True, timeout=300
    )
    assert worker.returncode == 0, worker.stderr
    assert farm.result(boot).status is Status.SUCCESS

    usage = subprocess.run(
        [sys.executable, "-m", "bbot", "worker", "--dir", boot],
        env={k: v for k, v in os.environ.items() if k != "BBOT_TFTP"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert usage.returncode == 2
    assert "pass --tftp HOST:PORT or set BBOT_TFTP" in usage.stderr


def test_terminal_escapes_and_binary_output_make_a_valid_result(tmp_path: Path) -> None:
    noisy = (
        "all:\n\t@printf '\\033[31mred\\033[0m\\r\\nnul:\\000: bell:\\007 \\377\\376 done\\n'\n"
        "install:\n\t@true\n"
    )
    repo = make_repo(tmp_path / "repo", {"Makefile": noisy}, sample=False)
    result = build(task_for(str(repo)), tmp_path / "work")
    assert result.status is Status.SUCCESS, result.to_text()
    update = log_of(Result.from_text(result.to_text()), "update")
    assert "\N{REPLACEMENT CHARACTER}[31mred\N{REPLACEMENT CHARACTER}[0m\nnul:" in update
    assert "done\n" in update
    assert "\x1b" not in update and "\x00" not in update and "\r" not in update
