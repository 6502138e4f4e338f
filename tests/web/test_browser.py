"""The pages in a real browser: headless Chromium renders them and we read its DOM."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from bbot.manifest.status import Status
from tests.web.conftest import Site

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, ("headless Chromium is needed for this test: "
                   "`apt-get update && apt-get install -y chromium`")
    return found


def dump_dom(url: str, profile: Path) -> str:
    done = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_chromium_shows_the_builds_and_their_statuses(site: Site, tmp_path: Path) -> None:
    ok, broken = site.add(configurations=("linux-gcc", "windows-msvc"))
    site.finish(ok, Status.SUCCESS)
    site.finish(broken, Status.ERROR)

    listing = dump_dom(f"{site.url}/builds", tmp_path / "profile")
    rows = re.findall(r'<tr>\s*<td><a href="/builds/(\d+)">', listing)
    assert rows == [str(broken), str(ok)]
    assert '<span class="status-error">error</span>' in listing
    assert '<span class="status-success">success</span>' in listing

    page = dump_dom(f"{site.url}/builds/{broken}", tmp_path / "profile")
    assert f"Build {broken}: libhello/1.2.3+1 on windows-msvc" in page
    assert re.search(r'<td id="result"><span class="status-error">error</span>', page)
    assert re.search(r"<td>update</td><td><span class=\"status-error\">error</span>", page)
    assert "/libhello/1.2.3+1/log/x86_64-linux-gnu/windows-msvc/default/public/0.17.0/update" \
        in page
