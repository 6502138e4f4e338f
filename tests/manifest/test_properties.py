"""Property tests: for any names and values the writer accepts, parsing what it wrote
gives them back exactly (with and without wrapping), and the parser never fails
with anything but ManifestError."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from bbot.manifest import (
    ManifestError,
    OperationResult,
    Result,
    Status,
    Task,
    merge_comment,
    parse_stream,
    sanitize_value,
    serialize_stream,
    split_comment,
)
from bbot.manifest.text import codepoint_type

EXAMPLES = settings(max_examples=100, deadline=None)
TYPED_EXAMPLES = settings(max_examples=40, deadline=None)


def writable(char: str) -> bool:
    return char in "\t\n" or codepoint_type(ord(char)) == "graphic"


# Characters that matter to the format, plus ordinary and non-ASCII ones.
SPECIAL = [*" \t\n\\:#;", "\\\\", "\\\n", "\n\\\n", "\n\\", ": 1", "\u00e9", "\u4e2d"]
value_chars = st.one_of(
    st.sampled_from(SPECIAL),
    st.sampled_from(string.ascii_letters + string.digits),
    st.characters(min_codepoint=0x20, max_codepoint=0x2FFFF).filter(writable),
)
values = st.lists(value_chars, max_size=120).map("".join)
long_values = st.lists(
    st.one_of(st.sampled_from([" ", "\\", "\t", "x" * 30, "\n"]), value_chars),
    min_size=20,
    max_size=80,
).map("".join)

name_chars = st.characters(min_codepoint=0x21, max_codepoint=0x2FFFF).filter(
    lambda char: char != ":" and writable(char)
)
names = st.text(name_chars, min_size=1, max_size=45).filter(lambda name: name[0] != "#")
pairs = st.lists(st.tuples(names, st.one_of(values, long_values)), max_size=6)
# An empty manifest may not end a stream of several (it would need a trailing `:`).
streams = st.lists(pairs, max_size=4).filter(lambda manifests: len(manifests) < 2 or bool(manifests[-1]))


@EXAMPLES
@given(streams, st.booleans())
def test_round_trip(manifests: list[list[tuple[str, str]]], long_lines: bool) -> None:
    text = serialize_stream(manifests, long_lines=long_lines)
    assert [manifest.items() for manifest in parse_stream(text)] == manifests
    assert [manifest.items() for manifest in parse_stream(text.encode())] == manifests
    if not long_lines and not any("\\" in value for pairs in manifests for _, value in pairs):
        # Wrapped lines stay within 78 code points (longer only for a long name).
        # A break never falls right after a backslash, so backslashes can delay it.
        for line in text.split("\n"):
            assert len(line) <= 78 or ":" in line


@EXAMPLES
@given(st.text(max_size=200))
def test_sanitized_text_round_trips(text: str) -> None:
    value = sanitize_value(text)
    written = serialize_stream([[("log", value)]])
    assert parse_stream(written)[0].items() == [("log", value)]


@EXAMPLES
@given(st.binary(max_size=200))
def test_parser_fails_only_with_manifest_error(data: bytes) -> None:
    try:
        parse_stream(b": 1\n" + data, "fuzz")
    except ManifestError as error:
        assert error.line >= 1 and error.column >= 1
        assert str(error).startswith(f"fuzz:{error.line}:{error.column}: error: ")


@EXAMPLES
@given(st.lists(st.sampled_from(list(": \t\n\\#ab\r")), max_size=60).map("".join))
def test_parser_on_format_characters(text: str) -> None:
    try:
        manifests = parse_stream(text)
    except ManifestError:
        return
    # Whatever parsed can be written and read back to the same pairs.
    items = [manifest.items() for manifest in manifests]
    if len(items) > 1 and not items[-1]:
        return  # a trailing empty manifest is not writable on purpose
    assert [manifest.items() for manifest in parse_stream(serialize_stream(items))] == items


single_line = st.text(st.sampled_from(list("ab ;\\\t")), max_size=30).filter(
    lambda value: value == value.rstrip(" \t")
)


@EXAMPLES
@given(single_line, st.text(st.sampled_from(list("cd ;\\")), max_size=20))
def test_merge_then_split_comment(value: str, comment: str) -> None:
    comment = comment.strip(" \t")
    assert split_comment(merge_comment(value, comment)) == (value, comment)


texts = st.one_of(values, long_values)
nonempty_texts = texts.filter(bool)
operations = st.text(st.sampled_from(list(string.ascii_lowercase + "-_")), min_size=1, max_size=12).filter(
    lambda name: not name.startswith("#")
)
statuses = st.sampled_from(list(Status))


@TYPED_EXAMPLES
@given(
    nonempty_texts,
    nonempty_texts,
    statuses,
    st.dictionaries(operations, st.tuples(statuses, texts), max_size=4),
    st.one_of(st.none(), texts),
)
def test_result_round_trip(
    name: str,
    version: str,
    status: Status,
    operation_results: dict[str, tuple[Status, str]],
    worker_checksum: str | None,
) -> None:
    result = Result(
        name,
        version,
        status,
        [OperationResult(op, op_status, log) for op, (op_status, log) in operation_results.items()],
        worker_checksum=worker_checksum,
    )
    assert Result.from_text(result.to_text()) == result


@TYPED_EXAMPLES
@given(
    st.lists(nonempty_texts, min_size=5, max_size=5),
    st.lists(texts, max_size=3),
    st.lists(st.tuples(nonempty_texts, st.sampled_from(["", "pgsql", "redis-6"])), max_size=3),
    st.one_of(st.none(), st.booleans()),
    st.one_of(st.none(), texts),
)
def test_task_round_trip(
    required: list[str],
    requires: list[str],
    auxiliary: list[tuple[str, str]],
    host: bool | None,
    environment: str | None,
) -> None:
    name, version, repository_url, machine, target = required
    task = Task(
        name,
        version,
        repository_url,
        machine,
        target,
        requires=requires,
        auxiliary_machines=[machine for machine, _ in auxiliary],
        auxiliary_machine_environments=[environment for _, environment in auxiliary],
        host=host,
        auxiliary_environment=environment,
    )
    assert Task.from_text(task.to_text()) == task
