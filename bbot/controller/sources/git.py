"""Git repositories as build sources: a local bare mirror per repository, polled for new commits."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GIT_TIMEOUT = 300.0
# On a branch's first sight only its head is built, not its whole history; later at most
# this many new commits per poll (the newest ones).
MAX_NEW_COMMITS = 20
# Transports git may use for any URL we are given: never ext:: or fd:: (they run commands).
ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


class GitError(RuntimeError):
    pass


@dataclass(frozen=True)
class Commit:
    sha: str
    author_name: str
    author_email: str
    subject: str


def split_url(url: str) -> tuple[str, str | None]:
    """``https://host/repo.git#ref`` -> (``https://host/repo.git``, ``ref``)."""
    base, _, ref = url.partition("#")
    return base, (ref or None)


def package_name(url: str) -> str:
    """The package a repository holds, by brep's convention: its last path component."""
    name = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    name = re.sub(r"[^A-Za-z0-9_.+-]", "-", name).strip("-.")
    return name or "package"


def package_version(sha: str) -> str:
    return sha[:12]


class GitMirror:
    """A bare mirror of one repository under the controller's data directory."""

    def __init__(self, cache_dir: Path, url: str) -> None:
        self.url = url
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.path = cache_dir / f"{package_name(url)}-{digest}.git"
        self._lock = threading.Lock()

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=cwd or self.path, capture_output=True, text=True,
                timeout=GIT_TIMEOUT, check=False,
                env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": ALLOWED_PROTOCOLS},
            )
        except subprocess.TimeoutExpired as e:
            raise GitError(f"git {' '.join(args)}: timed out after {GIT_TIMEOUT:g} s") from e
        if done.returncode != 0:
            raise GitError(f"git {args[0]} {self.url}: {done.stderr.strip() or 'failed'}")
        return done.stdout

    def fetch(self) -> None:
        with self._lock:
            if not (self.path / "HEAD").exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._git("init", "--bare", "--quiet", str(self.path), cwd=self.path.parent)
            self._git("fetch", "--quiet", "--prune", "--tags", self.url,
                      "+refs/heads/*:refs/heads/*")

    def resolve(self, ref: str | None) -> str:
        """The commit a branch, tag or (abbreviated) sha names; None: the remote's default branch."""
        if ref is None:
            out = self._git("ls-remote", "--symref", self.url, "HEAD")
            m = re.search(r"^ref: refs/heads/(\S+)\s+HEAD", out, re.M)
            ref = m.group(1) if m else "HEAD"
        for candidate in (f"refs/heads/{ref}", f"refs/tags/{ref}^{{commit}}", f"{ref}^{{commit}}"):
            try:
                return self._git("rev-parse", "--verify", "--quiet", candidate).strip()
            except GitError:
                continue
        raise GitError(f"'{ref}' names no branch, tag or commit in {self.url}; check the #ref part")

    def commit(self, sha: str) -> Commit:
        out = self._git("log", "-1", "--format=%H%x00%an%x00%ae%x00%s", sha)
        full, name, email, subject = out.rstrip("\n").split("\x00", 3)
        return Commit(full, name, email, subject)

    def new_commits(self, old: str, new: str) -> list[str]:
        """Commits reachable from ``new`` but not from ``old``, oldest first, the newest few only."""
        out = self._git("rev-list", f"--max-count={MAX_NEW_COMMITS}", "--first-parent", new, f"^{old}")
        return list(reversed(out.split()))


class GitPoller:
    """Polls one repository's branches; each new commit becomes a build set through ``on_commit``."""

    def __init__(self, name: str, mirror: GitMirror, branches: tuple[str, ...], interval: float,
                 on_commit: Callable[[str, str, Commit], None], state_file: Path) -> None:
        self.name = name
        self.mirror = mirror
        self.branches = branches
        self.interval = interval
        self.on_commit = on_commit  # (source name, branch, commit)
        self.state_file = state_file
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _load(self) -> dict[str, str]:
        heads: dict[str, str] = {}
        if self.state_file.exists():
            for line in self.state_file.read_text().splitlines():
                branch, _, sha = line.partition(" ")
                if _SHA_RE.match(sha):
                    heads[branch] = sha
        return heads

    def _save(self, heads: dict[str, str]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text("".join(f"{b} {s}\n" for b, s in sorted(heads.items())))
        tmp.replace(self.state_file)

    def poll_once(self) -> int:
        """Fetch and hand on new commits; returns how many. Errors are logged, not raised."""
        heads = self._load()
        count = 0
        try:
            self.mirror.fetch()
        except GitError as e:
            log.warning("source %s: %s", self.name, e)
            return 0
        for branch in self.branches:
            try:
                head = self.mirror.resolve(branch)
                old = heads.get(branch)
                shas = [head] if old is None else ([] if old == head else self.mirror.new_commits(old, head))
                for sha in shas:
                    self.on_commit(self.name, branch, self.mirror.commit(sha))
                    count += 1
                heads[branch] = head
                self._save(heads)  # after hand-on: a crash in between builds a commit twice, never zero times
            except GitError as e:
                log.warning("source %s, branch %s: %s", self.name, branch, e)
        return count

    def start(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name=f"git-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("source %s: poll failed", self.name)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=GIT_TIMEOUT)
