"""The typed bbot manifests (bbot-protocol.md §2): round trips, wire shapes, and every
validation error with its place."""

from __future__ import annotations

import pytest

from bbot.manifest import (
    Machine,
    MachineHeader,
    ManifestError,
    OperationResult,
    Result,
    ResultRequest,
    Status,
    Task,
    TaskRequest,
    TaskResponse,
    parse_stream,
)
from bbot.manifest import fields as F

BUILD = MachineHeader(
    id="5d1c0bb5b8f1b0d8a2e7c4f90c3a8e1f2b6d7a9c0e1f2a3b4c5d6e7f8091a2b3",
    name="linux_debian_12-gcc_13",
    summary="Debian 12, GCC 13",
)
AUXILIARY = MachineHeader(
    id="0a1b2c3d",
    name="x86_64-linux_debian_12-postgresql_16",
    summary="Debian 12, PostgreSQL 16",
    role="auxiliary",
    ram_minimum=2097152,
    ram_maximum=4194304,
)
FULL_TASK = Task(
    name="libhello",
    version="1.2.3+1",
    repository_url="https://pkg.example.org/1/alpha",
    machine="linux_debian_12-gcc_13",
    target="x86_64-linux-gnu",
    repository_type="pkg",
    trust=["D5:BB:F9:4A"],
    requires=["c++14", "? ; Only if something."],
    tests=["libhello-tests == 1.2.3"],
    examples=["libhello-examples"],
    benchmarks=["libhello-bench ^1.0.0"],
    dependency_checksum="d" * 64,
    auxiliary_machines=["x86_64-linux_debian_12-postgresql_16", "x86_64-linux_debian_12-redis"],
    auxiliary_machine_environments=["pgsql", ""],
    environment="default",
    auxiliary_environment="PGSQL_DATABASE_HOST=192.168.0.1\nPGSQL_DATABASE_PORT=5432",
    target_config="config.cc.coptions='-O2 -g' \"config.cxx=g++ -m64\"",
    package_config="config.libhello.extra=true",
    host=False,
    warning_regex=["^warning: ", "^.+: warning: "],
    interactive="error",
    worker_checksum="w" * 64,
)
RESULT = Result(
    name="libhello",
    version="1.2.3+1",
    status=Status.WARNING,
    results=[
        OperationResult("configure", Status.SUCCESS, "configured\n"),
        OperationResult("update", Status.WARNING, "warning: unused 'x'\n  detail \\\n"),
        OperationResult("test", Status.SUCCESS),
    ],
    worker_checksum="w" * 64,
    dependency_checksum="d" * 64,
)


