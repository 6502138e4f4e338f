from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from bbot.controller.store import Store
from bbot.controller.web import MAX_REQUEST_BYTES, create_app
from bbot.controller.web.server import serve
from bbot.manifest.status import Status
from tests.web.conftest import BASE_URL, GIT_SET, Site, request

LOG = "https://ci.example.org/libhello/1.2.3+1/log/x86_64-linux-gnu/linux-gcc/default/public/0.17.0"


def test_list_with_filters_and_paging(site: Site) -> None:
    ids = site.add(configurations=("a", "b", "c"))
    site.finish(ids[0], Status.ERROR)
    (other,) = site.add(replace(GIT_SET, package_name="libother"))

    answer = site.get("/api/builds")
    assert answer.status == 200 and answer.headers["content-type"] == "application/json"
    data = answer.json()
    assert data["total"] == 4 and (data["limit"], data["offset"]) == (50, 0)
    assert [b["id"] for b in data["items"]] == [other, ids[2], ids[1], ids[0]]
    built = data["items"][3]
    assert built["status"] == "error" and built["state"] == "built"
    assert built["url"] == f"https://ci.example.org/builds/{ids[0]}"
    assert built["log_url"] == LOG.replace("linux-gcc", "a")
    assert "session" not in built and "submitter_email" not in built
    assert data["items"][0]["log_url"] is None and data["items"][0]["status"] is None

    page = site.get("/api/builds?package=libhello&limit=1&offset=1").json()
    assert page["total"] == 3 and [b["id"] for b in page["items"]] == [ids[1]]
    assert [b["id"] for b in site.get("/api/builds?status=error").json()["items"]] == [ids[0]]
    assert site.get("/api/builds?state=queued&configuration=c").json()["total"] == 1


def test_bad_list_parameters_are_400_json(site: Site) -> None:
    for query, message in [
        ("status=nope", "status: unknown 'nope', use one of skip, success"),
        ("state=x", "state: unknown 'x', use one of queued, leased, built"),
        ("limit=5000", "limit: 5000 is out of range, use 0 to 1000"),
        ("offset=-1", "offset: -1 is out of range"),
        ("limit=ten", "limit: 'ten' is not a whole number"),
    ]:
        answer = site.get(f"/api/builds?{query}")
        assert answer.status == 400, query
        assert answer.json()["error"].startswith(message), answer.json()


def test_one_build_with_operations_and_attempts(site: Site) -> None:
    (build_id,) = site.add()
    site.finish(build_id, Status.WARNING)
    data = site.get(f"/api/builds/{build_id}").json()
    assert (data["id"], data["status"], data["commit"]) == (build_id, "warning",
                                                           "0123456789abcdef0123")
    assert data["log_url"] == LOG
    assert data["operations"] == [
        {"name": "configure", "status": "success", "log_url": LOG + "/configure"},
        {"name": "update", "status": "warning", "log_url": LOG + "/update"},
    ]
    (attempt,) = data["attempts"]
    assert attempt["outcome"] == "result" and attempt["metrics"] == {"seconds": 42.0}
    assert "session" not in attempt
    missing = site.get("/api/builds/999")
    assert missing.status == 404 and missing.json() == {"error": "there is no build 999"}


def test_base_url_can_change_after_start(site: Site) -> None:
    (build_id,) = site.add()
    site.app.config["BBOT_BASE_URL"] = "http://127.0.0.1:9999/pkg/"
    data = site.get(f"/api/builds/{build_id}").json()
    assert data["url"] == f"http://127.0.0.1:9999/pkg/builds/{build_id}"


def test_submit(site: Site) -> None:
    body = {"url": "https://git.example.org/x.git", "ref": "main", "email": "me@example.org"}
    answer = site.post("/api/submit", json.dumps(body).encode())
    assert answer.status == 202
    assert answer.json() == {"set_id": 77, "builds_url": "https://ci.example.org/builds?set_id=77"}
    assert site.submissions == [("https://git.example.org/x.git", "main", "me@example.org")]
    answer = site.post("/api/submit", b'{"url": " https://git.example.org/y.git "}')
    assert answer.status == 202
    assert site.submissions[-1] == ("https://git.example.org/y.git", None, None)


def test_bad_submissions_say_what_to_fix(site: Site) -> None:
    for body, message in [
        (b"not json", "the body is not JSON"),
        (b"[1, 2]", "the body must be a JSON object"),
        (b"{}", "'url' is missing"),
        (b'{"url": ""}', "'url' is missing"),
        (b'{"url": "x", "branch": "main"}', "unknown field(s) branch; the fields are url, ref"),
        (b'{"url": "x", "email": 5}', "'email' must be a string or null"),
        (b'{"url": "https://refuse.example.org/x.git"}',
         "'https://refuse.example.org/x.git' is not a git URL bbot can fetch"),
    ]:
        answer = site.post("/api/submit", body)
        assert answer.status == 400, body
        assert answer.json()["error"].startswith(message), answer.json()
    crashed = site.post("/api/submit", b'{"url": "https://crash.example.org/x.git"}')
    assert crashed.status == 500 and "try again later" in crashed.json()["error"]
    assert site.submissions == []


def test_oversized_submission_is_413(site: Site) -> None:
    body = json.dumps({"url": "x" * (MAX_REQUEST_BYTES + 10)}).encode()
    answer = site.post("/api/submit", body)
    assert answer.status == 413
    assert "over 65536 bytes" in answer.json()["error"]


def test_wrong_method_is_json_405(site: Site) -> None:
    answer = site.get("/api/submit")
    assert answer.status == 405 and "error" in answer.json()


def test_submit_is_404_without_a_hook(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    server = serve(create_app(store, base_url=BASE_URL))
    try:
        answer = request(server.url, "POST", "/api/submit", b'{"url": "x"}')
        assert answer.status == 404
        assert json.loads(answer.body) == {"error": "this controller takes no submissions"}
    finally:
        server.stop()
        store.close()


def test_healthz(site: Site) -> None:
    answer = site.get("/healthz")
    assert (answer.status, answer.text) == (200, "ok\n")


def test_counters_say_what_was_dropped(site: Site) -> None:
    site.store.bump("results_dropped_duplicate", 2)
    answer = site.get("/api/counters")
    assert answer.status == 200
    assert answer.json()["results_dropped_duplicate"] == 2
