"""Fetching the source: a git URL with an optional ``#ref`` (branch, tag or commit)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from bbot.worker.operations import Command
from bbot.worker.runner import OperationRunner

_HEX_SHA = re.compile(r"[0-9a-fA-F]{7,64}")


def split_repository_url(url: str) -> tuple[str, str | None]:
    """``https://host/repo.git#v1.0`` → (``https://host/repo.git``, ``v1.0``)."""
    base, sep, ref = url.partition("#")
    if not base:
        raise ValueError(f"repository-url {url!r} has no repository before '#'")
    if sep and not ref:
        raise ValueError(f"repository-url {url!r} has an empty ref after '#'")
    return base, (ref if sep else None)


# A git asking for a password would wait for ever.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}


def _git(*args: str, cwd: Path) -> Command:
    argv = ("git", "-c", "advice.detachedHead=false", *args)
    return Command(argv, cwd=cwd, env=_GIT_ENV, scan_warnings=False)


def _resolves(src: Path, revision: str, env: dict[str, str]) -> bool:
    completed = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
        cwd=src,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    return completed.returncode == 0


def fetch_source(url: str, src: Path, runner: OperationRunner, env: dict[str, str]) -> bool:
    """Clone ``url`` into ``src`` and check out its ref; False (logged) when it fails."""
    try:
        repository, ref = split_repository_url(url)
    except ValueError as error:
        runner.fail(str(error))
        return False
    env = {**env, **_GIT_ENV}
    runner.note(f"fetching {repository}" + (f" at {ref}" if ref else ""))
    clone = ["clone", "--no-checkout", repository, str(src)] if ref else ["clone", repository, str(src)]
    if runner.run(_git(*clone, cwd=src.parent)).exit_code != 0:
        return False
    if ref is not None:
        # A branch is known as origin/<ref> after a clone; a tag or a commit as itself.
        target = next(
            (candidate for candidate in (f"origin/{ref}", ref) if _resolves(src, candidate, env)),
            None,
        )
        if target is None:
            # A commit no branch or tag reaches: servers speaking protocol v2 hand it out.
            if runner.run(_git("fetch", "origin", ref, cwd=src)).exit_code != 0:
                runner.fail(f"ref {ref!r} is not a branch, tag or commit of {repository}")
                return False
            target = "FETCH_HEAD"
        if runner.run(_git("checkout", "--detach", target, cwd=src)).exit_code != 0:
            return False
    if (src / ".gitmodules").is_file():
        submodules = _git("submodule", "update", "--init", "--recursive", cwd=src)
        if runner.run(submodules).exit_code != 0:
            return False
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=src, env=env, capture_output=True, text=True, check=False
    )
    if head.returncode == 0:
        runner.note(f"source at commit {head.stdout.strip()}")
    return True
