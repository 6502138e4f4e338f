"""brep's handlers for people (bbot-protocol.md §3.12): ``?builds``, ``?build-configs``, ``?build-force``.

Reading the URL parameters is done by the pure functions at the top
(``builds_query``, ``configs_query``, ``force_request``), which raise
``HttpError`` for anything the asker must fix; the Flask handlers below them
only read the store and render. Differences from brep, all because bbot is
simpler:

- bbot has no configuration classes: every configuration is in ``all`` and
  ``default``, and none is hidden.
- ``rs=unbuilt`` lists the builds that wait or build (queued or leased),
  ``pending`` the queued ones and ``building`` the leased ones; brep lists
  package configurations that have no build object instead.
- A forced rebuild is queued at once (no forced-rebuild timeout): "Rebuilding
  in 0 seconds."
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from flask import Flask, Response, current_app, render_template, request

from bbot.brep import protocol
from bbot.brep.protocol import (
    BUILD_CONFIGS,
    BUILD_FORCE,
    BUILDS,
    PAGE_PARAMETERS_MAX_BYTES,
    PAYLOAD_TOO_LARGE,
    HttpError,
    Route,
)
from bbot.config import BuildConfiguration
from bbot.controller.lease import BuildState
from bbot.controller.store import BuildNotFound, BuildRow, ForceOutcome, OperationRow
from bbot.controller.web import brep
from bbot.controller.web.common import CONFIGURATIONS_KEY, FORCE_KEY, base_url, format_time, store
from bbot.controller.web.logs import log_links
from bbot.manifest.status import Status
from bbot.wire import BuildKey, force_url

log = logging.getLogger(__name__)

PAGE_SIZE = 50
MAX_PAGE = 10**9  # p beyond this is a typo, not a page: keeps the SQL offset sane

# ?builds&rs=...: brep's result filter values, in the order its form lists them.
RESULTS = ("*", "unbuilt", "pending", "building", "success", "warning", "error", "abort", "abnormal")
# Statuses a result filter from "warning" on also takes ("this status or worse"); brep's order.
RESULT_STATUSES = (Status.SUCCESS, Status.WARNING, Status.ERROR, Status.ABORT, Status.ABNORMAL)

# bbot has no configuration classes: every configuration is in these, none is hidden.
CLASSES = ("all", "default")

EXPIRED = "package build configuration expired"
MISSING_REASON = "missing rebuild reason"
# bbot queues a forced rebuild at once, where brep waits build-forced-rebuild-timeout.
FORCED_REBUILD_SECONDS = 0

# ?build-force parameters (all required), in brep's URL order, with what they name.
FORCE_PARAMETERS = tuple(zip(protocol.FORCE_PARAMETERS, (
    "package name", "package version", "target", "target configuration", "package configuration",
    "toolchain name", "toolchain version"), strict=True))
REASON = protocol.FORCE_REASON

BUILDS_PARAMETERS = ("pv", "th", "tg", "tc", "pc", "rs", "p")


# --------------------------------------------------------------------------- parameters (no I/O)


def check_query_size(query_string: bytes) -> None:
    """413 for a query over brep's 8 KiB parameter cap."""
    if len(query_string) > PAGE_PARAMETERS_MAX_BYTES:
        raise HttpError(413, PAYLOAD_TOO_LARGE)


def _unknown(route: Route, known: Sequence[str]) -> None:
    for name, _ in route.params:
        if name not in known:
            raise HttpError(400, f"unknown parameter '{name}': expected one of {', '.join(known)}")


def _page(route: Route) -> int:
    raw = route.get("p")
    if raw is None or raw == "":
        return 0
    if not raw.isdigit() or int(raw) > MAX_PAGE:  # isdigit: no sign, no spaces
        raise HttpError(400, f"invalid value '{raw}' for parameter 'p': expected a page number "
                             f"from 0 to {MAX_PAGE}")
    return int(raw)


def _version(raw: str) -> str:
    # brep's URLs put versions in the query unencoded, so their '+' arrives as a space,
    # which no version contains.
    return raw.replace(" ", "+")


def _wildcard(raw: str | None) -> str | None:
    """A filter value: None (no filter) when empty or "*"."""
    return None if raw is None or raw in ("", "*") else raw


def version_patterns(raw: str | None) -> tuple[str, ...]:
    """The wildcards a ``pv`` filter matches versions with; () for any version.

    As in brep, a version without a revision matches every revision of it: ``1.2.3``
    matches ``1.2.3`` and ``1.2.3+1``.
    """
    version = _wildcard(None if raw is None else _version(raw))
    if version is None:
        return ()
    if "+" in version or "*" in version or "?" in version:
        return (version,)
    return (version, version + "+*")


