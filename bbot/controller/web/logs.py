"""Build log pages at brep's URLs (bbot-protocol.md §4), as plain text.

``/<pkg>/<ver>/log/<target>/<target-config>/<package-config>/<toolchain>/<version>[/<op>]``
(with an ``@<tenant>/`` prefix for a tenant) shows the newest build with that
key; ``/builds/<id>/log[/<op>]`` shows one build whatever came after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import quote

from flask import Flask, Response, request
from werkzeug.exceptions import MethodNotAllowed, NotFound

from bbot.controller.lease import BuildState
from bbot.controller.store import BuildRow, OperationRow, Store
from bbot.controller.web.common import store
from bbot.wire import LOG_CONTENT_TYPE, LogPathError, log_path, parse_log_path

EXPIRED = "package build configuration expired"
LABEL_WIDTH = 19  # values start at column 20, as on brep's pages


def log_links(found: Store, build: BuildRow) -> Callable[[str | None], str]:
    """Paths (below the app root, no leading '/') of a build's log pages, by operation.

    brep's URL names a build by its key, which a later build of the same
    package version takes over; older builds get their id-based pages instead.
    """
    newest = found.find_by_key(build.key)
    by_key = newest is not None and newest.id == build.id

    def link(operation: str | None = None) -> str:
        if by_key:
            return log_path(build.key, operation)
        page = f"builds/{build.id}/log"
        return f"{page}/{quote(operation, safe='')}" if operation else page

    return link


def render_log(build: BuildRow, operations: list[OperationRow], operation: str | None) -> str:
    def line(label: str, value: str) -> str:
        return f"{label + ':':<{LABEL_WIDTH}}{value}\n"

    text = ""
    if build.tenant:
        text += line("tenant", build.tenant) + "\n"
    text += line("package", build.package_name)
    text += line("version", build.package_version)
    text += line("toolchain", f"{build.toolchain_name}-{build.toolchain_version}")
    text += line("target", build.target)
    text += line("target config", build.configuration)
    text += line("package config", build.package_config)
    if build.machine_name:
        text += line("build machine", f"{build.machine_name} -- {build.machine_summary or ''}")
    stamp = build.finished_at if build.finished_at is not None else build.created_at
    text += line("timestamp", time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(stamp)))
    text += "\n"
    shown = [op for op in operations if operation is None or op.name == operation]
    text += "".join(f"{op.name}: {op.status.value}\n" for op in shown)
    text += "\n"
    text += "".join(op.log for op in shown)
    return text


def _plain(text: str, code: int) -> Response:
    return Response(text if text.endswith("\n") else text + "\n", status=code,
                    content_type=LOG_CONTENT_TYPE)


def _log_response(build: BuildRow | None, operation: str | None) -> Response:
    if build is None:
        return _plain(f"{EXPIRED}: no such package build", 404)
    if build.state is not BuildState.BUILT:
        return _plain(f"{EXPIRED}: state is {build.state.value}", 404)
    operations = store().operations(build.id)
    if operation is not None and operation not in {op.name for op in operations}:
        return _plain(f"{EXPIRED}: no operation '{operation}'", 404)
    return Response(render_log(build, operations, operation), content_type=LOG_CONTENT_TYPE)


def _raw_path() -> str:
    """The request path as sent, still percent-encoded, below the app root."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw:
        path = str(raw).split("?", 1)[0]
        if "://" in path:  # an absolute-form request target
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        if request.script_root and path.startswith(request.script_root):
            path = path[len(request.script_root):]
        return path
    return quote(request.path)


def _is_log_path(path: str) -> bool:
    parts = path.strip("/").split("/")
    if parts and parts[0].startswith("@"):
        parts = parts[1:]
    return len(parts) >= 3 and parts[2] == "log"


def register(app: Flask) -> None:
    def refuse_query() -> Response | None:
        if request.query_string:
            return _plain("log pages take no query parameters: remove the '?...' part", 400)
        return None

    @app.get("/builds/<int:build_id>/log", endpoint="build_log")
    @app.get("/builds/<int:build_id>/log/<operation>", endpoint="build_log")
    def build_log(build_id: int, operation: str | None = None) -> Response:
        return refuse_query() or _log_response(store().get_build(build_id), operation)

    @app.get("/<path:anything>", endpoint="brep_log")
    def brep_log(anything: str) -> Response:
        path = _raw_path()
        if not _is_log_path(path):
            # This route takes every GET: a path that other routes serve for other
            # methods (POST /api/submit) is a 405, not a 404.
            adapter = app.url_map.bind_to_environ(request.environ)
            other = set(adapter.allowed_methods(request.path)) - {"GET", "HEAD", "OPTIONS"}
            if other:
                raise MethodNotAllowed(valid_methods=sorted(other))
            raise NotFound(f"there is no page {request.path}")
        refused = refuse_query()
        if refused:
            return refused
        try:
            key, operation = parse_log_path(path)
        except LogPathError as error:
            return _plain(str(error), 400)
        return _log_response(store().find_by_key(key), operation)
