"""The whole farm end to end: real git, real builds, real TFTP, real HTTP, a real outbox.

The same test runs on the in-memory transport and on RabbitMQ at 127.0.0.1:5672.
"""

from __future__ import annotations

import json
import mailbox
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bbot.config import AgentConfig, MachineConfig, WebConfig, load_config
from bbot.controller.lease import BuildState
from bbot.farm import Farm, start_farm
from bbot.manifest.status import Status
from tests.conftest import SAMPLE, git_repo
from tests.store.databases import postgres_url

pytestmark = pytest.mark.slow


def make_farm(tmp_path: Path, unique: str, broker_url: str = "memory://",
              store_url: str | None = None) -> Farm:
    base = load_config(None, data_dir=tmp_path / "data")
    config = replace(
        base,
        broker_url=broker_url,
        store_url=store_url,
        web=WebConfig("127.0.0.1", 0),
        controller=replace(base.controller, name=f"c-{unique}", schedule_interval=0.05),
        agent=AgentConfig(
            name=f"agent-{unique}", heartbeat=0.5, build_timeout=120,
            machines=(MachineConfig(f"p1-{unique}", f"linux_{unique}-gcc", "local GCC"),
                      MachineConfig(f"p2-{unique}", f"linux_{unique}-gcc", "local GCC")),
        ),
        configurations=tuple(replace(c, machine=f"linux_{unique}-*") for c in base.configurations),
    )
    return start_farm(config)


@pytest.fixture
def farm(tmp_path: Path, unique: str) -> Iterator[Farm]:
    f = make_farm(tmp_path, unique)
    yield f
    f.stop()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def check_sample_farm(farm: Farm, tmp_path: Path) -> None:
    sha = git_repo(tmp_path / "libhello", SAMPLE)
    set_id = farm.controller.submit(f"file://{tmp_path / 'libhello'}#main", email="sub@example.org")
    assert farm.controller.wait_for_sets([set_id], timeout=180)
    builds = farm.controller.store.set_builds(set_id)
    assert sorted(b.configuration for b in builds) == ["gcc-debug", "gcc-release"]
    for b in builds:
        assert b.state is BuildState.BUILT
        assert b.status is Status.SUCCESS, farm.controller.store.operations(b.id)
        assert b.commit == sha
        ops = farm.controller.store.operations(b.id)
        assert [o.name for o in ops] == ["configure", "update", "test", "install"]
        # The log page at brep's URL shape, over real HTTP.
        status, ctype, text = get(farm.url + f"libhello/{sha[:12]}/log/x86_64-linux-gnu/{b.configuration}/default/bbot/0.1.0/update")
        assert status == 200 and ctype.startswith("text/plain")
        assert "update: success" in text
        status, _, combined = get(farm.url + f"libhello/{sha[:12]}/log/x86_64-linux-gnu/{b.configuration}/default/bbot/0.1.0")
        assert status == 200
        assert ("-O2" if b.configuration == "gcc-release" else "-O0") in combined
    # The JSON API and the pages.
    status, _, body = get(farm.url + "api/builds?package=libhello")
    assert status == 200
    assert {item["status"] for item in json.loads(body)["items"]} == {"success"}
    # The submitter got one mail per build, naming the build and linking to its logs.
    box = mailbox.Maildir(farm.config.data_dir / "outbox", create=False)
    mails = [m for m in box if m["To"] and "sub@example.org" in m["To"]]
    assert len(mails) == 2
    assert all("success" in m["Subject"] and "libhello" in m["Subject"] for m in mails)
    assert all(farm.url + "libhello/" in m.get_payload() for m in mails)
    # Nothing left behind by the machines.
    agent_dir = farm.config.data_dir / "agent" / farm.config.agent.name
    assert list((agent_dir / "boots").iterdir()) == []
    assert list((agent_dir / "tftp").iterdir()) == []


def test_sample_builds_on_two_configurations(farm: Farm, tmp_path: Path) -> None:
    check_sample_farm(farm, tmp_path)


