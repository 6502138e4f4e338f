"""brep's pages for people (§3.12): ?builds, ?build-configs and ?build-force, over real sockets."""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from bbot.brep.protocol import PAGE_PARAMETERS_MAX_BYTES, HttpError, Route
from bbot.config import BuildConfiguration
from bbot.controller.lease import BuildState
from bbot.controller.store import NewBuild, ResultOutcome, Store
from bbot.controller.web import create_app
from bbot.controller.web.people import (
    PAGE_SIZE,
    RESULTS,
    BuildsQuery,
    builds_query,
    check_query_size,
    configs_query,
    force_request,
    force_url,
    result_filter,
    version_patterns,
)
from bbot.controller.web.server import serve
from bbot.manifest import OperationResult, Result
from bbot.manifest.status import Status
from bbot.wire import BuildKey
from tests.store.databases import open_store
from tests.web.conftest import BASE_URL, GIT_SET, Answer, Site
from tests.web.test_browser import dump_dom

CONFIGURATIONS = (
    BuildConfiguration("linux-gcc", "linux_debian_12*", "x86_64-linux-gnu", ("config.cxx.std=latest",)),
    BuildConfiguration("windows-msvc", "windows_11*", "x86_64-microsoft-win32-msvc14.3"),
)

# A built build's key, as conftest's new_build() makes it.
KEY = BuildKey("libhello", "1.2.3+1", "x86_64-linux-gnu", "linux-gcc", "default", "public", "0.17.0")


@dataclass
class People(Site):
    forced: list[float] = field(default_factory=list)

    def build(self, name: str = "libhello", version: str = "1.2.3+1", *, configuration: str = "linux-gcc",
              target: str = "x86_64-linux-gnu", package_config: str = "default",
              toolchain: tuple[str, str] = ("public", "0.17.0"), tenant: str = "") -> int:
        set_id = self.store.add_build_set(replace(GIT_SET, package_name=name, package_version=version))
        (build_id,) = self.store.add_builds(set_id, [NewBuild(
            configuration=configuration, machine_pattern="linux_debian_12*", target=target,
            config_args="", warning_regex=[], package_config=package_config,
            toolchain_name=toolchain[0], toolchain_version=toolchain[1], tenant=tenant)])
        return build_id

    def lease(self, build_id: int) -> str:
        self.sessions += 1
        session = f"session-{self.sessions}"
        self.store.issue(build_id, session, time.time() + 600, "task")
        return session

    def listed(self, path: str) -> list[int]:
        """The ids of the builds a ?builds page lists, in order."""
        answer = self.get(path)
        assert answer.status == 200, answer.text
        return [int(i) for i in re.findall(r'<tr class="build" id="build-(\d+)">', answer.text)]


@pytest.fixture
def people(tmp_path: Path) -> Iterator[People]:
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    forced: list[float] = []
    app = create_app(store, base_url=BASE_URL, configurations=CONFIGURATIONS,
                     on_force=lambda: forced.append(time.time()))
    server = serve(app)
    try:
        yield People(store, app, server, forced=forced)
    finally:
        server.stop()
        store.close()


def force_path(key: BuildKey = KEY, reason: str = "flaky test") -> str:
    """What the page's rebuild link is, with a reason filled in, as a path on this server."""
    url = force_url(BASE_URL, key) + quote(reason)
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


# --------------------------------------------------------------------------- parameters (no I/O)


