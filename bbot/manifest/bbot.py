"""The typed bbot manifests (bbot-protocol.md §2): task request and response, task,
result and result request, machine header, and the agent-local machine manifest.

Each class validates on construction (ValueError) and on reading (ManifestError
pointing at the pair, or at the end of the manifest for a missing field, in brep's
error style). `to_text()` gives the bytes on the wire; `from_text()` reads them back
and `from_text(x.to_text()) == x`. Field spellings come from `fields`.
"""

from __future__ import annotations

import base64
import binascii
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn, Self

from bbot.manifest import fields as F
from bbot.manifest.status import Status
from bbot.manifest.text import (
    Manifest,
    ManifestError,
    Pair,
    parse_manifest,
    parse_stream,
    serialize_manifest,
    serialize_stream,
)

__all__ = [
    "Machine",
    "MachineHeader",
    "OperationResult",
    "Result",
    "ResultRequest",
    "Task",
    "TaskRequest",
    "TaskResponse",
]

_UNSIGNED = re.compile(r"[0-9]+")


# --------------------------------------------------------------------------------------
# Reading helpers.


class _Reader:
    """Reads the pairs of one manifest; raises ManifestError in brep's style."""

    def __init__(self, manifest: Manifest, stream: str, kind: str, ignore_unknown: bool) -> None:
        self.manifest = manifest
        self.stream = stream
        self.kind = kind  # "task request", ... as used in the messages
        self.ignore_unknown = ignore_unknown
        self.seen: set[str] = set()

    def at_name(self, pair: Pair, description: str) -> NoReturn:
        raise ManifestError(self.stream, pair.line, pair.column, description)

    def at_value(self, pair: Pair, description: str) -> NoReturn:
        raise ManifestError(self.stream, pair.value_line, pair.value_column, description)

    def at_end(self, description: str) -> NoReturn:
        raise ManifestError(self.stream, self.manifest.end_line, self.manifest.end_column, description)

    def once(self, pair: Pair, what: str | None = None) -> None:
        key = what or pair.name
        if key in self.seen:
            self.at_name(pair, f"{self.kind} {key} redefinition")
        self.seen.add(key)

    def unknown(self, pair: Pair) -> None:
        if not self.ignore_unknown:
            self.at_name(pair, f"unknown name '{pair.name}' in {self.kind} manifest")

    def missing(self, name: str) -> NoReturn:
        self.at_end(f"no {self.kind} {name} specified")

    def invalid(self, pair: Pair, expected: str) -> NoReturn:
        self.at_value(pair, f"invalid {self.kind} {pair.name} value '{pair.value}': expected {expected}")


_Converter = Callable[[_Reader, Pair], Any]


def _text(reader: _Reader, pair: Pair) -> str:
    return pair.value


def _nonempty(reader: _Reader, pair: Pair) -> str:
    if not pair.value:
        reader.at_value(pair, f"empty {reader.kind} {pair.name}")
    return pair.value


# libbbot's integers are 64-bit: a longer number is out of range (and Python's int() would
# refuse one of over 4300 digits with a ValueError of its own).
_UINT64_MAX = 2**64 - 1


def _uint64(value: str) -> int | None:
    if not _UNSIGNED.fullmatch(value) or len(value) > 20 or int(value) > _UINT64_MAX:
        return None
    return int(value)


def _unsigned(reader: _Reader, pair: Pair) -> int:
    value = _uint64(pair.value)
    if value is None:
        reader.invalid(pair, "an unsigned integer")
    return value


def _positive(reader: _Reader, pair: Pair) -> int:
    value = _uint64(pair.value)
    if not value:
        reader.invalid(pair, "a positive integer")
    return value


def _boolean(reader: _Reader, pair: Pair) -> bool:
    if pair.value not in (F.BOOLEAN_TRUE, F.BOOLEAN_FALSE):
        reader.invalid(pair, f"{F.BOOLEAN_TRUE} or {F.BOOLEAN_FALSE}")
    return pair.value == F.BOOLEAN_TRUE


def _status(reader: _Reader, pair: Pair) -> Status:
    try:
        return Status.parse(pair.value)
    except ValueError:
        reader.invalid(pair, "one of " + ", ".join(status.value for status in Status))


def _choice(allowed: Sequence[str]) -> _Converter:
    def convert(reader: _Reader, pair: Pair) -> str:
        if pair.value not in allowed:
            reader.invalid(pair, "one of " + ", ".join(allowed))
        return pair.value

    return convert


@dataclass(frozen=True)
class _Spec:
    attribute: str
    convert: _Converter = _text
    required: bool = False
    multiple: bool = False


