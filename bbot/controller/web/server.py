"""Serve the controller's WSGI app with waitress in a thread of this process."""

from __future__ import annotations

import logging
import threading
from typing import Any

import waitress
from flask import Flask
from waitress import wasyncore
from waitress.trigger import trigger as Trigger

log = logging.getLogger(__name__)


class WebServer:
    """A running waitress server; ``stop()`` closes its sockets and joins its threads."""

    def __init__(self, server: Any, socket_map: dict[int, Any], host: str, port: int) -> None:
        self._server = server
        self._map = socket_map
        self.host = host
        self.port = port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        self._thread = threading.Thread(target=self._run, name=f"web:{port}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"WebServer({self.url})"

    def _run(self) -> None:
        try:
            self._server.run()
        except Exception:  # pragma: no cover - waitress handles request errors itself
            log.exception("web server %s stopped with an error", self.url)

    def stop(self, timeout: float = 10.0) -> None:
        if not self._thread.is_alive():
            return
        wakers = [entry for entry in self._map.values() if isinstance(entry, Trigger)]
        if wakers:
            # Close every socket from inside the server's own loop: the loop ends
            # once its socket map is empty.
            wakers[0].pull_trigger(lambda: wasyncore.close_all(self._map))
        else:  # pragma: no cover - waitress always has a trigger in its map
            wasyncore.close_all(self._map)
        self._thread.join(timeout)
        self._server.task_dispatcher.shutdown(timeout=timeout)
        if self._thread.is_alive():  # pragma: no cover
            raise RuntimeError(f"web server {self.url} did not stop within {timeout}s")


def serve(app: Flask, host: str = "127.0.0.1", port: int = 0, *, threads: int = 4) -> WebServer:
    """Start serving ``app`` on ``host:port`` (0: a free port, see ``.port``)."""
    socket_map: dict[int, Any] = {}
    server = waitress.create_server(
        app, map=socket_map, host=host, port=port, threads=threads, ident="bbot"
    )
    if hasattr(server, "effective_port"):
        bound_host, bound_port = str(server.effective_host), int(server.effective_port)
    else:  # several listening sockets (a name resolving to IPv4 and IPv6): show the first
        bound_host, bound_port = server.effective_listen[0]
    log.info("web pages on http://%s:%d", bound_host, bound_port)
    return WebServer(server, socket_map, str(bound_host), int(bound_port))
