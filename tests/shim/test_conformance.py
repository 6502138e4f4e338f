"""brep's agent interface, driven with raw HTTP as a bbot agent would (§3.3, §3.5, §3.9).

Every reply's status, content type and body are checked; every rejected
request is checked to have changed nothing in the store.
"""

from __future__ import annotations

from bbot.brep import keys
from bbot.controller.lease import BuildState
from bbot.manifest import OperationResult, Result, ResultRequest, Status, TaskResponse
from tests.shim.conftest import ShimFarm, http, wait_for

NO_TASK = b": 1\nsession:\n"


def take_task(shim: ShimFarm, **kwargs: object) -> TaskResponse:
    reply = shim.poll(shim.task_request(**kwargs))  # type: ignore[arg-type]
    assert reply.status == 200, reply.text
    assert reply.content_type == "text/manifest;charset=utf-8"
    response = TaskResponse.from_text(reply.body)
    assert response.has_task, reply.text
    return response


def result_for(response: TaskResponse, status: Status = Status.SUCCESS,
               challenge: bytes | None = None) -> ResultRequest:
    assert response.task is not None
    return ResultRequest(
        session=response.session, challenge=challenge,
        result=Result(response.task.name, response.task.version, status,
                      [OperationResult("configure", Status.SUCCESS, "configured\n"),
                       OperationResult("update", status, "built remotely\n")]))


def snapshot(shim: ShimFarm) -> list[tuple[object, ...]]:
    return [(b.state, b.status, b.session, b.attempt, b.agent, b.lease_deadline) for b in shim.builds()]


def test_no_task_for_a_machine_no_configuration_wants(shim: ShimFarm) -> None:
    reply = shim.poll(shim.task_request(machine="windows_11-msvc_17"))
    assert (reply.status, reply.content_type, reply.body) == (200, "text/manifest;charset=utf-8", NO_TASK)
    assert [b.state for b in shim.builds()] == [BuildState.QUEUED]


def test_a_task_then_its_result(shim: ShimFarm) -> None:
    response = take_task(shim)
    build = shim.builds()[0]
    assert response.session == build.session
    assert response.challenge is None  # no agent keys configured
    assert response.result_url == f"{shim.url}?build-result"
    assert response.task is not None
    assert (response.task.name, response.task.machine) == (build.package_name, shim.machine)
    assert build.state is BuildState.LEASED and build.agent == "remote-1"

    reply = http(response.result_url, result_for(response).to_text().encode())
    assert (reply.status, reply.body) == (200, b"")
    done = wait_for(lambda: (b := shim.builds()[0]).state is BuildState.BUILT and b, what="the result")
    assert done.status is Status.SUCCESS  # type: ignore[union-attr]
    assert done.machine_name == shim.machine and done.machine_summary == "a remote machine"  # type: ignore[union-attr]
    assert [op.log for op in shim.store.operations(done.id)] == ["configured\n", "built remotely\n"]  # type: ignore[union-attr]


def test_a_result_for_an_expired_session_changes_nothing(shim: ShimFarm) -> None:
    response = take_task(shim)
    build = shim.builds()[0]
    # The lease runs out before the result comes: the build is queued again.
    assert shim.store.expire(build.id, response.session, "lease ran out (test)")
    counters = shim.store.counters()
    reply = http(response.result_url, result_for(response).to_text().encode())
    assert (reply.status, reply.body) == (200, b"")
    wait_for(lambda: shim.store.counters().get("results_dropped_stale", 0)
             == counters.get("results_dropped_stale", 0) + 1, what="the stale result to be dropped")
    # (The scheduler may have issued the build again meanwhile: under a new session.)
    after = shim.builds()[0]
    assert after.state is not BuildState.BUILT and after.status is None
    assert after.session != response.session
    assert shim.store.operations(build.id) == []


def test_a_duplicate_result_is_dropped(shim: ShimFarm) -> None:
    response = take_task(shim)
    body = result_for(response).to_text().encode()
    assert http(response.result_url, body).status == 200
    wait_for(lambda: shim.builds()[0].state is BuildState.BUILT, what="the first result")
    before = snapshot(shim)
    reply = http(response.result_url, result_for(response, Status.ERROR).to_text().encode())
    assert (reply.status, reply.body) == (200, b"")
    wait_for(lambda: shim.store.counters().get("results_dropped_duplicate") == 1, what="the duplicate")
    assert snapshot(shim) == before
    assert shim.builds()[0].status is Status.SUCCESS


def test_a_result_for_a_session_never_handed_out_changes_nothing(shim: ShimFarm) -> None:
    response = take_task(shim)
    forged = response.session.rsplit("/", 1)[0] + "/1"
    before = snapshot(shim)
    request = result_for(response)
    request.session = forged
    reply = http(response.result_url, request.to_text().encode())
    assert (reply.status, reply.body) == (200, b"")
    assert shim.store.counters().get("results_dropped_not_handed_out") == 1
    assert snapshot(shim) == before


