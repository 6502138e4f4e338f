"""The notification email for one finished build, laid out like brep's (§3.10). Pure."""

from __future__ import annotations

import email.policy
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from bbot.controller.store import BuildRow, OperationRow
from bbot.wire import force_url, log_url

# Long subjects stay on one line (RFC 5322 allows 998 characters): folding them
# right after "Subject:" leaves a leading space in some readers.
_POLICY = email.policy.default.clone(max_line_length=998)


def build_page_url(base_url: str, build_id: int) -> str:
    return f"{base_url.rstrip('/')}/builds/{build_id}"


def subject(build: BuildRow) -> str:
    """``<build|rebuild> <status>: <pkg>/<ver> <target-config>/<target> <pkg-config> <tc>-<tv>``"""
    verb = "rebuild" if build.forced else "build"
    status = build.status.value if build.status is not None else "unknown"
    return (
        f"{verb} {status}: {build.package_name}/{build.package_version} "
        f"{build.configuration}/{build.target} {build.package_config} "
        f"{build.toolchain_name}-{build.toolchain_version}"
    )


def body(build: BuildRow, operations: Sequence[OperationRow], *, base_url: str) -> str:
    status = build.status.value if build.status is not None else "unknown"
    lines: list[str] = []
    if operations:
        lines += [f"combined: {status}", "", f"  {log_url(base_url, build.key)}", ""]
        for operation in operations:
            lines += [
                f"{operation.name}: {operation.status.value}",
                "",
                f"  {log_url(base_url, build.key, operation.name)}",
                "",
            ]
    else:
        lines += ["No operation results available.", ""]
        if build.reason:
            lines += [f"reason: {build.reason}", ""]
    if build.kind == "git":
        lines += [f"repository: {build.repository_url}"]
        if build.ref:
            lines += [f"branch: {build.ref}"]
        if build.commit:
            lines += [f"commit: {build.commit}"]
        author = _author(build)
        if author:
            lines += [f"author: {author}"]
        lines += [""]
    lines += ["Build page:", "", f"  {build_page_url(base_url, build.id)}", ""]
    # As brep's mails: a rebuild link, to complete with the reason.
    lines += ["Rebuild (add the reason at the end):", "", f"  {force_url(base_url, build.key)}", ""]
    return "\n".join(lines)


def compose(
    build: BuildRow,
    operations: Sequence[OperationRow],
    *,
    base_url: str,
    sender: str,
    recipients: Sequence[str],
) -> EmailMessage:
    message = EmailMessage(policy=_POLICY)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject(build)
    when = build.finished_at if build.finished_at is not None else build.created_at
    message["Date"] = formatdate(when, localtime=False, usegmt=True)
    # An explicit domain: make_msgid() would otherwise look the host name up.
    message["Message-ID"] = make_msgid("bbot", domain=_domain(sender))
    message["X-bbot-build"] = str(build.id)
    text = body(build, operations, base_url=base_url)
    if text.isascii() and all(len(line) <= 998 for line in text.splitlines()):
        # Plain 7bit keeps long log URLs whole for any mail reader.
        message.set_content(text, cte="7bit")
    else:
        message.set_content(text)
    return message


def _author(build: BuildRow) -> str:
    if build.author_name and build.author_email:
        return f"{build.author_name} <{build.author_email}>"
    return build.author_name or build.author_email or ""


def _domain(sender: str) -> str:
    _, _, domain = sender.rpartition("@")
    return domain.strip(" >") or "localhost"
