"""The controller's web side: build pages, log pages (brep's URLs) and a JSON API.

``create_app`` builds the Flask app; ``server.serve`` runs it with waitress.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response

from bbot.config import BuildConfiguration
from bbot.controller.store import Store
from bbot.controller.web import api, brep, logs, pages, people
from bbot.controller.web.common import BASE_URL_KEY, CONFIGURATIONS_KEY, FORCE_KEY, STORE_KEY, SUBMIT_KEY

__all__ = ["create_app"]

# A submission is a URL, a ref and an address: a few KiB is plenty.
MAX_REQUEST_BYTES = 64 * 1024


def create_app(
    store: Store,
    *,
    base_url: str,
    submit: Callable[[str, str | None, str | None], int] | None = None,
    handlers: dict[str, brep.Handler] | None = None,
    configurations: tuple[BuildConfiguration, ...] = (),
    on_force: Callable[[], None] | None = None,
) -> Flask:
    """The WSGI app over ``store``.

    ``base_url`` is the controller's public root, used for absolute URLs (API,
    submissions); it can be changed later through ``app.config["BBOT_BASE_URL"]``.
    ``submit(url, ref, email) -> build set id`` enables ``POST /api/submit``; its
    ``ValueError`` is the submitter's mistake (400), anything else a failure (500).
    ``handlers`` serve brep's ``?<handler>`` URLs (the agent shim adds
    ``build-task`` and ``build-result``); ``configurations`` are listed by
    ``?build-configs``; ``on_force`` is called after a forced rebuild was queued.
    """
    app = Flask(__name__, static_folder=None)
    # Keep "a//b" as sent: an empty log path part is a 400, not a redirect.
    app.url_map.merge_slashes = False
    app.config[BASE_URL_KEY] = base_url
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.config["JSON_SORT_KEYS"] = False
    app.extensions[STORE_KEY] = store
    app.extensions[SUBMIT_KEY] = submit
    app.extensions[CONFIGURATIONS_KEY] = configurations
    app.extensions[FORCE_KEY] = on_force
    app.jinja_env.autoescape = True  # every template, whatever its file name
    pages.register(app)
    api.register(app)
    brep.register(app)
    brep.add_handlers(app, handlers or {})
    people.register(app)
    logs.register(app)  # last: its catch-all route must not shadow the others

    @app.get("/healthz")
    def healthz() -> Response:
        store.count_builds(state="leased")  # the store answers
        return Response("ok\n", content_type="text/plain;charset=utf-8")

    @app.after_request
    def no_sniffing(response: Response) -> Response:
        # Logs come from untrusted builds: never let a browser take them for HTML.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    return app

