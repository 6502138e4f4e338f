"""The manifest parser against the lexical rules of bbot-protocol.md §1.

The vectors are the ones libbutl's parser is tested with (§1.11), written here as
(input, pair sequence) where the sequence includes the version pairs and the
end-of-manifest / end-of-stream pairs, as libbutl's parser yields them.
"""

from __future__ import annotations

import pytest

from bbot.manifest import (
    Manifest,
    ManifestError,
    Pair,
    parse_manifest,
    parse_stream,
    split_comment,
)
from bbot.manifest.text import iter_stream

Sequence = list[tuple[str, str]]


def pair_sequence(text: str | bytes) -> Sequence:
    """The stream as libbutl's parser yields it: ({"",V} pairs* {"",""})* {"",""}."""
    result: Sequence = []
    for manifest in parse_stream(text, ""):
        result.append(("", "1"))
        result.extend(manifest.items())
        result.append(("", ""))
    result.append(("", ""))
    return result


def one(*pairs: tuple[str, str]) -> Sequence:
    return [("", "1"), *pairs, ("", ""), ("", "")]


def error_of(text: str | bytes) -> ManifestError:
    with pytest.raises(ManifestError) as caught:
        parse_stream(text, "s")
    return caught.value


VECTORS: list[tuple[str | bytes, Sequence]] = [
    # Whitespace, comments, end of stream at various points.
    (" \t", [("", "")]),
    (" \t\n \n\n", [("", "")]),
    ("# one\n  #two", [("", "")]),
    ("", [("", "")]),
    (" ", [("", "")]),
    ("\n", [("", "")]),
    (":1\na:", one(("a", ""))),
    # Empty manifest.
    (":1", one()),
    (" \t :1", one()),
    (" \t : 1", one()),
    (" \t : 1 ", one()),
    (":1\n", one()),
    (":1 \n", one()),
    # Single manifest.
    (":1\na:x", one(("a", "x"))),
    (":1\na:x\n", one(("a", "x"))),
    (":1\na:x\nb:y", one(("a", "x"), ("b", "y"))),
    (":1\na:x\n\tb : y\n  #comment", one(("a", "x"), ("b", "y"))),
    # Multiple manifests; an empty separator value inherits the version.
    (
        ":1\na:x\n:\nb:y",
        [("", "1"), ("a", "x"), ("", ""), ("", "1"), ("b", "y"), ("", ""), ("", "")],
    ),
    (
        ":1\na:x\n:1\nb:y",
        [("", "1"), ("a", "x"), ("", ""), ("", "1"), ("b", "y"), ("", ""), ("", "")],
    ),
    (
        ":1\na:x\n:\nb:y\n:\nc:z\n",
        [
            *[("", "1"), ("a", "x"), ("", "")],
            *[("", "1"), ("b", "y"), ("", "")],
            *[("", "1"), ("c", "z"), ("", ""), ("", "")],
        ],
    ),
    # Names.
    (":1\nabc:", one(("abc", ""))),
    (":1\nabc :", one(("abc", ""))),
    (":1\nabc\t:", one(("abc", ""))),
    # Simple values: blanks trimmed, escapes.
    (":1\na: \t xyz \t ", one(("a", "xyz"))),
    (":1\na:x\\", one(("a", "x"))),
    (":1\na:x\\\ny", one(("a", "xy"))),
    (":1\na:x\\\\\nb:", one(("a", "x\\"), ("b", ""))),
    (":1\na:x\\\\\\\nb:", one(("a", "x\\\\"), ("b", ""))),
    # Simple values: literal newline.
    (":1\na:x\\\n\\", one(("a", "x\n"))),
    (":1\na:x\\\n\\\ny", one(("a", "x\ny"))),
    (":1\na:x\\\n\\\ny\\\n\\\nz", one(("a", "x\ny\nz"))),
    # Multi-line values (deprecated introducer).
    (":1\na:\\", one(("a", ""))),
    (":1\na:\\\n", one(("a", ""))),
    (":1\na:\\x", one(("a", "\\x"))),
    (":1\na:\\\n\\", one(("a", ""))),
    (":1\na:\\\n\\\n", one(("a", ""))),
    (":1\na:\\\n\\x\n\\", one(("a", "\\x"))),
    (":1\na:\\\nx\ny", one(("a", "x\ny"))),
    (":1\na:\\\n \n#\t\n\\", one(("a", " \n#\t"))),
    (":1\na:\\\n\n\n\\", one(("a", "\n"))),
    # Multi-line values: escapes.
    (":1\na:\\\nx\\", one(("a", "x"))),
    (":1\na:\\\nx\\\ny\n\\", one(("a", "xy"))),
    (":1\na:\\\nx\\\\\n\\\nb:", one(("a", "x\\"), ("b", ""))),
    (":1\na:\\\nx\\\\\\\n\\\nb:", one(("a", "x\\\\"), ("b", ""))),
    # Multi-line values (current introducer).
    (":1\na:\n\\\nx\ny\n\\\nb: c", one(("a", "x\ny"), ("b", "c"))),
    (":1\na:\n\\\n\\\n", one(("a", ""))),
    (":1\na:\n\\", one(("a", ""))),
    (":1\na:\n\\\n\\\\\n\\", one(("a", "\\"))),
    # `name:` LF then anything but a lone `\`: empty value, the line is the next pair.
    (":1\na:\n\\x: y", one(("a", ""), ("\\x", "y"))),
    (":1\na:\nb: c", one(("a", ""), ("b", "c"))),
    # A trailing `:` starts an extra, empty manifest.
    (":1\na: b\n:\n", [("", "1"), ("a", "b"), ("", ""), ("", "1"), ("", ""), ("", "")]),
    # UTF-8.
    (
        b":1\n#\xd0\xb0\n\xd0\xb0y\xd0\xb0:\xd0\xb0z\xd0\xb0",
        one(("\u0430y\u0430", "\u0430z\u0430")),
    ),
    # Backslashes elsewhere are literal; `#` after the colon is data.
    (":1\npath: C:\\foo\\bar\nnote: #x", one(("path", "C:\\foo\\bar"), ("note", "#x"))),
]


