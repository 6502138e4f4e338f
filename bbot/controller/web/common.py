"""What the web modules share: the app's store, base URL and submit hook; formatting."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import current_app

from bbot.controller.lease import BuildState
from bbot.controller.store import AttemptRow, BuildRow, OperationRow, Store
from bbot.manifest.status import Status

STORE_KEY = "bbot.store"
SUBMIT_KEY = "bbot.submit"
BASE_URL_KEY = "BBOT_BASE_URL"
CONFIGURATIONS_KEY = "bbot.configurations"
FORCE_KEY = "bbot.on_force"

Submit = Callable[[str, str | None, str | None], int]


def store() -> Store:
    found = current_app.extensions[STORE_KEY]
    assert isinstance(found, Store)
    return found


def submit_hook() -> Submit | None:
    hook: Submit | None = current_app.extensions[SUBMIT_KEY]
    return hook


def base_url() -> str:
    return str(current_app.config[BASE_URL_KEY]).rstrip("/")


class BadRequest(ValueError):
    """A request the asker can fix: answered with 400 and this text."""


def int_parameter(args: Any, name: str, default: int, *, low: int, high: int) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: '{raw}' is not a whole number") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}: {value} is out of range, use {low} to {high}")
    return value


def build_filters(args: Any) -> dict[str, Any]:
    """The store filters named in a query string; BadRequest for values it does not know."""
    filters: dict[str, Any] = {}
    for name in ("package", "configuration"):
        if args.get(name):
            filters[name] = args[name]
    if args.get("status"):
        try:
            filters["status"] = Status(args["status"])
        except ValueError:
            allowed = ", ".join(s.value for s in Status)
            raise BadRequest(f"status: unknown '{args['status']}', use one of {allowed}") from None
    if args.get("state"):
        try:
            filters["state"] = BuildState(args["state"])
        except ValueError:
            allowed = ", ".join(s.value for s in BuildState)
            raise BadRequest(f"state: unknown '{args['state']}', use one of {allowed}") from None
    if args.get("set_id"):
        filters["set_id"] = int_parameter(args, "set_id", 0, low=1, high=2**62)
    return filters


def format_time(stamp: float | None) -> str:
    if stamp is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def build_json(build: BuildRow, *, page_url: str, log_url: str | None) -> dict[str, Any]:
    """A build for the JSON API. The session (a key to post results) and the
    submitter's address are left out: the API is as public as the pages."""
    return {
        "id": build.id,
        "set_id": build.set_id,
        "url": page_url,
        "package_name": build.package_name,
        "package_version": build.package_version,
        "configuration": build.configuration,
        "target": build.target,
        "package_config": build.package_config,
        "toolchain_name": build.toolchain_name,
        "toolchain_version": build.toolchain_version,
        "tenant": build.tenant,
        "machine_pattern": build.machine_pattern,
        "config_args": build.config_args,
        "warning_regex": build.warning_regex,
        "state": build.state.value,
        "status": None if build.status is None else build.status.value,
        "attempt": build.attempt,
        "reason": build.reason,
        "agent": build.agent,
        "machine_name": build.machine_name,
        "machine_summary": build.machine_summary,
        "created_at": build.created_at,
        "issued_at": build.issued_at,
        "lease_deadline": build.lease_deadline,
        "finished_at": build.finished_at,
        "forced": build.forced,
        "kind": build.kind,
        "source": build.source,
        "repository_url": build.repository_url,
        "ref": build.ref,
        "commit": build.commit,
        "author_name": build.author_name,
        "author_email": build.author_email,
        "log_url": log_url,
    }


def operation_json(operation: OperationRow, log_url: str) -> dict[str, Any]:
    return {"name": operation.name, "status": operation.status.value, "log_url": log_url}


def attempt_json(attempt: AttemptRow) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "issued_at": attempt.issued_at,
        "ended_at": attempt.ended_at,
        "outcome": attempt.outcome,
        "agent": attempt.agent,
        "machine": attempt.machine,
        "detail": attempt.detail,
        "metrics": attempt.metrics,
    }
