"""brep's URL dispatch and handler parameters, with no I/O (§3.1-§3.3, §3.9, §3.12).

Everything here that the protocol reference marks "recalled, not verified" is
decided in this one module: handler names, parameter names, limits, the
texts of rejections. The controller's Flask views only move bytes in and out.

Dispatch (§3.1): the path below the root is empty or ``@<tenant>``; the
*first* query parameter's name picks the handler; when it has a value
(``?builds=libfoo``) that value becomes the handler's default parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote

from bbot.manifest import fields as F

# Handlers, by the name of the first query parameter.
BUILD_TASK = "build-task"
BUILD_RESULT = "build-result"
BUILDS = "builds"
BUILD_CONFIGS = "build-configs"
BUILD_FORCE = "build-force"
HANDLERS = (BUILD_TASK, BUILD_RESULT, BUILDS, BUILD_CONFIGS, BUILD_FORCE)

# Body limits (brep's build-task-request-max-size / build-result-request-max-size defaults).
TASK_REQUEST_MAX_BYTES = 102_400
RESULT_REQUEST_MAX_BYTES = 15_728_640
# brep caps the parameters of ?build-force at 8 KiB and those of the pages alike.
PAGE_PARAMETERS_MAX_BYTES = 8_192

# brep's build-result-timeout: how long an HTTP agent, which sends no heartbeats, has for a result.
DEFAULT_RESULT_TIMEOUT = 10_800.0

# Texts of rejections (§3.2, §3.3): the body of the reply, as text/plain.
PAYLOAD_TOO_LARGE = "payload too large"
UNAUTHORIZED = "unauthorized"

# ?build-task URL parameters (§3.3): name -> canonical name. Anything else is a 400.
TASK_PARAMETERS = {"repository": "repository", "r": "repository", "interactive": "interactive", "t": "t"}


class HttpError(Exception):
    """A request the sender must fix: answered with ``status`` and ``text`` (text/plain)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@dataclass(frozen=True)
class Route:
    """Which handler a request goes to, with its tenant and its other query parameters."""

    handler: str
    tenant: str = ""
    default: str | None = None  # the first parameter's value: ?builds=libfoo -> "libfoo"
    params: tuple[tuple[str, str], ...] = ()  # the rest, in order

    def get(self, name: str) -> str | None:
        """The last value of parameter ``name``, or None."""
        found = None
        for key, value in self.params:
            if key == name:
                found = value
        return found


def route(path: str, query_string: str) -> Route | None:
    """The handler for ``path`` (below the root) and its raw query; None when it is no handler's
    URL (the root without a query, or a path that is not ``@<tenant>``)."""
    path = path.strip("/")
    tenant = ""
    if path:
        if not path.startswith("@") or "/" in path:
            return None
        tenant = unquote(path[1:])
        if not tenant:
            raise HttpError(400, "empty tenant")
    if not query_string:
        return None
    try:
        pairs = parse_qsl(query_string, keep_blank_values=True, strict_parsing=False,
                          encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, "invalid URL query: not UTF-8") from None
    if not pairs:
        return None
    (name, value), rest = pairs[0], tuple(pairs[1:])
    if name not in HANDLERS:
        return None
    return Route(name, tenant, value or None, rest)


@dataclass(frozen=True)
class TaskParameters:
    """The URL parameters of ?build-task (§3.3)."""

    repositories: tuple[str, ...] = ()
    interactive: str = F.INTERACTIVE_MODE_BOTH
    service_types: tuple[str, ...] | None = None  # None: any tenant

    def hands_out(self, request_mode: str) -> bool:
        """Whether this controller can hand a task out at all: bbot has no interactive
        tenants and no third-party services, so some requests can only get "no task"."""
        mode = request_mode
        if self.interactive != F.INTERACTIVE_MODE_BOTH:
            if mode not in (F.INTERACTIVE_MODE_BOTH, self.interactive):
                return False  # true against false: brep answers with an empty session
            mode = self.interactive
        if mode == F.INTERACTIVE_MODE_TRUE:
            return False  # only interactive builds were asked for, and bbot has none
        # t= (empty) means tenants with no service: every bbot build.
        return self.service_types is None or "" in self.service_types


def task_parameters(route: Route) -> TaskParameters:
    if route.default is not None:
        raise HttpError(400, f"unexpected value '{route.default}' of parameter '{BUILD_TASK}'")
    repositories: list[str] = []
    interactive = F.INTERACTIVE_MODE_BOTH
    service_types: list[str] | None = None
    for name, value in route.params:
        canonical = TASK_PARAMETERS.get(name)
        if canonical is None:
            raise HttpError(400, f"unknown parameter '{name}'")
        if canonical == "repository":
            repositories.append(value)
        elif canonical == "interactive":
            if value not in F.INTERACTIVE_MODES:
                raise HttpError(400, f"invalid value '{value}' for option 'interactive': "
                                     f"expected {', '.join(F.INTERACTIVE_MODES)}")
            interactive = value
        else:
            service_types = [*(service_types or []), value]
    return TaskParameters(tuple(repositories), interactive,
                          None if service_types is None else tuple(service_types))


def result_parameters(route: Route) -> None:
    """?build-result takes no parameter but its name (§3.9)."""
    if route.default is not None:
        raise HttpError(400, f"unexpected value '{route.default}' of parameter '{BUILD_RESULT}'")
    if route.params:
        raise HttpError(400, f"unknown parameter '{route.params[0][0]}'")


def reason_line(text: str) -> str:
    """A rejection's reason on one line: line breaks it quotes from the request (a multi-line
    manifest value, an encoded URL parameter) are written as ``\\n`` and ``\\r``."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def check_length(content_length: int | None, limit: int) -> None:
    """413 before reading a body that says it is over ``limit``."""
    if content_length is not None and content_length > limit:
        raise HttpError(413, PAYLOAD_TOO_LARGE)


def handler_url(base_url: str, handler: str, tenant: str = "") -> str:
    """``<host><root>[@<tenant>]?<handler>`` (§2.3): with root "/" and tenant T,
    ``https://h/@T?build-result``; with root "/pkg", ``https://h/pkg?build-result``."""
    root = base_url.rstrip("/")
    if tenant:
        root += "/@" + quote(tenant, safe="")
    elif not root.split("//", 1)[-1].count("/"):
        root += "/"  # the host's root: https://h/?build-result
    return f"{root}?{handler}"


def result_url(base_url: str, tenant: str = "") -> str:
    return handler_url(base_url, BUILD_RESULT, tenant)


# ?build-force's parameters (§3.12), in the order brep writes them.
FORCE_PARAMETERS = ("pn", "pv", "tg", "tc", "pc", "tn", "tv")
FORCE_REASON = "reason"


# Counter names (in the store): one place for what the shim counts.
COUNTER_AUTH_FAILED = "results_dropped_auth"
COUNTER_NOT_HANDED_OUT = "results_dropped_not_handed_out"
COUNTER_STALE_TASKS = "http_tasks_stale"
