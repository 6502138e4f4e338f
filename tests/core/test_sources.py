"""Git sources against real repositories made by the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from bbot.controller.sources.git import Commit, GitError, GitMirror, GitPoller, package_name, split_url
from tests.conftest import git_repo


def test_url_helpers() -> None:
    assert split_url("https://h/x/libfoo.git#v1.2") == ("https://h/x/libfoo.git", "v1.2")
    assert split_url("/srv/libfoo") == ("/srv/libfoo", None)
    assert package_name("https://h/x/libfoo.git") == "libfoo"
    assert package_name("file:///tmp/a b/") == "a-b"


def test_mirror_resolves_branches_tags_and_shas(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    sha = git_repo(repo, {"a": "1"}, author="Ann <ann@example.org>")
    mirror = GitMirror(tmp_path / "cache", str(repo))
    mirror.fetch()
    assert mirror.resolve("main") == sha
    assert mirror.resolve(None) == sha
    assert mirror.resolve(sha[:10]) == sha
    commit = mirror.commit(sha)
    assert (commit.author_name, commit.author_email, commit.subject) == ("Ann", "ann@example.org", "initial")
    with pytest.raises(GitError, match="'nope' names no branch, tag or commit"):
        mirror.resolve("nope")


def test_mirror_refuses_command_transports(tmp_path: Path) -> None:
    mirror = GitMirror(tmp_path / "cache", "ext::sh -c touch% " + str(tmp_path / "pwned"))
    with pytest.raises(GitError):
        mirror.fetch()
    assert not (tmp_path / "pwned").exists()


def test_poller_builds_head_first_then_each_new_commit(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    first = git_repo(repo, {"a": "1"})
    seen: list[tuple[str, str, Commit]] = []
    poller = GitPoller("src", GitMirror(tmp_path / "cache", str(repo)), ("main",), 60,
                       lambda s, b, c: seen.append((s, b, c)), tmp_path / "state" / "src.heads")
    (tmp_path / "state").mkdir()
    assert poller.poll_once() == 1
    assert seen[0][2].sha == first
    assert poller.poll_once() == 0  # nothing new
    second = git_repo(repo, {"a": "2"}, message="second", author="Bob <bob@example.org>")
    third = git_repo(repo, {"a": "3"}, message="third")
    assert poller.poll_once() == 2
    assert [c.sha for _, _, c in seen[1:]] == [second, third]
    assert seen[1][2].author_email == "bob@example.org"
    # A new poller with the same state file starts where the last one stopped.
    again = GitPoller("src", GitMirror(tmp_path / "cache", str(repo)), ("main",), 60,
                      lambda s, b, c: seen.append((s, b, c)), tmp_path / "state" / "src.heads")
    assert again.poll_once() == 0
