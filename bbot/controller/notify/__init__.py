"""Notification email about finished builds.

``notify_build`` decides who gets mail (``rules``), composes it (``message``)
and hands it to a ``Notifier``: ``SmtpNotifier`` (``smtp``) in a datacenter,
``MaildirNotifier`` (``maildir``) as the embedded default's local outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from email.message import EmailMessage
from typing import Protocol

from bbot.controller.lease import BuildState
from bbot.controller.notify import message, rules
from bbot.controller.store import BuildRow, Store
from bbot.manifest.status import Status

log = logging.getLogger(__name__)

__all__ = ["Notifier", "notify_build", "previous_status"]


class Notifier(Protocol):
    def send(self, msg: EmailMessage) -> None: ...


def previous_status(store: Store, build: BuildRow) -> Status | None:
    """The status of the latest earlier build of the same branch and configuration.

    Builds that ended ``skip`` or ``interrupt`` are passed over: they carry no
    status of their own to compare with.
    """
    previous = store.previous_build(build)
    while previous is not None and not rules.counts_as_previous(previous.status):
        previous = store.previous_build(previous)
    return None if previous is None else previous.status


def notify_build(
    store: Store,
    build_id: int,
    notifier: Notifier,
    *,
    base_url: str,
    sender: str,
    build_email: Sequence[str],
) -> list[str]:
    """Mail the people concerned by a finished build; returns who was mailed.

    Call it once, after the build's result was committed. Nothing is raised for
    a notifier that fails: the failure is logged and counted (``emails_failed``).
    """
    build = store.get_build(build_id)
    if build is None or build.state is not BuildState.BUILT:
        log.warning("no email for build %d: it is not built", build_id)
        return []
    return notify_built(store, build, notifier, base_url=base_url, sender=sender, build_email=build_email)


def notify_built(
    store: Store,
    build: BuildRow,
    notifier: Notifier,
    *,
    base_url: str,
    sender: str,
    build_email: Sequence[str],
) -> list[str]:
    """``notify_build`` for a build already read from the store (the controller reads many at once)."""
    if not rules.may_mail(kind=build.kind, status=build.status, build_email=build_email,
                          author_email=build.author_email, submitter_email=build.submitter_email):
        return []
    to = rules.recipients(
        kind=build.kind,
        status=build.status,
        previous_status=previous_status(store, build),
        build_email=build_email,
        author_email=build.author_email,
        submitter_email=build.submitter_email,
    )
    if not to:
        return []
    msg = message.compose(
        build, store.operations(build.id), base_url=base_url, sender=sender, recipients=to
    )
    try:
        notifier.send(msg)
    except Exception:
        log.exception("email about build %d to %s failed", build.id, ", ".join(to))
        store.bump("emails_failed")
        return []
    store.bump("emails_sent")
    return to