@pytest.mark.parametrize(("text", "expected"), VECTORS)
def test_lexical_vector(text: str | bytes, expected: Sequence) -> None:
    assert pair_sequence(text) == expected
    if isinstance(text, str):  # the same from bytes
        assert pair_sequence(text.encode()) == expected


@pytest.mark.parametrize(
    ("text", "position", "description"),
    [
        ("a:", (1, 1), "format version pair expected"),
        (":", (1, 2), "format version value expected"),
        (":9", (1, 2), "unsupported format version 9"),
        ("a", (1, 2), "':' expected after name"),
        ("a b", (1, 3), "':' expected after name"),
        ("a\tb", (1, 3), "':' expected after name"),
        ("a\nb", (1, 2), "':' expected after name"),
        (":1\na:b\n:9", (3, 2), "unsupported format version 9"),
        (":1\na:b\nc d: e", (3, 3), "':' expected after name"),
        (": 1\nname: x\n  bad", (3, 6), "':' expected after name"),
    ],
)
def test_syntax_error(text: str, position: tuple[int, int], description: str) -> None:
    error = error_of(text)
    assert (error.line, error.column) == position
    assert error.description == description
    assert str(error) == f"s:{position[0]}:{position[1]}: error: {description}"
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("data", "position", "description"),
    [
        (
            b":1\na\xd0\xb0\xd0\xb0\xfe",
            (2, 4),
            "invalid manifest name: invalid UTF-8 sequence first byte (0xFE)",
        ),
        (
            b":1\n#\xd0\n\xd0\xb0y\xd0\xb0:\xd0\xb0z\xd0\xb0",
            (2, 2),
            "invalid manifest: invalid UTF-8 sequence second byte (0x0A)",
        ),
        (
            b":1\n#\xd0\xb0\n\xb0y\xd0\xb0:\xd0\xb0z\xd0\xb0",
            (3, 1),
            "invalid manifest: invalid UTF-8 sequence first byte (0xB0)",
        ),
        (
            b":1\n#\xd0\xb0\n\xd0y\xd0\xb0:\xd0\xb0z\xd0\xb0",
            (3, 1),
            "invalid manifest name: invalid UTF-8 sequence second byte (0x79 'y')",
        ),
        (
            b":1\n#\xd0\xb0\n\xd0\xb0y\xd0\xb0:\xd0z\xd0\xb0",
            (3, 5),
            "invalid manifest value: invalid UTF-8 sequence second byte (0x7A 'z')",
        ),
        (
            b":1\n#\xd0\xb0\n\xd0\xb0y\xd0\xb0:\xd0\xb0z\xd0",
            (3, 7),
            "invalid manifest value: unexpected end of stream",
        ),
        (
            b":1\r\r\xb0#\n",
            (2, 1),
            "invalid manifest: invalid UTF-8 sequence first byte (0xB0)",
        ),
        (
            b":1\r\xd0#\n",
            (2, 1),
            "invalid manifest name: invalid UTF-8 sequence second byte (0x23 '#')",
        ),
        (b":1\na: x\x01y", (2, 5), "invalid manifest value: invalid Unicode codepoint (control)"),
        (b":1\na: \x01", (2, 4), "invalid manifest: invalid Unicode codepoint (control)"),
        (
            b":1\na: x\xef\xbf\xbe",  # U+FFFE
            (2, 5),
            "invalid manifest value: invalid Unicode codepoint (noncharacter)",
        ),
        (
            b":1\na: x\xee\x80\x80",  # U+E000
            (2, 5),
            "invalid manifest value: invalid Unicode codepoint (private-use)",
        ),
        (
            b":1\na: x\xe2\x80\x8b",  # U+200B
            (2, 5),
            "invalid manifest value: invalid Unicode codepoint (format)",
        ),
        (b":1\na: \xf8", (2, 4), "invalid manifest: 5-byte length UTF-8 sequence"),
        (
            b":1\na: x\xf4\x90\x80\x80",  # past U+10FFFF
            (2, 5),
            "invalid manifest value: invalid UTF-8 sequence second byte (0x90)",
        ),
        (
            b":1\na: x\xed\xa0\x80",  # a surrogate
            (2, 5),
            "invalid manifest value: invalid UTF-8 sequence second byte (0xA0)",
        ),
        (b":1\n# \x7f\n", (2, 3), "invalid manifest: invalid Unicode codepoint (control)"),
        (
            b":1\na:\n\\\nline\n\xc0",
            (5, 1),
            "invalid manifest value: invalid UTF-8 sequence first byte (0xC0)",
        ),
    ],
)
def test_invalid_input(data: bytes, position: tuple[int, int], description: str) -> None:
    error = error_of(data)
    assert (error.line, error.column, error.description) == (*position, description)


