import pytest
from hypothesis import given
from hypothesis import strategies as st

from bbot.wire import (
    BuildKey,
    LogPathError,
    SessionError,
    log_path,
    log_url,
    new_session,
    parse_log_path,
    parse_session,
)

KEY = BuildKey("libhello", "1.2.3+1", "x86_64-linux-gnu", "gcc-release", "default", "public", "0.17.0")


def test_log_url_has_brep_shape() -> None:
    assert log_url("https://ci.example.org/", KEY, "update") == (
        "https://ci.example.org/libhello/1.2.3+1/log/x86_64-linux-gnu/gcc-release/default/public/0.17.0/update"
    )


def test_sessions_round_trip_and_grow() -> None:
    first = new_session(KEY)
    second = new_session(KEY, first.timestamp_ns)
    assert second.timestamp_ns > first.timestamp_ns
    assert parse_session(str(first)) == first
    assert str(first).startswith("/libhello/1.2.3+1/")  # empty tenant: starts with '/'


@pytest.mark.parametrize(
    "text,error",
    [("a/b", "expected 9"), ("/p/v/t/c/d/n/1.0/12x", "trailing junk"), ("/p//t/c/d/n/1.0/12", "empty")],
)
def test_bad_sessions(text: str, error: str) -> None:
    with pytest.raises(SessionError, match=error):
        parse_session(text)


@pytest.mark.parametrize(
    "path,error",
    [
        ("libhello/1.0/log", "no target"),
        ("libhello/1.0/log/t/c/p/n", "no toolchain version"),
        ("libhello/1.0/log/t/c/p/n/1/op/extra", "unexpected path component"),
        ("libhello/1.0/blog/t", "expected <package>"),
        ("libhello/1.0/log/t//p/n/1", "empty target configuration"),
    ],
)
def test_bad_log_paths(path: str, error: str) -> None:
    with pytest.raises(LogPathError, match=error):
        parse_log_path(path)


names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)


@given(st.builds(BuildKey, names, names, names, names, names, names, names, st.just("")),
       st.none() | names)
def test_log_path_round_trips(key: BuildKey, op: str | None) -> None:
    assert parse_log_path(log_path(key, op)) == (key, op)
