"""GNU make, with ``./configure`` when the project has one; installs with DESTDIR."""

from __future__ import annotations

import os
import re

from bbot.worker.buildsystems import MAKEFILES, BuildContext
from bbot.worker.operations import CONFIGURE, INSTALL, TEST, UPDATE, Command, Plan, PlanError

#: Test targets in the order they are looked for (autotools and GNU convention first).
TEST_TARGETS = ("check", "test")

# A rule line: targets, then ':' or '::' that does not start an assignment (':=', '::=').
_RULE = re.compile(r"^([^\t#:=][^:=]*?)\s*::?(?![:=])")


def make_test_target(makefile_text: str) -> str | None:
    """The test target a Makefile defines (``check`` or ``test``), if any."""
    defined: set[str] = set()
    for line in makefile_text.splitlines():
        match = _RULE.match(line)
        if match:
            defined.update(match.group(1).split())
    return next((target for target in TEST_TARGETS if target in defined), None)


class Make:
    name = "make"

    def plan(self, operation: str, context: BuildContext) -> Plan:
        src = context.src
        if operation == CONFIGURE:
            script = src / "configure"
            if script.is_file() and os.access(script, os.X_OK):
                return Plan((Command(("./configure", *context.configure_args), cwd=src),))
            note = "no configure script: nothing to configure"
            if context.configure_args:
                note += "; ignored configure arguments: " + " ".join(context.configure_args)
            return Plan(note=note)
        if operation == UPDATE:
            return Plan((Command(("make", f"-j{context.jobs}"), cwd=src),))
        if operation == TEST:
            makefile = next((src / name for name in MAKEFILES if (src / name).is_file()), None)
            if makefile is None:
                raise PlanError("no Makefile after configure")
            text = makefile.read_text(encoding="utf-8", errors="replace")
            target = make_test_target(text)
            if target is None:
                return Plan(note=f"no tests were found ({makefile.name} has no check or test target)")
            return Plan((Command(("make", target), cwd=src),))
        if operation == INSTALL:
            argv = ("make", "install", f"DESTDIR={context.install}")
            return Plan((Command(argv, cwd=src),))
        raise PlanError(f"unknown operation {operation!r}")