def result_filter(result: str) -> tuple[tuple[BuildState, ...], tuple[Status, ...]]:
    """The states and statuses (empty: any) an ``rs`` value stands for."""
    if result == "*":
        return (), ()
    if result == "unbuilt":
        return (BuildState.QUEUED, BuildState.LEASED), ()
    if result == "pending":
        return (BuildState.QUEUED,), ()
    if result == "building":
        return (BuildState.LEASED,), ()
    status = Status(result)
    if status is Status.SUCCESS:
        return (BuildState.BUILT,), (status,)
    return (BuildState.BUILT,), tuple(s for s in RESULT_STATUSES if s >= status)


@dataclass(frozen=True)
class BuildsQuery:
    """The parameters of ``?builds[=<package>]``; None or "*" means no filter."""

    package: str | None = None
    version: str | None = None
    toolchain: str | None = None
    target: str | None = None
    target_config: str | None = None
    package_config: str | None = None
    result: str = "*"
    page: int = 0

    def filters(self, tenant: str) -> dict[str, Any]:
        """Keyword arguments of ``Store.find_builds``, without the page. The root URL
        (no tenant) shows every tenant's builds, as brep's global view does."""
        states, statuses = result_filter(self.result)
        return {
            "tenant": tenant or None,
            "package": _wildcard(self.package),
            "versions": version_patterns(self.version),
            "toolchain": _wildcard(self.toolchain),
            "target": _wildcard(self.target),
            "target_config": _wildcard(self.target_config),
            "package_config": _wildcard(self.package_config),
            "states": states,
            "statuses": statuses,
        }

    def query_string(self, page: int) -> str:
        """The URL query that shows page ``page`` of this list (``builds`` first: it names
        the handler)."""
        pairs = [(BUILDS, self.package or "")]
        for name, value in (("pv", self.version), ("th", self.toolchain), ("tg", self.target),
                            ("tc", self.target_config), ("pc", self.package_config)):
            if value:
                pairs.append((name, value))
        if self.result != "*":
            pairs.append(("rs", self.result))
        if page:
            pairs.append(("p", str(page)))
        return urlencode(pairs)


def builds_query(route: Route) -> BuildsQuery:
    _unknown(route, BUILDS_PARAMETERS)
    result = route.get("rs") or "*"
    if result not in RESULTS:
        raise HttpError(400, f"invalid value '{result}' for parameter 'rs': expected one of "
                             f"{', '.join(RESULTS)}")
    version = route.get("pv")
    toolchain = route.get("th")
    return BuildsQuery(
        package=route.default,
        version=None if version is None else _version(version),
        toolchain=None if toolchain is None else _version(toolchain),
        target=route.get("tg"),
        target_config=route.get("tc"),
        package_config=route.get("pc"),
        result=result,
        page=_page(route),
    )


@dataclass(frozen=True)
class ConfigsQuery:
    """The parameters of ``?build-configs[=<class>]``."""

    configuration_class: str | None = None
    page: int = 0

    def shows(self, configuration: BuildConfiguration) -> bool:
        # Every bbot configuration is in "all" and "default" (and none is hidden).
        return self.configuration_class is None or self.configuration_class in CLASSES


def configs_query(route: Route) -> ConfigsQuery:
    _unknown(route, ("p",))
    return ConfigsQuery(route.default, _page(route))


@dataclass(frozen=True)
class ForceRequest:
    key: BuildKey
    reason: str


def force_request(route: Route) -> ForceRequest:
    """The build ``?build-force`` names and why; 400 naming what is missing."""
    if route.default is not None:
        raise HttpError(400, f"unexpected value '{route.default}' of parameter '{BUILD_FORCE}'")
    names = [name for name, _ in FORCE_PARAMETERS]
    _unknown(route, [*names, REASON])
    reason = route.get(REASON)
    if not reason:
        raise HttpError(400, MISSING_REASON)
    values: dict[str, str] = {}
    for name, label in FORCE_PARAMETERS:
        value = route.get(name)
        if value is None:
            raise HttpError(400, f"missing parameter '{name}' ({label})")
        if not value:
            raise HttpError(400, f"empty parameter '{name}' ({label})")
        values[name] = _version(value) if name in ("pv", "tv") else value
    key = BuildKey(values["pn"], values["pv"], values["tg"], values["tc"], values["pc"],
                   values["tn"], values["tv"], tenant=route.tenant)
    return ForceRequest(key, reason)


# --------------------------------------------------------------------------- pages


@dataclass(frozen=True)
class BuildView:
    """One build as the list shows it."""

    build: BuildRow
    timestamp: str
    failed: list[tuple[OperationRow, str]]  # non-success operations with their log URLs
    combined_log: str | None
    force_url: str | None  # None when it cannot be forced now (queued)
    force_action: str  # where the rebuild form goes: the build's tenant's root
    force_fields: list[tuple[str, str]]  # the rebuild form's hidden fields
    tenant_url: str | None  # in the global view, the list of its tenant's builds


def _root(tenant: str) -> str:
    """The path of the handlers' URLs on this server (for forms and page links)."""
    return request.script_root + "/" + (f"@{quote(tenant, safe='')}" if tenant else "")


