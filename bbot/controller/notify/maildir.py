"""Write notification email to a local Maildir: the embedded default's outbox."""

from __future__ import annotations

import logging
import mailbox
import threading
from email.message import EmailMessage
from pathlib import Path

log = logging.getLogger(__name__)


class MaildirNotifier:
    """Adds each message to the Maildir at ``path`` (created if missing).

    Read it with any mail client (``mutt -f <path>``) or ``mailbox.Maildir``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._box = mailbox.Maildir(self.path, create=True)
        self._lock = threading.Lock()  # mailbox objects are not thread-safe
        self.sent = 0
        self.failed = 0

    def __repr__(self) -> str:
        return f"MaildirNotifier({str(self.path)!r})"

    def send(self, msg: EmailMessage) -> None:
        try:
            with self._lock:
                self._box.add(msg)
        except OSError as error:
            self.failed += 1
            log.error("email %r not written to %s: %s", msg["Subject"], self.path, error)
            return
        self.sent += 1
