from __future__ import annotations

import http.client
import socket
from pathlib import Path

import pytest

from bbot.controller.store import Store
from bbot.controller.web import create_app
from bbot.controller.web.server import serve


def test_serves_on_a_free_port_and_stops(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    server = serve(create_app(store, base_url="http://x/"))
    try:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
        # A keep-alive connection left open must not keep the server from stopping.
        idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        idle.request("GET", "/healthz")
        response = idle.getresponse()
        assert (response.status, response.read()) == (200, b"ok\n")
    finally:
        server.stop()
        store.close()
    idle.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=5):
        pass
    server.stop()  # a second stop is harmless
