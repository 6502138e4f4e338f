from __future__ import annotations

import time

import pytest

from bbot.manifest import OperationResult
from bbot.manifest.status import Status
from bbot.wire import log_path
from tests.web.conftest import Site

LOG = "/libhello/1.2.3+1/log/x86_64-linux-gnu/linux-gcc/default/public/0.17.0"


def header(site: Site, build_id: int) -> str:
    build = site.store.get_build(build_id)
    assert build is not None and build.finished_at is not None
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(build.finished_at))
    return (
        "package:           libhello\n"
        "version:           1.2.3+1\n"
        "toolchain:         public-0.17.0\n"
        "target:            x86_64-linux-gnu\n"
        "target config:     linux-gcc\n"
        "package config:    default\n"
        "build machine:     linux_debian_12 -- Debian 12\n"
        f"timestamp:         {stamp}\n"
    )


def test_combined_and_per_operation_pages(site: Site) -> None:
    (build_id,) = site.add()
    site.finish(build_id, Status.ERROR)
    build = site.store.get_build(build_id)
    assert build is not None and "/" + log_path(build.key) == LOG

    combined = site.get(LOG)
    assert combined.status == 200
    assert combined.headers["content-type"] == "text/plain;charset=utf-8"
    assert combined.text == (
        header(site, build_id) + "\n"
        "configure: success\n"
        "update: error\n"
        "\n"
        "configured\n"
        "update log: error\n"
    )
    update = site.get(LOG + "/update")
    assert update.status == 200
    assert update.text == header(site, build_id) + "\nupdate: error\n\nupdate log: error\n"
    # The id-based page shows the same build.
    assert site.get(f"/builds/{build_id}/log").text == combined.text
    assert site.get(f"/builds/{build_id}/log/update").text == update.text


def test_log_text_is_served_as_plain_text_only(site: Site) -> None:
    (build_id,) = site.add()
    evil = "<html><script>alert(1)</script></html>\n"
    site.finish(build_id, Status.ERROR, [OperationResult("update", Status.ERROR, evil)])
    answer = site.get(LOG + "/update")
    assert answer.text.endswith(evil)
    assert answer.headers["content-type"] == "text/plain;charset=utf-8"
    assert answer.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/libhello/1.2.3+1/log", "no target"),
        ("/libhello/1.2.3+1/log/x86_64-linux-gnu", "no target configuration"),
        ("/libhello/1.2.3+1/log/t/c/p/public", "no toolchain version"),
        ("/libhello/1.2.3+1/log/t//p/public/0.17.0", "empty target configuration"),
        ("/libhello/1.2.3+1/log/t/c/p/public/0.17.0/update/more", "unexpected path component"),
        ("/@tenant/libhello/1.2.3+1/log/t/c", "no package configuration"),
        (LOG + "?x=1", "log pages take no query parameters"),
        (LOG + "/update?reason=", "log pages take no query parameters"),
    ],
)
def test_malformed_log_paths_are_400(site: Site, path: str, message: str) -> None:
    (build_id,) = site.add()
    site.finish(build_id)
    answer = site.get(path)
    assert answer.status == 400
    if "query" in message:
        assert answer.text.startswith(message + ": remove the '?...' part")
    else:
        assert answer.text == message + "\n"
    assert answer.headers["content-type"] == "text/plain;charset=utf-8"


def test_missing_or_unfinished_builds_are_404(site: Site) -> None:
    expired = "package build configuration expired: "
    answer = site.get(LOG)
    assert (answer.status, answer.text) == (404, expired + "no such package build\n")
    (build_id,) = site.add()
    assert site.get(LOG).text == expired + "state is queued\n"
    site.store.issue(build_id, "s", time.time() + 60, "task")
    assert site.get(LOG + "/update").text == expired + "state is leased\n"
    assert site.get(f"/builds/{build_id}/log").status == 404
    site.store.expire(build_id, "s", "lost")
    site.store.give_up(build_id, "lost")
    site.add()  # a newer queued build takes the key over
    assert site.get(LOG).text == expired + "state is queued\n"
    assert site.get(f"/builds/{build_id}/log").status == 200
    assert site.get(f"/builds/{build_id}/log/update").text == expired + "no operation 'update'\n"
    assert site.get("/@other" + LOG).text == expired + "no such package build\n"
    assert site.get("/builds/424242/log").status == 404


def test_an_older_build_keeps_its_own_log_page(site: Site) -> None:
    (old,) = site.add()
    site.finish(old, Status.ERROR)
    (new,) = site.add()
    site.finish(new, Status.SUCCESS)
    assert "update: success" in site.get(LOG).text
    assert "update: error" in site.get(f"/builds/{old}/log").text
    old_page = site.get(f"/builds/{old}").text
    assert f'<a href="/builds/{old}/log/update">log</a>' in old_page
    assert f'<a href="{LOG}/update">log</a>' in site.get(f"/builds/{new}").text


def test_other_paths_are_plain_404(site: Site) -> None:
    for path in ("/nothing", "/libhello/1.2.3+1", "/favicon.ico"):
        answer = site.get(path)
        assert answer.status == 404, path


def test_encoded_names_round_trip(site: Site) -> None:
    from dataclasses import replace

    from tests.web.conftest import GIT_SET, new_build

    set_id = site.store.add_build_set(replace(GIT_SET, package_name="lib hello"))
    (build_id,) = site.store.add_builds(set_id, [replace(new_build("a/b c"), target="t+1")])
    site.finish(build_id)
    build = site.store.get_build(build_id)
    assert build is not None
    path = "/" + log_path(build.key, "update")
    assert "a%2Fb%20c" in path and "lib%20hello" in path
    answer = site.get(path)
    assert answer.status == 200 and "target config:     a/b c\n" in answer.text
