"""``bbot broker``: put bbot's topology on a RabbitMQ broker, check it, or export it."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pika
import yaml

from bbot.bus import names
from bbot.config import ConfigError, load_config
from broker import apply as broker
from broker.topology import Topology, agent_user, check_name, controller_user, definitions

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
PASSWORD_ENV_PREFIX = "BBOT_BROKER_PASSWORD_"


class UsageError(Exception):
    """Bad input: the message names the flag or file and the fix."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``bbot broker``."""
    parser = subparsers.add_parser(
        "broker",
        help="provision, check or export the RabbitMQ topology (exchanges, queues, users)",
        description=(
            "Names come from --machine/--controller/--agent and from --config (machine names from "
            "agent.machines[].name, controller.name, and agent.name when it lists machines). "
            "Passwords come from --password-file (a YAML or JSON mapping user: password), else from "
            f"{PASSWORD_ENV_PREFIX}<USER> (upper case, other characters as '_'), e.g. "
            f"{password_env('bbot-agent-host1')}."
        ),
    )
    actions = parser.add_subparsers(dest="broker_command", required=True, metavar="ACTION")
    for name, func, text in (
        ("apply", _apply, "declare exchanges, queues and bindings (safe to repeat)"),
        ("verify", _verify, "report how the broker differs from the topology (exit 1 if it does)"),
        ("definitions", _definitions, "write a definitions document (users included) to import, e.g. "
         "`bbot broker definitions ... | rabbitmqctl import_definitions` (stdin: rabbitmqctl runs as the "
         "rabbitmq user, who may not read your files)"),
        ("users", _users, "create the vhost, users and permissions with the local rabbitmqctl"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("--url", default=os.environ.get("BBOT_BROKER_ADMIN_URL", DEFAULT_URL),
                            help="an administrator's AMQP URL (default: $BBOT_BROKER_ADMIN_URL, else "
                            + DEFAULT_URL.replace("%", "%%") + ")")
        action.add_argument("--vhost", help="the vhost (default: the one in --url, else '/')")
        action.add_argument("--config", type=Path, metavar="FILE", help="a bbot YAML configuration")
        action.add_argument("--machine", action="append", default=[], metavar="NAME",
                            help="a build machine name: one task queue each (repeatable)")
        action.add_argument("--controller", action="append", default=[], metavar="NAME[=USER]",
                            help=f"a controller; its broker user is USER, default {controller_user('NAME')}")
        action.add_argument("--agent", action="append", default=[], metavar="NAME[=USER]",
                            help=f"an agent; its broker user is USER, default {agent_user('NAME')}")
        if name in ("definitions", "users"):
            action.add_argument("--password-file", type=Path, metavar="FILE",
                                help="YAML or JSON mapping of user name to password")
        if name == "definitions":
            action.add_argument("--output", type=Path, metavar="FILE", help="write here (default: stdout)")
        action.set_defaults(func=_run(func))


def password_env(user: str) -> str:
    """The environment variable holding ``user``'s password."""
    return PASSWORD_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", user).upper()


Action = Callable[[argparse.Namespace], int]


def _run(func: Action) -> Action:
    """``func`` with bad input reported as exit 2 and broker trouble as exit 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            code: int = func(args)
        except (UsageError, ConfigError) as e:
            print(f"bbot broker: {e}", file=sys.stderr)
            return 2
        except broker.BrokerError as e:
            print(f"bbot broker: {e}", file=sys.stderr)
            return 1
        return code

    return run


def topology_from(args: argparse.Namespace) -> Topology:
    """The topology the flags and the configuration file describe; UsageError names every bad input."""
    machines: list[tuple[str, str]] = [("--machine", m) for m in args.machine]  # (where, name)
    controllers = [("--controller", c) for c in args.controller]
    agents = [("--agent", a) for a in args.agent]
    if args.config:
        config = load_config(args.config)
        machines += [(f"{args.config}: agent.machines[{i}].name", m.name)
                     for i, m in enumerate(config.agent.machines)]
        controllers.append((f"{args.config}: controller.name", config.controller.name))
        if config.agent.machines:
            agents.append((f"{args.config}: agent.name", config.agent.name))
    problems: list[str] = []
    user_names: dict[str, str] = {}

    def named(kind: str, where: str, text: str, default_user: Callable[[str], str]) -> str:
        name, _, user = text.partition("=")
        if user:
            user_names[default_user(name)] = user
        try:
            check_name(kind, name)
        except ValueError as e:
            problems.append(f"{where} '{text}': {e}")
        return name

    for where, machine in machines:
        try:
            names.machine_key(machine)
        except ValueError as e:
            problems.append(f"{where}: {e}")
    controller_names = [named("controller", w, c, controller_user) for w, c in controllers]
    agent_names = [named("agent", w, a, agent_user) for w, a in agents]
    try:
        vhost = args.vhost or pika.URLParameters(args.url).virtual_host or "/"  # kombu's "//" means "/"
    except ValueError as e:
        problems.append(f"--url: {e}; use amqp://USER:PASSWORD@HOST:5672/VHOST")
    if problems:
        raise UsageError("\n  ".join(["bad input:", *problems]))
    if not (machines or controllers or agents):
        raise UsageError("nothing to do: give --config FILE, or --machine, --controller, --agent names")
    return Topology.build(vhost=vhost, machines=[m for _, m in machines], controllers=controller_names,
                          agents=agent_names, user_names=user_names)


def _passwords(args: argparse.Namespace, topology: Topology) -> dict[str, str]:
    passwords: dict[str, str] = {}
    if args.password_file:
        try:
            document = yaml.safe_load(args.password_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise UsageError(f"--password-file {args.password_file}: cannot read it: {e}") from e
        if not isinstance(document, dict) or not all(isinstance(v, str) for v in document.values()):
            raise UsageError(f"--password-file {args.password_file}: expected a mapping of "
                             "user name to password, e.g. {bbot-agent-host1: s3cret}")
        passwords.update({str(k): v for k, v in document.items()})
    missing = []
    for user in topology.users():
        if user.name not in passwords:
            if password_env(user.name) in os.environ:
                passwords[user.name] = os.environ[password_env(user.name)]
            else:
                missing.append(f"{user.name} (set {password_env(user.name)})")
    if missing:
        raise UsageError("no password for " + ", ".join(missing) + "; or put them in --password-file")
    return passwords


def _apply(args: argparse.Namespace) -> int:
    topology = topology_from(args)
    broker.apply(args.url, topology)
    print(f"applied: {len(topology.exchanges())} exchanges, {len(topology.queues())} queues "
          f"on vhost '{topology.vhost}'")
    return 0


def _verify(args: argparse.Namespace) -> int:
    topology = topology_from(args)
    differences = broker.verify(args.url, topology)
    if broker.Rabbitmqctl.find():
        differences += broker.verify_users(topology) if topology.users() else []
    else:
        print("bbot broker: bindings, users and permissions not checked: rabbitmqctl is not on PATH "
              "(see BBOT_RABBITMQCTL)", file=sys.stderr)
    for difference in differences:
        print(difference)
    if differences:
        return 1
    print("topology matches")
    return 0


def _definitions(args: argparse.Namespace) -> int:
    topology = topology_from(args)
    text = json.dumps(definitions(topology, _passwords(args, topology)), indent=2) + "\n"
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _users(args: argparse.Namespace) -> int:
    topology = topology_from(args)
    if not topology.users():
        raise UsageError("no users to create: give --controller or --agent names (or --config)")
    broker.apply_users(topology, _passwords(args, topology))
    print(f"users on vhost '{topology.vhost}': {', '.join(u.name for u in topology.users())}")
    return 0