def test_invalid_input_after_the_last_manifest_still_fails() -> None:
    with pytest.raises(ManifestError, match="invalid manifest"):
        parse_stream(b": 1\na: b\n\n# \xff\n")


def test_lone_surrogate_in_str_input_is_invalid() -> None:
    error = error_of(":1\na: x\udc80")
    assert (error.line, error.column) == (2, 5)


def test_columns_count_code_points_not_bytes() -> None:
    error = error_of(": 1\n\u00e9\u00e9\u00e9 x")
    assert (error.line, error.column) == (2, 5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (": 1\r\na: b\r\nc: d\r\n", [("a", "b"), ("c", "d")]),
        (": 1\ra: b\rc: d", [("a", "b"), ("c", "d")]),
        (": 1\r\r\r\na: b\r\r", [("a", "b")]),
        (": 1\na:\r\n\\\r\nx\r\ny\r\n\\\r\n", [("a", "x\ny")]),
        (": 1\na: x\\\r\ny", [("a", "xy")]),
        (": 1\n\na: b\n\r\n\n", [("a", "b")]),
    ],
)
def test_carriage_returns_read_as_newlines(text: str, expected: Sequence) -> None:
    assert parse_manifest(text).items() == expected


def test_positions_of_pairs_and_end() -> None:
    text = ": 1\n# comment\n  name : value\nlong:\n\\\nline 1\nline 2\n\\\nold:\\\nx\n\\\n\n"
    manifest = parse_manifest(text)
    assert manifest.pairs == [
        Pair("name", "value", 3, 3, 3, 10),
        Pair("long", "line 1\nline 2", 4, 1, 6, 1),
        Pair("old", "x", 9, 1, 10, 1),
    ]
    assert (manifest.end_line, manifest.end_column) == (13, 1)
    first, second = parse_stream(": 1\na: b\n  :\nc: d")
    assert (first.end_line, first.end_column) == (3, 3)
    assert (second.end_line, second.end_column) == (4, 5)


def test_manifest_accessors() -> None:
    manifest = parse_manifest(": 1\na: 1\nb: 2\na: 3\n")
    assert manifest.items() == [("a", "1"), ("b", "2"), ("a", "3")]
    assert manifest.get("a") == "1"
    assert manifest.get("z") is None
    assert manifest.values("a") == ["1", "3"]
    assert isinstance(manifest, Manifest)


# -- §1.10 worked examples -------------------------------------------------------------


def test_example_a_simple_values() -> None:
    text = (
        ": 1\n"
        "# a comment line; ignored\n"
        "name: libhello\n"
        "summary: a value that is \\\n"
        "continued on the next line\n"
        "path: C:\\tmp\\\\\n"
        "note: #not a comment\n"
        "empty:\n"
    )
    assert parse_manifest(text).items() == [
        ("name", "libhello"),
        ("summary", "a value that is continued on the next line"),
        ("path", "C:\\tmp\\"),
        ("note", "#not a comment"),
        ("empty", ""),
    ]


