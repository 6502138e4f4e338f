"""The ``bbot`` command: one entry point for every mode."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from bbot import __version__
from bbot.config import Config, ConfigError, load_config


def _init_sentry() -> None:
    dsn = os.environ.get("SENTRY_DSN")
    if dsn:
        import sentry_sdk

        sentry_sdk.init(dsn=dsn, release=f"bbot@{__version__}")


def _config(args: argparse.Namespace) -> Config:
    data = Path(args.data).absolute() if getattr(args, "data", None) else None
    return load_config(Path(args.config) if args.config else None, data_dir=data)


def _wait_for_signal() -> None:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, handler)
    stop.wait()


def cmd_up(args: argparse.Namespace) -> int:
    from bbot.farm import run_up

    return run_up(_config(args), submit=args.submit, once=args.once, timeout=args.timeout, port=args.port)


def cmd_controller(args: argparse.Namespace) -> int:
    from bbot.farm import start_farm

    farm = start_farm(_config(args), with_agent=False, port=args.port)
    print(f"bbot: controller up; pages at {farm.url}builds", flush=True)
    try:
        _wait_for_signal()
    finally:
        farm.stop()
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from bbot.agent.service import Agent

    config = _config(args)
    agent = Agent(config.agent, broker_url=config.broker_url, data_dir=config.data_dir,
                  broker_declare=config.broker_declare,
                  toolchain_name=config.controller.toolchain_name,
                  toolchain_version=config.controller.toolchain_version)
    agent.start()
    how = (f"polling {', '.join(config.agent.controllers)} over HTTP" if config.agent.controllers
           else "on the broker")
    print(f"bbot: agent {config.agent.name} up with {len(agent.slots)} machine(s), {how}", flush=True)
    try:
        _wait_for_signal()
    finally:
        agent.stop()
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    body = json.dumps({"url": args.url, "email": args.email}).encode()
    url = args.controller.rstrip("/") + "/api/submit"
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.loads(detail)["error"]
        print(f"bbot submit: {url}: {e.code}: {detail}", file=sys.stderr)
        return 1
    except urllib.error.URLError as e:
        print(f"bbot submit: cannot reach the controller at {url}: {e.reason}; is `bbot up` running?",
              file=sys.stderr)
        return 1
    print(f"submitted as build set {answer['set_id']}: {answer['builds_url']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bbot", description="A build bot for package build farms.")
    parser.add_argument("--version", action="version", version=f"bbot {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("BBOT_LOG_LEVEL", "INFO"),
                        help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", help="YAML configuration file (none: the embedded default)")
        p.add_argument("--data", help="data directory (default: $BBOT_DATA or ./bbot-data)")

    up = sub.add_parser("up", help="run a whole farm in this process: controller, pages, agent")
    with_config(up)
    up.add_argument("--submit", action="append", default=[], metavar="GIT-URL[#REF]",
                    help="build this repository once the farm is up (repeatable)")
    up.add_argument("--once", action="store_true",
                    help="exit when the submitted builds are done; status 0 only if all succeeded")
    up.add_argument("--timeout", type=float, default=3600.0, help="with --once: give up after this long")
    up.add_argument("--port", type=int, help="web port (default from the configuration, 8080)")
    up.set_defaults(func=cmd_up)

    controller = sub.add_parser("controller", help="run a controller (with its pages), no agent")
    with_config(controller)
    controller.add_argument("--port", type=int, help="web port")
    controller.set_defaults(func=cmd_controller)

    agent = sub.add_parser("agent", help="run an agent for the machines in the configuration")
    with_config(agent)
    agent.set_defaults(func=cmd_agent)

    submit = sub.add_parser("submit", help="ask a running controller to build a git repository")
    submit.add_argument("url", metavar="GIT-URL[#REF]")
    submit.add_argument("--email", help="mail the results to this address")
    submit.add_argument("--controller", default=os.environ.get("BBOT_CONTROLLER", "http://127.0.0.1:8080/"),
                        help="the controller's URL (default $BBOT_CONTROLLER or http://127.0.0.1:8080/)")
    submit.set_defaults(func=cmd_submit)

    from bbot.brep import keys_cli
    from bbot.manifest import cli as manifest_cli
    from bbot.worker import cli as worker_cli
    from broker import cli as broker_cli

    manifest_cli.add_parser(sub)
    worker_cli.add_parser(sub)
    broker_cli.add_parser(sub)
    keys_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("tftpy", "waitress", "kombu", "amqp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    _init_sentry()
    try:
        code: int = args.func(args)
    except ConfigError as e:
        print(f"bbot: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
