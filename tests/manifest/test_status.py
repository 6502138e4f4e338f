"""Status order, parsing and merging (bbot-protocol.md §2.6)."""

from __future__ import annotations

import itertools
import operator

import pytest

from bbot.manifest import Status, worst

ORDER = ["skip", "success", "warning", "error", "abort", "abnormal", "interrupt"]


def test_order_lowest_to_highest() -> None:
    assert [status.value for status in sorted(Status, reverse=True)] == ORDER[::-1]
    assert [status.rank for status in Status] == list(range(len(ORDER)))
    for lower, higher in itertools.pairwise(ORDER):
        assert Status(lower) < Status(higher)
        assert Status(lower) <= Status(higher)
        assert Status(higher) > Status(lower)
        assert Status(higher) >= Status(lower)
        assert not Status(higher) < Status(lower)
    # Not the alphabetical order str would give.
    assert Status.ABORT > Status.ERROR
    assert Status.SUCCESS < Status.ABNORMAL


def test_is_a_string() -> None:
    text: str = "error"
    assert text == Status.ERROR
    assert str(Status.ERROR) == "error"
    assert f"{Status.WARNING}" == "warning"
    assert {"error": 1}[Status.ERROR] == 1


def test_comparison_with_plain_str_is_refused() -> None:
    with pytest.raises(TypeError):
        _ = Status.ERROR < "warning"
    with pytest.raises(TypeError, match=r"Status\.parse"):
        operator.gt("abort", Status.ERROR)  # the plain str on the left


def test_worst() -> None:
    assert worst([]) is Status.SUCCESS
    assert Status.worst([]) is Status.SUCCESS
    assert worst([Status.SKIP]) is Status.SKIP
    assert worst([Status.SUCCESS, Status.ERROR, Status.WARNING]) is Status.ERROR
    assert Status.worst(iter([Status.ABNORMAL, Status.INTERRUPT])) is Status.INTERRUPT


def test_parse() -> None:
    assert Status.parse("abnormal") is Status.ABNORMAL
    with pytest.raises(ValueError) as caught:
        Status.parse("Error")
    assert str(caught.value) == (
        "invalid status 'Error': expected one of skip, success, warning, error, abort, abnormal, interrupt"
    )
