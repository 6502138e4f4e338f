"""The manifest writer against the rules of bbot-protocol.md §1.8 and libbutl's
serializer vectors (wrapping at 78 code points, multi-line form, escaping)."""

from __future__ import annotations

import pytest

from bbot.manifest import (
    merge_comment,
    parse_manifest,
    parse_stream,
    sanitize_value,
    serialize_manifest,
    serialize_stream,
    split_comment,
)

# Long values and how libbutl wraps them after `a: ` (3 columns).
SOLID = "x" * 74 + "Y" + "y" * 76 + "Z" + "z" * 77
SOLID_WRAPPED = "x" * 74 + "\\\n" + "Y" + "y" * 76 + "\\\n" + "Z" + "z" * 77

EARLY_SPACE = "x " + "x" * 72 + "Y" + "y" * 16 + " " + "y" * 59 + "Z" + "z" * 34 + " z" + "z" * 40
EARLY_SPACE_WRAPPED = (
    "x " + "x" * 72 + "\\\n" + "Y" + "y" * 16 + " " + "y" * 59 + "\\\n" + "Z" + "z" * 34 + " z" + "z" * 40
)

SOFT = "x" * 57 + " Y" + "y" * 65 + " Z" + "z" * 75
SOFT_WRAPPED = "x" * 57 + "\\\n Y" + "y" * 65 + "\\\n Z" + "z" * 75

BETTER_SPACE = "x" * 47 + " " + "x" * 9 + " Y" + "y" * 54 + " " + "y" * 10 + " Z" + "z" * 75
BETTER_SPACE_WRAPPED = "x" * 47 + " " + "x" * 9 + "\\\n Y" + "y" * 54 + " " + "y" * 10 + "\\\n Z" + "z" * 75

# No break right after a backslash: the break is delayed by one character.
AFTER_BACKSLASH = "x" * 73 + "\\" + "Y" + "y" * 36
AFTER_BACKSLASH_WRAPPED = "x" * 73 + "\\Y\\\n" + "y" * 36


@pytest.mark.parametrize(
    ("value", "wrapped"),
    [
        (SOLID, SOLID_WRAPPED),
        (EARLY_SPACE, EARLY_SPACE_WRAPPED),
        (SOFT, SOFT_WRAPPED),
        (BETTER_SPACE, BETTER_SPACE_WRAPPED),
        (AFTER_BACKSLASH, AFTER_BACKSLASH_WRAPPED),
    ],
)
def test_wrapping_at_78(value: str, wrapped: str) -> None:
    text = serialize_manifest([("a", value)])
    assert text == f": 1\na: {wrapped}\n"
    # A break due right after a backslash waits one character (79 columns).
    limit = 79 if "\\" in value else 78
    assert all(len(line) <= limit for line in text.splitlines())
    assert parse_manifest(text).items() == [("a", value)]
    # The same in a multi-line value; "xxx" stands for the missing `a: `.
    text = serialize_manifest([("a", "\nxxx" + value)])
    assert text == f": 1\na:\n\\\n\nxxx{wrapped}\n\\\n"
    assert parse_manifest(text).items() == [("a", "\nxxx" + value)]


def test_long_lines_mode_does_not_wrap() -> None:
    assert serialize_manifest([("a", SOLID)], long_lines=True) == f": 1\na: {SOLID}\n"
    value = " abc\n" + SOLID + "\ndef"
    text = serialize_manifest([("a", value)], long_lines=True)
    assert text == f": 1\na:\n\\\n abc\n{SOLID}\ndef\n\\\n"
    assert parse_manifest(text).items() == [("a", value)]


def test_wrapping_counts_code_points() -> None:
    value = "\u00e9" * 200
    text = serialize_manifest([("a", value)])
    assert all(len(line) <= 78 for line in text.splitlines())
    assert parse_manifest(text).items() == [("a", value)]


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("", "a:\n"),
        ("x y z", "a: x y z\n"),
        ("\n", "a:\n\\\n\n\n\\\n"),
        ("\n\n", "a:\n\\\n\n\n\n\\\n"),
        ("\nx\n", "a:\n\\\n\nx\n\n\\\n"),
        ("x\ny\nz", "a:\n\\\nx\ny\nz\n\\\n"),
        (" x", "a:\n\\\n x\n\\\n"),
        ("x ", "a:\n\\\nx \n\\\n"),
        (" x ", "a:\n\\\n x \n\\\n"),
        ("\tx", "a:\n\\\n\tx\n\\\n"),
        ("c:\\", "a: c:\\\\\n"),
        ("c:\\\nd:\\", "a:\n\\\nc:\\\\\nd:\\\\\n\\\n"),
        ("\\", "a: \\\\\n"),
        ("x\n\\\ny", "a:\n\\\nx\n\\\\\ny\n\\\n"),
        ("#x", "a: #x\n"),
        ("C:\\foo\\bar", "a: C:\\foo\\bar\n"),
    ],
)
def test_value_forms(value: str, written: str) -> None:
    assert serialize_manifest([("a", value)]) == ": 1\n" + written
    assert parse_manifest(": 1\n" + written).items() == [("a", value)]


