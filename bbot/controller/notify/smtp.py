"""Send notification email through an SMTP server (the datacenter deployment)."""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage

log = logging.getLogger(__name__)


class SmtpNotifier:
    """Hands each message to an SMTP server; failures are logged, never raised.

    A notification that cannot be sent must not stop the controller from
    taking the next result (brep only logs sendmail failures too).
    """

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        *,
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("SMTP: give both username and password, or neither")
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self._password = password
        self.starttls = starttls
        self.timeout = timeout
        self._tls_context = tls_context
        self.sent = 0
        self.failed = 0

    def __repr__(self) -> str:  # never shows the password
        return f"SmtpNotifier({self.host}:{self.port}, sender={self.sender!r})"

    def send(self, msg: EmailMessage) -> None:
        if "From" not in msg:
            msg["From"] = self.sender
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=self._tls_context or ssl.create_default_context())
                if self.username is not None and self._password is not None:
                    smtp.login(self.username, self._password)
                smtp.send_message(msg, from_addr=self.sender)
        except (OSError, smtplib.SMTPException) as error:
            self.failed += 1
            log.error(
                "email %r to %s not sent through %s:%d: %s",
                msg["Subject"], msg["To"], self.host, self.port, error,
            )
            return
        self.sent += 1
