"""The README's example of machines of every type is a configuration bbot takes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bbot.config import parse_config
from tests.conftest import ROOT
from tests.images.image import ensure_image


def test_the_readmes_machines_parse(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Adding a machine to an agent"):text.index("### Speed of machines")]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    document = yaml.safe_load(block.replace("/var/cache/bbot/images/debian-12", str(ensure_image())))
    config = parse_config(document, data_dir=tmp_path)
    machines = {m.id: m for m in config.agent.machines}
    assert {m.type for m in machines.values()} == {"process", "container", "kvm"}
    assert machines["vm1"].options["accel"] == "auto" and machines["vm1"].options["memory"] == 2048
    assert machines["ct1"].options["pids"] == 4096
    assert config.agent.boot_timeout == 300 and config.agent.reconcile_interval == 600