def test_keys_signed_result_is_accepted(keyed_shim: ShimFarm, agent_key: keys.rsa.RSAPrivateKey) -> None:
    response = take_task(keyed_shim, fingerprint=keys.fingerprint(agent_key))
    assert response.challenge is not None and len(response.challenge) == 64
    signature = keys.sign_challenge(agent_key, response.challenge)
    reply = http(response.result_url, result_for(response, challenge=signature).to_text().encode())
    assert (reply.status, reply.body) == (200, b"")
    wait_for(lambda: keyed_shim.builds()[0].state is BuildState.BUILT, what="the signed result")


def test_a_forged_challenge_is_dropped(keyed_shim: ShimFarm, agent_key: keys.rsa.RSAPrivateKey) -> None:
    response = take_task(keyed_shim, fingerprint=keys.fingerprint(agent_key))
    assert response.challenge is not None
    before = snapshot(keyed_shim)
    other = keys.generate_private_key(2048)
    forgeries = [
        keys.sign_challenge(other, response.challenge),  # another key
        keys.sign_challenge(agent_key, "0" * 64),  # another challenge
        b"\x00" * 256,  # garbage of the right length
        None,  # no signature at all
    ]
    for number, forged in enumerate(forgeries, 1):
        reply = http(response.result_url, result_for(response, challenge=forged).to_text().encode())
        assert (reply.status, reply.body) == (200, b"")  # brep tells a forger nothing
        assert keyed_shim.store.counters().get("results_dropped_auth") == number
    assert snapshot(keyed_shim) == before
    assert keyed_shim.builds()[0].state is BuildState.LEASED


def test_an_unexpected_challenge_is_dropped(shim: ShimFarm) -> None:
    response = take_task(shim)
    before = snapshot(shim)
    reply = http(response.result_url, result_for(response, challenge=b"x" * 256).to_text().encode())
    assert (reply.status, reply.body) == (200, b"")
    assert shim.store.counters().get("results_dropped_auth") == 1
    assert snapshot(shim) == before


def test_a_missing_fingerprint_is_401(keyed_shim: ShimFarm) -> None:
    before = snapshot(keyed_shim)
    reply = keyed_shim.poll(keyed_shim.task_request())
    assert (reply.status, reply.content_type, reply.text) == (401, "text/plain;charset=utf-8", "unauthorized\n")
    assert snapshot(keyed_shim) == before


def test_an_unknown_fingerprint_gets_no_task(keyed_shim: ShimFarm) -> None:
    stranger = keys.fingerprint(keys.generate_private_key(1024))
    reply = keyed_shim.poll(keyed_shim.task_request(fingerprint=stranger))
    assert (reply.status, reply.body) == (200, NO_TASK)
    assert keyed_shim.builds()[0].state is BuildState.QUEUED


def test_malformed_manifests_are_400_with_the_parsers_text(shim: ShimFarm) -> None:
    before = snapshot(shim)
    cases = [
        ("build-task", b"junk", "task_request_manifest:1:5: error: ':' expected after name"),
        ("build-task", b"", "task_request_manifest:1:1: error: start of manifest expected"),
        ("build-task", b": 1\nagent: a\ntoolchain-name: x\ntoolchain-version: 1\n",
         "task_request_manifest:5:1: error: at least one machine header manifest expected"),
        ("build-task", b"\xff\xfe",
         "task_request_manifest:1:1: error: invalid manifest: invalid UTF-8 sequence first byte (0xFF)"),
        ("build-result", b": 1\nsession: x\n", "result_request_manifest:3:1: error: result manifest expected"),
    ]
    for handler, body, text in cases:
        reply = http(f"{shim.url}?{handler}", body)
        assert (reply.status, reply.content_type, reply.text) == (400, "text/plain;charset=utf-8", text + "\n")
    assert snapshot(shim) == before


def test_bad_sessions_are_400(shim: ShimFarm) -> None:
    response = take_task(shim)
    before = snapshot(shim)
    request = result_for(response)
    for session, text in [
        ("nonsense", "invalid session: expected 9 '/'-separated parts, got 1"),
        (response.session + "x", "invalid session: timestamp: trailing junk"),
    ]:
        request.session = session
        reply = http(response.result_url, request.to_text().encode())
        assert (reply.status, reply.text) == (400, text + "\n")
    # The session's tenant must be the URL's.
    request.session = response.session
    reply = http(f"{shim.url}@other?build-result", request.to_text().encode())
    assert (reply.status, reply.text) == (400, "invalid session: tenant mismatch\n")
    # The result must be for the session's package.
    request.result.name = "libother"
    reply = http(response.result_url, request.to_text().encode())
    assert reply.status == 400 and reply.text.startswith("invalid session: the result is for libother/")
    assert snapshot(shim) == before