def test_builds_query_reads_brep_parameters() -> None:
    query = builds_query(Route("builds", "", "lib*", (
        ("pv", "1.2.3 1"), ("th", "public-0.17.0"), ("tg", "x86_64-*"), ("tc", "linux-?cc"),
        ("pc", "default"), ("rs", "warning"), ("p", "2"))))
    assert query == BuildsQuery("lib*", "1.2.3+1", "public-0.17.0", "x86_64-*", "linux-?cc", "default",
                                "warning", 2)
    filters = query.filters("")
    assert filters["tenant"] is None  # the root shows every tenant's builds
    assert filters["versions"] == ("1.2.3+1",)
    assert filters["states"] == (BuildState.BUILT,)
    assert filters["statuses"] == (Status.WARNING, Status.ERROR, Status.ABORT, Status.ABNORMAL)
    assert BuildsQuery().filters("t1")["tenant"] == "t1"
    assert builds_query(Route("builds")) == BuildsQuery()
    assert builds_query(Route("builds", params=(("rs", ""), ("p", "")))) == BuildsQuery()
    assert query.query_string(3) == ("builds=lib%2A&pv=1.2.3%2B1&th=public-0.17.0&tg=x86_64-%2A"
                                     "&tc=linux-%3Fcc&pc=default&rs=warning&p=3")
    assert BuildsQuery().query_string(0) == "builds="


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ((("name", "x"),), 400, "unknown parameter 'name': expected one of pv, th, tg, tc, pc, rs, p"),
        ((("rs", "failed"),), 400, "invalid value 'failed' for parameter 'rs': expected one of "
                                   "*, unbuilt, pending, building, success, warning, error, abort, abnormal"),
        ((("rs", "skip"),), 400, "invalid value 'skip' for parameter 'rs'"),
        ((("p", "-1"),), 400, "invalid value '-1' for parameter 'p': expected a page number from 0 to"),
        ((("p", "one"),), 400, "invalid value 'one' for parameter 'p'"),
        ((("p", str(10**10)),), 400, f"invalid value '{10**10}' for parameter 'p'"),
    ],
)
def test_builds_query_rejects(params: tuple[tuple[str, str], ...], status: int, message: str) -> None:
    with pytest.raises(HttpError) as raised:
        builds_query(Route("builds", params=params))
    assert raised.value.status == status
    assert raised.value.text.startswith(message)


def test_result_filter_and_version_patterns() -> None:
    assert result_filter("*") == ((), ())
    assert result_filter("unbuilt") == ((BuildState.QUEUED, BuildState.LEASED), ())
    assert result_filter("pending") == ((BuildState.QUEUED,), ())
    assert result_filter("building") == ((BuildState.LEASED,), ())
    assert result_filter("success") == ((BuildState.BUILT,), (Status.SUCCESS,))
    assert result_filter("abort") == ((BuildState.BUILT,), (Status.ABORT, Status.ABNORMAL))
    assert result_filter("abnormal") == ((BuildState.BUILT,), (Status.ABNORMAL,))
    assert set(RESULTS) == {"*", "unbuilt", "pending", "building", *(s.value for s in Status)} - {
        "skip", "interrupt"}
    assert version_patterns(None) == version_patterns("") == version_patterns("*") == ()
    assert version_patterns("1.2.3") == ("1.2.3", "1.2.3+*")  # any revision of it
    assert version_patterns("1.2.3 1") == ("1.2.3+1",)
    assert version_patterns("1.2.*") == ("1.2.*",)


def test_force_request() -> None:
    params = (("pn", "libhello"), ("pv", "1.2.3 1"), ("tg", "x86_64-linux-gnu"), ("tc", "linux-gcc"),
              ("pc", "default"), ("tn", "public"), ("tv", "0.17.0 2"), ("reason", "flaky"))
    wanted = force_request(Route("build-force", "t1", None, params))
    assert wanted.key == BuildKey("libhello", "1.2.3+1", "x86_64-linux-gnu", "linux-gcc", "default",
                                  "public", "0.17.0+2", tenant="t1")
    assert wanted.reason == "flaky"

    def refused(params: tuple[tuple[str, str], ...], default: str | None = None) -> str:
        with pytest.raises(HttpError) as raised:
            force_request(Route("build-force", "", default, params))
        assert raised.value.status == 400
        return raised.value.text

    assert refused(params[:-1]) == "missing rebuild reason"
    assert refused((*params[:-1], ("reason", ""))) == "missing rebuild reason"
    assert refused(params[1:]) == "missing parameter 'pn' (package name)"
    assert refused(tuple(p for p in params if p[0] != "tc")) == \
        "missing parameter 'tc' (target configuration)"
    assert refused((*params, ("tv", ""))) == "empty parameter 'tv' (toolchain version)"
    assert refused((*params, ("cf", "x"))).startswith("unknown parameter 'cf'")
    assert refused(params, "x") == "unexpected value 'x' of parameter 'build-force'"


