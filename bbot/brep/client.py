"""The agent's side of brep's interface: poll ``?build-task``, post to the result URL.

Used by agents that poll (``bbot.agent.poller``) and by controllers that take
tasks from an upper controller (``bbot.controller.upstream``). Plain HTTP/1.1
with the standard library; bodies are manifests (§3.2).
"""

from __future__ import annotations

import logging
import random
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from bbot.brep import protocol
from bbot.manifest import ManifestError, ResultRequest, TaskRequest, TaskResponse
from bbot.wire import MANIFEST_CONTENT_TYPE

log = logging.getLogger(__name__)

TIMEOUT = 60.0  # seconds for one request, connection included


class ControllerError(Exception):
    """A controller did not take a request. ``retry``: the same request may succeed later
    (no connection, 5xx, 408, 429); otherwise the controller refused it for good (4xx)."""

    def __init__(self, url: str, message: str, *, status: int | None = None, retry: bool) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url
        self.status = status
        self.retry = retry


def post(url: str, body: bytes, *, timeout: float = TIMEOUT) -> bytes:
    """POST ``body`` as a manifest; the reply's body on 200, else ControllerError."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": MANIFEST_CONTENT_TYPE})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            data: bytes = reply.read()
            return data
    except urllib.error.HTTPError as error:
        text = error.read(4096).decode("utf-8", "replace").strip()
        retry = error.code >= 500 or error.code in (408, 429)
        raise ControllerError(url, f"HTTP {error.code}: {text}", status=error.code, retry=retry) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ControllerError(url, f"cannot reach the controller: {reason}", retry=True) from None


def request_task(controller_url: str, request: TaskRequest, *, timeout: float = TIMEOUT) -> TaskResponse:
    """One poll of ``controller_url`` (its root URL): the task response (empty session: no task)."""
    url = protocol.handler_url(controller_url, protocol.BUILD_TASK)
    data = post(url, request.to_text().encode("utf-8"), timeout=timeout)
    try:
        # Lenient, as an agent should be: a newer brep may send fields this bbot does not know yet.
        return TaskResponse.from_text(data, ignore_unknown=True)
    except (ManifestError, UnicodeDecodeError) as error:
        raise ControllerError(url, f"the task response is malformed: {error}", retry=True) from None


def post_result(result_url: str, request: ResultRequest, *, timeout: float = TIMEOUT) -> None:
    post(result_url, request.to_text().encode("utf-8"), timeout=timeout)


@dataclass
class Backoff:
    """Waits between tries: ``interval`` while things work, doubling (with jitter) up to
    ``maximum`` while they fail, back to ``interval`` after a success."""

    interval: float
    maximum: float
    failures: int = 0
    _random: random.Random = field(default_factory=random.Random)

    def succeeded(self) -> None:
        self.failures = 0

    def failed(self) -> None:
        self.failures += 1

    @property
    def delay(self) -> float:
        if not self.failures:
            return self.interval
        grown: float = min(self.maximum, self.interval * 2 ** min(self.failures, 30))
        return grown * (0.5 + self._random.random() / 2)  # jitter: agents of a farm do not poll in step
