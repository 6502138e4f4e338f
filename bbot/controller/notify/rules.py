"""Who gets mail about a finished build (brep §3.10, adapted to bbot's sources).

Pure: the caller looks the builds up, this module only decides.

- No mail for ``skip`` or ``interrupt`` (nothing new to say), nor for a build
  that has no status yet.
- The configured ``build_email`` addresses get mail when the status differs from
  the previous build's (same repository, branch, package and configuration), or
  when there is no previous build — brep's suppression rule.
- For a git source, the commit's author also gets mail when the configuration
  goes from ``success`` to ``warning`` or worse: they probably broke it.
- For a submission, the submitter (when they gave an address) always gets mail:
  they are waiting for exactly this answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from bbot.manifest.status import Status

SILENT_STATUSES = frozenset({Status.SKIP, Status.INTERRUPT})


def counts_as_previous(status: Status | None) -> bool:
    """Whether a build with ``status`` is what a later build is compared with.

    ``skip`` says "same as before" and ``interrupt`` says nothing, so neither
    replaces the last real status.
    """
    return status is not None and status not in SILENT_STATUSES


# Builds of tasks taken from an upper controller: that controller mails about them.
UPSTREAM = "upstream"


def may_mail(*, kind: str, status: Status | None, build_email: Sequence[str],
             author_email: str | None = None, submitter_email: str | None = None) -> bool:
    """Whether ``recipients`` can name anyone, whatever the previous status (spares looking it up)."""
    if status is None or status in SILENT_STATUSES or kind == UPSTREAM:
        return False
    return bool(build_email or (kind == "git" and author_email and status >= Status.WARNING)
                or (kind == "submit" and submitter_email))


def recipients(
    *,
    kind: str,
    status: Status | None,
    previous_status: Status | None,
    build_email: Sequence[str],
    author_email: str | None = None,
    submitter_email: str | None = None,
) -> list[str]:
    """The addresses to mail, in order, each once (compared without case)."""
    if status is None or status in SILENT_STATUSES or kind == UPSTREAM:
        return []
    chosen: list[str] = []
    if previous_status is None or previous_status != status:
        chosen.extend(build_email)
    if (
        kind == "git"
        and author_email
        and previous_status == Status.SUCCESS
        and status >= Status.WARNING
    ):
        chosen.append(author_email)
    if kind == "submit" and submitter_email:
        chosen.append(submitter_email)
    return _unique(chosen)


def _unique(addresses: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    unique: list[str] = []
    for address in addresses:
        address = address.strip()
        if address and address.lower() not in seen:
            seen.add(address.lower())
            unique.append(address)
    return unique