def test_force_url_is_brep_shaped() -> None:
    assert force_url("https://ci.example.org/", KEY) == (
        "https://ci.example.org/?build-force&pn=libhello&pv=1.2.3+1&tg=x86_64-linux-gnu&tc=linux-gcc"
        "&pc=default&tn=public&tv=0.17.0&reason=")
    odd = replace(KEY, package_name="a&b", target_config="x y", tenant="t/1")
    assert force_url("https://h/pkg", odd).startswith(
        "https://h/pkg/@t%2F1?build-force&pn=a%26b&pv=1.2.3+1&tg=x86_64-linux-gnu&tc=x%20y&")


def test_query_size_cap() -> None:
    check_query_size(b"x" * PAGE_PARAMETERS_MAX_BYTES)
    with pytest.raises(HttpError) as raised:
        check_query_size(b"x" * (PAGE_PARAMETERS_MAX_BYTES + 1))
    assert (raised.value.status, raised.value.text) == (413, "payload too large")


def test_configs_query() -> None:
    assert configs_query(Route("build-configs", "", "default", (("p", "1"),))).page == 1
    assert configs_query(Route("build-configs")).configuration_class is None
    with pytest.raises(HttpError, match="unknown parameter 'q'"):
        configs_query(Route("build-configs", params=(("q", ""),)))


# --------------------------------------------------------------------------- the store's query


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_find_builds_wildcards_are_literal_and_case_sensitive(backend: str, tmp_path: Path) -> None:
    with open_store(backend, tmp_path) as store:
        def add(name: str, tenant: str = "") -> int:
            set_id = store.add_build_set(replace(GIT_SET, package_name=name))
            (build_id,) = store.add_builds(set_id, [NewBuild("c", "m*", "t", "", [], "default", "public",
                                                             "0.17.0", tenant=tenant)])
            return build_id

        names = ["libhello", "LibHello", "lib_x", "libax", "lib%y", "libzzy", "lib[1]", "lib1", "x"]
        ids = {name: add(name) for name in names}
        tenant_build = add("libhello", tenant="t1")

        def found(**filters: Any) -> set[str]:
            total, rows = store.find_builds(tenant="", **filters)
            assert total == len(rows)
            return {build.package_name for build, _ in rows}

        assert found(package="libhello") == {"libhello"}
        assert found(package="lib*") == {"libhello", "lib_x", "libax", "lib%y", "libzzy", "lib[1]", "lib1"}
        assert found(package="lib?x") == {"lib_x", "libax"}
        assert found(package="lib_x") == {"lib_x"}  # '_' is no wildcard
        assert found(package="lib%y") == {"lib%y"}  # nor is '%'
        assert found(package="lib[1]") == {"lib[1]"}  # nor a bracket
        assert found(package="*Hello") == {"LibHello"}
        assert found(toolchain="public-0.17.*", package="x") == {"x"}
        assert found(toolchain="public", package="x") == set()
        assert found(versions=("1.2.3",)) == set()
        assert found(versions=("1.2.3", "1.2.3+*"), package="x") == {"x"}
        total, rows = store.find_builds(package="libhello")  # every tenant
        assert total == 2 and {b.id for b, _ in rows} == {ids["libhello"], tenant_build}
        total, rows = store.find_builds(limit=3, offset=7)
        assert total == len(names) + 1 and len(rows) == 3


# --------------------------------------------------------------------------- ?builds


