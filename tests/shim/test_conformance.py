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
