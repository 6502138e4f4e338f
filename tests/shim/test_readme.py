"""The README's configurations for brep's HTTP interface are ones bbot takes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bbot.brep import keys
from bbot.config import parse_config
from tests.conftest import ROOT


def test_the_readmes_http_configurations_parse(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Remote agents and controllers in layers"):]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    # The paths the examples name, made real.
    key = keys.generate_private_key(1024)
    for name in ("agent.pem", "lab.pem"):
        keys.write_private_key(key, tmp_path / name)
    (tmp_path / "agent-keys").mkdir()
    (tmp_path / "agent-keys" / "host7.pem").write_text(keys.public_pem(key))
    for block in blocks:
        document = yaml.safe_load(block.replace("/etc/bbot/", f"{tmp_path}/"))
        config = parse_config(document, data_dir=tmp_path / "data")
        assert config.controller.upstream or config.agent.controllers or config.controller.agent_keys