def test_builds_filters_each_parameter(people: People) -> None:
    base = people.build()
    other_name = people.build("libother")
    other_version = people.build(version="2.0.0")
    revision = people.build(version="1.2.3")
    other_target = people.build(target="aarch64-linux-gnu")
    other_config = people.build(configuration="windows-msvc")
    other_pkg_config = people.build(package_config="extras")
    other_toolchain = people.build(toolchain=("public", "0.18.0"))
    every = [other_toolchain, other_pkg_config, other_config, other_target, revision, other_version,
             other_name, base]

    assert people.listed("/?builds") == every  # the latest first
    assert people.listed("/?builds=") == every
    assert people.listed("/?builds=*") == every
    assert people.listed("/?builds=libother") == [other_name]
    assert sorted(people.listed("/?builds=lib*e*")) == sorted(every)
    assert people.listed("/?builds=lib?ther") == [other_name]
    assert people.listed("/?builds=libhello&pv=2.0.0") == [other_version]
    # '+' in a query is a space: both spellings name 1.2.3+1; 1.2.3 matches every revision.
    exact = [b for b in every if b not in (other_name, other_version, revision)]
    assert people.listed("/?builds=libhello&pv=1.2.3+1") == exact
    assert people.listed("/?builds=libhello&pv=1.2.3%2B1") == exact
    assert people.listed("/?builds=libhello&pv=1.2.3") == [b for b in every if b not in (
        other_name, other_version)]
    assert people.listed("/?builds=libhello&pv=2.*") == [other_version]
    assert people.listed("/?builds&th=public-0.18.0") == [other_toolchain]
    assert people.listed("/?builds&th=public-0.18.*") == [other_toolchain]
    assert people.listed("/?builds&th=public-0.1%3F.0") == every
    assert people.listed("/?builds&th=public") == []
    assert people.listed("/?builds&tg=aarch64-*") == [other_target]
    assert people.listed("/?builds&tg=x86_64-linux-gnu&tc=windows-msvc") == [other_config]
    assert people.listed("/?builds&tc=windows-*") == [other_config]
    assert people.listed("/?builds&pc=extras") == [other_pkg_config]
    assert people.listed("/?builds&pc=ex*&tc=linux-gcc&tg=*") == [other_pkg_config]
    assert people.listed("/?builds&pc=default&pv=&tg=&rs=*&p=0") == [
        b for b in every if b != other_pkg_config]


def test_builds_result_filter(people: People) -> None:
    queued = people.build()
    leased = people.build()
    people.lease(leased)
    built = {}
    for status in (Status.SUCCESS, Status.WARNING, Status.ERROR, Status.ABORT, Status.ABNORMAL):
        built[status] = people.build()
        people.finish(built[status], status)
    # A forced rebuild is queued again, though it keeps its last status.
    forced = people.build()
    people.finish(forced, Status.ERROR)
    assert people.store.force(forced, "flaky").value == "forced"

    def listed(result: str) -> set[int]:
        return set(people.listed(f"/?builds&rs={quote(result)}"))

    assert listed("*") == {queued, leased, forced, *built.values()}
    assert listed("unbuilt") == {queued, leased, forced}
    assert listed("pending") == {queued, forced}
    assert listed("building") == {leased}
    assert listed("success") == {built[Status.SUCCESS]}
    assert listed("warning") == {built[s] for s in built if s is not Status.SUCCESS}
    assert listed("error") == {built[Status.ERROR], built[Status.ABORT], built[Status.ABNORMAL]}
    assert listed("abort") == {built[Status.ABORT], built[Status.ABNORMAL]}
    assert listed("abnormal") == {built[Status.ABNORMAL]}


def test_builds_of_a_tenant(people: People) -> None:
    public = people.build()
    private = people.build(tenant="t1")
    other = people.build(tenant="t2")
    assert people.listed("/@t1?builds") == [private]
    assert people.listed("/@t2?builds=libhello") == [other]
    assert people.listed("/@t3?builds") == []
    # The root is brep's global view: every tenant, each linked to its own list.
    root = people.get("/?builds")
    assert [int(i) for i in re.findall(r'id="build-(\d+)"', root.text)] == [other, private, public]
    assert '<a class="tenant" href="/@t1?builds">@t1</a>' in root.text
    # A tenant's build is forced in its tenant: its rebuild URL and form say so.
    people.finish(private)
    page = people.get("/@t1?builds").text
    assert 'href="https://ci.example.org/@t1?build-force&amp;pn=libhello&amp;pv=1.2.3+1' in page
    assert '<form class="rebuild" method="get" action="/@t1">' in page
    assert people.get(force_path()).status == 404  # not in the root's tenant
    assert people.get(force_path(replace(KEY, tenant="t1"))).text == "Rebuilding in 0 seconds.\n"
    forced = people.store.get_build(private)
    assert forced is not None and forced.state is BuildState.QUEUED


