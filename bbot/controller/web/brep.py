"""brep's URL dispatch (§3.1): ``/[@<tenant>]?<handler>[=<value>]&...`` to one handler.

The first query parameter picks the handler (see ``bbot.brep.protocol.route``);
the handlers live in ``agents`` (``?build-task``, ``?build-result``) and
``people`` (``?builds``, ``?build-configs``, ``?build-force``). A handler that
this controller does not serve answers 501, as brep does with building disabled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask, Response, redirect, request, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from bbot.brep.protocol import HttpError, Route, reason_line, route

log = logging.getLogger(__name__)

HANDLERS_KEY = "bbot.brep_handlers"
Handler = Callable[[Route], BaseResponse]

TEXT = "text/plain;charset=utf-8"


def plain(text: str, status: int = 200) -> Response:
    return Response(text if not text or text.endswith("\n") else text + "\n", status=status,
                    content_type=TEXT)


def add_handlers(app: Flask, handlers: dict[str, Handler]) -> None:
    app.extensions.setdefault(HANDLERS_KEY, {}).update(handlers)


def _dispatch(app: Flask, path: str) -> BaseResponse:
    try:
        query = request.query_string.decode("ascii")
    except UnicodeDecodeError:
        return plain("invalid URL query: not percent-encoded", 400)
    try:
        found = route(path, query)
        if found is None:
            if not path.strip("/") and request.method in ("GET", "HEAD"):
                return redirect(url_for("builds"))
            return plain("no handler: use ?build-task, ?build-result, ?builds, ?build-configs or "
                         "?build-force", 404)
        handler: Handler | None = app.extensions.get(HANDLERS_KEY, {}).get(found.handler)
        if handler is None:
            return plain("not implemented", 501)
        return handler(found)
    except HttpError as error:
        return plain(reason_line(error.text), error.status)
    except HTTPException:
        raise  # Flask's own answers (405, 413 from a view ...)
    except Exception as error:
        # brep answers an internal failure with 500 and text/plain, never an HTML page.
        log.exception("%s %s failed", request.method, request.full_path)
        return plain(reason_line(f"internal error: {type(error).__name__}: {error}"), 500)


def register(app: Flask) -> None:
    @app.route("/", methods=["GET", "POST", "HEAD"], endpoint="brep_root")
    def root() -> BaseResponse:
        return _dispatch(app, "")

    @app.route("/@<tenant>", methods=["GET", "POST", "HEAD"], endpoint="brep_tenant")
    def tenant(tenant: str) -> BaseResponse:
        return _dispatch(app, "@" + tenant)
