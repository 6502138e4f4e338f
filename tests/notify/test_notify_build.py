"""notify_build end to end: a real store, a real Maildir, a real SMTP server."""

from __future__ import annotations

import mailbox
import ssl
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from bbot.controller.notify import notify_build
from bbot.controller.notify.maildir import MaildirNotifier
from bbot.controller.notify.smtp import SmtpNotifier
from bbot.controller.store import NewBuild, NewBuildSet, Store
from bbot.manifest import OperationResult, Result
from bbot.manifest.status import Status
from tests.notify.smtp_server import Authenticator, Inbox, SmtpServer

TEAM = ["ci@example.org"]
BASE = "http://ci.example.org"


def git_set(ref: str = "main") -> NewBuildSet:
    return NewBuildSet(kind="git", source="hello", repository_url="https://git.example.org/h.git",
                       ref=ref, commit="abc123", package_name="libhello", package_version="1.0",
                       author_name="Ann", author_email="ann@example.org")


SUBMISSION = NewBuildSet(kind="submit", source="submit", repository_url="https://x.org/s.git",
                         ref=None, commit=None, package_name="libhello", package_version="1.0",
                         submitter_email="sub@example.org")

BUILD = NewBuild(configuration="linux-gcc", machine_pattern="linux*", target="x86_64-linux-gnu",
                 config_args="", warning_regex=[], package_config="default",
                 toolchain_name="public", toolchain_version="0.17.0")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    yield opened
    opened.close()


class Builder:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.sessions = 0

    def finish(self, status: Status, new_set: NewBuildSet | None = None) -> int:
        set_id = self.store.add_build_set(new_set or git_set())
        (build_id,) = self.store.add_builds(set_id, [BUILD])
        self.sessions += 1
        session = f"s{self.sessions}"
        self.store.issue(build_id, session, time.time() + 60, "task")
        ops = [OperationResult("update", status, f"{status.value} log\n")]
        self.store.record_result(session, Result("libhello", "1.0", status, ops, None, None))
        return build_id


def _text(message: mailbox.MaildirMessage) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def notify(store: Store, build_id: int, notifier: MaildirNotifier | SmtpNotifier) -> list[str]:
    return notify_build(store, build_id, notifier, base_url=BASE, sender="bbot@ci.example.org",
                        build_email=TEAM)


def test_history_decides_who_hears(store: Store, tmp_path: Path) -> None:
    outbox = MaildirNotifier(tmp_path / "outbox")
    builder = Builder(store)
    assert notify(store, builder.finish(Status.SUCCESS), outbox) == TEAM  # first build
    assert notify(store, builder.finish(Status.SUCCESS), outbox) == []  # unchanged
    assert notify(store, builder.finish(Status.SKIP), outbox) == []
    # The skip does not hide the last real status: success -> error is a breakage.
    broken = builder.finish(Status.ERROR)
    assert notify(store, broken, outbox) == [*TEAM, "ann@example.org"]
    assert notify(store, builder.finish(Status.ERROR), outbox) == []
    # Another branch has its own history.
    assert notify(store, builder.finish(Status.ERROR, git_set("dev")), outbox) == TEAM
    assert notify(store, builder.finish(Status.SUCCESS, SUBMISSION), outbox) == [
        *TEAM, "sub@example.org"]
    assert notify(store, builder.finish(Status.SUCCESS, SUBMISSION), outbox) == [
        "sub@example.org"]

    messages = list(mailbox.Maildir(tmp_path / "outbox", create=False))
    assert len(messages) == 5 and outbox.sent == 5
    subjects = sorted(str(m["Subject"]) for m in messages)
    assert ("build error: libhello/1.0 linux-gcc/x86_64-linux-gnu default public-0.17.0"
            in subjects)
    by_build = {str(m["X-bbot-build"]): m for m in messages}
    text = _text(by_build[str(broken)])
    assert f"  {BASE}/libhello/1.0/log/x86_64-linux-gnu/linux-gcc/default/public/0.17.0/update" \
        in text
    assert f"{BASE}/builds/{broken}" in text
    assert store.counters()["emails_sent"] == 5


