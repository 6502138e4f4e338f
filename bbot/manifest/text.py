"""The build2 manifest text format (bbot-protocol.md §1): parser and writer.

Pure functions on text; no I/O. The parser accepts exactly what libbutl's
manifest parser accepts and gives the same values and the same error texts and
positions (1-based lines and columns counted in code points). The writer emits
what libbutl's serializer emits (version line, multi-line form, wrapping at 78
code points), so `parse(serialize(x)) == x` for every name and value it accepts
(values containing CR are the one exception: CR and CRLF are written as line
breaks, as libbutl does, and read back as LF).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

__all__ = [
    "Manifest",
    "ManifestError",
    "Pair",
    "codepoint_type",
    "iter_stream",
    "merge_comment",
    "parse_manifest",
    "parse_stream",
    "sanitize_value",
    "serialize_manifest",
    "serialize_stream",
    "split_comment",
]

FORMAT_VERSION = "1"


class ManifestError(ValueError):
    """A manifest that does not parse or does not validate, with its place.

    str() is `<stream>:<line>:<column>: error: <description>`, the form brep sends
    back in a 400 body (§1.9).
    """

    def __init__(self, stream: str, line: int, column: int, description: str) -> None:
        self.stream = stream
        self.line = line
        self.column = column
        self.description = description
        super().__init__(f"{stream}:{line}:{column}: error: {description}")

    def __str__(self) -> str:
        return f"{self.stream}:{self.line}:{self.column}: error: {self.description}"

    def __reduce__(self) -> tuple[type[ManifestError], tuple[str, int, int, str]]:
        return (type(self), (self.stream, self.line, self.column, self.description))


@dataclass(frozen=True)
class Pair:
    """One `name: value` pair and where it was read (1-based, code points)."""

    name: str
    value: str
    line: int
    column: int
    value_line: int
    value_column: int


@dataclass
class Manifest:
    """The pairs of one manifest, in file order, without the format version pair.

    `end_line`/`end_column` is where the manifest ends (its closing `:` separator or
    the end of the stream): errors about a missing field point there.
    """

    pairs: list[Pair] = field(default_factory=list)
    end_line: int = 1
    end_column: int = 1

    def items(self) -> list[tuple[str, str]]:
        return [(pair.name, pair.value) for pair in self.pairs]

    def get(self, name: str) -> str | None:
        """The value of the first pair called `name`, or None."""
        for pair in self.pairs:
            if pair.name == name:
                return pair.value
        return None

    def values(self, name: str) -> list[str]:
        """The values of every pair called `name`, in file order."""
        return [pair.value for pair in self.pairs if pair.name == name]


# --------------------------------------------------------------------------------------
# Code point classes (§1.1). libbutl treats a code point as graphic unless it falls in
# one of these ranges; TAB, LF and CR are allowed on top of graphic ones.

_CONTROL = ((0x00, 0x1F), (0x7F, 0x9F))
_FORMAT = (
    (0x000AD, 0x000AD),
    (0x00600, 0x00605),
    (0x0061C, 0x0061C),
    (0x006DD, 0x006DD),
    (0x0070F, 0x0070F),
    (0x008E2, 0x008E2),
    (0x0180E, 0x0180E),
    (0x0200B, 0x0200F),
    (0x0202A, 0x0202E),
    (0x02060, 0x02064),
    (0x02066, 0x0206F),
    (0x0FEFF, 0x0FEFF),
    (0x0FFF9, 0x0FFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x13438),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)
_PRIVATE_USE = ((0x00E000, 0x00F8FF), (0x0F0000, 0x10FFFF))
_NONCHARACTER = ((0xFDD0, 0xFDEF),)
_RESERVED = ((0x30000, 0xE0000), (0xE0002, 0xE001F), (0xE0080, 0xE00FF), (0xE01F0, 0xEFFFF))

_TYPED_RANGES = (
    ("control", _CONTROL),
    ("format", _FORMAT),
    ("private-use", _PRIVATE_USE),
    ("noncharacter", _NONCHARACTER),
    ("reserved", _RESERVED),
)


def codepoint_type(codepoint: int) -> str:
    """libbutl's type name for a code point: graphic, control, format, private-use,
    noncharacter, reserved, or "" for a surrogate or a value past U+10FFFF."""
    if 0x20 <= codepoint <= 0x7E:
        return "graphic"
    if codepoint > 0x10FFFF or 0xD800 <= codepoint <= 0xDFFF:
        return ""
    if (codepoint & 0xFFFF) >= 0xFFFE:
        return "noncharacter"
    for name, ranges in _TYPED_RANGES:
        for low, high in ranges:
            if low <= codepoint <= high:
                return name
    return "graphic"


def _forbidden_class() -> str:
    ranges: list[tuple[int, int]] = [(0x00, 0x08), (0x0B, 0x0C), (0x0E, 0x1F), (0x7F, 0x9F)]
    for _, typed in _TYPED_RANGES[1:]:
        ranges.extend(typed)
    ranges.append((0xD800, 0xDFFF))  # lone surrogates (only possible in a Python str)
    ranges.extend((plane << 16 | 0xFFFE, plane << 16 | 0xFFFF) for plane in range(17))
    parts = []
    for low, high in sorted(ranges):
        parts.append(re.escape(chr(low)) if low == high else f"{re.escape(chr(low))}-{re.escape(chr(high))}")
    return "[" + "".join(parts) + "]"


_FORBIDDEN = re.compile(_forbidden_class())


def _invalid_codepoint(char: str) -> str:
    kind = codepoint_type(ord(char))
    return f"invalid Unicode codepoint ({kind})" if kind else "invalid Unicode codepoint"


def sanitize_value(text: str) -> str:
    """`text` made writable: CR and CRLF become LF, and every code point the format
    forbids (controls other than TAB/LF, format, private-use, ...) becomes U+FFFD.

    For build logs and other text from outside, which may hold terminal escapes.
    """
    text = _CR_RUN.sub("\n", text)
    return _FORBIDDEN.sub("\N{REPLACEMENT CHARACTER}", text)


# --------------------------------------------------------------------------------------
# Input decoding. The parser works on a str holding the valid part of the input, with
# CR runs folded into LF. When the input has an invalid UTF-8 sequence or a forbidden
# code point, the text stops there and the error is raised by the first look at that
# spot, in the terms of whatever the parser was reading (name, value, ...), as libbutl
# does. When the bad sequence starts with a valid lead byte, libbutl first sees an
# ordinary character there; a placeholder character stands for it.

_PLACEHOLDER = "\N{REPLACEMENT CHARACTER}"
_CR_RUN = re.compile("\r+\n?")
_BYTE_ORDINALS = ("first", "second", "third", "forth")  # sic, libbutl's wording


def _byte_error(data: bytes, start: int) -> tuple[str, bool]:
    """Describe the invalid UTF-8 sequence at data[start]: (description, lead byte ok)."""

    def describe(index: int, byte: int) -> str:
        text = f"invalid UTF-8 sequence {_BYTE_ORDINALS[index]} byte (0x{byte:02X}"
        if 0x20 <= byte <= 0x7E:
            text += f" '{chr(byte)}'"
        return text + ")"

    lead = data[start]
    if 0xF8 <= lead <= 0xFD:
        return f"{5 if lead < 0xFC else 6}-byte length UTF-8 sequence", False
    second: tuple[int, int] | None = None
    size = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    if 0xC2 <= lead <= 0xDF:
        second = (0x80, 0xBF)
    elif lead == 0xE0:
        second = (0xA0, 0xBF)
    elif 0xE1 <= lead <= 0xEC or 0xEE <= lead <= 0xEF:
        second = (0x80, 0xBF)
    elif lead == 0xED:
        second = (0x80, 0x9F)
    elif lead == 0xF0:
        second = (0x90, 0xBF)
    elif 0xF1 <= lead <= 0xF3:
        second = (0x80, 0xBF)
    elif lead == 0xF4:
        second = (0x80, 0x8F)
    if second is None:
        return describe(0, lead), False
    for index in range(1, size):
        if start + index >= len(data):
            return "unexpected end of stream", True
        byte = data[start + index]
        low, high = second if index == 1 else (0x80, 0xBF)
        if not low <= byte <= high:
            return describe(index, byte), True
    raise AssertionError("a well-formed sequence was reported as invalid")  # pragma: no cover


@dataclass
class _Input:
    text: str
    error: str | None  # raised when the parser looks at index len(text)
    error_index: int  # where that error is reported


def _prepare(data: str | bytes) -> _Input:
    if isinstance(data, str):
        # Lone surrogates cannot be encoded strictly; letting them through makes the
        # UTF-8 check below report them the way libbutl would report those bytes.
        data = data.encode("utf-8", "surrogatepass")
    error: str | None = None
    lead_valid = False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = data[: exc.start].decode("utf-8")
        error, lead_valid = _byte_error(data, exc.start)
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        char = bad.group()
        text = text[: bad.start()]
        error, lead_valid = _invalid_codepoint(char), ord(char) >= 0x80
    if "\r" in text:
        text = _CR_RUN.sub("\n", text)
    if error is not None and lead_valid:
        # The sequence's first byte reads as an ordinary character; the error shows
        # when the next byte is looked at, still at the same column.
        return _Input(text + _PLACEHOLDER, error, len(text))
    return _Input(text, error, len(text))


# --------------------------------------------------------------------------------------
# The parser.

_NAME_END = re.compile(r"[: \t\n]")
_BLANKS = re.compile(r"[ \t]*")
# A line holding only a backslash, after a newline: the multi-line terminator.
_TERMINATOR = re.compile(r"\n\\(?=\n|\Z)")

_START, _BODY, _END = range(3)


@dataclass
class _Raw:
    """One pair from the lexer; `special` marks version/end-of-manifest/end-of-stream."""

    name: str
    value: str
    name_index: int
    value_index: int
    special: bool = False


class _Lexer:
    """Reads the pair sequence `({"",VER} {NAME,VALUE}* {"",""})* {"",""}` (§1.2)."""

    def __init__(self, data: str | bytes, stream: str) -> None:
        prepared = _prepare(data)
        self.text = prepared.text
        self.end = len(self.text)
        self.error = prepared.error
        self.error_index = prepared.error_index
        self.stream = stream
        self.pos = 0
        self.state = _START
        self.version = ""
        # Cache for position(): index, line and line start of the last query.
        self._cache = (0, 1, 0)

    # -- positions and errors ----------------------------------------------------------

    def position(self, index: int) -> tuple[int, int]:
        """1-based (line, column) of text index `index`."""
        text = self.text
        last_index, line, line_start = self._cache
        if index < last_index:
            last_index, line, line_start = 0, 1, 0
        newlines = text.count("\n", last_index, index)
        if newlines:
            line += newlines
            line_start = text.rfind("\n", last_index, index) + 1
        self._cache = (index, line, line_start)
        return line, index - line_start + 1

    def fail(self, index: int, description: str) -> NoReturn:
        line, column = self.position(index)
        raise ManifestError(self.stream, line, column, description)

    def at_end(self, index: int, what: str) -> bool:
        """Whether `index` is the end of the text; raises the pending input error when
        the text was cut short by invalid input (`what` names what was being read)."""
        if index < self.end:
            return False
        if self.error is not None:
            self.fail(self.error_index, f"invalid {what}: {self.error}")
        return True

    # -- the pair sequence -------------------------------------------------------------

    def next(self) -> _Raw:
        if self.state == _END:
            return _Raw("", "", self.pos, self.pos, special=True)

        text = self.text
        index = self.skip_blank_lines(self.pos)

        if self.state == _BODY and not self.at_end(index, "manifest") and text[index] == ":":
            # The separator ends this manifest; it is read again as the next start.
            self.state = _START
            self.pos = index
            return _Raw("", "", index, index, special=True)

        name_index = index
        match = _NAME_END.search(text, index)
        name_end = match.start() if match is not None else self.end
        if match is None:
            self.at_end(name_end, "manifest name")
        name = text[name_index:name_end]

        index = _BLANKS.match(text, name_end).end()  # type: ignore[union-attr]
        if self.at_end(index, "manifest"):
            if name:
                self.fail(index, "':' expected after name")
            self.state = _END
            self.pos = index
            return _Raw("", "", name_index, name_index, special=True)
        if text[index] != ":":
            self.fail(index, "':' expected after name")

        index = _BLANKS.match(text, index + 1).end()  # type: ignore[union-attr]
        self.at_end(index, "manifest")
        value, value_index, after = self.read_value(index)
        self.pos = after + 1 if after < self.end else after

        if self.state == _START:
            if name:
                self.fail(name_index, "format version pair expected")
            if not value:
                if not self.version:
                    self.fail(value_index, "format version value expected")
                value = self.version
            else:
                self.version = value
                if value != FORMAT_VERSION:
                    self.fail(value_index, f"unsupported format version {value}")
            self.state = _BODY
            return _Raw("", value, name_index, value_index, special=True)

        return _Raw(name, value, name_index, value_index)

    def skip_blank_lines(self, index: int) -> int:
        """Skip blanks; at the start of a line also blank lines and comment lines."""
        text = self.text
        line_start = index == 0 or text[index - 1] == "\n"
        while not self.at_end(index, "manifest"):
            char = text[index]
            if char in " \t" or (char == "\n" and line_start):
                index += 1
            elif char == "#" and line_start:
                newline = text.find("\n", index)
                index = newline if newline >= 0 else self.end
            else:
                break
        return index

    # -- values ------------------------------------------------------------------------

    def read_value(self, index: int) -> tuple[str, int, int]:
        """Read the value starting at `index` (blanks after ':' already skipped).

        Returns (value, index where the value starts, index of the LF or end of text
        that follows it).
        """
        text = self.text
        value_index = index
        multiline = False
        if index < self.end and text[index] == "\\":
            # Deprecated introducer `name:\` + LF.
            if self.at_end(index + 1, "manifest value"):
                multiline, index = True, index + 1
            elif text[index + 1] == "\n":
                multiline, index = True, index + 2
        elif (
            index < self.end
            and text[index] == "\n"
            and not self.at_end(index + 1, "manifest value")
            and text[index + 1] == "\\"
        ):
            # Current introducer `name:` + LF + `\` + LF.
            if self.at_end(index + 2, "manifest value"):
                multiline, index = True, index + 2
            elif text[index + 2] == "\n":
                multiline, index = True, index + 3
        if multiline:
            value, after = self.read_multiline(index)
            return value, index, after
        value, after = self.read_simple(index)
        return value, value_index, after

    def read_simple(self, index: int) -> tuple[str, int]:
        text, end = self.text, self.end
        parts: list[str] = []
        while True:
            newline = text.find("\n", index)
            if newline < 0:
                self.at_end(end, "manifest value")
                line = text[index:end]
                if line.endswith("\\"):  # `\` at EOF is dropped; k >= 2 gives k-1
                    line = line[:-1]
                parts.append(line)
                after = end
                break
            line = text[index:newline]
            backslashes = len(line) - len(line.rstrip("\\"))
            if backslashes != 1:
                # The value ends at this LF; a run of k >= 2 backslashes gives k-1.
                parts.append(line[:-1] if backslashes else line)
                after = newline
                break
            # `\` LF joins the next line; a next line holding only `\` is a literal LF.
            parts.append(line[:-1])
            index = newline + 1
            if self.at_end(index, "manifest value"):
                after = end
                break
            if text[index] == "\\":
                if self.at_end(index + 1, "manifest value"):
                    parts.append("\n")
                    index += 1
                elif text[index + 1] == "\n":
                    parts.append("\n")
                    index += 2
        return "".join(parts).rstrip(" \t"), after

    def read_multiline(self, index: int) -> tuple[str, int]:
        text, end = self.text, self.end
        if self.at_end(index, "manifest value"):
            return "", end
        # The value ends at the first line holding only `\` (then LF or EOF), or at EOF.
        if text[index] == "\\" and (self.at_end(index + 1, "manifest value") or text[index + 1] == "\n"):
            return "", index + 1
        match = _TERMINATOR.search(text, index)
        if match is not None and match.end() == end and self.error is not None:
            match = None  # `\` followed by invalid input, not by EOF
        if match is None:
            self.at_end(end, "manifest value")
            content, after = text[index:end], end
        else:
            content, after = text[index : match.start()], match.end()
        if "\\" not in content:
            return content, after
        # `\` LF joins lines; a trailing run of k >= 2 backslashes gives k-1.
        lines = content.split("\n")
        last = len(lines) - 1
        pieces: list[str] = []
        for number, line in enumerate(lines):
            backslashes = len(line) - len(line.rstrip("\\"))
            pieces.append(line[:-1] if backslashes else line)
            if number != last and backslashes != 1:
                pieces.append("\n")
        return "".join(pieces), after


def _manifests(lexer: _Lexer) -> Iterator[Manifest]:
    """Yield each manifest of the stream; stop at the end of the stream."""
    while True:
        start = lexer.next()
        if not start.value:  # end of stream
            return
        pairs: list[Pair] = []
        while True:
            raw = lexer.next()
            if raw.special:
                line, column = lexer.position(raw.name_index)
                yield Manifest(pairs, line, column)
                break
            line, column = lexer.position(raw.name_index)
            value_line, value_column = lexer.position(raw.value_index)
            pairs.append(Pair(raw.name, raw.value, line, column, value_line, value_column))


def parse_stream(text: str | bytes, stream: str = "stdin") -> list[Manifest]:
    """Every manifest of a stream (a list; none for an empty stream)."""
    return list(_manifests(_Lexer(text, stream)))


def parse_manifest(text: str | bytes, stream: str = "stdin") -> Manifest:
    """The one manifest of a stream; an error when there is none or more than one."""
    lexer = _Lexer(text, stream)
    manifests = _manifests(lexer)
    manifest = next(manifests, None)
    if manifest is None:
        lexer.fail(lexer.pos, "start of manifest expected")
    following = lexer.next()
    if following.value:  # the version pair of a second manifest
        lexer.fail(following.name_index, "single manifest expected")
    return manifest


def iter_stream(text: str | bytes, stream: str = "stdin") -> Iterator[Manifest]:
    """Like parse_stream, one manifest at a time (an error shows when reached)."""
    return _manifests(_Lexer(text, stream))


# --------------------------------------------------------------------------------------
# `value ; comment` (§1.7), a layer above the core parser.


def split_comment(value: str, multiline: bool = False) -> tuple[str, str]:
    """Split `value ; comment` into (value, comment).

    The multi-line rules apply when `multiline` is set or the value holds a LF (as
    libbutl decides by the LF alone).
    """
    if not multiline and "\n" not in value:
        out: list[str] = []
        index, length = 0, len(value)
        while index < length and value[index] != ";":
            char = value[index]
            if char == "\\" and index + 1 < length and value[index + 1] in ";\\":
                index += 1
                char = value[index]
            out.append(char)
            index += 1
        comment = value[index + 1 :].lstrip(" \t") if index < length else ""
        return "".join(out).rstrip(" \t"), comment

    lines: list[str] = []
    remaining = value
    while remaining:
        line, newline, rest = remaining.partition("\n")
        stripped = line.lstrip("\\")
        if stripped == ";":
            if line == ";":
                # The separator; the LF before it belongs to it.
                result = "".join(lines)
                return (result[:-1] if result.endswith("\n") else result), rest
            # `\;` gives `;`, `\\\;` gives `\;`: keep the right half.
            line = line[len(line) // 2 :]
        lines.append(line + newline)
        remaining = rest
    return "".join(lines), ""


def merge_comment(value: str, comment: str) -> str:
    """The reverse of split_comment: `value` with `comment` attached, escaped."""
    if "\n" not in value and "\n" not in comment:
        escaped = value.replace("\\", "\\\\").replace(";", "\\;")
        return f"{escaped}; {comment}" if comment else escaped
    lines = []
    for line in value.split("\n"):
        stripped = line.lstrip("\\")
        if stripped == ";":
            slashes = len(line) - 1
            line = "\\" * (slashes if slashes else 1) + line
        lines.append(line)
    result = "\n".join(lines)
    if comment:
        result = (result + "\n" if result else "") + ";\n" + comment
    return result


# --------------------------------------------------------------------------------------
# The writer (§1.8).

_LINE_BREAK = re.compile("\r\n|\r|\n")


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"manifest name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError("invalid manifest name '': a name may not be empty")
    if name[0] == "#":
        raise ValueError(f"invalid manifest name '{name}': a name may not start with '#'")
    for char in name:
        if char in " \t\r\n":
            raise ValueError(f"invalid manifest name {name!r}: a name may not contain whitespace")
        if char == ":":
            raise ValueError(f"invalid manifest name '{name}': a name may not contain ':'")
    bad = _FORBIDDEN.search(name)
    if bad is not None:
        raise ValueError(
            f"invalid manifest name {name!r}: {_invalid_codepoint(bad.group())} "
            f"U+{ord(bad.group()):04X} at offset {bad.start()}"
        )


def _check_value(name: str, value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"value of manifest field '{name}' must be a str, not {type(value).__name__}")
    bad = _FORBIDDEN.search(value)
    if bad is not None:
        raise ValueError(
            f"invalid value of manifest field '{name}': {_invalid_codepoint(bad.group())} "
            f"U+{ord(bad.group()):04X} at offset {bad.start()} (sanitize_value() replaces it)"
        )


def _wrap(chunk: str, column: int, long_lines: bool, out: list[str]) -> None:
    """Write one line of a value, starting at `column` code points, soft-wrapped with
    `\\` LF at 78 code points as libbutl does; a trailing backslash is doubled."""
    length = len(chunk)
    # Fast path: a line that cannot reach the wrap point (UTF-8 length >= code points).
    if long_lines or column + len(chunk.encode("utf-8")) <= 77:
        out.append(chunk)
    else:
        start = 0
        index = 0
        while index < length:
            if column < 58:
                # No break can fall before column 58 (a blank needs column > 57, a
                # hard break column 77), so jump there.
                step = min(58 - column, length - index)
                index += step
                column += step
                continue
            char = chunk[index]
            # Never break right after a backslash: the break's own `\` would pair with it.
            if index == 0 or chunk[index - 1] != "\\":
                wrap = False
                if char in " \t":
                    # Break at this blank if the next blank (or the end) is past the
                    # wrap point (this one is near enough to it). The distance is in
                    # bytes, as libbutl measures it.
                    following = _NEXT_BLANK.search(chunk, index + 1)
                    next_blank = following.start() if following is not None else length
                    distance = len(chunk[index:next_blank].encode("utf-8"))
                    wrap = column + distance > (77 if next_blank != length else 78)
                # Hard break; the very last (single-byte) character may take column 78.
                last = index + 1 == length and ord(char) < 0x80
                if column >= (78 if last else 77):
                    wrap = True
                if wrap:
                    out.append(chunk[start:index])
                    out.append("\\\n")
                    start = index
                    column = 0
            column += 1
            index += 1
        out.append(chunk[start:])
    if chunk.endswith("\\"):
        out.append("\\")


_NEXT_BLANK = re.compile(r"[ \t]")


def _write_pair(name: str, value: str, long_lines: bool, out: list[str]) -> None:
    _check_name(name)
    _check_value(name, value)
    out.append(name)
    out.append(":")
    if value:
        column = len(name) + 1
        if column + 1 > 39 or "\n" in value or "\r" in value or value[0] in " \t" or value[-1] in " \t":
            out.append("\n\\\n")
            for number, chunk in enumerate(_LINE_BREAK.split(value)):
                if number:
                    out.append("\n")
                _wrap(chunk, 0, long_lines, out)
            out.append("\n\\")
        else:
            out.append(" ")
            _wrap(value, column + 1, long_lines, out)
    out.append("\n")


def serialize_stream(
    manifests: Iterable[Sequence[tuple[str, str]] | Manifest], *, long_lines: bool = False
) -> str:
    """The text of a manifest stream: `: 1` first, a lone `:` between manifests, no
    trailing `:`; an empty stream is the empty string."""
    out: list[str] = []
    count = 0
    previous_empty = False
    for manifest in manifests:
        pairs = manifest.items() if isinstance(manifest, Manifest) else manifest
        out.append(": 1\n" if count == 0 else ":\n")
        for name, value in pairs:
            _write_pair(name, value, long_lines, out)
        previous_empty = not pairs
        count += 1
    if count > 1 and previous_empty:
        # A trailing `:` line reads back as an extra empty manifest, which a list
        # reader such as brep's machine header list rejects (§1.2).
        raise ValueError("an empty manifest cannot end a stream of several manifests")
    return "".join(out)


def serialize_manifest(pairs: Sequence[tuple[str, str]] | Manifest, *, long_lines: bool = False) -> str:
    """The text of a stream holding one manifest."""
    return serialize_stream([pairs], long_lines=long_lines)
