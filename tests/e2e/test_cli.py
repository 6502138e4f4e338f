"""The `bbot` command as a person runs it: real processes, stopped by the test."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import SAMPLE, git_repo

BBOT = [sys.executable, "-m", "bbot", "--log-level", "WARNING"]


def test_up_once_builds_and_exits_with_the_outcome(tmp_path: Path) -> None:
    git_repo(tmp_path / "libhello", SAMPLE)
    git_repo(tmp_path / "broken", {"Makefile": "all:\n\tfalse\n"})
    good = subprocess.run(
        [*BBOT, "up", "--once", "--port", "0", "--data", str(tmp_path / "d1"),
         "--submit", f"file://{tmp_path / 'libhello'}#main"],
        capture_output=True, text=True, timeout=180)
    assert good.returncode == 0, good.stdout + good.stderr
    assert re.search(r"libhello\s+\w{12}\s+gcc-release\s+success", good.stdout)
    assert re.search(r"libhello\s+\w{12}\s+gcc-debug\s+success", good.stdout)
    assert "2 of 2 build(s) succeeded" in good.stdout
    bad = subprocess.run(
        [*BBOT, "up", "--once", "--port", "0", "--data", str(tmp_path / "d2"),
         "--submit", str(tmp_path / "broken")],
        capture_output=True, text=True, timeout=180)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "0 of 2 build(s) succeeded" in bad.stdout


def test_submit_to_a_running_farm_then_ctrl_c(tmp_path: Path) -> None:
    git_repo(tmp_path / "libhello", SAMPLE)
    farm = subprocess.Popen([*BBOT, "up", "--port", "0", "--data", str(tmp_path / "d")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert farm.stdout is not None
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = farm.stdout.readline()
            m = re.search(r"pages at (http://\S+/)builds", line)
            url = m.group(1) if m else None
        assert url, "the farm never printed its URL"
        sub = subprocess.run([*BBOT, "submit", f"file://{tmp_path / 'libhello'}", "--controller", url],
                             capture_output=True, text=True, timeout=120)
        assert sub.returncode == 0, sub.stderr
        assert re.match(r"submitted as build set 1: http://", sub.stdout)
        refused = subprocess.run([*BBOT, "submit", "ext::sh -c id", "--controller", url],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1
        assert "400" in refused.stderr and "not a git URL" in refused.stderr
        farm.send_signal(signal.SIGINT)
        assert farm.wait(timeout=60) == 0
    finally:
        if farm.poll() is None:
            farm.kill()
            farm.wait()


def test_config_typos_are_reported_together(tmp_path: Path) -> None:
    config = tmp_path / "bbot.yaml"
    config.write_text("controler: {}\nconfigurations:\n  - {name: a, machine: m}\n")
    run = subprocess.run([*BBOT, "up", "--once", "-c", str(config)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "2 configuration error(s)" in run.stderr
    assert "controler: unknown key; did you mean 'controller'?" in run.stderr
    assert "configurations[0].target: required; add it" in run.stderr
