"""The JSON API: builds (list, one) and submissions."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from bbot.controller.lease import BuildState
from bbot.controller.web.common import (
    BadRequest,
    attempt_json,
    base_url,
    build_filters,
    build_json,
    int_parameter,
    operation_json,
    store,
    submit_hook,
)
from bbot.controller.web.logs import log_links

log = logging.getLogger(__name__)

MAX_LIMIT = 1000
SUBMIT_FIELDS = ("url", "ref", "email")


def _error(message: str, code: int) -> tuple[Response, int]:
    return jsonify({"error": message}), code


def _page_url(build_id: int) -> str:
    return f"{base_url()}/builds/{build_id}"


def _submission(body: bytes) -> tuple[str, str | None, str | None]:
    """url, ref and email from a submission body; BadRequest says what to fix."""
    example = '{"url": "https://example.org/repo.git", "ref": "main", "email": "me@example.org"}'
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"the body is not JSON ({error}); send an object like {example}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the body must be a JSON object like {example}")
    unknown = sorted(set(data) - set(SUBMIT_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; the fields are "
                         f"{', '.join(SUBMIT_FIELDS)}")
    url = data.get("url")
    if not isinstance(url, str) or not url.strip():
        raise BadRequest(f"'url' is missing: give the git repository to build, e.g. {example}")
    values: list[str | None] = []
    for name in ("ref", "email"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"'{name}' must be a string or null")
        values.append(value.strip() or None if isinstance(value, str) else None)
    return url.strip(), values[0], values[1]


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response | HTTPException | tuple[Response, int]:
        # Errors under /api/ answer in JSON; the pages keep werkzeug's HTML.
        if request.path.startswith("/api/"):
            code = error.code or 500
            if code == 413:
                return _error(f"the request body is over {app.config['MAX_CONTENT_LENGTH']} "
                              "bytes; send less", 413)
            return _error(error.description or error.name, code)
        return error

    @app.get("/api/builds")
    def api_builds() -> Response | tuple[Response, int]:
        try:
            filters = build_filters(request.args)
            limit = int_parameter(request.args, "limit", 50, low=0, high=MAX_LIMIT)
            offset = int_parameter(request.args, "offset", 0, low=0, high=2**62)
        except BadRequest as error:
            return _error(str(error), 400)
        found = store()
        builds = found.list_builds(**filters, limit=limit, offset=offset)
        root = base_url() + "/"
        items = [
            build_json(b, page_url=_page_url(b.id),
                       log_url=root + log_links(found, b)(None) if b.state is BuildState.BUILT else None)
            for b in builds
        ]
        return jsonify({"items": items, "total": found.count_builds(**filters),
                        "limit": limit, "offset": offset})

    @app.get("/api/counters")
    def api_counters() -> Response:
        """What the controller dropped or did besides builds: duplicate, stale and malformed
        results, emails sent and failed (operators alert on these)."""
        return jsonify(store().counters())

    @app.get("/api/builds/<int:build_id>")
    def api_build(build_id: int) -> Response | tuple[Response, int]:
        found = store()
        build = found.get_build(build_id)
        if build is None:
            return _error(f"there is no build {build_id}", 404)
        root = base_url() + "/"
        built = build.state is BuildState.BUILT
        link = log_links(found, build)
        answer: dict[str, Any] = build_json(
            build, page_url=_page_url(build.id), log_url=root + link(None) if built else None)
        answer["operations"] = [
            operation_json(op, root + link(op.name))
            for op in found.operations(build_id)
        ]
        answer["attempts"] = [attempt_json(a) for a in found.attempts(build_id)]
        return jsonify(answer)

    @app.post("/api/submit")
    def api_submit() -> tuple[Response, int]:
        submit = submit_hook()
        if submit is None:
            return _error("this controller takes no submissions", 404)
        try:
            url, ref, email = _submission(request.get_data(cache=False))
        except BadRequest as error:
            return _error(str(error), 400)
        try:
            set_id = submit(url, ref, email)
        except ValueError as error:
            return _error(str(error), 400)
        except Exception:
            log.exception("submission of %s failed", url)
            return _error("the submission failed on the controller; try again later", 500)
        return jsonify({"set_id": set_id,
                        "builds_url": f"{base_url()}/builds?set_id={set_id}"}), 202