def test_builds_pagination(people: People) -> None:
    ids = [people.build(configuration=f"c{i}") for i in range(PAGE_SIZE + 5)]
    newest_first = ids[::-1]
    first = people.get("/?builds=libhello")
    assert '<p id="build-count">55 builds</p>' in first.text
    assert "Page 1 of 2." in first.text and 'rel="prev"' not in first.text
    assert people.listed("/?builds=libhello") == newest_first[:PAGE_SIZE]
    next_link = re.search(r'<a href="([^"]+)" rel="next">', first.text)
    assert next_link is not None
    assert html.unescape(next_link.group(1)) == "/?builds=libhello&p=1"
    second = people.get(html.unescape(next_link.group(1)))
    assert "Page 2 of 2." in second.text and 'rel="next"' not in second.text
    assert html.unescape(re.findall(r'<a href="([^"]+)" rel="prev">', second.text)[0]) == "/?builds=libhello"
    assert people.listed("/?builds=libhello&p=1") == newest_first[PAGE_SIZE:]
    assert people.listed("/?builds=libhello&p=7") == []
    assert '<p id="build-count">1 build</p>' in people.get("/?builds&tc=c7").text
    # The filters stay on every page.
    assert people.listed("/?builds&tc=c1*&p=0") == [ids[i] for i in (19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 1)]


def test_builds_page_shows_results_logs_and_rebuild(people: People) -> None:
    queued = people.build(configuration="queued")
    leased = people.build(configuration="leased")
    people.lease(leased)
    ok = people.build(configuration="ok")
    people.finish(ok, Status.SUCCESS)
    broken = people.build()
    people.finish(broken, Status.ERROR, [
        OperationResult("configure", Status.SUCCESS, "configured\n"),
        OperationResult("update", Status.ERROR, "error: x\n"),
        OperationResult("test", Status.WARNING, "warning: y\n"),
    ])
    answer = people.get("/?builds")
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    rows = dict(re.findall(r'<tr class="build" id="build-(\d+)">(.*?)</tr>', answer.text, re.S))

    log = "https://ci.example.org/libhello/1.2.3+1/log/x86_64-linux-gnu/linux-gcc/default/public/0.17.0"
    row = rows[str(broken)]
    assert f'<span class="status-error">error</span> (<a href="{log}/update">update</a>)' in row
    assert f'<span class="status-warning">warning</span> (<a href="{log}/test">test</a>)' in row
    assert f"{log}/configure" not in row  # a successful operation's log is in the combined one
    assert f'<a class="log" href="{log}">log</a>' in row
    assert f'<a class="rebuild" href="{html.escape(force_url(BASE_URL, KEY))}">rebuild</a>' in row
    assert '<input type="hidden" name="build-force" value="">' in row
    assert '<input type="hidden" name="pv" value="1.2.3+1">' in row
    assert "linux_debian_12 — Debian 12" in row
    assert re.search(r'<td class="timestamp">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</td>', row)

    assert '<span class="status-success">success</span> |' in rows[str(ok)]
    assert 'class="rebuild"' in rows[str(ok)]
    assert '<span class="pending state-queued">pending</span>' in rows[str(queued)]
    assert "rebuild" not in rows[str(queued)]  # nothing to rebuild yet
    assert '<span class="building state-leased">building</span>' in rows[str(leased)]
    assert 'class="rebuild"' in rows[str(leased)]  # as brep: a building build can be forced
    assert "/log/" not in rows[str(leased)]

    # The combined log link works on this server (below the base URL).
    combined = people.get(log.removeprefix("https://ci.example.org"))
    assert combined.status == 200 and "update: error" in combined.text


def test_builds_rejects_bad_parameters(people: People) -> None:
    cases = {
        "/?builds&name=x": "unknown parameter 'name'",
        "/?builds&rs=broken": "invalid value 'broken' for parameter 'rs': expected one of *, unbuilt, "
                              "pending, building, success, warning, error, abort, abnormal",
        "/?builds&p=-1": "invalid value '-1' for parameter 'p': expected a page number from 0 to",
        "/@t1?builds&p=x": "invalid value 'x' for parameter 'p'",
    }
    for path, message in cases.items():
        answer = people.get(path)
        assert answer.status == 400, path
        assert answer.headers["content-type"] == "text/plain;charset=utf-8"
        assert answer.text.startswith(message), answer.text
    too_long = people.get("/?builds=" + "x" * PAGE_PARAMETERS_MAX_BYTES)
    assert (too_long.status, too_long.text) == (413, "payload too large\n")


