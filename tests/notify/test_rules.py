from __future__ import annotations

import pytest

from bbot.controller.notify.rules import counts_as_previous, recipients
from bbot.manifest.status import Status

TEAM = ["ci@example.org", "dev@example.org"]
S = Status


@pytest.mark.parametrize(
    ("status", "previous", "expected"),
    [
        (S.SUCCESS, None, TEAM),  # a first build always tells
        (S.ERROR, None, TEAM),
        (S.SUCCESS, S.SUCCESS, []),  # no change, no mail
        (S.ERROR, S.ERROR, []),
        (S.ERROR, S.SUCCESS, [*TEAM, "author@example.org"]),  # broken: the author too
        (S.WARNING, S.SUCCESS, [*TEAM, "author@example.org"]),
        (S.ABORT, S.SUCCESS, [*TEAM, "author@example.org"]),
        (S.ABNORMAL, S.SUCCESS, [*TEAM, "author@example.org"]),
        (S.ERROR, S.WARNING, TEAM),  # already broken before: not this author's doing
        (S.SUCCESS, S.ERROR, TEAM),  # fixed
        (S.SKIP, None, []),
        (S.INTERRUPT, S.SUCCESS, []),
        (None, None, []),
    ],
)
def test_git_rules(status: Status | None, previous: Status | None, expected: list[str]) -> None:
    assert recipients(kind="git", status=status, previous_status=previous, build_email=TEAM,
                      author_email="author@example.org",
                      submitter_email="ignored@example.org") == expected


@pytest.mark.parametrize(
    ("status", "previous", "expected"),
    [
        (S.SUCCESS, None, [*TEAM, "sub@example.org"]),
        (S.SUCCESS, S.SUCCESS, ["sub@example.org"]),  # the submitter always hears back
        (S.ERROR, S.SUCCESS, [*TEAM, "sub@example.org"]),  # no author for submissions
        (S.SKIP, None, []),
        (S.INTERRUPT, None, []),
    ],
)
def test_submission_rules(status: Status, previous: Status | None, expected: list[str]) -> None:
    assert recipients(kind="submit", status=status, previous_status=previous,
                      build_email=TEAM, author_email="author@example.org",
                      submitter_email="sub@example.org") == expected


def test_addresses_appear_once_and_blanks_are_dropped() -> None:
    assert recipients(kind="git", status=S.ERROR, previous_status=S.SUCCESS,
                      build_email=["CI@example.org", " ", "ci@example.org"],
                      author_email="ci@EXAMPLE.org") == ["CI@example.org"]
    assert recipients(kind="submit", status=S.ERROR, previous_status=S.ERROR,
                      build_email=TEAM, submitter_email=None) == []


def test_what_counts_as_a_previous_status() -> None:
    assert counts_as_previous(S.SUCCESS) and counts_as_previous(S.ABNORMAL)
    assert not counts_as_previous(S.SKIP)
    assert not counts_as_previous(S.INTERRUPT)
    assert not counts_as_previous(None)