def _read_fields(
    reader: _Reader,
    specs: dict[str, _Spec],
    extra: Callable[[Pair], bool] | None = None,
) -> dict[str, Any]:
    """Read every pair by `specs` (wire name -> spec). `extra` may claim other names
    (returns True when it did). Missing required fields are reported in spec order."""
    values: dict[str, Any] = {}
    for pair in reader.manifest.pairs:
        spec = specs.get(pair.name)
        if spec is None:
            if extra is None or not extra(pair):
                reader.unknown(pair)
            continue
        if spec.multiple:
            values.setdefault(spec.attribute, []).append(spec.convert(reader, pair))
        else:
            reader.once(pair)
            values[spec.attribute] = spec.convert(reader, pair)
    for name, spec in specs.items():
        if spec.required and spec.attribute not in values:
            reader.missing(name)
    return values


def _construct(reader: _Reader, cls: type[Any], values: dict[str, Any]) -> Any:
    """Build the dataclass; a cross-field rule it enforces is reported at the end."""
    try:
        return cls(**values)
    except ValueError as error:
        reader.at_end(str(error))


def _put(pairs: list[tuple[str, str]], name: str, value: object) -> None:
    """Append `name: value` unless the value is None (bools and ints spelled out)."""
    if value is None:
        return
    if isinstance(value, bool):
        pairs.append((name, F.BOOLEAN_TRUE if value else F.BOOLEAN_FALSE))
    else:
        pairs.append((name, str(value)))


def _require_text(kind: str, name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"no {kind} {name} specified")


def _check_unsigned(kind: str, name: str, value: int | None, minimum: int = 0) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = "a positive integer" if minimum else "an unsigned integer"
        raise ValueError(f"invalid {kind} {name} value {value!r}: expected {expected}")


def _check_choice(kind: str, name: str, value: str | None, allowed: Sequence[str]) -> None:
    if value is not None and value not in allowed:
        raise ValueError(f"invalid {kind} {name} value '{value}': expected one of {', '.join(allowed)}")


def _following_position(manifests: Sequence[Manifest], index: int) -> tuple[int, int]:
    """Where manifest `index` starts: the separator that ended the one before it."""
    previous = manifests[index - 1]
    return previous.end_line, previous.end_column


# --------------------------------------------------------------------------------------
# Machine header (§2.1) and the agent-local machine manifest (§2.8).

_HEADER_KIND = "machine header"

_HEADER_SPECS: dict[str, _Spec] = {
    F.MACHINE_ID: _Spec("id", _nonempty, required=True),
    F.MACHINE_NAME: _Spec("name", _nonempty, required=True),
    F.MACHINE_SUMMARY: _Spec("summary", _nonempty, required=True),
    F.MACHINE_ROLE: _Spec("role", _choice(F.MACHINE_ROLES)),
    F.MACHINE_RAM_MINIMUM: _Spec("ram_minimum", _unsigned),
    F.MACHINE_RAM_MAXIMUM: _Spec("ram_maximum", _unsigned),
}


def _check_header(kind: str, header: MachineHeader | Machine) -> None:
    _require_text(kind, F.MACHINE_ID, header.id)
    _require_text(kind, F.MACHINE_NAME, header.name)
    _require_text(kind, F.MACHINE_SUMMARY, header.summary)
    _check_choice(kind, F.MACHINE_ROLE, header.role, F.MACHINE_ROLES)
    _check_unsigned(kind, F.MACHINE_RAM_MINIMUM, header.ram_minimum)
    _check_unsigned(kind, F.MACHINE_RAM_MAXIMUM, header.ram_maximum)


def _header_pairs(header: MachineHeader | Machine) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    _put(pairs, F.MACHINE_ID, header.id)
    _put(pairs, F.MACHINE_NAME, header.name)
    _put(pairs, F.MACHINE_SUMMARY, header.summary)
    _put(pairs, F.MACHINE_ROLE, header.role)
    _put(pairs, F.MACHINE_RAM_MINIMUM, header.ram_minimum)
    _put(pairs, F.MACHINE_RAM_MAXIMUM, header.ram_maximum)
    return pairs