def test_oversized_bodies_are_413(shim: ShimFarm) -> None:
    before = snapshot(shim)
    big_task = b"#" * (100 * 1024 + 1)
    reply = http(f"{shim.url}?build-task", big_task)
    assert (reply.status, reply.text) == (413, "payload too large\n")
    # Exactly at the limit is read (and here fails to parse: a comment line only).
    assert http(f"{shim.url}?build-task", b"#" * (100 * 1024)).status == 400
    reply = http(f"{shim.url}?build-result", b"#" * (15 * 1024 * 1024 + 1))
    assert (reply.status, reply.text) == (413, "payload too large\n")
    # A chunked body has no length up front: still cut at the limit.
    reply = http(f"{shim.url}?build-task", iter([b"#" * 60_000, b"#" * 60_000]),  # type: ignore[arg-type]
                 headers={"Transfer-Encoding": "chunked"}, chunked=True)
    assert (reply.status, reply.text) == (413, "payload too large\n")
    assert snapshot(shim) == before


def test_url_parameters(shim: ShimFarm) -> None:
    before = snapshot(shim)
    request = shim.task_request().to_text().encode()
    assert (shim.poll(request, "build-task&x=1").status, shim.poll(request, "build-task&x=1").text) == (
        400, "unknown parameter 'x'\n")
    reply = shim.poll(request, "build-task&interactive=maybe")
    assert reply.status == 400 and "interactive" in reply.text
    assert http(f"{shim.url}?build-result&session=x", b"").text == "unknown parameter 'session'\n"
    # Only interactive builds, of which bbot has none; only tenants of a third-party service.
    assert shim.poll(request, "build-task&interactive=true").body == NO_TASK
    assert shim.poll(request, "build-task&t=github").body == NO_TASK
    # Another repository than the one queued: nothing for this agent, and the task stays.
    assert shim.poll(request, "build-task&r=https%3A%2F%2Fexample.org%2Fother.git").body == NO_TASK
    assert snapshot(shim)[0][0] in (BuildState.QUEUED, BuildState.LEASED)
    assert shim.builds()[0].agent is None
    # The same request with known parameters gets the task.
    repository = shim.builds()[0].repository_url
    from urllib.parse import quote
    reply = shim.poll(request, f"build-task&interactive=both&t=&r={quote(repository, safe='')}")
    assert TaskResponse.from_text(reply.body).has_task
    assert before[0][0] is BuildState.QUEUED


def test_a_get_has_no_body_and_fails_to_parse(shim: ShimFarm) -> None:
    reply = http(f"{shim.url}?build-task", None, method="GET")
    assert (reply.status, reply.text) == (400, "task_request_manifest:1:1: error: start of manifest expected\n")


def test_other_handlers_and_paths(shim: ShimFarm) -> None:
    assert http(f"{shim.url}?nonsense", b"x").status == 404
    assert http(f"{shim.url}@t/deeper?build-task", b"x").status in (404, 405)


def test_a_number_too_long_for_64_bits_is_a_400_not_a_500(shim: ShimFarm) -> None:
    # Found by the fuzz tests: int() refuses over 4300 digits with a ValueError of its own.
    request = shim.task_request().to_text().replace("agent: remote-1\n", "agent: remote-1\nauxiliary-ram: "
                                                    + "9" * 70_000 + "\n")
    reply = shim.poll(request.encode())
    assert reply.status == 400 and reply.text.startswith("task_request_manifest:3:16: error: invalid task request auxiliary-ram value ")
    reply = shim.poll(request.replace("9" * 70_000, "18446744073709551616").encode())  # 2**64
    assert reply.status == 400
    reply = shim.poll(request.replace("9" * 70_000, "18446744073709551615").encode())  # 2**64 - 1
    assert reply.status == 200


def test_a_real_brep_session_with_its_tenant(shim: ShimFarm) -> None:
    """The session of brep's own upload test (a tenant, a version with '+'), posted to the
    tenant's result URL: it parses and matches, so it is judged on being handed out (it was not)."""
    from bbot.manifest import parse_manifest
    from tests.conftest import ROOT

    upload = ROOT / "tests/manifest/conformance/brep/tests/upload/545f1f78-63ea-4acf-bcb8-37b2513a78c8"
    manifest = parse_manifest((upload / "request.manifest").read_text(), "upload")
    session = next(p.value for p in manifest.pairs if p.name == "session")
    tenant = session.split("/", 1)[0]
    request = ResultRequest(session=session, result=Result("libhello", "1.1.0+10", Status.SUCCESS))
    reply = http(f"{shim.url}@{tenant}?build-result", request.to_text().encode())
    assert (reply.status, reply.body) == (200, b"")
    assert shim.store.counters().get("results_dropped_not_handed_out") == 1
    # The same at the root is another tenant's session.
    reply = http(f"{shim.url}?build-result", request.to_text().encode())
    assert (reply.status, reply.text) == (400, "invalid session: tenant mismatch\n")
