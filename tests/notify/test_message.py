from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from email.utils import getaddresses

from bbot.controller.lease import BuildState
from bbot.controller.notify.message import compose
from bbot.controller.store import BuildRow, OperationRow
from bbot.manifest.status import Status

BASE = "https://ci.example.org/"

BUILD = BuildRow(
    id=42, set_id=7, package_name="libhello", package_version="1.2.3+1",
    configuration="linux_debian_12-gcc_13", machine_pattern="linux_debian_12*",
    target="x86_64-linux-gnu", config_args="", warning_regex=[], package_config="default",
    toolchain_name="public", toolchain_version="0.17.0", tenant="", state=BuildState.BUILT,
    status=Status.ERROR, attempt=1, session="s", lease_deadline=None, agent="a",
    machine_name="m", machine_summary="M", reason=None, created_at=1_700_000_000.0,
    issued_at=1_700_000_001.0, finished_at=1_700_000_100.0, forced=False, kind="git",
    source="hello", repository_url="https://git.example.org/hello.git", ref="main",
    commit="0123abc", author_name="Ann Author", author_email="ann@example.org",
    submitter_email=None,
)

OPS = [OperationRow("configure", Status.SUCCESS, "ok\n"),
       OperationRow("update", Status.ERROR, "error: boom\n")]

LOG = ("https://ci.example.org/libhello/1.2.3+1/log/x86_64-linux-gnu/linux_debian_12-gcc_13/"
       "default/public/0.17.0")


def test_subject_and_headers_follow_brep() -> None:
    msg = compose(BUILD, OPS, base_url=BASE, sender="bbot@ci.example.org",
                  recipients=["a@example.org", "b@example.org"])
    assert msg["Subject"] == ("build error: libhello/1.2.3+1 linux_debian_12-gcc_13/"
                              "x86_64-linux-gnu default public-0.17.0")
    assert msg["From"] == "bbot@ci.example.org"
    assert [a for _, a in getaddresses([msg["To"]])] == ["a@example.org", "b@example.org"]
    assert msg["Message-ID"].endswith("@ci.example.org>")
    assert msg["Date"].datetime == datetime(2023, 11, 14, 22, 15, tzinfo=UTC)
    forced = compose(dataclasses.replace(BUILD, forced=True), OPS, base_url=BASE,
                     sender="s@x", recipients=["a@x"])
    assert forced["Subject"].startswith("rebuild error: ")


def test_body_lists_combined_and_each_operation_with_log_urls() -> None:
    text = compose(BUILD, OPS, base_url=BASE, sender="s@x", recipients=["a@x"]).get_content()
    assert text == (
        "combined: error\n\n"
        f"  {LOG}\n\n"
        "configure: success\n\n"
        f"  {LOG}/configure\n\n"
        "update: error\n\n"
        f"  {LOG}/update\n\n"
        "repository: https://git.example.org/hello.git\n"
        "branch: main\n"
        "commit: 0123abc\n"
        "author: Ann Author <ann@example.org>\n\n"
        "Build page:\n\n"
        "  https://ci.example.org/builds/42\n\n"
        "Rebuild (add the reason at the end):\n\n"
        "  https://ci.example.org/?build-force&pn=libhello&pv=1.2.3+1&tg=x86_64-linux-gnu"
        "&tc=linux_debian_12-gcc_13&pc=default&tn=public&tv=0.17.0&reason=\n"
    )


def test_body_without_operations_says_so_and_why() -> None:
    build = dataclasses.replace(BUILD, status=Status.ABNORMAL, kind="submit", ref=None,
                                commit=None, reason="3 attempts without a result")
    text = compose(build, [], base_url="http://localhost:8080", sender="s@x",
                   recipients=["a@x"]).get_content()
    assert text == (
        "No operation results available.\n\n"
        "reason: 3 attempts without a result\n\n"
        "Build page:\n\n"
        "  http://localhost:8080/builds/42\n\n"
        "Rebuild (add the reason at the end):\n\n"
        "  http://localhost:8080/?build-force&pn=libhello&pv=1.2.3+1&tg=x86_64-linux-gnu"
        "&tc=linux_debian_12-gcc_13&pc=default&tn=public&tv=0.17.0&reason=\n"
    )