def error_of(call: object, *args: object, **kwargs: object) -> ManifestError:
    with pytest.raises(ManifestError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value


# -- machine header and machine ------------------------------------------------------


def test_machine_header_round_trip_and_wire() -> None:
    assert BUILD.to_text() == (
        f": 1\nid: {BUILD.id}\nname: linux_debian_12-gcc_13\nsummary: Debian 12, GCC 13\n"
    )
    assert AUXILIARY.to_pairs()[-3:] == [
        ("role", "auxiliary"),
        ("ram-minimum", "2097152"),
        ("ram-maximum", "4194304"),
    ]
    for header in (BUILD, AUXILIARY):
        assert MachineHeader.from_text(header.to_text()) == header
        assert MachineHeader.from_text(header.to_text().encode()) == header
    assert BUILD.effective_role == "build"
    assert AUXILIARY.effective_role == "auxiliary"


@pytest.mark.parametrize(
    ("text", "position", "description"),
    [
        (": 1\nid: x\nname: y\n", (4, 1), "no machine header summary specified"),
        (": 1\nname: y\nsummary: s\n", (4, 1), "no machine header id specified"),
        (": 1\nid: x\nid: y\n", (3, 1), "machine header id redefinition"),
        (": 1\nid: x\nfoo: y\n", (3, 1), "unknown name 'foo' in machine header manifest"),
        (
            ": 1\nid: x\nname: y\nsummary: s\nram-minimum: 2G\n",
            (5, 14),
            "invalid machine header ram-minimum value '2G': expected an unsigned integer",
        ),
        (
            ": 1\nid: x\nname: y\nsummary: s\nram-maximum: -1\n",
            (5, 14),
            "invalid machine header ram-maximum value '-1': expected an unsigned integer",
        ),
        (
            ": 1\nid: x\nname: y\nsummary: s\nrole: worker\n",
            (5, 7),
            "invalid machine header role value 'worker': expected one of build, auxiliary",
        ),
        (": 1\nid:\nname: y\nsummary: s\n", (2, 4), "empty machine header id"),
        ("", (1, 1), "start of manifest expected"),
        (": 1\nid: x\nname: y\nsummary: s\n:\n", (5, 1), "single manifest expected"),
    ],
)
def test_machine_header_errors(text: str, position: tuple[int, int], description: str) -> None:
    error = error_of(MachineHeader.from_text, text)
    assert (error.stream, error.line, error.column) == ("machine_header_manifest", *position)
    assert error.description == description


def test_unknown_names_ignored_on_request() -> None:
    text = ": 1\nid: x\nfuture-field: y\nname: n\nsummary: s\n"
    header = MachineHeader.from_text(text, ignore_unknown=True)
    assert header == MachineHeader("x", "n", "s")
    assert error_of(MachineHeader.from_text, text, "custom").stream == "custom"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"id": "", "name": "n", "summary": "s"}, "no machine header id specified"),
        ({"id": "i", "name": "n", "summary": "s", "role": "x"}, "role value 'x'"),
        ({"id": "i", "name": "n", "summary": "s", "ram_minimum": -1}, "unsigned integer"),
    ],
)
def test_machine_header_construction_checks(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MachineHeader(**arguments)  # type: ignore[arg-type]


def test_machine_round_trip_and_header() -> None:
    machine = Machine(
        id="m1",
        name="linux_debian_12-gcc_13",
        summary="Debian 12, GCC 13",
        type="kvm",
        role="build",
        ram_minimum=1024,
        image="/var/lib/bbot/machines/debian-12.qcow2",
        memory=4096,
        cpus=4,
        options="-cpu host",
        mac="de:ad:be:ef:00:01",
    )
    text = machine.to_text()
    assert [name for name, _ in machine.to_pairs()] == [
        "id",
        "name",
        "summary",
        "role",
        "ram-minimum",
        "type",
        "image",
        "memory",
        "cpus",
        "options",
        "mac",
    ]
    assert Machine.from_text(text) == machine
    assert machine.header() == MachineHeader(
        "m1", "linux_debian_12-gcc_13", "Debian 12, GCC 13", role="build", ram_minimum=1024
    )
    minimal = Machine("m2", "n", "s", "process")
    assert Machine.from_text(minimal.to_text()) == minimal


@pytest.mark.parametrize(
    ("extra", "position", "description"),
    [
        ("", (5, 1), "no machine type specified"),
        (
            "type: vmware\n",
            (5, 7),
            "invalid machine type value 'vmware': expected one of process, kvm, container, nspawn",
        ),
        (
            "type: kvm\nmemory: 0\n",
            (6, 9),
            "invalid machine memory value '0': expected a positive integer",
        ),
        (
            "type: kvm\ncpus: two\n",
            (6, 7),
            "invalid machine cpus value 'two': expected a positive integer",
        ),
        ("type: kvm\nmac: \n", (6, 6), "empty machine mac"),
    ],
)
def test_machine_errors(extra: str, position: tuple[int, int], description: str) -> None:
    error = error_of(Machine.from_text, ": 1\nid: i\nname: n\nsummary: s\n" + extra)
    assert (error.stream, error.line, error.column) == ("machine_manifest", *position)
    assert error.description == description


# -- task request --------------------------------------------------------------------


def test_task_request_round_trip_and_wire() -> None:
    request = TaskRequest(
        agent="example-agent",
        toolchain_name="dev",
        toolchain_version="0.17.0",
        machines=[BUILD, AUXILIARY],
        interactive_mode="both",
        interactive_login="ssh bbot@host -p 2222",
        fingerprint="f" * 64,
        auxiliary_ram=8388608,
    )
    text = request.to_text()
    manifests = parse_stream(text)
    assert len(manifests) == 3
    assert manifests[0].items()[:3] == [
        ("agent", "example-agent"),
        ("toolchain-name", "dev"),
        ("toolchain-version", "0.17.0"),
    ]
    assert manifests[2].items() == AUXILIARY.to_pairs()
    assert not text.endswith(":\n")
    assert TaskRequest.from_text(text) == request
    assert request.to_pairs() == manifests[0].items()


def test_task_request_protocol_example_c() -> None:
    text = (
        ": 1\nagent: example-agent\ntoolchain-name: dev\ntoolchain-version: 0.17.0\n"
        ":\nid: 5d1c\nname: linux_debian_12-gcc_13\nsummary: Debian 12, GCC 13\n"
        ":\nid: 0a1b2c3d\nname: x86_64-linux_debian_12-postgresql_16\n"
        "summary: Debian 12, PostgreSQL 16\nrole: auxiliary\nram-minimum: 2097152\n"
    )
    request = TaskRequest.from_text(text)
    assert request.effective_interactive_mode == "false"
    assert [machine.effective_role for machine in request.machines] == ["build", "auxiliary"]
    assert request.machines[1].ram_minimum == 2097152
    assert request.to_text() == text


HEADER = ": 1\nagent: a\ntoolchain-name: dev\ntoolchain-version: 0.17.0\n"
MACHINE = ":\nid: i\nname: n\nsummary: s\n"


@pytest.mark.parametrize(
    ("text", "position", "description"),
    [
        (HEADER, (5, 1), "at least one machine header manifest expected"),
        (HEADER + ":\nid: i\nname: n\n", (8, 1), "no machine header summary specified"),
        (
            ": 1\nagent: a\ntoolchain-name: dev\n" + MACHINE,
            (4, 1),
            "no task request toolchain-version specified",
        ),
        (HEADER + "agent: b\n" + MACHINE, (5, 1), "task request agent redefinition"),
        (
            HEADER + "interactive-mode: maybe\n" + MACHINE,
            (5, 19),
            "invalid task request interactive-mode value 'maybe': expected one of false, true, both",
        ),
        (
            HEADER + "interactive-mode: true\n" + MACHINE,
            (6, 1),
            "no task request interactive-login specified",
        ),
        (
            HEADER + "auxiliary-ram: lots\n" + MACHINE,
            (5, 16),
            "invalid task request auxiliary-ram value 'lots': expected an unsigned integer",
        ),
        (HEADER + "color: blue\n" + MACHINE, (5, 1), "unknown name 'color' in task request manifest"),
        (HEADER + MACHINE + "gpu: yes\n", (9, 1), "unknown name 'gpu' in machine header manifest"),
        ("", (1, 1), "start of manifest expected"),
        ("# nothing\n", (2, 1), "start of manifest expected"),
    ],
)
def test_task_request_errors(text: str, position: tuple[int, int], description: str) -> None:
    error = error_of(TaskRequest.from_text, text)
    assert (error.stream, error.line, error.column) == ("task_request_manifest", *position)
    assert error.description == description


def test_task_request_ignore_unknown_reaches_machines() -> None:
    request = TaskRequest.from_text(HEADER + "color: blue\n" + MACHINE + "gpu: yes\n", ignore_unknown=True)
    assert request.machines == [MachineHeader("i", "n", "s")]


def test_task_request_construction_checks() -> None:
    with pytest.raises(ValueError, match="at least one machine header manifest expected"):
        TaskRequest("a", "dev", "0.17.0", [])
    with pytest.raises(ValueError, match="interactive-login"):
        TaskRequest("a", "dev", "0.17.0", [BUILD], interactive_mode="true")
    with pytest.raises(ValueError, match="no task request agent specified"):
        TaskRequest("", "dev", "0.17.0", [BUILD])


# -- task ----------------------------------------------------------------------------


def test_task_round_trip_and_field_order() -> None:
    text = FULL_TASK.to_text()
    assert Task.from_text(text) == FULL_TASK
    assert [name for name, _ in FULL_TASK.to_pairs()] == [
        "name",
        "version",
        "repository-url",
        "repository-type",
        "trust",
        "requires",
        "requires",
        "tests",
        "examples",
        "benchmarks",
        "dependency-checksum",
        "machine",
        "auxiliary-machine-pgsql",
        "auxiliary-machine",
        "target",
        "environment",
        "auxiliary-environment",
        "target-config",
        "package-config",
        "host",
        "warning-regex",
        "warning-regex",
        "interactive",
        "worker-checksum",
    ]
    # A trailing blank in a value forces the multi-line form, which keeps it.
    assert "warning-regex:\n\\\n^warning: \n\\\n" in text


def test_task_helpers() -> None:
    assert FULL_TASK.target_config_args() == ["config.cc.coptions=-O2 -g", "config.cxx=g++ -m64"]
    assert FULL_TASK.package_config_args() == ["config.libhello.extra=true"]
    assert FULL_TASK.auxiliary_machine_pairs() == [
        ("x86_64-linux_debian_12-postgresql_16", "pgsql"),
        ("x86_64-linux_debian_12-redis", None),
    ]
    minimal = Task("libfoo", "1.0.0", "https://r/1", "m", "x86_64-linux-gnu")
    assert minimal.target_config_args() == []
    assert minimal.to_text() == (
        ": 1\nname: libfoo\nversion: 1.0.0\nrepository-url: https://r/1\nmachine: m\n"
        "target: x86_64-linux-gnu\n"
    )
    assert Task.from_text(minimal.to_text()) == minimal
    # Environments that are all empty mean none.
    plain = Task("a", "1", "u", "m", "t", auxiliary_machines=["x"], auxiliary_machine_environments=[""])
    assert plain.auxiliary_machine_environments == []
    assert Task.from_text(plain.to_text()) == plain


TASK_HEAD = ": 1\nname: libfoo\nversion: 1.0.0\nrepository-url: https://r/1\n"


@pytest.mark.parametrize(
    ("text", "position", "description"),
    [
        (TASK_HEAD + "target: t\n", (6, 1), "no task machine specified"),
        (TASK_HEAD + "machine: m\n", (6, 1), "no task target specified"),
        (
            TASK_HEAD + "machine: m\ntarget: t\nhost: yes\n",
            (7, 7),
            "invalid task host value 'yes': expected true or false",
        ),
        (TASK_HEAD + "machine: m\nmachine: n\ntarget: t\n", (6, 1), "task machine redefinition"),
        (
            TASK_HEAD + "machine: m\ntarget: t\nfrobnicate: 1\n",
            (7, 1),
            "unknown name 'frobnicate' in task manifest",
        ),
        (
            TASK_HEAD + "machine: m\ntarget: t\nauxiliary-machine-:x\n",
            (7, 1),
            "unknown name 'auxiliary-machine-' in task manifest",
        ),
        (TASK_HEAD + "machine: m\ntarget: t\nauxiliary-machine:\n", (7, 19), "empty task auxiliary-machine"),
    ],
)
def test_task_errors(text: str, position: tuple[int, int], description: str) -> None:
    error = error_of(Task.from_text, text)
    assert (error.stream, error.line, error.column) == ("task_manifest", *position)
    assert error.description == description


def test_task_construction_checks() -> None:
    with pytest.raises(ValueError, match="no task target specified"):
        Task("a", "1", "u", "m", "")
    with pytest.raises(ValueError, match="2 auxiliary machine environments given for 1"):
        Task("a", "1", "u", "m", "t", auxiliary_machines=["x"], auxiliary_machine_environments=["a", "b"])
    with pytest.raises(ValueError, match="environment name"):
        Task("a", "1", "u", "m", "t", auxiliary_machines=["x"], auxiliary_machine_environments=["a b"])


# -- task response -------------------------------------------------------------------


def test_no_task_response_is_exact() -> None:
    assert TaskResponse("").to_text() == ": 1\nsession:\n"
    response = TaskResponse.from_text(": 1\nsession:\n")
    assert response == TaskResponse("")
    assert not response.has_task
    assert response.task is None


def test_task_response_round_trip_and_wire() -> None:
    response = TaskResponse(
        session="4d4c8b36-56c5-42e0-91d1-58bfd1228002/libhello/1.2.3+1/x86_64-linux-gnu/"
        "linux_debian_12-gcc_13/default/dev/0.17.0/1683122318585120886",
        challenge="c" * 64,
        result_url="https://ci.example.org/?build-result",
        upload_urls={"bindist": "https://ci.example.org/?upload=bindist"},
        agent_checksum="a" * 64,
        task=FULL_TASK,
    )
    text = response.to_text()
    manifests = parse_stream(text)
    assert [name for name, _ in manifests[0].items()] == [
        "session",
        "challenge",
        "result-url",
        "bindist-upload-url",
        "agent-checksum",
    ]
    assert manifests[1].items() == FULL_TASK.to_pairs()
    assert TaskResponse.from_text(text) == response
    assert TaskResponse.from_text(text.encode()) == response
    assert response.has_task


RESPONSE_HEAD = ": 1\nsession: s1\nresult-url: https://h/?build-result\n"
TASK_BODY = ":\nname: libfoo\nversion: 1\nrepository-url: u\nmachine: m\ntarget: t\n"


@pytest.mark.parametrize(
    ("text", "position", "description"),
    [
        (RESPONSE_HEAD, (4, 1), "task manifest expected"),
        (": 1\nsession: s1\n" + TASK_BODY, (3, 1), "no task response result-url specified"),
        (RESPONSE_HEAD + TASK_BODY + TASK_BODY, (10, 1), "single task manifest expected"),
        (": 1\nsession:\n" + TASK_BODY, (3, 1), "task manifest not expected with an empty session"),
        (": 1\nsession:\nresult-url: u\n", (3, 1), "result-url not expected with an empty session"),
        (": 1\nresult-url: u\n", (3, 1), "no task response session specified"),
        (
            RESPONSE_HEAD + "bindist-upload-url: a\nbindist-upload-url: b\n" + TASK_BODY,
            (5, 1),
            "task response bindist-upload-url redefinition",
        ),
        (RESPONSE_HEAD + ":\nname: libfoo\n", (6, 1), "no task version specified"),
    ],
)
def test_task_response_errors(text: str, position: tuple[int, int], description: str) -> None:
    error = error_of(TaskResponse.from_text, text)
    assert (error.stream, error.line, error.column) == ("task_response_manifest", *position)
    assert error.description == description


def test_task_response_construction_checks() -> None:
    with pytest.raises(ValueError, match="empty session"):
        TaskResponse("", task=FULL_TASK)
    with pytest.raises(ValueError, match="result-url"):
        TaskResponse("s", task=FULL_TASK)
    with pytest.raises(ValueError, match="task manifest expected"):
        TaskResponse("s", result_url="u")


# -- result --------------------------------------------------------------------------


def test_result_round_trip_and_wire() -> None:
    text = RESULT.to_text()
    assert [name for name, _ in parse_stream(text)[0].items()] == [
        "name",
        "version",
        "status",
        "configure-status",
        "update-status",
        "test-status",
        "configure-log",
        "update-log",
        "worker-checksum",
        "dependency-checksum",
    ]
    assert Result.from_text(text) == RESULT
    assert Result.from_text(text).results[1].log == "warning: unused 'x'\n  detail \\\n"


def test_result_accepts_status_strings() -> None:
    result = Result("a", "1", "error", [OperationResult("update", "abort")])  # type: ignore[arg-type]
    assert result.status is Status.ERROR
    assert result.results[0].status is Status.ABORT


RESULT_HEAD = ": 1\nname: libfoo\nversion: 1.0.0\n"


@pytest.mark.parametrize(
    ("text", "position", "description"),
    [
        (RESULT_HEAD, (4, 1), "no result status specified"),
        (
            RESULT_HEAD + "status: fine\n",
            (4, 9),
            "invalid result status value 'fine': expected one of "
            "skip, success, warning, error, abort, abnormal, interrupt",
        ),
        (
            RESULT_HEAD + "status: error\nupdate-status: bad\n",
            (5, 16),
            "invalid result update-status value 'bad': expected one of "
            "skip, success, warning, error, abort, abnormal, interrupt",
        ),
        (RESULT_HEAD + "status: error\nupdate-log: x\n", (5, 1), "no update-status specified for update-log"),
        (
            RESULT_HEAD + "status: error\nupdate-status: error\nupdate-status: error\n",
            (6, 1),
            "result update status redefinition",
        ),
        (
            RESULT_HEAD + "status: error\nupdate-status: error\nupdate-log: x\nupdate-log: y\n",
            (7, 1),
            "result update-log redefinition",
        ),
        (RESULT_HEAD + "status: error\nstatus: error\n", (5, 1), "result status redefinition"),
        (RESULT_HEAD + "status: error\nnotes: x\n", (5, 1), "unknown name 'notes' in result manifest"),
    ],
)
def test_result_errors(text: str, position: tuple[int, int], description: str) -> None:
    error = error_of(Result.from_text, text)
    assert (error.stream, error.line, error.column) == ("result_manifest", *position)
    assert error.description == description


def test_result_construction_checks() -> None:
    with pytest.raises(ValueError, match="invalid status"):
        Result("a", "1", "fine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="update status redefinition"):
        Result("a", "1", Status.ERROR, [OperationResult("update", Status.ERROR)] * 2)
    with pytest.raises(ValueError, match="invalid operation name"):
        OperationResult("up date", Status.ERROR)


# -- result request ------------------------------------------------------------------


def test_result_request_round_trip_and_wire() -> None:
    signature = bytes(range(256))
    request = ResultRequest("s1", RESULT, challenge=signature, agent_checksum="a" * 64)
    text = request.to_text()
    header, result = parse_stream(text)
    assert [name for name, _ in header.items()] == ["session", "challenge", "agent-checksum"]
    encoded = header.get("challenge")
    assert encoded is not None and "\n" in encoded  # wrapped at 76 like libbutl
    assert all(len(line) <= 76 for line in encoded.split("\n"))
    assert result.items() == RESULT.to_pairs()
    assert ResultRequest.from_text(text) == request
    plain = ResultRequest("s1", RESULT)
    assert ResultRequest.from_text(plain.to_text()) == plain


def test_result_request_protocol_shape() -> None:
    text = ": 1\nsession: s1\nagent-checksum: 1\n:\nname: libhello\nversion: 1.0.0\nstatus: success\n"
    request = ResultRequest.from_text(text)
    assert request.result.status is Status.SUCCESS
    assert request.to_text() == text


@pytest.mark.parametrize(
    ("text", "position", "description"),
    [
        (": 1\nsession: s1\n", (3, 1), "result manifest expected"),
        (
            ": 1\nsession: s1\nchallenge: not*base64\n:\nname: a\nversion: 1\nstatus: error\n",
            (3, 12),
            "invalid result request challenge value 'not*base64': expected base64",
        ),
        (
            ": 1\nagent-checksum: x\n:\nname: a\nversion: 1\nstatus: error\n",
            (3, 1),
            "no result request session specified",
        ),
        (
            ": 1\nsession: s1\n:\nname: a\nversion: 1\nstatus: error\n:\nname: b\n",
            (7, 1),
            "single result manifest expected",
        ),
        (": 1\nsession: s1\n:\nname: a\nversion: 1\n", (6, 1), "no result status specified"),
    ],
)
def test_result_request_errors(text: str, position: tuple[int, int], description: str) -> None:
    error = error_of(ResultRequest.from_text, text)
    assert (error.stream, error.line, error.column) == ("result_request_manifest", *position)
    assert error.description == description


def test_field_spellings_live_in_fields() -> None:
    assert F.TASK_AUXILIARY_MACHINE == "auxiliary-machine"
    assert F.RESPONSE_UPLOAD_URL_SUFFIX == "-upload-url"
    assert F.STREAM_TASK_REQUEST == "task_request_manifest"
    assert F.STREAM_RESULT_REQUEST == "result_request_manifest"