def _view(build: BuildRow, operations: list[OperationRow], link: Callable[[str | None], str] | None,
          global_view: bool) -> BuildView:
    base = base_url()
    failed: list[tuple[OperationRow, str]] = []
    combined = None
    if link is not None and operations:
        failed = [(op, f"{base}/{link(op.name)}") for op in operations if op.status is not Status.SUCCESS]
        combined = f"{base}/{link(None)}"
    key = build.key
    can_force = build.state is not BuildState.QUEUED
    stamp = build.finished_at or build.issued_at or build.created_at
    fields = [("pn", key.package_name), ("pv", key.package_version), ("tg", key.target),
              ("tc", key.target_config), ("pc", key.package_config), ("tn", key.toolchain_name),
              ("tv", key.toolchain_version)]
    return BuildView(
        build=build,
        timestamp=format_time(stamp),
        failed=failed,
        combined_log=combined,
        force_url=force_url(base, key) if can_force else None,
        force_action=_root(build.tenant),
        force_fields=fields,
        tenant_url=f"{_root(build.tenant)}?{BUILDS}" if global_view and build.tenant else None,
    )


def _pages(total: int) -> int:
    return max(1, -(-total // PAGE_SIZE))


def builds_page(route: Route) -> Response:
    check_query_size(request.query_string)
    query = builds_query(route)
    found = store()
    total, rows = found.find_builds(**query.filters(route.tenant), limit=PAGE_SIZE,
                                    offset=query.page * PAGE_SIZE)
    views = [
        _view(build, operations,
              log_links(found, build) if build.state is BuildState.BUILT else None,
              global_view=not route.tenant)
        for build, operations in rows
    ]
    pages = _pages(total)
    root = _root(route.tenant)
    configurations: tuple[BuildConfiguration, ...] = current_app.extensions.get(CONFIGURATIONS_KEY, ())
    return Response(render_template(
        "brep_builds.html",
        views=views,
        total=total,
        query=query,
        results=RESULTS,
        tenant=route.tenant,
        action=root,
        config_names=sorted({c.name for c in configurations}),
        page=query.page,
        pages=pages,
        previous_url=f"{root}?{query.query_string(query.page - 1)}" if query.page > 0 else None,
        next_url=f"{root}?{query.query_string(query.page + 1)}" if query.page + 1 < pages else None,
    ))


def build_configs_page(route: Route) -> Response:
    check_query_size(request.query_string)
    query = configs_query(route)
    configurations: tuple[BuildConfiguration, ...] = current_app.extensions.get(CONFIGURATIONS_KEY, ())
    shown = [c for c in configurations if query.shows(c)]
    pages = _pages(len(shown))
    start = query.page * PAGE_SIZE
    root = _root(route.tenant)

    def page_url(page: int) -> str:
        pairs = [(BUILD_CONFIGS, query.configuration_class or "")]
        if page:
            pairs.append(("p", str(page)))
        return f"{root}?{urlencode(pairs)}"

    return Response(render_template(
        "brep_build_configs.html",
        configurations=shown[start:start + PAGE_SIZE],
        total=len(shown),
        configuration_class=query.configuration_class,
        builds_url=lambda c: f"{root}?{urlencode([(BUILDS, ''), ('tg', c.target), ('tc', c.name)])}",
        class_url=f"{root}?{BUILD_CONFIGS}=default",
        page=query.page,
        pages=pages,
        previous_url=page_url(query.page - 1) if query.page > 0 else None,
        next_url=page_url(query.page + 1) if query.page + 1 < pages else None,
    ))


def build_force(route: Route) -> Response:
    check_query_size(request.query_string)
    wanted = force_request(route)
    found = store()
    build = found.find_by_key(wanted.key)
    if build is None:
        raise HttpError(404, f"{EXPIRED}: no such package build")
    try:
        outcome = found.force(build.id, wanted.reason)
    except BuildNotFound:  # deleted since it was found
        raise HttpError(404, f"{EXPIRED}: no such package build") from None
    if outcome is ForceOutcome.QUEUED:
        raise HttpError(404, f"{EXPIRED}: state is queued")
    log.info("forced rebuild of build %d (%s/%s %s): %s", build.id, build.package_name,
             build.package_version, build.configuration, wanted.reason)
    on_force: Callable[[], None] | None = current_app.extensions.get(FORCE_KEY)
    if on_force is not None:
        try:
            on_force()
        except Exception:
            # The rebuild is queued already: the scheduler's next round picks it up.
            log.exception("waking the scheduler after forcing build %d failed", build.id)
    return brep.plain(f"Rebuilding in {FORCED_REBUILD_SECONDS} seconds.")


def register(app: Flask) -> None:
    brep.add_handlers(app, {BUILDS: builds_page, BUILD_CONFIGS: build_configs_page,
                            BUILD_FORCE: build_force})