def test_everything_shown_is_escaped(people: People) -> None:
    evil = "<script>alert(1)</script>"
    build_id = people.build(evil, configuration='x"><b>', tenant="<t>")
    people.finish(build_id)
    for path in ("/?builds", "/@%3Ct%3E?builds", f"/?builds={quote(evil)}",
                 f"/?builds&tc={quote(evil)}&pv={quote(evil)}"):
        answer = people.get(path)
        assert answer.status == 200
        assert evil not in answer.text and 'x"><b>' not in answer.text
        assert "<t>" not in answer.text
    text = people.get("/?builds").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in text  # the rebuild form's field
    # The rebuild URL is percent-encoded, then HTML-escaped.
    assert "pn=%3Cscript%3Ealert%281%29%3C%2Fscript%3E" in text
    assert "/@%3Ct%3E?build-force" in text


# --------------------------------------------------------------------------- ?build-configs


def test_build_configs(people: People) -> None:
    answer = people.get("/?build-configs")
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/html")
    text = answer.text
    assert re.findall(r'<tr class="config">\s*<td class="name"><a href="[^"]+">([^<]+)</a>', text) == [
        "linux-gcc", "windows-msvc"]
    assert '<td class="target mono">x86_64-microsoft-win32-msvc14.3</td>' in text
    assert '<td class="machine mono">linux_debian_12*</td>' in text
    assert '<td class="args mono">config.cxx.std=latest</td>' in text
    assert '<a href="/?builds=&amp;tg=x86_64-linux-gnu&amp;tc=linux-gcc">linux-gcc</a>' in text
    assert '<p id="config-count">2 configurations</p>' in text
    for cls in ("all", "default"):
        assert people.get(f"/?build-configs={cls}").text.count('<tr class="config">') == 2
    assert people.get("/@t1?build-configs").text.count('<tr class="config">') == 2
    hidden = people.get("/?build-configs=hidden")
    assert hidden.status == 200 and '<tr class="config">' not in hidden.text
    assert "0 configurations" in hidden.text
    assert '<tr class="config">' not in people.get("/?build-configs&p=1").text
    unknown = people.get("/?build-configs&x=1")
    assert unknown.status == 400 and unknown.text.startswith("unknown parameter 'x'")
    assert people.get("/?build-configs&p=z").status == 400


def test_build_configs_without_configurations(site: Site) -> None:
    answer = site.get("/?build-configs")
    assert answer.status == 200 and "No configurations." in answer.text


# --------------------------------------------------------------------------- ?build-force


def test_force_a_built_build(people: People) -> None:
    build_id = people.build()
    people.finish(build_id, Status.ERROR)
    answer = people.get(force_path(reason="flaky network"))
    assert (answer.status, answer.text) == (200, "Rebuilding in 0 seconds.\n")
    assert answer.headers["content-type"] == "text/plain;charset=utf-8"
    build = people.store.get_build(build_id)
    assert build is not None
    assert build.state is BuildState.QUEUED and build.forced
    assert build.reason == "forced rebuild: flaky network"
    assert len(people.forced) == 1  # the scheduler was woken
    # The list now says it is pending, with the reason; forcing it again is a 404.
    row = re.search(rf'id="build-{build_id}">(.*?)</tr>', people.get("/?builds").text, re.S)
    assert row is not None and "pending" in row.group(1) and "forced rebuild: flaky network" in row.group(1)
    again = people.get(force_path())
    assert (again.status, again.text) == (404, "package build configuration expired: state is queued\n")
    assert len(people.forced) == 1


