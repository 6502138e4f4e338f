"""HTML pages for people: the build list and one build."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, abort, render_template, request, url_for

from bbot.controller.lease import BuildState
from bbot.controller.web.common import BadRequest, build_filters, format_time, int_parameter, store
from bbot.controller.web.logs import log_links
from bbot.manifest.status import Status

PAGE_SIZE = 50
REFRESH_SECONDS = 10


def register(app: Flask) -> None:
    app.jinja_env.filters["when"] = format_time

    @app.context_processor
    def names() -> dict[str, Any]:
        return {"statuses": [s.value for s in Status], "states": [s.value for s in BuildState]}

    @app.get("/builds")
    def builds() -> Response | tuple[str, int]:
        try:
            filters = build_filters(request.args)
            page = int_parameter(request.args, "page", 1, low=1, high=10**9)
        except BadRequest as error:
            return render_template("error.html", message=str(error)), 400
        found = store()
        total = found.count_builds(**filters)
        rows = found.list_builds(**filters, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
        unfinished = 0
        if filters.get("state") in (None, BuildState.QUEUED, BuildState.LEASED):
            unfinished = sum(
                found.count_builds(**{**filters, "state": state})
                for state in (BuildState.QUEUED, BuildState.LEASED)
            )
        pages = max(1, -(-total // PAGE_SIZE))

        def page_url(number: int) -> str:
            params: dict[str, Any] = {k: v for k, v in request.args.items() if k != "page"}
            params["page"] = number
            return url_for("builds", **params)

        return Response(render_template(
            "builds.html",
            builds=rows,
            total=total,
            page=page,
            pages=pages,
            previous_url=page_url(page - 1) if page > 1 else None,
            next_url=page_url(page + 1) if page < pages else None,
            args=request.args,
            refresh=REFRESH_SECONDS if unfinished else None,
            unfinished=unfinished,
        ))

    @app.get("/builds/<int:build_id>")
    def build(build_id: int) -> Response:
        found = store()
        row = found.get_build(build_id)
        if row is None:
            abort(404, f"there is no build {build_id}")
        operations = found.operations(build_id)
        root = request.script_root + "/"
        built = row.state is BuildState.BUILT
        link = log_links(found, row)
        return Response(render_template(
            "build.html",
            build=row,
            operations=[(op, root + link(op.name)) for op in operations],
            combined_log=root + link(None) if built and operations else None,
            attempts=found.attempts(build_id),
            previous=found.previous_build(row),
            refresh=None if built else REFRESH_SECONDS,
        ))