@pytest.mark.parametrize(
    ("value", "written", "read"),
    [
        ("x\ry", "a:\n\\\nx\ny\n\\\n", "x\ny"),
        ("x\r", "a:\n\\\nx\n\n\\\n", "x\n"),
        ("x\r\ny", "a:\n\\\nx\ny\n\\\n", "x\ny"),
        ("x\r\n", "a:\n\\\nx\n\n\\\n", "x\n"),
    ],
)
def test_carriage_returns_become_line_breaks(value: str, written: str, read: str) -> None:
    assert serialize_manifest([("a", value)]) == ": 1\n" + written
    assert parse_manifest(": 1\n" + written).items() == [("a", read)]


def test_long_name_forces_multiline() -> None:
    name37, name38 = "a" * 37, "a" * 38
    assert serialize_manifest([(name37, "x")]) == f": 1\n{name37}: x\n"
    assert serialize_manifest([(name38, "x")]) == f": 1\n{name38}:\n\\\nx\n\\\n"
    assert serialize_manifest([(name38, "")]) == f": 1\n{name38}:\n"


def test_stream_structure() -> None:
    assert serialize_stream([]) == ""
    assert serialize_stream([[]]) == ": 1\n"
    assert serialize_stream([[("a", "x")], [("b", "y")], [("c", "z")]]) == (": 1\na: x\n:\nb: y\n:\nc: z\n")
    assert serialize_stream([[], [("b", "y")]]) == ": 1\n:\nb: y\n"
    assert serialize_manifest([("a", "x"), ("b", "y")]) == ": 1\na: x\nb: y\n"
    # Parsed manifests can be written back directly.
    assert serialize_stream(parse_stream(": 1\na: x\n:\nb: y")) == ": 1\na: x\n:\nb: y\n"


def test_never_a_trailing_separator() -> None:
    with pytest.raises(ValueError, match="empty manifest cannot end"):
        serialize_stream([[("a", "x")], []])
    with pytest.raises(ValueError, match="empty manifest cannot end"):
        serialize_stream([[], []])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "may not be empty"),
        ("#a", "may not start with '#'"),
        ("a:b", "may not contain ':'"),
        ("a b", "whitespace"),
        ("a\tb", "whitespace"),
        ("a\n", "whitespace"),
        ("a\r", "whitespace"),
        ("a\x01", "control"),
        ("a\udc80", "invalid Unicode codepoint"),
    ],
)
def test_bad_names_rejected(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        serialize_manifest([(name, "x")])


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("a\x1b[0m", "control"),
        ("\x00", "control"),
        ("x\u200b", "format"),
        ("x\ue000", "private-use"),
        ("x\ufffe", "noncharacter"),
        ("x\U0001ffff", "noncharacter"),
    ],
)
def test_bad_values_rejected(value: str, kind: str) -> None:
    with pytest.raises(ValueError, match=rf"'log'.*\({kind}\)"):
        serialize_manifest([("log", value)])


def test_sanitize_value_makes_any_text_writable() -> None:
    raw = "\x1b[31merror\x1b[0m: x\r\nprogress\r 50%\rdone\u200b\ufffe\ttab"
    clean = sanitize_value(raw)
    assert clean == "\ufffd[31merror\ufffd[0m: x\nprogress\n 50%\ndone\ufffd\ufffd\ttab"
    assert parse_manifest(serialize_manifest([("log", clean)])).items() == [("log", clean)]


def test_non_string_values_rejected() -> None:
    with pytest.raises(TypeError):
        serialize_manifest([("a", 1)])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("value", "comment"),
    [
        ("value; text", "comment"),
        ("value text", ""),
        ("a\\b", "c"),
        ("", "only a comment"),
        ("line 1\n;\n\\;\nline 4", "comment\ntext"),
        ("multi\nline", ""),
    ],
)
def test_merge_comment_is_split_comment_reversed(value: str, comment: str) -> None:
    merged = merge_comment(value, comment)
    assert split_comment(merged) == (value, comment)


def test_merge_comment_vectors() -> None:
    assert merge_comment("value; text", "comment") == "value\\; text; comment"
    assert merge_comment("value text", "") == "value text"
