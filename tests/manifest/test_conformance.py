"""Every file of the conformance corpus (a copy of shared/conformance, brep's test
manifests, MIT) parses, round-trips, and breaks at the right place when damaged."""

from __future__ import annotations

from pathlib import Path

import pytest

from bbot.manifest import ManifestError, parse_stream, serialize_stream

CORPUS = Path(__file__).parent / "conformance"
FILES = sorted(
    path
    for path in CORPUS.rglob("*")
    if path.is_file() and (path.suffix == ".manifest" or path.name == "manifest")
)


def relative(path: Path) -> str:
    return str(path.relative_to(CORPUS))


def test_corpus_is_present() -> None:
    # A missing copy must fail, never shrink the parametrized tests to nothing.
    assert len(FILES) >= 30, f"conformance corpus missing under {CORPUS}"


@pytest.mark.parametrize("path", FILES, ids=relative)
def test_corpus_file_parses_and_round_trips(path: Path) -> None:
    data = path.read_bytes()
    manifests = parse_stream(data, str(path))
    assert manifests, "every corpus file holds at least one manifest"
    written = serialize_stream(manifests)
    again = parse_stream(written)
    assert [manifest.items() for manifest in again] == [manifest.items() for manifest in manifests]
    # Writing is stable: the written text is a fixed point.
    assert serialize_stream(again) == written


# Files brep's own serializer wrote, which our writer reproduces byte for byte.
EXACT = [
    "brep/tests/ci/8716f424-fd94-4def-9e2e-687203bbf4ad/request.manifest",
    "brep/tests/submit/0f6b1460b3ec/request.manifest",
    "brep/tests/load/1/math/packages.manifest",
    "brep/tests/load/git-cache/packages.manifest",
    "brep/tests/load/git-cache/repositories.manifest",
]


@pytest.mark.parametrize("name", EXACT)
def test_writer_reproduces_brep_output(name: str) -> None:
    data = (CORPUS / name).read_text(encoding="utf-8")
    assert serialize_stream(parse_stream(data)) == data


def test_corpus_features_are_read_as_the_protocol_says() -> None:
    math = parse_stream((CORPUS / "brep/tests/load/1/math/packages.manifest").read_bytes())
    assert math[0].items()[0][0] == "sha256sum"
    values = [value for manifest in math for _, value in manifest.items()]
    assert any(value.startswith("project = ") and "\n" in value for value in values)
    assert "; X11 libs." in values
    submit = parse_stream((CORPUS / "brep/tests/submit/0f6b1460b3ec/request.manifest").read_bytes())
    user_agent = submit[0].get("user-agent")
    assert user_agent is not None
    assert user_agent.startswith("bdep/0.8.0-a.0.20180815130917 (GNU/Linux; +https://build2.org)")
    assert " libbpkg/" in user_agent and "\\" not in user_agent
    upload = parse_stream(
        (CORPUS / "brep/tests/upload/545f1f78-63ea-4acf-bcb8-37b2513a78c8/request.manifest").read_bytes()
    )
    assert upload[0].get("session") == (
        "4d4c8b36-56c5-42e0-91d1-58bfd1228002/libhello/1.1.0+10/x86_64-linux-gnu/"
        "linux_fedora_37-gcc_12.2-bindist/default/queue/0.3.0/1683122318585120886"
    )
    signature = parse_stream((CORPUS / "brep/tests/load/1/stable/signature.manifest").read_bytes())
    deprecated_form = signature[0].get("signature")
    assert deprecated_form is not None and deprecated_form.count("\n") >= 5
    unsigned = parse_stream(
        (CORPUS / "brep/tests/load/pkg/1/dev.cppget.org/unsigned/packages.manifest").read_bytes()
    )
    assert len(unsigned) == 1 and len(unsigned[0].pairs) == 1


def damaged(name: str, line: int, replacement: str) -> tuple[bytes, str]:
    """The corpus file with line `line` (1-based) replaced (\\udcXX stands for byte XX)."""
    lines = (CORPUS / name).read_text(encoding="utf-8").split("\n")
    lines[line - 1] = replacement
    return "\n".join(lines).encode("utf-8", "surrogateescape"), name


@pytest.mark.parametrize(
    ("name", "line", "replacement", "column", "description"),
    [
        ("brep/tests/load/1/math/packages.manifest", 5, "version +2-1.2+1", 9, "':' expected"),
        ("brep/tests/load/1/math/packages.manifest", 1, ": 2", 3, "unsupported format version 2"),
        ("brep/tests/load/1/math/packages.manifest", 3, ": 3", 3, "unsupported format version 3"),
        ("brep/repositories.manifest", 2, "summary: x\x01y", 11, "invalid manifest value"),
        ("brep/tests/ci/8716f424-fd94-4def-9e2e-687203bbf4ad/request.manifest", 2, "id", 3, "':'"),
        ("brep/manifest", 1, "name: brep", 1, "format version pair expected"),
        ("brep/tests/load/1/stable/signature.manifest", 4, "\\ \udcff", 3, "invalid manifest value"),
    ],
)
def test_damaged_file_rejected_at_the_place(
    name: str, line: int, replacement: str, column: int, description: str
) -> None:
    data, stream = damaged(name, line, replacement)
    with pytest.raises(ManifestError) as caught:
        parse_stream(data, stream)
    error = caught.value
    assert (error.line, error.column) == (line, column), str(error)
    assert description in error.description
    assert str(error).startswith(f"{stream}:{line}:{column}: error: ")