def test_force_by_post_and_by_the_rebuild_form(people: People) -> None:
    first, second = people.build(), people.build(configuration="windows-msvc")
    people.finish(first)
    people.finish(second)
    # POST: the parameters are still read from the URL only.
    answer = people.post(force_path(), b"reason=ignored", {"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status == 200
    # What a browser sends for the rebuild form: the version's '+' percent-encoded.
    page = people.get("/?builds").text
    form = re.search(rf'id="build-{second}">.*?<form class="rebuild" method="get" action="([^"]*)">(.*?)</form>',
                     page, re.S)
    assert form is not None
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(2))
    query = "&".join(f"{name}={quote(html.unescape(value), safe='')}" for name, value in fields)
    answer = people.get(f"{form.group(1)}?{query}&reason=after+the+fix")
    assert answer.status == 200, answer.text
    build = people.store.get_build(second)
    assert build is not None and build.reason == "forced rebuild: after the fix"


def test_force_a_building_build_drops_its_late_result(people: People) -> None:
    build_id = people.build()
    session = people.lease(build_id)
    assert people.get(force_path(reason="stuck")).status == 200
    build = people.store.get_build(build_id)
    assert build is not None and build.state is BuildState.QUEUED and build.forced
    late = Result("libhello", "1.2.3+1", Status.SUCCESS, [], None, None)
    assert people.store.record_result(session, late) is ResultOutcome.STALE
    build = people.store.get_build(build_id)
    assert build is not None and build.state is BuildState.QUEUED and build.status is None


@pytest.mark.parametrize("version", ["1.2.3+1", "1.2.3%2B1", "1.2.3%201"])
def test_force_reads_a_space_in_versions_as_plus(people: People, version: str) -> None:
    build_id = people.build()
    people.finish(build_id)
    path = force_path().replace("pv=1.2.3+1", f"pv={version}")
    assert people.get(path).status == 200


def test_force_refusals(people: People) -> None:
    queued = people.build()

    def answer(path: str) -> Answer:
        found = people.get(path)
        assert found.headers["content-type"] == "text/plain;charset=utf-8"
        return found

    unknown = answer(force_path(replace(KEY, package_name="libnone")))
    assert (unknown.status, unknown.text) == (404, "package build configuration expired: no such package build\n")
    wrong_toolchain = answer(force_path(replace(KEY, toolchain_version="0.17.1")))
    assert wrong_toolchain.status == 404
    still_queued = answer(force_path())
    assert (still_queued.status, still_queued.text) == (404, "package build configuration expired: state is queued\n")
    people.finish(queued)
    no_reason = answer(force_path(reason=""))
    assert (no_reason.status, no_reason.text) == (400, "missing rebuild reason\n")
    no_target = answer(force_path().replace("&tg=x86_64-linux-gnu", ""))
    assert (no_target.status, no_target.text) == (400, "missing parameter 'tg' (target)\n")
    extra = answer(force_path() + "&cf=x")
    assert extra.status == 400 and extra.text.startswith("unknown parameter 'cf'")
    too_long = answer(force_path(reason="x" * PAGE_PARAMETERS_MAX_BYTES))
    assert (too_long.status, too_long.text) == (413, "payload too large\n")
    assert people.forced == []
    build = people.store.get_build(queued)
    assert build is not None and build.state is BuildState.BUILT and not build.forced


def test_concurrent_forces_rebuild_once(people: People) -> None:
    build_id = people.build()
    people.finish(build_id)
    answers: list[int] = []
    lock = threading.Lock()

    def force() -> None:
        status = people.get(force_path()).status
        with lock:
            answers.append(status)

    threads = [threading.Thread(target=force) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(answers) == [200, 404, 404, 404]
    build = people.store.get_build(build_id)
    assert build is not None and build.first_attempt == 2


# --------------------------------------------------------------------------- in a browser


def test_chromium_shows_the_brep_build_list(people: People, tmp_path: Path) -> None:
    build_id = people.build()
    people.finish(build_id, Status.ERROR)
    dom = dump_dom(f"{people.url}/?builds&rs=error", tmp_path / "profile")
    assert f'<tr class="build" id="build-{build_id}">' in dom
    assert '<span class="status-error">error</span>' in dom
    assert re.search(r'<input type="hidden" name="pv" value="1\.2\.3\+1">', dom)
    assert '<p id="build-count">1 build</p>' in dom
