"""Names that cross process boundaries, other than manifest fields and AMQP names.

Sessions, content types and brep's log URL shape live here, once. Manifest
field spellings are in ``bbot.manifest.fields``; exchanges and queues in
``bbot.bus.names``. No I/O here.

The shapes follow ``shared/docs/bbot-protocol.md`` §3.4 (session) and §4
(log URLs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import quote, unquote

MANIFEST_CONTENT_TYPE = "text/manifest;charset=utf-8"
LOG_CONTENT_TYPE = "text/plain;charset=utf-8"

# The package configuration name used when a package declares none (brep's default).
DEFAULT_PACKAGE_CONFIG = "default"


@dataclass(frozen=True)
class BuildKey:
    """What identifies one build to brep: the parts of a session and of a log URL."""

    package_name: str
    package_version: str
    target: str
    target_config: str
    package_config: str
    toolchain_name: str
    toolchain_version: str
    tenant: str = ""


@dataclass(frozen=True)
class Session:
    key: BuildKey
    timestamp_ns: int

    def __str__(self) -> str:
        k = self.key
        return "/".join(
            [
                k.tenant,
                k.package_name,
                k.package_version,
                k.target,
                k.target_config,
                k.package_config,
                k.toolchain_name,
                k.toolchain_version,
                str(self.timestamp_ns),
            ]
        )


class SessionError(ValueError):
    pass


def new_session(key: BuildKey, previous_ns: int = 0) -> Session:
    """A session for a new attempt: its timestamp is later than any earlier attempt's."""
    return Session(key, max(time.time_ns(), previous_ns + 1))


def parse_session(text: str) -> Session:
    """Parse ``<tenant>/<name>/<version>/<target>/<tcfg>/<pcfg>/<tc-name>/<tc-version>/<ns>``."""
    parts = text.split("/")
    if len(parts) != 9:
        raise SessionError(f"invalid session: expected 9 '/'-separated parts, got {len(parts)}")
    tenant, name, version, target, tcfg, pcfg, tc_name, tc_version, stamp = parts
    if not all([name, version, target, tcfg, pcfg, tc_name, tc_version]):
        raise SessionError("invalid session: empty component")
    # ASCII digits only (str.isdigit takes '²' too), and no more than nanoseconds since the
    # epoch ever need (20 digits hold any 64-bit count).
    if not (stamp.isascii() and stamp.isdigit()):
        raise SessionError("invalid session: timestamp: trailing junk")
    if len(stamp) > 20:
        raise SessionError("invalid session: timestamp: out of range")
    key = BuildKey(name, version, target, tcfg, pcfg, tc_name, tc_version, tenant=tenant)
    return Session(key, int(stamp))


def _seg(value: str) -> str:
    return quote(value, safe="")


def _ver(value: str) -> str:
    # brep puts versions in as they are, with '+' left unencoded (§4).
    return quote(value, safe="+")


def log_path(key: BuildKey, operation: str | None = None) -> str:
    """The path below the web root of a build's log page (brep §4), without a leading '/'."""
    parts = [
        *([f"@{_seg(key.tenant)}"] if key.tenant else []),
        _seg(key.package_name),
        _ver(key.package_version),
        "log",
        _seg(key.target),
        _seg(key.target_config),
        _seg(key.package_config),
        _seg(key.toolchain_name),
        _ver(key.toolchain_version),
    ]
    if operation:
        parts.append(_seg(operation))
    return "/".join(parts)


def force_url(base_url: str, key: BuildKey) -> str:
    """brep's rebuild URL for a build (§3.10, §3.12), ending in ``reason=`` for a person to fill in.

    As brep does, versions go in unencoded: their '+' comes back as a space, which
    the ``?build-force`` handler turns into '+' again.
    """
    from bbot.brep.protocol import BUILD_FORCE, FORCE_PARAMETERS, FORCE_REASON, handler_url

    values = (key.package_name, key.package_version, key.target, key.target_config, key.package_config,
              key.toolchain_name, key.toolchain_version)
    query = "".join(f"&{name}={quote(value, safe='+' if name in ('pv', 'tv') else '')}"
                    for name, value in zip(FORCE_PARAMETERS, values, strict=True))
    return f"{handler_url(base_url, BUILD_FORCE, key.tenant)}{query}&{FORCE_REASON}="


def log_url(base_url: str, key: BuildKey, operation: str | None = None) -> str:
    """``base_url`` is the controller's root URL, with or without a trailing '/'."""
    return base_url.rstrip("/") + "/" + log_path(key, operation)


class LogPathError(ValueError):
    """A malformed log path: answered with 400 and this text."""


def parse_log_path(path: str) -> tuple[BuildKey, str | None]:
    """Inverse of ``log_path``: ``(key, operation or None)``; LogPathError names the bad part."""
    raw = path.strip("/").split("/")
    tenant = ""
    if raw and raw[0].startswith("@"):  # before unquoting: an encoded '@' is part of a name
        tenant = unquote(raw.pop(0)[1:])
    parts = [unquote(p) for p in raw]
    if len(parts) < 3 or parts[2] != "log":
        raise LogPathError("expected <package>/<version>/log/...")
    names = ["package name", "package version"]
    name, version = parts[0], parts[1]
    rest = parts[3:]
    labels = ["target", "target configuration", "package configuration",
              "toolchain name", "toolchain version"]
    if len(rest) < len(labels):
        raise LogPathError(f"no {labels[len(rest)]}")
    if len(rest) > len(labels) + 1:
        raise LogPathError("unexpected path component")
    for label, value in zip(names + labels, [name, version, *rest], strict=False):
        if not value:
            raise LogPathError(f"empty {label}")
    operation = rest[5] if len(rest) == 6 else None
    if operation == "":
        raise LogPathError("empty operation")
    key = BuildKey(name, version, rest[0], rest[1], rest[2], rest[3], rest[4], tenant=tenant)
    return key, operation
