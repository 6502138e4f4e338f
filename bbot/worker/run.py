"""The worker: task manifest in over TFTP, build, result manifest out over TFTP."""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from bbot.manifest import ManifestError, OperationResult, Result, Task, sanitize_value
from bbot.manifest.status import Status, worst
from bbot.tftp import RESULT_MANIFEST, TASK_MANIFEST, TftpError, download, upload
from bbot.worker.buildsystems import BuildContext, detect
from bbot.worker.logs import MAX_LOG_BYTES, compile_warning_regexes
from bbot.worker.operations import (
    BUILD_SYSTEM_VARIABLE,
    CONFIGURE,
    OPERATIONS,
    PlanError,
    command_succeeded,
    split_config_args,
)
from bbot.worker.runner import OperationRunner, base_environment
from bbot.worker.source import fetch_source

log = logging.getLogger(__name__)

#: Exit codes of the worker process.
EXIT_OK = 0  # the result was uploaded, whatever the build's status
EXIT_NO_TASK = 2  # the task manifest could not be downloaded
EXIT_NO_UPLOAD = 3  # the result could not be uploaded


@dataclass(frozen=True)
class WorkLayout:
    """The worker's directories inside its work directory."""

    root: Path

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def build(self) -> Path:
        return self.root / "build"

    @property
    def dist(self) -> Path:
        return self.root / "dist"

    @property
    def install(self) -> Path:
        return self.root / "install"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def existing(self) -> list[Path]:
        return [p for p in (self.src, self.build, self.dist, self.install, self.logs) if p.exists()]


def build(task: Task, work_dir: Path, *, max_log_bytes: int = MAX_LOG_BYTES) -> Result:
    """Fetch, configure, update, test and install ``task``'s package under ``work_dir``."""
    layout = WorkLayout(work_dir.resolve())
    regexes, regex_problems = compile_warning_regexes(task.warning_regex)
    # Target config first, then the package's own configuration, which may refine it.
    assignments, configure_args = split_config_args(
        [*task.target_config_args(), *task.package_config_args()]
    )
    env = base_environment(assignments)

    def runner(operation: str) -> OperationRunner:
        return OperationRunner(
            operation, layout.logs / f"{operation}.log", env, regexes, max_log_bytes
        )

    leftovers = layout.existing()
    layout.root.mkdir(parents=True, exist_ok=True)
    configure = runner(CONFIGURE)
    runners = [configure]
    if leftovers:
        # Never delete what is there: the work directory may be someone's own (the default
        # is the current directory).
        names = ", ".join(p.name for p in leftovers)
        configure.fail(
            f"the work directory {layout.root} already holds {names}: "
            "the worker needs an empty work directory (--work)",
            Status.ABNORMAL,
        )
        return _result(task, runners)
    for problem in regex_problems:
        configure.note(problem)
    if assignments:
        # Say which configuration this is: package authors read these logs.
        configure.note("environment from the build configuration: "
                       + " ".join(f"{k}={shlex.quote(v)}" for k, v in assignments.items()))
    try:
        if not fetch_source(task.repository_url, layout.src, configure, env):
            return _result(task, runners)
        system = detect(layout.src, assignments.get(BUILD_SYSTEM_VARIABLE))
    except PlanError as error:
        configure.fail(str(error))
        return _result(task, runners)
    except Exception:
        configure.fail("the worker failed:\n" + traceback.format_exc(), Status.ABNORMAL)
        return _result(task, runners)
    configure.note(f"build system: {system.name}")
    context = BuildContext(
        src=layout.src,
        build=layout.build,
        dist=layout.dist,
        install=layout.install,
        configure_args=tuple(configure_args),
        jobs=os.cpu_count() or 1,
        python=sys.executable,
    )
    for operation in OPERATIONS:
        current = configure if operation == CONFIGURE else runner(operation)
        if current is not configure:
            runners.append(current)
        log.info("%s %s: %s", task.name, task.version, operation)
        try:
            plan = system.plan(operation, context)
            if plan.note:
                current.note(plan.note)
            for command in plan.commands:
                if not command_succeeded(command, current.run(command)):
                    break
        except PlanError as error:
            current.fail(str(error))
        except Exception:
            current.fail("the worker failed:\n" + traceback.format_exc(), Status.ABNORMAL)
        log.info("%s %s: %s %s", task.name, task.version, operation, current.status())
        if current.failed:
            break
    return _result(task, runners)


def _result(task: Task, runners: list[OperationRunner]) -> Result:
    results = [
        OperationResult(
            operation=runner.name, status=runner.status(), log=sanitize_value(runner.log())
        )
        for runner in runners
    ]
    return Result(
        name=task.name,
        version=task.version,
        status=worst(result.status for result in results),
        results=results,
    )


def _guess(text: str, name: str) -> str | None:
    match = re.search(rf"^[ \t]*{name}[ \t]*:[ \t]*(\S[^\n]*?)[ \t]*$", text, re.MULTILINE)
    return match.group(1) if match else None


def unreadable_task_result(data: bytes, error: Exception) -> Result:
    """An abnormal result for a task manifest the worker cannot read.

    Name and version are taken from the text where they can be found, so the agent can
    still match the result to its task.
    """
    text = data.decode("utf-8", "replace")
    message = f"the task manifest {TASK_MANIFEST} cannot be read: {error}\n"
    return Result(
        name=_guess(text, "name") or "unknown",
        version=_guess(text, "version") or "0",
        status=Status.ABNORMAL,
        results=[
            OperationResult(
                operation=CONFIGURE, status=Status.ABNORMAL, log=sanitize_value(message)
            )
        ],
    )


def run_worker(tftp_host: str, tftp_port: int, boot_dir: str, work_dir: Path) -> int:
    """Do the task waiting in ``boot_dir`` on the agent's TFTP server; an EXIT_* code."""
    where = f"{tftp_host}:{tftp_port}"
    try:
        data = download(tftp_host, tftp_port, f"{boot_dir}/{TASK_MANIFEST}")
    except TftpError as error:
        log.error("cannot get the task: %s", error)
        return EXIT_NO_TASK
    try:
        # Fields a newer agent may add are no reason to fail a build.
        task = Task.from_text(data, ignore_unknown=True)
    except (ManifestError, ValueError) as error:
        log.error("the task manifest from %s is invalid: %s", where, error)
        result = unreadable_task_result(data, error)
    else:
        log.info("building %s %s for %s", task.name, task.version, task.machine)
        result = build(task, work_dir)
    log.info("%s %s: %s", result.name, result.version, result.status)
    try:
        upload(tftp_host, tftp_port, f"{boot_dir}/{RESULT_MANIFEST}", result.to_text().encode())
    except TftpError as error:
        log.error("cannot upload the result: %s", error)
        return EXIT_NO_UPLOAD
    return EXIT_OK