@pytest.mark.rabbitmq
def test_sample_builds_on_rabbitmq(tmp_path: Path, unique: str, rabbitmq: str) -> None:
    f = make_farm(tmp_path, unique, broker_url=rabbitmq)
    try:
        check_sample_farm(f, tmp_path)
    finally:
        f.stop()


@pytest.mark.rabbitmq
def test_sample_builds_on_rabbitmq_with_the_store_on_postgresql(tmp_path: Path, unique: str,
                                                                 rabbitmq: str) -> None:
    # The datacenter setup: pages, results and email all from a PostgreSQL store.
    with postgres_url() as store_url:
        f = make_farm(tmp_path, unique, broker_url=rabbitmq, store_url=store_url)
        try:
            check_sample_farm(f, tmp_path)
        finally:
            f.stop()


BROKEN = {
    "Makefile": "all:\n\t$(CC) $(CFLAGS) -c broken.c\ncheck:\n\ttrue\ninstall:\n\ttrue\n",
    "broken.c": "int main(void) { return missing_symbol; }\n",
}
FAILING_TEST = {
    "Makefile": "all:\n\ttrue\ncheck:\n\t@echo 'assertion failed: 1 == 2'; false\ninstall:\n\ttrue\n",
}
WARNING = {
    "Makefile": "all:\n\t$(CC) -Wall -c w.c\ncheck:\n\ttrue\ninstall:\n\ttrue\n",
    "w.c": "int f(void) { int unused; return 0; }\n",
}


@pytest.mark.parametrize(
    "files,status,failing_op,expected_log",
    [
        (BROKEN, Status.ERROR, "update", "missing_symbol"),
        (FAILING_TEST, Status.ERROR, "test", "assertion failed"),
        (WARNING, Status.WARNING, "update", "warning:"),
    ],
    ids=["compile-error", "failing-test", "warning"],
)
def test_failures_end_in_the_right_status_with_the_right_log(
    farm: Farm, tmp_path: Path, files: dict[str, str], status: Status, failing_op: str, expected_log: str
) -> None:
    git_repo(tmp_path / "proj", files, author="Bob Builder <bob@example.org>")
    set_id = farm.controller.submit(f"{tmp_path / 'proj'}#main")
    assert farm.controller.wait_for_sets([set_id], timeout=120)
    for b in farm.controller.store.set_builds(set_id):
        assert b.status is status
        ops = {o.name: o for o in farm.controller.store.operations(b.id)}
        assert ops[failing_op].status is status
        assert expected_log in ops[failing_op].log
        if status is Status.ERROR:
            # Nothing runs after a failed step.
            order = ["configure", "update", "test", "install"]
            assert not set(order[order.index(failing_op) + 1:]) & set(ops)


def test_bad_submissions_are_refused_with_a_reason(farm: Farm, tmp_path: Path) -> None:
    for body, error in [
        ({"url": "ext::sh -c touch% /tmp/pwned"}, "not a git URL"),
        ({"url": f"{tmp_path}/nothing-here"}, "nothing-here"),
        ({"url": "https://example.org/x.git", "email": "not-an-address"}, "not an email address"),
    ]:
        request = urllib.request.Request(farm.url + "api/submit", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=30)
        assert info.value.code == 400
        assert error in json.loads(info.value.read())["error"]
    assert farm.controller.store.list_builds() == []


def test_waiting_reason_when_no_machine_matches(tmp_path: Path, unique: str) -> None:
    f = make_farm(tmp_path, unique)
    try:
        git_repo(tmp_path / "p", {"Makefile": "all:\n\ttrue\n"})
        f.controller.config = replace(
            f.controller.config,
            configurations=(replace(f.config.configurations[0], machine="windows*"),))
        set_id = f.controller.submit(str(tmp_path / "p"))
        assert not f.controller.wait_for_sets([set_id], timeout=1.5)
        (b,) = f.controller.store.set_builds(set_id)
        assert b.state is BuildState.QUEUED
        assert b.reason == "waiting: no agent offers a machine matching 'windows*'"
    finally:
        f.stop()
