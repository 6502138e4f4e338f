"""Property-based tests of the shim's ``?build-task`` and ``?build-result`` over real HTTP.

One farm serves the whole module (hypothesis does not let function-scoped
fixtures change between examples). It holds two builds that no fuzzed request
may touch:

- a *leased* build, taken over HTTP by a well-behaved agent before fuzzing
  starts, so results have a real session to aim near;
- a *queued* build, whose machine pattern no fuzzed request offers, so a
  poll that happens to be valid has nothing to take.

Properties, for bodies (random bytes, and valid requests mutated at the line
and byte level) and for query strings:

(a) no reply is a 5xx;
(b) every non-200 reply is ``text/plain;charset=utf-8`` with a one-line
    reason, and a manifest error's reason is the parser's own text
    (``task_request_manifest:`` / ``result_request_manifest:``);
(c) a 4xx changes nothing in the store (build rows and counters);
(d) a result with a valid manifest and any session is a 400 or a 200, and
    never builds anything; a 200 only counts one dropped result.

The properties found two shim bugs, now fixed and kept as regression tests at
the end: a 500 for some session timestamps, and reasons that echoed a request
value with its line breaks (reasons now write them ``\n``).

Requests that never reach the shim are checked for what their server does:
a request line with bytes outside ASCII gets waitress's own 400, and a path
that is no handler's URL (``/@`` with an empty tenant or an encoded '/')
Flask's HTML 404 or 405.
"""

from __future__ import annotations

import http.client as httplib
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, quote, unquote_to_bytes

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from bbot.brep.protocol import reason_line
from bbot.controller import shim as shim_module
from bbot.controller.lease import BuildState
from bbot.controller.store import NewBuild, NewBuildSet
from bbot.manifest import (
    MachineHeader,
    ManifestError,
    OperationResult,
    Result,
    ResultRequest,
    Status,
    TaskRequest,
    TaskResponse,
)
from bbot.manifest.text import sanitize_value
from bbot.wire import SessionError, parse_session
from tests.shim.conftest import ShimFarm, start_shim_farm, wait_for

NO_TASK = b": 1\nsession:\n"
MANIFEST = "text/manifest;charset=utf-8"
TEXT = "text/plain;charset=utf-8"
WAITRESS_TEXT = "text/plain; charset=utf-8"
# Python refuses to convert longer digit strings to int (sys.get_int_max_str_digits()).
INT_MAX_STR_DIGITS = 4300

