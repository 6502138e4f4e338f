"""A real SMTP server for tests (aiosmtpd), on a free loopback port."""

from __future__ import annotations

import ssl
import threading
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session


class Inbox:
    """The aiosmtpd handler: keeps every message it receives."""

    def __init__(self) -> None:
        self.envelopes: list[tuple[str, list[str], EmailMessage]] = []
        self._arrived = threading.Condition()

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        parsed = message_from_bytes(content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._arrived:
            self.envelopes.append((envelope.mail_from or "", list(envelope.rcpt_tos), parsed))
            self._arrived.notify_all()
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.envelopes) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.envelopes)} messages arrived, expected {count}")
                self._arrived.wait(left)


class Authenticator:
    def __init__(self, username: str, password: str) -> None:
        self.expected = (username.encode(), password.encode())

    def __call__(self, server: Any, session: Session, envelope: Envelope, mechanism: str,
                 auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and (
            auth_data.login, auth_data.password) == self.expected:
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


class SmtpServer(Controller):  # type: ignore[misc]
    """aiosmtpd's Controller bound to port 0: ``port`` is the one the kernel chose."""

    def __init__(self, inbox: Inbox, *, tls_context: ssl.SSLContext | None = None,
                 authenticator: Authenticator | None = None) -> None:
        super().__init__(
            inbox,
            hostname="127.0.0.1",
            port=0,
            tls_context=tls_context,
            require_starttls=tls_context is not None,
            authenticator=authenticator,
            auth_require_tls=tls_context is not None,
        )

    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()