def test_unfinished_or_missing_builds_get_no_mail(store: Store, tmp_path: Path) -> None:
    outbox = MaildirNotifier(tmp_path / "outbox")
    set_id = store.add_build_set(git_set())
    (queued,) = store.add_builds(set_id, [BUILD])
    assert notify(store, queued, outbox) == []
    assert notify(store, 9999, outbox) == []
    store.give_up(queued, "no machine")
    assert notify(store, queued, outbox) == TEAM
    (message,) = list(mailbox.Maildir(tmp_path / "outbox", create=False))
    assert "No operation results available." in _text(message)
    assert "reason: no machine" in _text(message)


def test_a_failing_notifier_is_logged_and_counted(store: Store) -> None:
    class Broken:
        def send(self, msg: EmailMessage) -> None:
            raise RuntimeError("disk on fire")

    build_id = Builder(store).finish(Status.ERROR)
    assert notify_build(store, build_id, Broken(), base_url=BASE, sender="b@x",
                        build_email=TEAM) == []
    assert store.counters()["emails_failed"] == 1


def test_smtp_delivers_to_a_real_server(store: Store) -> None:
    inbox = Inbox()
    server = SmtpServer(inbox)
    server.start()
    try:
        smtp = SmtpNotifier("127.0.0.1", server.port, "bbot@ci.example.org")
        build_id = Builder(store).finish(Status.ERROR)
        assert notify(store, build_id, smtp) == TEAM
        inbox.wait_for(1)
    finally:
        server.stop()
    mail_from, rcpt_tos, message = inbox.envelopes[0]
    assert (mail_from, rcpt_tos) == ("bbot@ci.example.org", TEAM)
    assert message["Subject"].startswith("build error: libhello/1.0")
    assert smtp.sent == 1 and smtp.failed == 0


def test_smtp_failure_is_not_raised() -> None:
    inbox = Inbox()
    server = SmtpServer(inbox)
    server.start()
    port = server.port
    server.stop()  # nothing listens on the port any more
    smtp = SmtpNotifier("127.0.0.1", port, "bbot@x", timeout=5)
    msg = EmailMessage()
    msg["To"] = "a@example.org"
    msg["Subject"] = "hello"
    msg.set_content("hi")
    smtp.send(msg)
    assert (smtp.sent, smtp.failed) == (0, 1)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def test_smtp_starttls_and_login(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    inbox = Inbox()
    server = SmtpServer(inbox, tls_context=server_tls,
                        authenticator=Authenticator("bbot", "s3cret"))
    server.start()
    msg = EmailMessage()
    msg["To"] = "a@example.org"
    msg["Subject"] = "over tls"
    msg.set_content("hi")
    try:
        wrong = SmtpNotifier("127.0.0.1", server.port, "bbot@x", "bbot", "wrong",
                             starttls=True, tls_context=client_tls)
        wrong.send(msg)
        assert wrong.failed == 1
        plain = SmtpNotifier("127.0.0.1", server.port, "bbot@x", "bbot", "s3cret")
        plain.send(msg)  # the server insists on STARTTLS before AUTH
        assert plain.failed == 1
        right = SmtpNotifier("127.0.0.1", server.port, "bbot@x", "bbot", "s3cret",
                             starttls=True, tls_context=client_tls)
        right.send(msg)
        assert right.sent == 1
        inbox.wait_for(1)
    finally:
        server.stop()
    assert inbox.envelopes[0][2]["Subject"] == "over tls"
    assert "s3cret" not in repr(right)


def test_smtp_needs_both_username_and_password() -> None:
    with pytest.raises(ValueError, match="both username and password"):
        SmtpNotifier("127.0.0.1", 25, "bbot@x", username="bbot")