def test_example_b_multiline_log() -> None:
    text = (
        ": 1\n"
        "update-log:\n"
        "\\\n"
        "warning: unused variable 'x'\n"
        "  # kept verbatim, including the indent\n"
        "last line ends with a backslash \\\\\n"
        "\\\n"
        "status: warning\n"
    )
    assert parse_manifest(text).items() == [
        (
            "update-log",
            "warning: unused variable 'x'\n"
            "  # kept verbatim, including the indent\n"
            "last line ends with a backslash \\",
        ),
        ("status", "warning"),
    ]


def test_example_c_several_manifests() -> None:
    text = (
        ": 1\n"
        "agent: example-agent\n"
        "toolchain-name: dev\n"
        "toolchain-version: 0.17.0\n"
        ":\n"
        "id: 5d1c0bb5b8f1b0d8a2e7c4f90c3a8e1f2b6d7a9c0e1f2a3b4c5d6e7f8091a2b3\n"
        "name: linux_debian_12-gcc_13\n"
        "summary: Debian 12, GCC 13\n"
        ":\n"
        "id: 0a1b2c3d\n"
        "name: x86_64-linux_debian_12-postgresql_16\n"
        "summary: Debian 12, PostgreSQL 16\n"
        "role: auxiliary\n"
        "ram-minimum: 2097152\n"
    )
    manifests = parse_stream(text)
    assert [len(manifest.pairs) for manifest in manifests] == [3, 3, 5]
    assert manifests[2].get("ram-minimum") == "2097152"


def test_example_d_literal_newline_kept_blanks_and_no_task() -> None:
    text = ": 1\nmessage: first line\\\n\\\nsecond line\ntitle:\n\\\n  indented, with trailing space \n\\\n"
    assert parse_manifest(text).items() == [
        ("message", "first line\nsecond line"),
        ("title", "  indented, with trailing space "),
    ]
    assert parse_manifest(": 1\nsession:\n").items() == [("session", "")]


# -- parse_manifest / parse_stream / iter_stream ---------------------------------------


def test_parse_stream_empty_and_comment_only() -> None:
    assert parse_stream("") == []
    assert parse_stream(b"") == []
    assert parse_stream("# only a comment\n\n") == []


@pytest.mark.parametrize(
    ("text", "position", "description"),
    [
        ("", (1, 1), "start of manifest expected"),
        ("# abc", (1, 6), "start of manifest expected"),
        ("\n\n", (3, 1), "start of manifest expected"),
        ("a: abc", (1, 1), "format version pair expected"),
        (": 1\na: b\n:\nc: d\n", (3, 1), "single manifest expected"),
    ],
)
def test_parse_manifest_errors(text: str, position: tuple[int, int], description: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, "m")
    assert (caught.value.line, caught.value.column) == position
    assert caught.value.description == description
    assert caught.value.stream == "m"


def test_parse_manifest_single() -> None:
    assert parse_manifest(":1").items() == []
    assert parse_manifest(":1\na: abc\nb: cde").items() == [("a", "abc"), ("b", "cde")]


def test_iter_stream_is_lazy() -> None:
    manifests = iter_stream(": 1\na: b\n:\nbad\n")
    assert next(manifests).items() == [("a", "b")]
    with pytest.raises(ManifestError, match="':' expected after name"):
        next(manifests)


# -- split_comment (§1.7) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("\\value\\\\\\; text ; comment text", ("\\value\\; text", "comment text")),
        ("value\\", ("value\\", "")),
        ("; comment", ("", "comment")),
        ("value \t", ("value", "")),
        ("value\n;", ("value", "")),
        ("value\ntext\n", ("value\ntext\n", "")),
        ("value\ntext\n;", ("value\ntext", "")),
        ("value\ntext\n;\n", ("value\ntext", "")),
        ("\n\\\nvalue\ntext\n;\n\n\n comment\ntext", ("\n\\\nvalue\ntext", "\n\n comment\ntext")),
        ("\n;\ncomment", ("", "comment")),
        (";\ncomment", ("", "comment")),
        (";\n", ("", "")),
        ("\\;\n\\\\;\n\\\\\\;\n\\\\\\\\;\n\\\\\\\\\\;", (";\n\\;\n\\;\n\\\\;\n\\\\;", "")),
    ],
)
def test_split_comment(value: str, expected: tuple[str, str]) -> None:
    assert split_comment(value) == expected


def test_split_comment_multiline_flag() -> None:
    assert split_comment("a;b") == ("a", "b")
    assert split_comment("a;b", multiline=True) == ("a;b", "")
    assert split_comment(";", multiline=True) == ("", "")


def test_split_comment_on_corpus_values() -> None:
    manifests = parse_stream(": 1\nbuild-exclude: **; Only supported on Windows.\nrequires: ; X11 libs.\n")
    build_exclude, requires = (value for _, value in manifests[0].items())
    assert split_comment(build_exclude) == ("**", "Only supported on Windows.")
    assert split_comment(requires) == ("", "X11 libs.")
