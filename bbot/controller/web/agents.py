"""The Flask side of brep's agent interface: read the body within its limit, answer the reply.

The decisions are in ``bbot.controller.shim`` (broker and store) and
``bbot.brep.protocol`` (no I/O); here are only bytes in and out.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from bbot.brep import protocol
from bbot.brep.protocol import HttpError, Route
from bbot.controller.shim import AgentShim, Reply
from bbot.controller.web.brep import Handler, plain
from bbot.wire import MANIFEST_CONTENT_TYPE


def read_body(limit: int) -> bytes:
    """The request body; 413 when it is (or says it is) over ``limit`` bytes."""
    protocol.check_length(request.content_length, limit)
    request.max_content_length = limit  # Werkzeug refuses a longer body while reading it
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise HttpError(413, protocol.PAYLOAD_TOO_LARGE) from None
    if len(body) > limit:  # a chunked body has no length to check first
        raise HttpError(413, protocol.PAYLOAD_TOO_LARGE)
    return body


def _respond(reply: Reply) -> Response:
    if reply.manifest:
        return Response(reply.body, status=reply.status, content_type=MANIFEST_CONTENT_TYPE)
    return plain(reply.body, reply.status)


def handlers(shim: AgentShim) -> dict[str, Handler]:
    def endpoint(limit: int, handle: Callable[[Route, bytes], Reply]) -> Handler:
        def view(route: Route) -> Response:
            return _respond(handle(route, read_body(limit)))
        return view

    return {
        protocol.BUILD_TASK: endpoint(protocol.TASK_REQUEST_MAX_BYTES, shim.build_task),
        protocol.BUILD_RESULT: endpoint(protocol.RESULT_REQUEST_MAX_BYTES, shim.build_result),
    }
