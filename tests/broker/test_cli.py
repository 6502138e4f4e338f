"""``bbot broker``: the subcommands end to end, and how they report bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from broker.apply import Rabbitmqctl
from broker.cli import add_parser, password_env


def bbot_broker(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="bbot")
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["broker", *argv])
    code: int = args.func(args)
    return code


def write_config(path: Path, unique: str, machine: str = "linux-gcc") -> Path:
    path.write_text(f"""
controller: {{name: c-{unique}}}
agent:
  name: a-{unique}
  machines:
    - {{id: m1, name: "{machine}-{unique}", summary: first}}
    - {{id: m2, name: "{machine}-{unique}", summary: "same name, same queue"}}
""")
    return path


def test_apply_then_verify_from_a_configuration(
        rabbitmq: str, ctl: Rabbitmqctl, vhost: str, unique: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path / "bbot.yaml", unique))
    common = ["--url", rabbitmq, "--vhost", vhost, "--config", config, "--machine", f"bsd-{unique}"]
    assert bbot_broker("apply", *common) == 0
    assert capsys.readouterr().out == f"applied: 4 exchanges, 4 queues on vhost '{vhost}'\n"
    # The configuration names a controller and an agent, whose users `bbot broker users` makes.
    assert bbot_broker("verify", *common) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"user 'bbot-controller-c-{unique}' is missing; run `bbot broker users`",
        f"user 'bbot-agent-a-{unique}' is missing; run `bbot broker users`",
    ]

    ctl.run("delete_queue", "-p", vhost, f"bbot.tasks.bsd-{unique}")
    assert bbot_broker("verify", "--url", rabbitmq, "--vhost", vhost, "--machine", f"bsd-{unique}",
                       "--machine", f"linux-gcc-{unique}") == 1
    assert capsys.readouterr().out.splitlines() == [
        f"queue 'bbot.tasks.bsd-{unique}' is missing; run `bbot broker apply`",
        f"binding 'bbot.tasks' -> 'bbot.tasks.bsd-{unique}' (key 'bsd-{unique}') is missing; run `bbot broker apply`",
    ]
    assert bbot_broker("verify", "--url", rabbitmq, "--vhost", vhost, "--machine", f"linux-gcc-{unique}") == 0
    assert capsys.readouterr().out == "topology matches\n"


def test_users_then_verify_with_passwords_from_a_file_and_the_environment(
        rabbitmq: str, ctl: Rabbitmqctl, vhost: str, unique: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    controller, agent = f"bbot-controller-c-{unique}", f"builder-{unique}"
    (tmp_path / "passwords.yaml").write_text(f"{controller}: one\n")
    monkeypatch.setenv(password_env(agent), "two")
    names = ["--url", rabbitmq, "--vhost", vhost, "--controller", f"c-{unique}", "--agent", f"a-{unique}={agent}"]
    try:
        assert bbot_broker("users", *names, "--password-file", str(tmp_path / "passwords.yaml")) == 0
        assert bbot_broker("apply", *names) == 0
        assert bbot_broker("verify", *names) == 0
        assert capsys.readouterr().out.endswith("topology matches\n")
        ctl.run("authenticate_user", agent, "two")
    finally:
        for user in (controller, agent):
            ctl.run("delete_user", user)


def test_definitions_to_a_file(unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(password_env(f"bbot-agent-a-{unique}"), "pw")
    out = tmp_path / "definitions.json"
    assert bbot_broker("definitions", "--vhost", "farm", "--machine", "m1", "--agent", f"a-{unique}",
                       "--output", str(out)) == 0
    document = json.loads(out.read_text())
    assert [u["name"] for u in document["users"]] == [f"bbot-agent-a-{unique}"]
    assert {q["name"] for q in document["queues"]} == {"bbot.tasks.m1", "bbot.dead"}
    assert {q["vhost"] for q in document["queues"]} == {"farm"}


def test_bad_input_names_the_flag_or_file_and_the_fix(
        unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "bbot.yaml", unique, machine="linux gcc")
    assert bbot_broker("apply", "--machine", "a/b", "--config", str(config)) == 2
    err = capsys.readouterr().err
    assert "--machine: machine name 'a/b' cannot be a routing key: use letters" in err
    assert f"{config}: agent.machines[0].name: machine name 'linux gcc-{unique}' cannot be a routing key" in err

    assert bbot_broker("definitions", "--agent", "h1") == 2
    assert "no password for bbot-agent-h1 (set BBOT_BROKER_PASSWORD_BBOT_AGENT_H1)" in capsys.readouterr().err

    assert bbot_broker("verify") == 2
    assert "nothing to do: give --config FILE" in capsys.readouterr().err

    assert bbot_broker("apply", "--url", "amqp://guest:guest@127.0.0.1:1/", "--machine", "m1") == 1
    assert "cannot connect to RabbitMQ at 127.0.0.1:1" in capsys.readouterr().err