class _Single:
    """from_text/to_text for manifests that are one manifest on the wire."""

    STREAM: ClassVar[str]

    def to_pairs(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def to_text(self) -> str:
        """The whole stream text (the bytes on the wire, UTF-8 encoded)."""
        return serialize_manifest(self.to_pairs())

    @classmethod
    def from_manifest(
        cls, manifest: Manifest, stream: str | None = None, *, ignore_unknown: bool = False
    ) -> Self:
        raise NotImplementedError

    @classmethod
    def from_text(cls, text: str | bytes, stream: str | None = None, *, ignore_unknown: bool = False) -> Self:
        stream = stream or cls.STREAM
        return cls.from_manifest(parse_manifest(text, stream), stream, ignore_unknown=ignore_unknown)


class _Multi:
    """from_text for messages made of several manifests on the wire (a header, then more)."""

    STREAM: ClassVar[str]

    def header_pairs(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def to_pairs(self) -> list[tuple[str, str]]:
        """The header manifest's pairs (what follows it are separate manifests)."""
        return self.header_pairs()

    @classmethod
    def from_manifests(
        cls, manifests: Sequence[Manifest], stream: str | None = None, *, ignore_unknown: bool = False
    ) -> Self:
        raise NotImplementedError

    @classmethod
    def from_text(cls, text: str | bytes, stream: str | None = None, *, ignore_unknown: bool = False) -> Self:
        stream = stream or cls.STREAM
        manifests = parse_stream(text, stream)
        if not manifests:
            parse_manifest(text, stream)  # raises "start of manifest expected" in place
        return cls.from_manifests(manifests, stream, ignore_unknown=ignore_unknown)


@dataclass
class MachineHeader(_Single):
    """A build machine as an agent offers it to brep (one per machine in a task request)."""

    STREAM: ClassVar[str] = F.STREAM_MACHINE_HEADER

    id: str
    name: str
    summary: str
    role: str | None = None  # "build" (the default when absent) or "auxiliary"
    ram_minimum: int | None = None  # KiB (recalled, not verified)
    ram_maximum: int | None = None

    def __post_init__(self) -> None:
        _check_header(_HEADER_KIND, self)

    @property
    def effective_role(self) -> str:
        return self.role or F.MACHINE_ROLE_BUILD

    def to_pairs(self) -> list[tuple[str, str]]:
        return _header_pairs(self)

    @classmethod
    def from_manifest(
        cls, manifest: Manifest, stream: str | None = None, *, ignore_unknown: bool = False
    ) -> Self:
        reader = _Reader(manifest, stream or cls.STREAM, _HEADER_KIND, ignore_unknown)
        result: Self = _construct(reader, cls, _read_fields(reader, _HEADER_SPECS))
        return result


_MACHINE_KIND = "machine"

_MACHINE_SPECS: dict[str, _Spec] = {
    **_HEADER_SPECS,
    F.MACHINE_TYPE: _Spec("type", _choice(F.MACHINE_TYPES), required=True),
    F.MACHINE_IMAGE: _Spec("image", _nonempty),
    F.MACHINE_MEMORY: _Spec("memory", _positive),
    F.MACHINE_CPUS: _Spec("cpus", _positive),
    F.MACHINE_OPTIONS: _Spec("options"),
    F.MACHINE_MAC: _Spec("mac", _nonempty),
}


@dataclass
class Machine(_Single):
    """The agent-local machine manifest in a machine directory (§2.8)."""

    STREAM: ClassVar[str] = F.STREAM_MACHINE

    id: str
    name: str
    summary: str
    type: str  # one of fields.MACHINE_TYPES
    role: str | None = None
    ram_minimum: int | None = None
    ram_maximum: int | None = None
    image: str | None = None
    memory: int | None = None  # MiB
    cpus: int | None = None
    options: str | None = None  # extra hypervisor options
    mac: str | None = None

    def __post_init__(self) -> None:
        _check_header(_MACHINE_KIND, self)
        _check_choice(_MACHINE_KIND, F.MACHINE_TYPE, self.type, F.MACHINE_TYPES)
        _check_unsigned(_MACHINE_KIND, F.MACHINE_MEMORY, self.memory, minimum=1)
        _check_unsigned(_MACHINE_KIND, F.MACHINE_CPUS, self.cpus, minimum=1)

    def header(self) -> MachineHeader:
        """What the agent offers to brep for this machine."""
        return MachineHeader(
            id=self.id,
            name=self.name,
            summary=self.summary,
            role=self.role,
            ram_minimum=self.ram_minimum,
            ram_maximum=self.ram_maximum,
        )

    def to_pairs(self) -> list[tuple[str, str]]:
        pairs = _header_pairs(self)
        _put(pairs, F.MACHINE_TYPE, self.type)
        _put(pairs, F.MACHINE_IMAGE, self.image)
        _put(pairs, F.MACHINE_MEMORY, self.memory)
        _put(pairs, F.MACHINE_CPUS, self.cpus)
        _put(pairs, F.MACHINE_OPTIONS, self.options)
        _put(pairs, F.MACHINE_MAC, self.mac)
        return pairs

    @classmethod
    def from_manifest(
        cls, manifest: Manifest, stream: str | None = None, *, ignore_unknown: bool = False
    ) -> Self:
        reader = _Reader(manifest, stream or cls.STREAM, _MACHINE_KIND, ignore_unknown)
        result: Self = _construct(reader, cls, _read_fields(reader, _MACHINE_SPECS))
        return result


# --------------------------------------------------------------------------------------
# Task request (§2.2): a header manifest, then one machine header per machine.

_REQUEST_KIND = "task request"

_REQUEST_SPECS: dict[str, _Spec] = {
    F.REQUEST_AGENT: _Spec("agent", _nonempty, required=True),
    F.REQUEST_TOOLCHAIN_NAME: _Spec("toolchain_name", _nonempty, required=True),
    F.REQUEST_TOOLCHAIN_VERSION: _Spec("toolchain_version", _nonempty, required=True),
    F.REQUEST_INTERACTIVE_MODE: _Spec("interactive_mode", _choice(F.INTERACTIVE_MODES)),
    F.REQUEST_INTERACTIVE_LOGIN: _Spec("interactive_login", _nonempty),
    F.REQUEST_FINGERPRINT: _Spec("fingerprint", _nonempty),
    F.REQUEST_AUXILIARY_RAM: _Spec("auxiliary_ram", _unsigned),
}


@dataclass
class TaskRequest(_Multi):
    """What an agent POSTs to `?build-task`."""

    STREAM: ClassVar[str] = F.STREAM_TASK_REQUEST

    agent: str
    toolchain_name: str
    toolchain_version: str
    machines: list[MachineHeader]
    interactive_mode: str | None = None  # "false" (the default), "true" or "both"
    interactive_login: str | None = None  # required unless the mode is "false"
    fingerprint: str | None = None  # SHA-256 of the agent's public key (DER), hex
    auxiliary_ram: int | None = None

    def __post_init__(self) -> None:
        kind = _REQUEST_KIND
        _require_text(kind, F.REQUEST_AGENT, self.agent)
        _require_text(kind, F.REQUEST_TOOLCHAIN_NAME, self.toolchain_name)
        _require_text(kind, F.REQUEST_TOOLCHAIN_VERSION, self.toolchain_version)
        _check_choice(kind, F.REQUEST_INTERACTIVE_MODE, self.interactive_mode, F.INTERACTIVE_MODES)
        if self.effective_interactive_mode != F.INTERACTIVE_MODE_FALSE and not (self.interactive_login):
            raise ValueError(f"no {kind} {F.REQUEST_INTERACTIVE_LOGIN} specified")
        _check_unsigned(kind, F.REQUEST_AUXILIARY_RAM, self.auxiliary_ram)
        if not self.machines:
            raise ValueError("at least one machine header manifest expected")

    @property
    def effective_interactive_mode(self) -> str:
        return self.interactive_mode or F.INTERACTIVE_MODE_FALSE

    def header_pairs(self) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        _put(pairs, F.REQUEST_AGENT, self.agent)
        _put(pairs, F.REQUEST_TOOLCHAIN_NAME, self.toolchain_name)
        _put(pairs, F.REQUEST_TOOLCHAIN_VERSION, self.toolchain_version)
        _put(pairs, F.REQUEST_INTERACTIVE_MODE, self.interactive_mode)
        _put(pairs, F.REQUEST_INTERACTIVE_LOGIN, self.interactive_login)
        _put(pairs, F.REQUEST_FINGERPRINT, self.fingerprint)
        _put(pairs, F.REQUEST_AUXILIARY_RAM, self.auxiliary_ram)
        return pairs


    def to_text(self) -> str:
        return serialize_stream([self.header_pairs(), *(machine.to_pairs() for machine in self.machines)])

    @classmethod
    def from_manifests(
        cls,
        manifests: Sequence[Manifest],
        stream: str | None = None,
        *,
        ignore_unknown: bool = False,
    ) -> Self:
        stream = stream or cls.STREAM
        if not manifests:
            raise ManifestError(stream, 1, 1, "start of manifest expected")
        reader = _Reader(manifests[0], stream, _REQUEST_KIND, ignore_unknown)
        values = _read_fields(reader, _REQUEST_SPECS)
        if len(manifests) == 1:
            reader.at_end("at least one machine header manifest expected")
        values["machines"] = [
            MachineHeader.from_manifest(manifest, stream, ignore_unknown=ignore_unknown)
            for manifest in manifests[1:]
        ]
        result: Self = _construct(reader, cls, values)
        return result


# --------------------------------------------------------------------------------------
# Task (§2.4), in brep's constructor order.

_TASK_KIND = "task"

_TASK_SPECS: dict[str, _Spec] = {
    F.TASK_NAME: _Spec("name", _nonempty, required=True),
    F.TASK_VERSION: _Spec("version", _nonempty, required=True),
    F.TASK_REPOSITORY_URL: _Spec("repository_url", _nonempty, required=True),
    F.TASK_REPOSITORY_TYPE: _Spec("repository_type", _nonempty),
    F.TASK_TRUST: _Spec("trust", multiple=True),
    F.TASK_REQUIRES: _Spec("requires", multiple=True),
    F.TASK_TESTS: _Spec("tests", multiple=True),
    F.TASK_EXAMPLES: _Spec("examples", multiple=True),
    F.TASK_BENCHMARKS: _Spec("benchmarks", multiple=True),
    F.TASK_DEPENDENCY_CHECKSUM: _Spec("dependency_checksum"),
    F.TASK_MACHINE: _Spec("machine", _nonempty, required=True),
    F.TASK_TARGET: _Spec("target", _nonempty, required=True),
    F.TASK_ENVIRONMENT: _Spec("environment"),
    F.TASK_AUXILIARY_ENVIRONMENT: _Spec("auxiliary_environment"),
    F.TASK_TARGET_CONFIG: _Spec("target_config"),
    F.TASK_PACKAGE_CONFIG: _Spec("package_config"),
    F.TASK_HOST: _Spec("host", _boolean),
    F.TASK_WARNING_REGEX: _Spec("warning_regex", multiple=True),
    F.TASK_INTERACTIVE: _Spec("interactive", _nonempty),
    F.TASK_WORKER_CHECKSUM: _Spec("worker_checksum"),
}

_AUXILIARY_PREFIX = F.TASK_AUXILIARY_MACHINE + "-"


@dataclass
class Task(_Single):
    """What to build, and where: brep → agent → worker."""

    STREAM: ClassVar[str] = F.STREAM_TASK

    name: str
    version: str
    repository_url: str
    machine: str
    target: str
    repository_type: str | None = None
    trust: list[str] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    benchmarks: list[str] = field(default_factory=list)
    dependency_checksum: str | None = None
    auxiliary_machines: list[str] = field(default_factory=list)
    environment: str | None = None
    auxiliary_environment: str | None = None
    target_config: str | None = None  # raw wire value: space-separated, shell-quoted
    package_config: str | None = None
    host: bool | None = None
    warning_regex: list[str] = field(default_factory=list)
    interactive: str | None = None  # breakpoint of an interactive build
    worker_checksum: str | None = None
    # The environment name of each auxiliary machine (`auxiliary-machine-<env>`),
    # parallel to auxiliary_machines, "" for none; an empty list means none for all.
    auxiliary_machine_environments: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        kind = _TASK_KIND
        _require_text(kind, F.TASK_NAME, self.name)
        _require_text(kind, F.TASK_VERSION, self.version)
        _require_text(kind, F.TASK_REPOSITORY_URL, self.repository_url)
        _require_text(kind, F.TASK_MACHINE, self.machine)
        _require_text(kind, F.TASK_TARGET, self.target)
        environments = self.auxiliary_machine_environments
        if environments and len(environments) != len(self.auxiliary_machines):
            raise ValueError(
                f"{len(environments)} auxiliary machine environments given for "
                f"{len(self.auxiliary_machines)} auxiliary machines"
            )
        if not any(environments):
            self.auxiliary_machine_environments = []
        for environment in environments:
            if any(char in environment for char in ": \t\r\n"):
                raise ValueError(
                    f"invalid auxiliary machine environment name '{environment}': "
                    "it may not contain ':' or whitespace"
                )

    def auxiliary_machine_pairs(self) -> list[tuple[str, str | None]]:
        """(machine name, environment name or None) for each auxiliary machine."""
        environments = self.auxiliary_machine_environments or [""] * len(self.auxiliary_machines)
        return [
            (machine, environment or None)
            for machine, environment in zip(self.auxiliary_machines, environments, strict=True)
        ]

    def target_config_args(self) -> list[str]:
        """target-config split into arguments (shell quoting)."""
        return shlex.split(self.target_config or "")

    def package_config_args(self) -> list[str]:
        """package-config split into arguments (shell quoting)."""
        return shlex.split(self.package_config or "")

    def to_pairs(self) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        _put(pairs, F.TASK_NAME, self.name)
        _put(pairs, F.TASK_VERSION, self.version)
        _put(pairs, F.TASK_REPOSITORY_URL, self.repository_url)
        _put(pairs, F.TASK_REPOSITORY_TYPE, self.repository_type)
        for name, values in (
            (F.TASK_TRUST, self.trust),
            (F.TASK_REQUIRES, self.requires),
            (F.TASK_TESTS, self.tests),
            (F.TASK_EXAMPLES, self.examples),
            (F.TASK_BENCHMARKS, self.benchmarks),
        ):
            pairs.extend((name, value) for value in values)
        _put(pairs, F.TASK_DEPENDENCY_CHECKSUM, self.dependency_checksum)
        _put(pairs, F.TASK_MACHINE, self.machine)
        for machine, environment in self.auxiliary_machine_pairs():
            name = _AUXILIARY_PREFIX + environment if environment else F.TASK_AUXILIARY_MACHINE
            pairs.append((name, machine))
        _put(pairs, F.TASK_TARGET, self.target)
        _put(pairs, F.TASK_ENVIRONMENT, self.environment)
        _put(pairs, F.TASK_AUXILIARY_ENVIRONMENT, self.auxiliary_environment)
        _put(pairs, F.TASK_TARGET_CONFIG, self.target_config)
        _put(pairs, F.TASK_PACKAGE_CONFIG, self.package_config)
        _put(pairs, F.TASK_HOST, self.host)
        pairs.extend((F.TASK_WARNING_REGEX, value) for value in self.warning_regex)
        _put(pairs, F.TASK_INTERACTIVE, self.interactive)
        _put(pairs, F.TASK_WORKER_CHECKSUM, self.worker_checksum)
        return pairs

    @classmethod
    def from_manifest(
        cls, manifest: Manifest, stream: str | None = None, *, ignore_unknown: bool = False
    ) -> Self:
        reader = _Reader(manifest, stream or cls.STREAM, _TASK_KIND, ignore_unknown)
        machines: list[str] = []
        environments: list[str] = []

        def auxiliary(pair: Pair) -> bool:
            if pair.name == F.TASK_AUXILIARY_MACHINE:
                environment = ""
            elif pair.name.startswith(_AUXILIARY_PREFIX) and len(pair.name) > len(_AUXILIARY_PREFIX):
                environment = pair.name[len(_AUXILIARY_PREFIX) :]
            else:
                return False
            machines.append(_nonempty(reader, pair))
            environments.append(environment)
            return True

        values = _read_fields(reader, _TASK_SPECS, auxiliary)
        values["auxiliary_machines"] = machines
        values["auxiliary_machine_environments"] = environments
        result: Self = _construct(reader, cls, values)
        return result


# --------------------------------------------------------------------------------------
# Task response (§2.3): a header manifest, then the task when there is one.

_RESPONSE_KIND = "task response"

_RESPONSE_SPECS: dict[str, _Spec] = {
    F.RESPONSE_SESSION: _Spec("session", required=True),
    F.RESPONSE_CHALLENGE: _Spec("challenge", _nonempty),
    F.RESPONSE_RESULT_URL: _Spec("result_url", _nonempty),
    F.RESPONSE_AGENT_CHECKSUM: _Spec("agent_checksum"),
}


@dataclass
class TaskResponse(_Multi):
    """brep's answer to `?build-task`: an empty session means no task."""

    STREAM: ClassVar[str] = F.STREAM_TASK_RESPONSE

    session: str
    challenge: str | None = None
    result_url: str | None = None
    upload_urls: dict[str, str] = field(default_factory=dict)  # upload type -> URL
    agent_checksum: str | None = None
    task: Task | None = None

    def __post_init__(self) -> None:
        kind = _RESPONSE_KIND
        if not isinstance(self.session, str):
            raise ValueError(f"no {kind} {F.RESPONSE_SESSION} specified")
        if not self.session:
            extra = [
                name
                for name, value in (
                    (F.RESPONSE_CHALLENGE, self.challenge),
                    (F.RESPONSE_RESULT_URL, self.result_url),
                    ("upload URLs", self.upload_urls or None),
                    (F.RESPONSE_AGENT_CHECKSUM, self.agent_checksum),
                    ("task", self.task),
                )
                if value is not None
            ]
            if extra:
                raise ValueError(
                    f"a {kind} with an empty session (no task) has nothing else, but {', '.join(extra)} given"
                )
            return
        if not self.result_url:
            raise ValueError(f"no {kind} {F.RESPONSE_RESULT_URL} specified")
        if self.task is None:
            raise ValueError("task manifest expected")
        for upload_type in self.upload_urls:
            if not upload_type or any(char in upload_type for char in ": \t\r\n#"):
                raise ValueError(f"invalid upload type '{upload_type}'")

    @property
    def has_task(self) -> bool:
        return bool(self.session)

    def header_pairs(self) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = [(F.RESPONSE_SESSION, self.session)]
        _put(pairs, F.RESPONSE_CHALLENGE, self.challenge)
        _put(pairs, F.RESPONSE_RESULT_URL, self.result_url)
        for upload_type, url in self.upload_urls.items():
            pairs.append((upload_type + F.RESPONSE_UPLOAD_URL_SUFFIX, url))
        _put(pairs, F.RESPONSE_AGENT_CHECKSUM, self.agent_checksum)
        return pairs


    def to_text(self) -> str:
        manifests = [self.header_pairs()]
        if self.task is not None:
            manifests.append(self.task.to_pairs())
        return serialize_stream(manifests)

    @classmethod
    def from_manifests(
        cls,
        manifests: Sequence[Manifest],
        stream: str | None = None,
        *,
        ignore_unknown: bool = False,
    ) -> Self:
        stream = stream or cls.STREAM
        if not manifests:
            raise ManifestError(stream, 1, 1, "start of manifest expected")
        reader = _Reader(manifests[0], stream, _RESPONSE_KIND, ignore_unknown)
        upload_urls: dict[str, str] = {}

        def upload_url(pair: Pair) -> bool:
            suffix = F.RESPONSE_UPLOAD_URL_SUFFIX
            if not pair.name.endswith(suffix) or len(pair.name) == len(suffix):
                return False
            reader.once(pair)
            upload_urls[pair.name[: -len(suffix)]] = _nonempty(reader, pair)
            return True

        values = _read_fields(reader, _RESPONSE_SPECS, upload_url)
        values["upload_urls"] = upload_urls
        if values["session"]:
            if "result_url" not in values:
                reader.missing(F.RESPONSE_RESULT_URL)
            if len(manifests) < 2:
                reader.at_end("task manifest expected")
            values["task"] = Task.from_manifest(manifests[1], stream, ignore_unknown=ignore_unknown)
            if len(manifests) > 2:
                line, column = _following_position(manifests, 2)
                raise ManifestError(stream, line, column, "single task manifest expected")
        else:
            for pair in manifests[0].pairs:
                known = pair.name in _RESPONSE_SPECS or pair.name.endswith(F.RESPONSE_UPLOAD_URL_SUFFIX)
                if pair.name != F.RESPONSE_SESSION and (known or not ignore_unknown):
                    reader.at_name(pair, f"{pair.name} not expected with an empty session")
            if len(manifests) > 1:
                line, column = _following_position(manifests, 1)
                raise ManifestError(stream, line, column, "task manifest not expected with an empty session")
        result: Self = _construct(reader, cls, values)
        return result


# --------------------------------------------------------------------------------------
# Result (§2.6): `<op>-status` lines first, then the `<op>-log` values.

_RESULT_KIND = "result"

_RESULT_SPECS: dict[str, _Spec] = {
    F.RESULT_NAME: _Spec("name", _nonempty, required=True),
    F.RESULT_VERSION: _Spec("version", _nonempty, required=True),
    F.RESULT_STATUS: _Spec("status", _status, required=True),
    F.RESULT_WORKER_CHECKSUM: _Spec("worker_checksum"),
    F.RESULT_DEPENDENCY_CHECKSUM: _Spec("dependency_checksum"),
}


@dataclass
class OperationResult:
    """The outcome of one build step (configure, update, test, ...)."""

    operation: str
    status: Status
    log: str = ""

    def __post_init__(self) -> None:
        operation = self.operation
        if not operation or operation.startswith("#") or any(char in operation for char in ": \t\r\n"):
            raise ValueError(
                f"invalid operation name '{operation}': it must be non-empty, not start "
                "with '#', and hold no ':' or whitespace"
            )
        self.status = Status.parse(self.status) if isinstance(self.status, str) else self.status


@dataclass
class Result(_Single):
    """What a worker reports for a task (and the agent passes on to brep)."""

    STREAM: ClassVar[str] = F.STREAM_RESULT

    name: str
    version: str
    status: Status
    results: list[OperationResult] = field(default_factory=list)
    worker_checksum: str | None = None
    dependency_checksum: str | None = None

    def __post_init__(self) -> None:
        _require_text(_RESULT_KIND, F.RESULT_NAME, self.name)
        _require_text(_RESULT_KIND, F.RESULT_VERSION, self.version)
        self.status = Status.parse(self.status) if isinstance(self.status, str) else self.status
        operations = [result.operation for result in self.results]
        for operation in operations:
            if operations.count(operation) > 1:
                raise ValueError(f"{_RESULT_KIND} {operation} status redefinition")

    def to_pairs(self) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        _put(pairs, F.RESULT_NAME, self.name)
        _put(pairs, F.RESULT_VERSION, self.version)
        _put(pairs, F.RESULT_STATUS, self.status.value)
        for result in self.results:
            pairs.append((result.operation + F.RESULT_OPERATION_STATUS_SUFFIX, result.status.value))
        for result in self.results:
            if result.log:
                pairs.append((result.operation + F.RESULT_OPERATION_LOG_SUFFIX, result.log))
        _put(pairs, F.RESULT_WORKER_CHECKSUM, self.worker_checksum)
        _put(pairs, F.RESULT_DEPENDENCY_CHECKSUM, self.dependency_checksum)
        return pairs

    @classmethod
    def from_manifest(
        cls, manifest: Manifest, stream: str | None = None, *, ignore_unknown: bool = False
    ) -> Self:
        reader = _Reader(manifest, stream or cls.STREAM, _RESULT_KIND, ignore_unknown)
        results: list[OperationResult] = []
        by_operation: dict[str, OperationResult] = {}
        status_suffix = F.RESULT_OPERATION_STATUS_SUFFIX
        log_suffix = F.RESULT_OPERATION_LOG_SUFFIX

        def operation(pair: Pair) -> bool:
            name = pair.name
            if name.endswith(status_suffix) and len(name) > len(status_suffix):
                op = name[: -len(status_suffix)]
                if op in by_operation:
                    reader.at_name(pair, f"{_RESULT_KIND} {op} status redefinition")
                by_operation[op] = OperationResult(op, _status(reader, pair))
                results.append(by_operation[op])
                return True
            if name.endswith(log_suffix) and len(name) > len(log_suffix):
                op = name[: -len(log_suffix)]
                if op not in by_operation:
                    reader.at_name(pair, f"no {op}{status_suffix} specified for {op}{log_suffix}")
                reader.once(pair)
                by_operation[op].log = pair.value
                return True
            return False

        values = _read_fields(reader, _RESULT_SPECS, operation)
        values["results"] = results
        result: Self = _construct(reader, cls, values)
        return result


# --------------------------------------------------------------------------------------
# Result request (§2.5): a header manifest, then the result manifest.

_RESULT_REQUEST_KIND = "result request"


def _base64(reader: _Reader, pair: Pair) -> bytes:
    try:
        # libbutl's decoder skips line breaks (its encoder wraps at 76 columns).
        return base64.b64decode(pair.value.replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        reader.invalid(pair, "base64")


_RESULT_REQUEST_SPECS: dict[str, _Spec] = {
    F.RESULT_REQUEST_SESSION: _Spec("session", _nonempty, required=True),
    F.RESULT_REQUEST_CHALLENGE: _Spec("challenge", _base64),
    F.RESULT_REQUEST_AGENT_CHECKSUM: _Spec("agent_checksum"),
}


@dataclass
class ResultRequest(_Multi):
    """What an agent POSTs to the result URL."""

    STREAM: ClassVar[str] = F.STREAM_RESULT_REQUEST

    session: str
    result: Result
    challenge: bytes | None = None  # the signature over the task's challenge
    agent_checksum: str | None = None

    def __post_init__(self) -> None:
        _require_text(_RESULT_REQUEST_KIND, F.RESULT_REQUEST_SESSION, self.session)
        if not isinstance(self.result, Result):
            raise ValueError("result manifest expected")

    def header_pairs(self) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = [(F.RESULT_REQUEST_SESSION, self.session)]
        if self.challenge is not None:
            # Wrapped at 76 columns like libbutl's encoder, so a multi-line value.
            encoded = base64.encodebytes(self.challenge).decode("ascii").rstrip("\n")
            pairs.append((F.RESULT_REQUEST_CHALLENGE, encoded))
        _put(pairs, F.RESULT_REQUEST_AGENT_CHECKSUM, self.agent_checksum)
        return pairs


    def to_text(self) -> str:
        return serialize_stream([self.header_pairs(), self.result.to_pairs()])

    @classmethod
    def from_manifests(
        cls,
        manifests: Sequence[Manifest],
        stream: str | None = None,
        *,
        ignore_unknown: bool = False,
    ) -> Self:
        stream = stream or cls.STREAM
        if not manifests:
            raise ManifestError(stream, 1, 1, "start of manifest expected")
        reader = _Reader(manifests[0], stream, _RESULT_REQUEST_KIND, ignore_unknown)
        values = _read_fields(reader, _RESULT_REQUEST_SPECS)
        if len(manifests) < 2:
            reader.at_end("result manifest expected")
        values["result"] = Result.from_manifest(manifests[1], stream, ignore_unknown=ignore_unknown)
        if len(manifests) > 2:
            line, column = _following_position(manifests, 2)
            raise ManifestError(stream, line, column, "single result manifest expected")
        result: Self = _construct(reader, cls, values)
        return result