# BBOT_FUZZ_EXAMPLES=2000 fuzzes longer (the default keeps the module near 15 s).
FUZZ = settings(max_examples=int(os.environ.get("BBOT_FUZZ_EXAMPLES", "250")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


# -- the farm ---------------------------------------------------------------------------------------


@dataclass
class FuzzFarm:
    shim: ShimFarm
    unique: str
    leased_session: str  # the session of the build a real agent holds
    queued_set: int

    @property
    def host(self) -> str:
        return self.shim.farm.web.host

    @property
    def port(self) -> int:
        return self.shim.farm.web.port

    @property
    def near_session(self) -> str:
        """The leased session one nanosecond later: well-formed, never handed out."""
        head, stamp = self.leased_session.rsplit("/", 1)
        return f"{head}/{int(stamp) + 1}"

    def task_request(self) -> TaskRequest:
        """A valid poll that can get nothing: its machine matches no build's pattern."""
        return TaskRequest(
            agent=f"fuzzer-{self.unique}", toolchain_name="public", toolchain_version="0.17.0",
            machines=[MachineHeader(id="fz-1", name=f"fuzz_{self.unique}-gcc", summary="a fuzzing machine",
                                    role="build", ram_minimum=1024)],
            interactive_mode="false", fingerprint="ab" * 32, auxiliary_ram=4096)

    def result_request(self, session: str | None = None) -> ResultRequest:
        key = parse_session(self.leased_session).key
        return ResultRequest(
            session=session or self.leased_session, challenge=b"\x01" * 64, agent_checksum="abc",
            result=Result(key.package_name, key.package_version, Status.SUCCESS,
                          [OperationResult("configure", Status.SUCCESS, "configured\n  indented\n"),
                           OperationResult("update", Status.WARNING, "warning: x\\\n")],
                          worker_checksum="w1", dependency_checksum="d1"))


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzFarm]:
    unique = uuid.uuid4().hex[:8]
    shim = start_shim_farm(tmp_path_factory.mktemp("fuzz"), unique)
    farm = shim.farm
    try:
        leased_session = _take_the_task(shim)
        queued_set = _add_a_build_nobody_offers(shim, unique)
        with pytest.MonkeyPatch.context() as patch:
            # A valid poll that offers machines it did not offer before waits this long for
            # the scheduler. Fuzzed polls that stay valid (with a mutated agent or machine
            # name) can never get a task here: waiting 2 s for each would use up the budget.
            patch.setattr(shim_module, "FIRST_POLL_WAIT", 0.05)
            yield FuzzFarm(shim, unique, leased_session, queued_set)
        # Nothing fuzzed may have sent a result the controller takes in later.
        assert farm.controller.wait_for_sets([shim.set_id], timeout=0.5) is False
        assert [b.state for b in shim.builds()] == [BuildState.LEASED]
        assert [b.state for b in shim.store.set_builds(queued_set)] == [BuildState.QUEUED]
    finally:
        farm.stop()


def _take_the_task(shim: ShimFarm) -> str:
    """Lease the submitted build to a real agent over HTTP; its session."""
    def poll() -> TaskResponse | None:
        reply = shim.poll(shim.task_request(agent="honest-agent"))
        assert reply.status == 200, reply.text
        response = TaskResponse.from_text(reply.body)
        return response if response.has_task else None

    response = wait_for(poll, what="the honest agent's task")
    assert isinstance(response, TaskResponse)
    assert [b.state for b in shim.builds()] == [BuildState.LEASED]
    return response.session


def _add_a_build_nobody_offers(shim: ShimFarm, unique: str) -> int:
    store = shim.store
    built = shim.builds()[0]
    set_id: int = store.add_build_set(NewBuildSet(
        kind="submit", source="fuzz", repository_url=built.repository_url, ref=None, commit=built.commit,
        package_name=built.package_name, package_version=built.package_version))
    store.add_builds(set_id, [NewBuild(
        configuration="nobody", machine_pattern=f"nobody_{unique}-*", target=built.target,
        config_args="", warning_regex=[], package_config=built.package_config,
        toolchain_name=built.toolchain_name, toolchain_version=built.toolchain_version)])
    return set_id


# -- raw HTTP and the store's state ---------------------------------------------------------------


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes


def post(fuzz: FuzzFarm, target: bytes, body: bytes) -> Reply:
    """POST ``body`` to ``target`` (path and query, sent byte for byte: http.client refuses
    bytes outside ASCII in a URL)."""
    with socket.create_connection((fuzz.host, fuzz.port), timeout=30) as sock:
        head = (b"POST " + target + b" HTTP/1.1\r\nHost: fuzz\r\nContent-Type: text/manifest\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")
        sock.sendall(head + body)
        response = httplib.HTTPResponse(sock)
        response.begin()
        try:
            return Reply(response.status, response.getheader("Content-Type", ""), response.read())
        finally:
            response.close()


State = tuple[list[tuple[object, ...]], dict[str, int]]


def state(fuzz: FuzzFarm) -> State:
    builds = fuzz.shim.store.list_builds(limit=100)
    rows = [(b.id, b.state, b.status, b.session, b.attempt, b.agent, b.lease_deadline) for b in builds]
    return sorted(rows, key=lambda row: str(row[0])), fuzz.shim.store.counters()


def reason(reply: Reply) -> str:
    text = reply.body.decode("utf-8")
    assert text.endswith("\n") and text.strip(), f"no reason in {reply}"
    return text[:-1]


def as_reply(text: str) -> str:
    """The body of a text/plain rejection: the text on one line, then a newline."""
    return reason_line(text) + "\n"


def parse_error(kind: type[TaskRequest] | type[ResultRequest], body: bytes) -> str | None:
    """The parser's text for ``body``, or None when it parses."""
    try:
        kind.from_text(body)
    except ManifestError as error:
        return str(error)
    except UnicodeDecodeError:
        return f"{kind.STREAM}:1:1: error: invalid UTF-8 sequence"
    return None


def reaches_the_shim(target: bytes) -> bool:
    """Whether Flask routes ``target`` to brep's dispatch: the root, or ``/@<tenant>`` with a
    tenant that is not empty and holds no '/' once decoded (werkzeug decodes before routing)."""
    path = target.split(b"?", 1)[0]
    if path == b"/":
        return True
    tenant = unquote_to_bytes(path[2:]) if path.startswith(b"/@") else b""
    return bool(tenant) and b"/" not in tenant


def check_reply(fuzz: FuzzFarm, reply: Reply, before: State, target: bytes, body: bytes) -> None:
    """(a), (b) and (c) for any request."""
    event(f"reply {reply.status}")
    if not target.isascii():
        # waitress refuses such a request line itself, in its own words: the app never sees it.
        assert (reply.status, reply.content_type) == (400, WAITRESS_TEXT), reply
        assert reply.body.startswith(b"Bad Request\r\n\r\nBad URI"), reply
    elif not reaches_the_shim(target):
        # No handler's URL: Flask's own (HTML) 404 or 405, as for any other unknown page.
        assert reply.status in (404, 405), reply
    else:
        assert reply.status < 500, f"{reply} for target {target!r} and body {body[:2000]!r}"
        if reply.status != 200:
            assert reply.content_type == TEXT, reply
            assert "\n" not in reason(reply) and "\r" not in reason(reply), reply
    if 400 <= reply.status < 500:
        assert state(fuzz) == before, f"{reply} changed the store"


# -- strategies -------------------------------------------------------------------------------------

BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"]


@st.composite
def mutation(draw: st.DrawFn) -> tuple[str, int, bytes]:
    """One edit of a request's lines: (kind, where, what). Where is taken modulo the length."""
    kind = draw(st.sampled_from([
        "drop", "duplicate", "swap", "unknown-field", "huge-value", "nul", "bad-utf8", "crlf", "cr",
        "multi-line", "old-multi-line", "version", "separator", "truncate", "comment", "random-line",
        "bom", "random-bytes", "value", "trailing-backslash", "no-final-newline"]))
    where = draw(st.integers(0, 10_000))
    if kind == "huge-value":
        size = draw(st.sampled_from([1_000, 70_000, 102_400, 110_000, 300_000]))
        what = draw(st.sampled_from([b"x", b"\xc3\xa9", b" ", b"/", b"9"])) * size
    elif kind == "bad-utf8":
        what = draw(st.sampled_from(BAD_UTF8))
    elif kind == "version":
        what = draw(st.sampled_from([b": 2", b": 0", b":1", b": 1 ", b": 01", b": 1\t# x", b":  1", b"", b": 1.0"]))
    elif kind == "random-bytes":
        what = draw(st.binary(min_size=1, max_size=40))
    elif kind in ("random-line", "value", "unknown-field", "multi-line", "old-multi-line"):
        what = draw(st.text(max_size=60)).encode("utf-8", "surrogatepass")
    else:
        what = b""
    return kind, where, what


def mutate(text: str, edits: list[tuple[str, int, bytes]]) -> bytes:
    lines = text.encode().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    eol = b"\n"
    final_newline = True
    for kind, where, what in edits:
        i = where % max(len(lines), 1)
        line = lines[i] if lines else b""
        name, colon, value = line.partition(b":")
        if kind == "drop" and lines:
            del lines[i]
        elif kind == "duplicate" and lines:
            lines.insert(i, line)
        elif kind == "swap" and len(lines) > 1:
            j = (where // 7) % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "unknown-field":
            lines.insert(i, b"x-fuzz-" + str(where).encode() + b": " + what.replace(b"\n", b" "))
        elif kind in ("huge-value", "value") and colon and name:
            lines[i] = name + b": " + what.replace(b"\n", b" ")
        elif kind == "nul" and lines:
            lines[i] = line[: where % (len(line) + 1)] + b"\x00" + line[where % (len(line) + 1):]
        elif kind == "bad-utf8" and lines:
            lines[i] = line[: where % (len(line) + 1)] + what + line[where % (len(line) + 1):]
        elif kind == "crlf":
            eol = b"\r\n"
        elif kind == "cr" and lines:
            lines[i] = line + b"\r"
        elif kind == "multi-line" and colon and name:
            lines[i: i + 1] = [name + b":", b"\\", value.strip(), *what.split(b"\n"), b"\\"]
        elif kind == "old-multi-line" and colon and name:
            lines[i: i + 1] = [name + b":\\", value.strip(), what, b"\\"]
        elif kind == "version":
            if lines and lines[0].startswith(b":"):
                lines[0] = what
            else:
                lines.insert(0, what)
        elif kind == "separator":
            lines.insert(i, b":")
        elif kind == "truncate" and lines:
            lines[i] = line[: where % (len(line) + 1)]
            del lines[i + 1:]
        elif kind == "comment":
            lines.insert(i, b"# fuzz: a comment" if where % 2 else b"")
        elif kind == "random-line":
            lines.insert(i, what)
        elif kind == "bom":
            lines[0:1] = [b"\xef\xbb\xbf" + (lines[0] if lines else b"")]
        elif kind == "random-bytes" and lines:
            lines[i] = line[: where % (len(line) + 1)] + what
        elif kind == "trailing-backslash" and lines:
            lines[i] = line + b"\\" * (1 + where % 3)
        elif kind == "no-final-newline":
            final_newline = False
    return eol.join(lines) + (eol if final_newline and lines else b"")


def edits(max_size: int = 4) -> st.SearchStrategy[list[tuple[str, int, bytes]]]:
    return st.lists(mutation(), min_size=1, max_size=max_size)


# URL query parameters: the valid ones, and names and values of any characters, percent-encoded
# or raw (bytes outside ASCII, which the view must refuse without a 5xx).
_VALID_PARAMETERS = [b"r=https%3A%2F%2Fexample.org%2Fx.git", b"repository=pkg%3Ahello", b"interactive=false",
                     b"interactive=both", b"interactive=true", b"t=", b"t=github", b"r=", b"interactive="]
_RAW = st.binary(min_size=0, max_size=12).map(
    lambda raw: bytes(b for b in raw if b > 0x20 and b not in b"#%&=\x7f"))


def _encoded(text: str) -> bytes:
    return quote(text, safe="").encode()


parameter = st.one_of(
    st.sampled_from(_VALID_PARAMETERS),
    st.builds(lambda n, v: n + b"=" + v, st.text(max_size=12).map(_encoded), st.text(max_size=20).map(_encoded)),
    st.builds(lambda n, v: n + b"=" + v, _RAW, _RAW),
    st.builds(lambda n: n, st.text(min_size=1, max_size=12).map(_encoded)),
    st.sampled_from([b"%ff=1", b"r=%c3", b"interactive=%00", b"t=%ed%a0%80", b"=", b"&&", b";", b"+=+"]),
)


def query_for(handler: bytes) -> st.SearchStrategy[bytes]:
    first = st.one_of(st.just(handler), st.just(handler + b"="),
                      st.builds(lambda v: handler + b"=" + v, st.one_of(st.text(min_size=1, max_size=12)
                                                                        .map(_encoded), _RAW)))
    return st.builds(lambda f, rest: b"&".join([f, *rest]), first, st.lists(parameter, max_size=3))


# -- (a), (b), (c): ?build-task -----------------------------------------------------------------------


@FUZZ
@given(edit_list=edits())
def test_mutated_task_requests(fuzz: FuzzFarm, edit_list: list[tuple[str, int, bytes]]) -> None:
    body = mutate(fuzz.task_request().to_text(), edit_list)
    before = state(fuzz)
    reply = post(fuzz, b"/?build-task", body)
    check_reply(fuzz, reply, before, b"/?build-task", body)
    expected_error = parse_error(TaskRequest, body)
    if len(body) > 102_400:
        assert (reply.status, reply.body) == (413, b"payload too large\n")
    elif expected_error is not None:
        assert (reply.status, reply.body.decode()) == (400, as_reply(expected_error))
    else:
        # A valid poll: there is nothing it may take.
        assert (reply.status, reply.content_type, reply.body) == (200, MANIFEST, NO_TASK)
    assert state(fuzz) == before  # a poll that gets no task changes nothing either


@FUZZ
@given(body=st.one_of(st.binary(max_size=2_000),
                      st.builds(lambda raw: b": 1\n" + raw, st.binary(max_size=500)),
                      st.text(max_size=500).map(lambda t: t.encode())))
def test_random_task_bodies(fuzz: FuzzFarm, body: bytes) -> None:
    before = state(fuzz)
    reply = post(fuzz, b"/?build-task", body)
    check_reply(fuzz, reply, before, b"/?build-task", body)
    expected_error = parse_error(TaskRequest, body)
    if expected_error is not None:
        assert (reply.status, reply.body.decode()) == (400, as_reply(expected_error))
        assert expected_error.startswith("task_request_manifest:")
    assert state(fuzz) == before


@FUZZ
@given(query=query_for(b"build-task"), tenant=st.one_of(st.just(b""), st.text(max_size=8).map(_encoded)))
def test_task_queries(fuzz: FuzzFarm, query: bytes, tenant: bytes) -> None:
    body = fuzz.task_request().to_text().encode()
    target = (b"/@" + tenant if tenant else b"/") + b"?" + query
    before = state(fuzz)
    reply = post(fuzz, target, body)
    check_reply(fuzz, reply, before, target, body)
    assert reply.status in (200, 400, 404, 405), reply
    if reply.status == 200:
        assert target.isascii() and reaches_the_shim(target)
        assert (reply.content_type, reply.body) == (MANIFEST, NO_TASK)
    assert state(fuzz) == before


# -- (a), (b), (c): ?build-result ---------------------------------------------------------------------


@FUZZ
@given(edit_list=edits())
def test_mutated_result_requests(fuzz: FuzzFarm, edit_list: list[tuple[str, int, bytes]]) -> None:
    # Near the honest agent's session, not it: a mutation that keeps the request valid would
    # deliver a result, and builds change then as they should.
    body = mutate(fuzz.result_request(fuzz.near_session).to_text(), edit_list)
    expected_error = parse_error(ResultRequest, body)
    before = state(fuzz)
    reply = post(fuzz, b"/?build-result", body)
    check_reply(fuzz, reply, before, b"/?build-result", body)
    if len(body) > 15 * 1024 * 1024:
        assert reply.status == 413
    elif expected_error is not None:
        assert (reply.status, reply.body.decode()) == (400, as_reply(expected_error))
        assert expected_error.startswith("result_request_manifest:")
    else:
        check_valid_result(fuzz, reply, before, body)


@FUZZ
@given(body=st.one_of(st.binary(max_size=2_000),
                      st.builds(lambda raw: b": 1\nsession: " + raw, st.binary(max_size=500)),
                      st.text(max_size=500).map(lambda t: t.encode())))
def test_random_result_bodies(fuzz: FuzzFarm, body: bytes) -> None:
    before = state(fuzz)
    reply = post(fuzz, b"/?build-result", body)
    check_reply(fuzz, reply, before, b"/?build-result", body)
    expected_error = parse_error(ResultRequest, body)
    if expected_error is not None:
        assert (reply.status, reply.body.decode()) == (400, as_reply(expected_error))
    else:
        check_valid_result(fuzz, reply, before, body)


@FUZZ
@given(query=query_for(b"build-result"), tenant=st.one_of(st.just(b""), st.text(max_size=8).map(_encoded)))
def test_result_queries(fuzz: FuzzFarm, query: bytes, tenant: bytes) -> None:
    # Not the leased session: a query that happens to be valid must not deliver it.
    body = fuzz.result_request(fuzz.near_session).to_text().encode()
    target = (b"/@" + tenant if tenant else b"/") + b"?" + query
    before = state(fuzz)
    reply = post(fuzz, target, body)
    check_reply(fuzz, reply, before, target, body)
    assert reply.status in (200, 400, 404, 405), reply
    if reply.status == 200:
        pairs = parse_qsl(query.decode("ascii"), keep_blank_values=True)
        assert pairs == [("build-result", "")] and not tenant, f"{query!r} with tenant {tenant!r} was accepted"
        check_valid_result(fuzz, reply, before, body)


# -- (d): results with a valid manifest and any session -------------------------------------------------


def check_valid_result(fuzz: FuzzFarm, reply: Reply, before: State, body: bytes) -> None:
    """A well-formed result that is not the honest agent's: 400, or a 200 that only counts
    one dropped result; never a build state change."""
    request = ResultRequest.from_text(body)
    assert request.session != fuzz.leased_session
    assert reply.status in (200, 400), reply
    builds, counters = state(fuzz)
    assert builds == before[0]
    if reply.status == 400:
        assert counters == before[1]
        text = reason(reply)
        assert text.startswith("invalid session: ") or text.startswith("result_request_manifest:"), text
        return
    assert reply.body == b""
    try:
        session = parse_session(request.session)
    except SessionError:
        pytest.fail(f"a session that does not parse was accepted: {request.session!r}")
    assert session.key.tenant == ""
    assert (request.result.name, request.result.version) == (session.key.package_name,
                                                             session.key.package_version)
    dropped = "results_dropped_not_handed_out"
    assert counters == {**before[1], dropped: before[1].get(dropped, 0) + 1}


# What the manifest writer can write (it refuses controls, noncharacters and such).
_WRITABLE = st.text(max_size=120).map(sanitize_value)
_COMPONENT = st.text(max_size=10).map(lambda text: sanitize_value(text).replace("/", "|"))


@st.composite
def session(draw: st.DrawFn, leased: str) -> str:
    parts = leased.split("/")
    how = draw(st.sampled_from(["text", "parts", "near", "stamp"]))
    if how == "text":
        return draw(_WRITABLE)
    if how == "parts":
        count = draw(st.sampled_from([1, 8, 9, 9, 9, 10]))
        return "/".join(draw(st.lists(_COMPONENT, min_size=count, max_size=count)))
    if how == "near":  # the leased session with one part changed
        i = draw(st.integers(0, len(parts) - 1))
        parts[i] = draw(_COMPONENT)
        return "/".join(parts)
    stamp = draw(st.one_of(
        st.integers(0, 2**70).map(str),
        st.sampled_from(["", "-1", "+1", " 1", "1 ", "0x10", "1e9", "１２", "٣", "²", "9" * 4301, "0" * 5000]),
    ))
    return "/".join([*parts[:-1], stamp])


@FUZZ
@given(data=st.data(), matching_package=st.booleans(), status=st.sampled_from(list(Status)),
       challenge=st.one_of(st.none(), st.binary(max_size=300)))
def test_results_with_any_session_build_nothing(fuzz: FuzzFarm, data: st.DataObject, matching_package: bool,
                                                status: Status, challenge: bytes | None) -> None:
    text = data.draw(session(fuzz.leased_session))
    assume(text != fuzz.leased_session and text.strip())
    request = fuzz.result_request(text)
    request = replace(request, challenge=challenge,
                      result=replace(request.result, status=status, worker_checksum=None))
    if matching_package:
        try:  # the result names the session's own package, so that only the session decides
            key = parse_session(text).key
            request.result = replace(request.result, name=key.package_name or "x",
                                     version=key.package_version or "1")
        except (SessionError, ValueError):
            pass
    body = request.to_text().encode()
    assume(parse_error(ResultRequest, body) is None)  # e.g. a session of only blanks
    before = state(fuzz)
    reply = post(fuzz, b"/?build-result", body)
    check_reply(fuzz, reply, before, b"/?build-result", body)
    check_valid_result(fuzz, reply, before, body)


# -- bugs the properties found, fixed: regression tests ------------------------------------------------


def _result_with_stamp(fuzz: FuzzFarm, stamp: str) -> bytes:
    return fuzz.result_request("/".join([*fuzz.leased_session.split("/")[:-1], stamp])).to_text().encode()


@pytest.mark.parametrize("stamp", ["²", "٣", "9" * (INT_MAX_STR_DIGITS + 1)], ids=["superscript", "arabic",
                                                                                    "4301-digits"])
def test_a_timestamp_int_cannot_read_is_a_400(fuzz: FuzzFarm, stamp: str) -> None:
    before = state(fuzz)
    reply = post(fuzz, b"/?build-result", _result_with_stamp(fuzz, stamp))
    assert (reply.status, reply.content_type) == (400, TEXT), reply
    assert reason(reply).startswith("invalid session: timestamp")
    assert state(fuzz) == before


@pytest.mark.parametrize("query", [b"build-task&interactive=a%0Ab", b"build-task&a%0Ab=1", b"build-task=x%0Dy",
                                   b"build-result&a%0Ab"])
def test_a_reason_echoes_a_line_break_of_a_url_parameter(fuzz: FuzzFarm, query: bytes) -> None:
    reply = post(fuzz, b"/?" + query, fuzz.task_request().to_text().encode())
    assert reply.status == 400
    assert "\n" not in reason(reply) and "\r" not in reason(reply), reply


MULTI_LINE_VALUES = {
    "name": b": 1\nsession: /libx/1/t/c/p/n/v/1\n:\nname:\n\\\nlib\nx\n\\\nversion: 1\nstatus: success\n",
    "challenge": b": 1\nsession: /a/1/t/c/p/n/v/1\nchallenge:\n\\\nab\ncd!\n\\\n:\nname: a\nversion: 1\n"
                 b"status: success\n",
    "status": b": 1\nsession: /a/1/t/c/p/n/v/1\n:\nname: a\nversion: 1\nstatus:\n\\\nsuc\ncess\n\\\n",
    "format-version": b":\n\\\n1\n2\n\\\nsession: /a/1/t/c/p/n/v/1\n",
}


@pytest.mark.parametrize("field", list(MULTI_LINE_VALUES))
def test_a_reason_echoes_a_line_break_of_a_manifest_value(fuzz: FuzzFarm, field: str) -> None:
    before = state(fuzz)
    reply = post(fuzz, b"/?build-result", MULTI_LINE_VALUES[field])
    assert reply.status == 400 and state(fuzz) == before
    assert "\n" not in reason(reply), reply


def test_the_mutator_keeps_a_request_valid_without_edits(fuzz: FuzzFarm) -> None:
    """The seeds themselves are valid requests, so the mutations start from the accepted."""
    assert parse_error(TaskRequest, mutate(fuzz.task_request().to_text(), [])) is None
    assert parse_error(ResultRequest, mutate(fuzz.result_request().to_text(), [])) is None
