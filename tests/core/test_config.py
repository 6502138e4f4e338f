from pathlib import Path

import pytest

from bbot.config import ConfigError, load_config, parse_config


def test_no_file_is_the_embedded_default(tmp_path: Path) -> None:
    config = load_config(None, data_dir=tmp_path)
    assert config.broker_url == "memory://"
    assert config.effective_store_url == f"sqlite:///{tmp_path / 'bbot.sqlite'}"
    assert len(config.configurations) == 2
    assert all(m.type == "process" for m in config.agent.machines)


def test_full_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bbot.yaml"
    path.write_text(
        """
data_dir: data
broker: {url: "amqp://guest:guest@127.0.0.1:5672//"}
controller: {name: top, lease_timeout: 60, toolchain: {name: public, version: 1.2.3}}
configurations:
  - {name: gcc, machine: "linux*", target: x86_64-linux-gnu, args: ["CFLAGS=-O2"]}
sources:
  - {url: "https://example.org/libfoo.git", branches: [main, stable], interval: 30}
agent:
  name: host1
  machines: [{id: m1, name: linux_debian_12-gcc_12, summary: Debian}]
"""
    )
    config = load_config(path)
    assert config.data_dir == tmp_path / "data"
    assert config.controller.name == "top"
    assert config.controller.toolchain_version == "1.2.3"
    assert config.configurations[0].args == ("CFLAGS=-O2",)
    assert config.sources[0].name == "libfoo"
    assert config.sources[0].branches == ("main", "stable")
    assert config.agent.machines[0].name == "linux_debian_12-gcc_12"


def test_every_problem_is_reported_at_once_with_its_place() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "controler": {},
                "broker": {"url": "redis://x"},
                "configurations": [
                    {"name": "a", "machine": "m", "targte": "t"},
                    {"name": "a", "machine": "m", "target": "t", "warning_regex": ["("]},
                ],
                "agent": {"machines": [{"id": "x", "name": "n", "type": "vmware"}]},
            },
            source="farm.yaml",
        )
    problems = info.value.problems
    text = str(info.value)
    assert text.startswith("farm.yaml: ")
    assert "controler: unknown key; did you mean 'controller'?" in problems
    assert "configurations[0].targte: unknown key; did you mean 'target'?" in problems
    assert "configurations[0].target: required; add it" in problems
    assert any(p.startswith("configurations[1].name: 'a' is used by an earlier") for p in problems)
    assert any(p.startswith("configurations[1].warning_regex[0]: invalid regular expression") for p in problems)
    assert any(p.startswith("broker.url: unsupported scheme") for p in problems)
    assert any(p.startswith("agent.machines[0].type: unknown machine type 'vmware'") for p in problems)
    assert len(problems) == 7


def test_bad_yaml_and_missing_file_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("configurations: [\n")
    with pytest.raises(ConfigError, match=r"(?s)bad.yaml: 1 configuration error.*not valid YAML.*bad.yaml\", line 2"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.yaml")


def test_smtp_password_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"email": {"smtp": {"host": "mail", "password_env": "BBOT_TEST_PW"}}}
    with pytest.raises(ConfigError, match="BBOT_TEST_PW is not set"):
        parse_config(doc)
    monkeypatch.setenv("BBOT_TEST_PW", "s3cret")
    config = parse_config(doc)
    assert config.email.smtp is not None and config.email.smtp.password == "s3cret"


def test_shipped_example_configurations_parse() -> None:
    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "docker" / "farm.yaml")
    assert config.broker_url.startswith("amqp://")
    assert [c.name for c in config.configurations] == ["gcc-release", "gcc-debug"]


def test_broker_urls_fail_over_and_declare_is_a_boolean(tmp_path: Path) -> None:
    config = parse_config({"broker": {"urls": ["amqp://a:5672//", "amqp://b:5672//"], "declare": False}},
                          data_dir=tmp_path)
    assert (config.broker_url, config.broker_declare) == ("amqp://a:5672//;amqp://b:5672//", False)
    with pytest.raises(ConfigError) as e:
        parse_config({"broker": {"url": "amqp://a//", "urls": ["amqp://b//"], "declare": "no"}},
                     data_dir=tmp_path)
    assert e.value.problems == [
        "broker.urls: give either broker.url or broker.urls (a list for failover), not both",
        "broker.declare: expected true or false, got 'no'",
    ]
    with pytest.raises(ConfigError) as e:
        parse_config({"broker": {"urls": ["memory://", "amqp://b//"]}}, data_dir=tmp_path)
    assert e.value.problems == ["broker.urls: memory:// cannot fail over: list only amqp:// URLs"]


def test_http_interface_settings_and_their_mistakes_together(tmp_path: Path) -> None:
    from bbot.brep import keys

    key = keys.generate_private_key(1024)
    keys.write_private_key(key, tmp_path / "agent.pem")
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "host7.pem").write_text(keys.public_pem(key))
    good = parse_config({
        "controller": {"agent_keys": "trusted", "result_timeout": 60, "http_agent_expiry": 30,
                       "upstream": ["https://ci.example.org/"], "upstream_interval": 5, "key": "agent.pem"},
        "web": {"threads": 16},
        "agent": {"controllers": ["http://10.0.0.1:8080/bbot"], "poll_interval": 2, "poll_backoff_max": 60,
                  "key": "agent.pem"},
    }, base=tmp_path, data_dir=tmp_path / "data")
    assert good.controller.agent_keys == tmp_path / "trusted"
    assert (good.controller.result_timeout, good.controller.upstream, good.web.threads) == (
        60.0, ("https://ci.example.org/",), 16)
    assert (good.agent.controllers, good.agent.key) == (("http://10.0.0.1:8080/bbot",), tmp_path / "agent.pem")

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as caught:
        parse_config({
            "controller": {"agent_keys": "empty", "upstream": ["ci.example.org"], "key": "missing.pem",
                           "result_timout": 5},
            "agent": {"controllers": ["https://ci.example.org/?build-task"], "key": "trusted/host7.pem",
                      "poll_interval": 0},
        }, base=tmp_path, data_dir=tmp_path / "data")
    problems = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 7, problems
    for expected in ("controller.result_timout: unknown key; did you mean 'result_timeout'?",
                     "controller.upstream[0]: 'ci.example.org' is not a controller's root URL",
                     "controller.agent_keys:", "controller.key:", "missing.pem",
                     "agent.controllers[0]: 'https://ci.example.org/?build-task' is not a controller's root URL",
                     "agent.key:", "agent.poll_interval: must be at least 0.01"):
        assert expected in problems, problems
