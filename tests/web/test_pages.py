from __future__ import annotations

import re
from dataclasses import replace

from bbot.controller.web.pages import PAGE_SIZE
from bbot.manifest.status import Status
from tests.web.conftest import GIT_SET, Site


def test_root_redirects_to_the_build_list(site: Site) -> None:
    answer = site.get("/")
    assert answer.status == 302
    assert answer.headers["location"].endswith("/builds")


def test_build_list_newest_first_with_filters(site: Site) -> None:
    (old,) = site.add()
    site.finish(old, Status.ERROR)
    (queued,) = site.add(replace(GIT_SET, package_name="libother"), ("windows-msvc",))
    site.store.set_reason(queued, "no agent offers a machine matching linux_debian_12*")

    page = site.get("/builds")
    assert page.status == 200
    assert page.headers["content-type"].startswith("text/html")
    rows = re.findall(r'<a href="/builds/(\d+)">', page.text)
    assert rows == [str(queued), str(old)]
    assert "2 builds" in page.text and "1 unfinished" in page.text
    assert 'http-equiv="refresh"' in page.text  # something is still to come
    assert "no agent offers a machine matching linux_debian_12*" in page.text
    assert '<span class="status-error">error</span>' in page.text

    filtered = site.get("/builds?package=libhello&status=error")
    assert re.findall(r'<a href="/builds/(\d+)">', filtered.text) == [str(old)]
    assert 'http-equiv="refresh"' not in filtered.text
    assert 'http-equiv="refresh"' not in site.get("/builds?state=built").text
    by_config = site.get("/builds?configuration=windows-msvc&state=queued")
    assert re.findall(r'<a href="/builds/(\d+)">', by_config.text) == [str(queued)]
    old_build = site.store.get_build(old)
    assert old_build is not None
    by_set = site.get(f"/builds?set_id={old_build.set_id}")
    assert re.findall(r'<a href="/builds/(\d+)">', by_set.text) == [str(old)]


def test_bad_filters_say_what_is_allowed(site: Site) -> None:
    answer = site.get("/builds?status=broken")
    assert answer.status == 400
    assert "status: unknown &#39;broken&#39;, use one of skip, success, warning" in answer.text
    answer = site.get("/builds?state=done")
    assert answer.status == 400 and "queued, leased, built" in answer.text
    answer = site.get("/builds?page=zero")
    assert answer.status == 400 and "page: &#39;zero&#39; is not a whole number" in answer.text


def test_pagination(site: Site) -> None:
    ids = site.add(configurations=tuple(f"c{i}" for i in range(PAGE_SIZE + 5)))
    first = site.get("/builds")
    assert "Page 1 of 2" in first.text
    assert len(re.findall(r'<a href="/builds/(\d+)">', first.text)) == PAGE_SIZE
    next_link = re.search(r'<a href="([^"]+)" rel="next">', first.text)
    assert next_link is not None
    second = site.get(next_link.group(1).replace("&amp;", "&"))
    shown = [int(i) for i in re.findall(r'<a href="/builds/(\d+)">', second.text)]
    assert shown == sorted(ids, reverse=True)[PAGE_SIZE:]
    assert 'rel="prev"' in second.text and 'rel="next"' not in second.text


def test_one_build_page(site: Site) -> None:
    (build_id,) = site.add()
    site.finish(build_id, Status.WARNING)
    page = site.get(f"/builds/{build_id}")
    assert page.status == 200
    text = page.text
    assert "Build " + str(build_id) + ": libhello/1.2.3+1 on linux-gcc" in text
    log = "/libhello/1.2.3+1/log/x86_64-linux-gnu/linux-gcc/default/public/0.17.0"
    assert f'<a href="{log}">log</a>' in text
    assert f'<a href="{log}/configure">log</a>' in text
    assert f'<a href="{log}/update">log</a>' in text
    assert '<td>update</td><td><span class="status-warning">warning</span>' in text
    assert "0123456789abcdef0123" in text
    assert "Ann Author &lt;ann@example.org&gt;" in text
    assert "agent-1" in text and "seconds=42" in text
    assert 'http-equiv="refresh"' not in text
    assert "session-" not in text  # sessions are keys to post results: not shown


def test_a_waiting_build_shows_why_and_refreshes(site: Site) -> None:
    (build_id,) = site.add()
    site.store.set_reason(build_id, "no agent offers linux_debian_12*")
    text = site.get(f"/builds/{build_id}").text
    assert "waiting because" in text and "no agent offers linux_debian_12*" in text
    assert 'http-equiv="refresh"' in text
    assert "No operation results available." in text and "Not issued yet." in text
    site.store.give_up(build_id, "gave up after 3 attempts")
    text = site.get(f"/builds/{build_id}").text
    assert '<span class="status-abnormal">abnormal</span>' in text
    assert "gave up after 3 attempts" in text


def test_missing_build_is_404(site: Site) -> None:
    assert site.get("/builds/999").status == 404
    assert site.get("/builds/abc").status == 404


def test_everything_shown_is_escaped(site: Site) -> None:
    evil = "<script>alert(1)</script>"
    (build_id,) = site.add(replace(GIT_SET, package_name=evil, author_name=evil))
    site.store.set_reason(build_id, evil)
    for path in ("/builds", f"/builds/{build_id}"):
        text = site.get(path).text
        assert evil not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
