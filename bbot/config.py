"""Configuration: one YAML file (or none, for the embedded default).

Every mistake in a file is collected before anything is reported, as
Buildbot does: the operator sees all of them at once, each naming its place
(``configurations[1].machine``) and how to fix it. With no file at all, the
defaults below run a whole farm in one process: in-memory broker, SQLite,
a Maildir outbox, ``process`` build machines.

Example (every key is optional)::

    data_dir: /var/lib/bbot
    broker:
      urls: ["amqp://bbot:secret@mq1:5672/bbot", "amqp://bbot:secret@mq2:5672/bbot"]  # failover
      declare: false        # the broker was provisioned by `bbot broker apply`
    store: {url: "postgresql+psycopg://bbot@db/bbot"}
    controller:
      name: main
      base_url: https://ci.example.org/
      lease_timeout: 3600   # how long a task may wait for an agent to take it
      max_attempts: 3       # issues of one build before it ends abnormal
      toolchain: {name: public, version: 0.1.0}
      agent_keys: /etc/bbot/agent-keys   # trusted agents' public keys (brep's ?build-task/?build-result)
      result_timeout: 10800              # seconds an agent polling over HTTP has for a result
      http_agent_expiry: 300             # an HTTP agent silent this long is taken for gone
      upstream: ["https://ci.example.org/"]   # take tasks from upper controllers, as an agent
      upstream_interval: 10
      key: /etc/bbot/controller.pem      # signs the upper controllers' challenges
    web: {host: 0.0.0.0, port: 8080, threads: 8}
    email:
      sender: bbot@example.org
      build_email: [builds@example.org]
      smtp: {host: smtp.example.org, port: 587, username: bbot,
             password_env: BBOT_SMTP_PASSWORD, starttls: true}
    configurations:
      - {name: gcc-release, machine: "linux*-gcc*", target: x86_64-linux-gnu,
         args: ["CFLAGS=-O2"], warning_regex: ["warning:"]}
    sources:
      - {type: git, name: libhello, url: "https://git.example.org/libhello.git",
         branches: [main], interval: 60}
    agent:
      name: host1
      tftp: {host: 127.0.0.1, port: 0}
      build_timeout: 1800  # seconds a build may take in its machine
      boot_timeout: 300     # seconds from boot until the worker fetches its task
      shutdown_grace: 5     # seconds between the polite shutdown and the forced one
      reconcile_interval: 600   # look for leftovers of this agent (after a crash) this often
      heartbeat: 5          # announcements; three missed ones and its builds are leased again
      controllers: ["https://ci.example.org/"]   # poll these over HTTP instead of using the broker
      poll_interval: 10
      poll_backoff_max: 300
      key: /etc/bbot/agent.pem   # `bbot agent-key generate`; signs challenges
      machines:
        - {id: m1, name: linux_debian_12-gcc_12, summary: "Debian 12, GCC 12", type: process}
        - {id: n1, name: null-x86_64, type: null}   # reports success at once: for benchmarks
        - {id: vm1, name: linux_debian_12-gcc_12, type: kvm,   # a VM through libvirt
           image: /var/cache/bbot/images/debian-12, memory: 2048, cpus: 2}
        - {id: ct1, name: linux_debian_12-gcc_12, type: container,   # namespaces + overlayfs
           image: /var/cache/bbot/images/debian-12, memory: 2048, cpus: 1}

``broker.url`` (a string, ``;`` between failover URLs) may stand for ``broker.urls``.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bbot import __version__
from bbot.brep.protocol import DEFAULT_RESULT_TIMEOUT


class ConfigError(Exception):
    """All the problems found in one configuration, reported together."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} configuration error(s):\n{lines}")


@dataclass(frozen=True)
class BuildConfiguration:
    """A target configuration: which machines build it and how (brep's buildtab line)."""

    name: str
    machine: str  # glob over machine names, e.g. "linux*-gcc*"
    target: str
    args: tuple[str, ...] = ()
    warning_regex: tuple[str, ...] = ()


@dataclass(frozen=True)
class GitSourceConfig:
    name: str
    url: str
    branches: tuple[str, ...] = ("main",)
    interval: float = 60.0


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 25
    username: str | None = None
    password: str | None = None  # read from password_env / password_file, never from the YAML
    starttls: bool = False


@dataclass(frozen=True)
class EmailConfig:
    sender: str = "bbot@localhost"
    build_email: tuple[str, ...] = ()
    smtp: SmtpConfig | None = None  # None: write to the Maildir outbox in the data directory


@dataclass(frozen=True)
class MachineConfig:
    id: str
    name: str
    summary: str
    type: str = "process"
    # The options of the machine's type (image, memory, cpus, ...), checked by its backend
    # (``check_options`` in bbot/agent/machines/<type>.py).
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class AgentConfig:
    name: str = field(default_factory=socket.gethostname)
    # Controllers (brep or bbot) to poll over HTTP, by their root URL: with these the agent
    # takes its tasks by HTTP polling instead of from the broker.
    controllers: tuple[str, ...] = ()
    poll_interval: float = 10.0  # seconds between polls while nothing comes
    poll_backoff_max: float = 300.0  # longest wait after repeated errors
    key: Path | None = None  # the agent's RSA private key (PEM), to sign challenges
    tftp_host: str = "127.0.0.1"
    tftp_port: int = 0  # 0: an ephemeral port, reported at start
    build_timeout: float = 1800.0
    boot_timeout: float = 300.0  # from boot until the worker fetches its task
    shutdown_grace: float = 5.0
    reconcile_interval: float = 600.0  # how often leftovers of this agent are looked for
    heartbeat: float = 5.0
    machines_dir: Path | None = None
    machines: tuple[MachineConfig, ...] = ()


@dataclass(frozen=True)
class ControllerConfig:
    name: str = "main"
    base_url: str | None = None  # None: the web server's own address
    lease_timeout: float = 3600.0
    max_attempts: int = 3
    toolchain_name: str = "bbot"
    toolchain_version: str = __version__
    schedule_interval: float = 0.2
    # brep's agent interface (the HTTP shim):
    agent_keys: Path | None = None  # directory of trusted agents' public keys: None, no authentication
    result_timeout: float = DEFAULT_RESULT_TIMEOUT  # how long an HTTP agent (no heartbeats) has for a result
    http_agent_expiry: float = 300.0  # an HTTP agent that has not polled for this long is gone
    # Controllers in layers: the upper controllers this one takes tasks from, as an agent does.
    upstream: tuple[str, ...] = ()
    upstream_interval: float = 10.0
    key: Path | None = None  # this controller's RSA private key, toward upper controllers


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    threads: int = 8  # waitress worker threads: pages, polls and results are served by these


@dataclass(frozen=True)
class Config:
    data_dir: Path
    broker_url: str = "memory://"  # ';' separates failover alternatives
    # False on a broker provisioned by `bbot broker apply`: least-privilege users declare nothing.
    broker_declare: bool = True
    store_url: str | None = None  # None: SQLite in the data directory
    controller: ControllerConfig = ControllerConfig()
    web: WebConfig = WebConfig()
    email: EmailConfig = EmailConfig()
    configurations: tuple[BuildConfiguration, ...] = ()
    sources: tuple[GitSourceConfig, ...] = ()
    agent: AgentConfig = field(default_factory=AgentConfig)

    @property
    def effective_store_url(self) -> str:
        return self.store_url or f"sqlite:///{self.data_dir / 'bbot.sqlite'}"


# The embedded default: two configurations that the default process machines can build.
DEFAULT_MACHINES = (
    MachineConfig("process-1", "linux_local-gcc", "this host, GCC, as a child process"),
    MachineConfig("process-2", "linux_local-gcc", "this host, GCC, as a child process"),
)
DEFAULT_CONFIGURATIONS = (
    BuildConfiguration("gcc-release", "linux*-gcc*", "x86_64-linux-gnu", ("CFLAGS=-O2 -Wall",)),
    BuildConfiguration("gcc-debug", "linux*-gcc*", "x86_64-linux-gnu", ("CFLAGS=-O0 -g -Wall",)),
)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class _Reader:
    """Walks a parsed YAML document, collecting every problem with its path."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}" if where else what)

    def mapping(self, value: Any, where: str, allowed: list[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(where, f"expected a mapping of {', '.join(allowed)}; got {type(value).__name__}")
            return {}
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(allowed)}"
                self.problem(_join(where, str(key)), f"unknown key{hint}")
        return value

    def string(self, m: dict[str, Any], key: str, where: str, default: str | None = None,
               required: bool = False) -> str | None:
        value = m.get(key)
        if value is None:
            if required:
                self.problem(_join(where, key), "required; add it")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.problem(_join(where, key), f"expected a string, got {type(value).__name__}")
            return default
        return str(value)

    def number(self, m: dict[str, Any], key: str, where: str, default: float,
               minimum: float = 0) -> float:
        value = m.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(_join(where, key), f"expected a number, got {value!r}")
            return default
        if value < minimum:
            self.problem(_join(where, key), f"must be at least {minimum}, got {value}")
            return default
        return float(value)

    def boolean(self, m: dict[str, Any], key: str, where: str, default: bool) -> bool:
        value = m.get(key, default)
        if not isinstance(value, bool):
            self.problem(_join(where, key), f"expected true or false, got {value!r}")
            return default
        return value

    def strings(self, m: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = m.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(_join(where, key), "expected a list of strings")
            return ()
        return tuple(value)

    def items(self, value: Any, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(where, "expected a list")
            return []
        return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def default_data_dir() -> Path:
    return Path(os.environ.get("BBOT_DATA", "bbot-data")).absolute()


def load_config(path: Path | None = None, *, data_dir: Path | None = None) -> Config:
    """Read ``path`` (None: the embedded default). Raises ConfigError listing every problem."""
    if path is None:
        return Config(
            data_dir=data_dir or default_data_dir(),
            configurations=DEFAULT_CONFIGURATIONS,
            agent=AgentConfig(name="local", machines=DEFAULT_MACHINES),
        )
    source = str(path)
    try:
        with open(path, encoding="utf-8") as stream:  # a stream, so YAML errors name the file
            document = yaml.safe_load(stream)
    except OSError as e:
        raise ConfigError(source, [f"cannot read the file: {e.strerror}"]) from e
    except yaml.YAMLError as e:
        raise ConfigError(source, [f"not valid YAML: {e}"]) from e
    return parse_config(document, source=source, data_dir=data_dir, base=path.parent)


def parse_config(document: Any, *, source: str = "<config>", data_dir: Path | None = None,
                 base: Path | None = None) -> Config:
    r = _Reader()
    top = r.mapping(document, "", ["data_dir", "broker", "store", "controller", "web", "email",
                                   "configurations", "sources", "agent"])
    base = base or Path.cwd()
    data = data_dir or Path(os.path.expanduser(r.string(top, "data_dir", "") or str(default_data_dir())))
    if not data.is_absolute():
        data = (base / data).absolute()

    broker = r.mapping(top.get("broker"), "broker", ["url", "urls", "declare"])
    store = r.mapping(top.get("store"), "store", ["url"])
    urls = list(r.strings(broker, "urls", "broker"))
    single = r.string(broker, "url", "broker")
    if single and urls:
        r.problem("broker.urls", "give either broker.url or broker.urls (a list for failover), not both")
    urls = urls or ([u for u in single.split(";") if u] if single else ["memory://"])
    for i, u in enumerate(urls):
        if not re.match(r"^(memory|amqp|amqps|pyamqp)://", u):
            r.problem(f"broker.urls[{i}]" if len(urls) > 1 else "broker.url",
                      f"unsupported scheme in '{u}'; use memory:// or amqp://")
    if len(urls) > 1 and any(u.startswith("memory://") for u in urls):
        r.problem("broker.urls", "memory:// cannot fail over: list only amqp:// URLs")
    broker_url = ";".join(urls)
    broker_declare = r.boolean(broker, "declare", "broker", True)
    store_url = r.string(store, "url", "store")

    c = r.mapping(top.get("controller"), "controller",
                  ["name", "base_url", "lease_timeout", "max_attempts", "toolchain", "schedule_interval",
                   "agent_keys", "result_timeout", "http_agent_expiry", "upstream", "upstream_interval",
                   "key"])
    tc = r.mapping(c.get("toolchain"), "controller.toolchain", ["name", "version"])
    controller = ControllerConfig(
        name=r.string(c, "name", "controller", "main") or "main",
        base_url=r.string(c, "base_url", "controller"),
        lease_timeout=r.number(c, "lease_timeout", "controller", 3600.0, minimum=1),
        max_attempts=int(r.number(c, "max_attempts", "controller", 3, minimum=1)),
        toolchain_name=r.string(tc, "name", "controller.toolchain", "bbot") or "bbot",
        toolchain_version=r.string(tc, "version", "controller.toolchain", __version__) or __version__,
        schedule_interval=r.number(c, "schedule_interval", "controller", 0.2, minimum=0.01),
        agent_keys=_path(r.string(c, "agent_keys", "controller"), base),
        result_timeout=r.number(c, "result_timeout", "controller", DEFAULT_RESULT_TIMEOUT, minimum=1),
        http_agent_expiry=r.number(c, "http_agent_expiry", "controller", 300.0, minimum=1),
        upstream=r.strings(c, "upstream", "controller"),
        upstream_interval=r.number(c, "upstream_interval", "controller", 10.0, minimum=0.01),
        key=_path(r.string(c, "key", "controller"), base),
    )
    _check_http_urls(r, "controller.upstream", controller.upstream)
    if controller.agent_keys is not None:
        _check_trusted_keys(r, "controller.agent_keys", controller.agent_keys)
    _check_private_key(r, "controller.key", controller.key)
    for label, value in (("controller.name", controller.name),
                         ("controller.toolchain.name", controller.toolchain_name)):
        if not _NAME_RE.match(value):
            r.problem(label, f"'{value}' must be letters, digits, '_', '.', '+' or '-'")

    w = r.mapping(top.get("web"), "web", ["host", "port", "threads"])
    web = WebConfig(r.string(w, "host", "web", "127.0.0.1") or "127.0.0.1",
                    int(r.number(w, "port", "web", 8080)), int(r.number(w, "threads", "web", 8, minimum=1)))

    e = r.mapping(top.get("email"), "email", ["sender", "build_email", "smtp"])
    smtp = None
    if e.get("smtp") is not None:
        s = r.mapping(e.get("smtp"), "email.smtp",
                      ["host", "port", "username", "password_env", "password_file", "starttls"])
        password = None
        env_name = r.string(s, "password_env", "email.smtp")
        file_name = r.string(s, "password_file", "email.smtp")
        if env_name:
            password = os.environ.get(env_name)
            if password is None:
                r.problem("email.smtp.password_env", f"environment variable {env_name} is not set")
        elif file_name:
            try:
                password = Path(file_name).read_text(encoding="utf-8").strip()
            except OSError as err:
                r.problem("email.smtp.password_file", f"cannot read {file_name}: {err.strerror}")
        smtp = SmtpConfig(
            host=r.string(s, "host", "email.smtp", required=True) or "",
            port=int(r.number(s, "port", "email.smtp", 25, minimum=1)),
            username=r.string(s, "username", "email.smtp"),
            password=password,
            starttls=bool(s.get("starttls", False)),
        )
    email = EmailConfig(r.string(e, "sender", "email", "bbot@localhost") or "bbot@localhost",
                        r.strings(e, "build_email", "email"), smtp)

    configurations: list[BuildConfiguration] = []
    seen: set[str] = set()
    for i, item in enumerate(r.items(top.get("configurations"), "configurations")):
        where = f"configurations[{i}]"
        m = r.mapping(item, where, ["name", "machine", "target", "args", "warning_regex"])
        name = r.string(m, "name", where, required=True) or ""
        if name and not _NAME_RE.match(name):
            r.problem(f"{where}.name", f"'{name}' must be letters, digits, '_', '.', '+' or '-'")
        if name in seen:
            r.problem(f"{where}.name", f"'{name}' is used by an earlier configuration; names must be unique")
        seen.add(name)
        regexes = r.strings(m, "warning_regex", where)
        for j, rx in enumerate(regexes):
            try:
                re.compile(rx)
            except re.error as err:
                r.problem(f"{where}.warning_regex[{j}]", f"invalid regular expression: {err}")
        configurations.append(BuildConfiguration(
            name=name,
            machine=r.string(m, "machine", where, required=True) or "",
            target=r.string(m, "target", where, required=True) or "",
            args=r.strings(m, "args", where),
            warning_regex=regexes,
        ))

    sources: list[GitSourceConfig] = []
    for i, item in enumerate(r.items(top.get("sources"), "sources")):
        where = f"sources[{i}]"
        m = r.mapping(item, where, ["type", "name", "url", "branches", "interval"])
        kind = r.string(m, "type", where, "git")
        if kind != "git":
            r.problem(f"{where}.type", f"unknown source type '{kind}'; the known type is 'git'")
        url = r.string(m, "url", where, required=True) or ""
        default_name = Path(url.rstrip("/")).name.removesuffix(".git") or f"source{i}"
        sources.append(GitSourceConfig(
            name=r.string(m, "name", where, default_name) or default_name,
            url=url,
            branches=r.strings(m, "branches", where) or ("main",),
            interval=r.number(m, "interval", where, 60.0, minimum=0.1),
        ))

    a = r.mapping(top.get("agent"), "agent",
                  ["name", "tftp", "build_timeout", "boot_timeout", "shutdown_grace", "reconcile_interval",
                   "heartbeat", "machines_dir",
                   "machines", "controllers", "poll_interval", "poll_backoff_max", "key"])
    t = r.mapping(a.get("tftp"), "agent.tftp", ["host", "port"])
    machines: list[MachineConfig] = []
    for i, item in enumerate(r.items(a.get("machines"), "agent.machines")):
        where = f"agent.machines[{i}]"
        if not isinstance(item, dict):
            r.problem(where, f"expected a mapping of id, name, summary, type and the type's options; "
                             f"got {type(item).__name__}")
            continue
        m = item
        mtype = r.string(m, "type", where, "process") or "process"
        options = {k: v for k, v in m.items() if k not in MACHINE_KEYS}
        if mtype not in MACHINE_TYPES:
            r.problem(f"{where}.type",
                      f"unknown machine type '{mtype}'; known: {', '.join(MACHINE_TYPES)}")
        else:
            from bbot.agent.machines import check_options

            options = check_options(mtype, where, options, r.problem, base)
        machines.append(MachineConfig(
            id=r.string(m, "id", where, required=True) or "",
            name=r.string(m, "name", where, required=True) or "",
            # brep needs a summary on every machine header: default to something true.
            summary=r.string(m, "summary", where) or f"{mtype} machine {m.get('id')}",
            type=mtype,
            options=options,
        ))
    machines_dir = r.string(a, "machines_dir", "agent")
    agent = AgentConfig(
        name=r.string(a, "name", "agent", socket.gethostname()) or socket.gethostname(),
        tftp_host=r.string(t, "host", "agent.tftp", "127.0.0.1") or "127.0.0.1",
        tftp_port=int(r.number(t, "port", "agent.tftp", 0)),
        build_timeout=r.number(a, "build_timeout", "agent", 1800.0, minimum=1),
        boot_timeout=r.number(a, "boot_timeout", "agent", 300.0, minimum=1),
        shutdown_grace=r.number(a, "shutdown_grace", "agent", 5.0),
        reconcile_interval=r.number(a, "reconcile_interval", "agent", 600.0, minimum=1),
        heartbeat=r.number(a, "heartbeat", "agent", 5.0, minimum=0.1),
        machines_dir=(base / machines_dir) if machines_dir else None,
        machines=tuple(machines),
        controllers=r.strings(a, "controllers", "agent"),
        poll_interval=r.number(a, "poll_interval", "agent", 10.0, minimum=0.01),
        poll_backoff_max=r.number(a, "poll_backoff_max", "agent", 300.0, minimum=0.01),
        key=_path(r.string(a, "key", "agent"), base),
    )
    _check_http_urls(r, "agent.controllers", agent.controllers)
    _check_private_key(r, "agent.key", agent.key)

    if r.problems:
        raise ConfigError(source, r.problems)
    return Config(
        data_dir=data,
        broker_url=broker_url,
        broker_declare=broker_declare,
        store_url=store_url,
        controller=controller,
        web=web,
        email=email,
        configurations=tuple(configurations),
        sources=tuple(sources),
        agent=agent,
    )


def _path(value: str | None, base: Path) -> Path | None:
    if not value:
        return None
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else (base / path).absolute()


def _check_http_urls(r: _Reader, where: str, urls: tuple[str, ...]) -> None:
    for i, url in enumerate(urls):
        if not re.match(r"^https?://[^/\s]+", url) or "?" in url or "#" in url:
            r.problem(f"{where}[{i}]", f"'{url}' is not a controller's root URL; write it as "
                                       "http(s)://host[:port][/root], without '?...'")


def _check_trusted_keys(r: _Reader, where: str, directory: Path) -> None:
    from bbot.brep.keys import AgentKeyError, TrustedKeys

    try:
        TrustedKeys.load(directory)
    except AgentKeyError as error:
        r.problem(where, str(error))


def _check_private_key(r: _Reader, where: str, path: Path | None) -> None:
    if path is None:
        return
    from bbot.brep.keys import AgentKeyError, load_private_key

    try:
        load_private_key(path)
    except AgentKeyError as error:
        r.problem(where, str(error))


# Machine types an agent knows; each has one backend file under bbot/agent/machines/.
MACHINE_TYPES = ("process", "null", "kvm", "container")
# The keys every machine has; any other key of a machine is an option of its type.
MACHINE_KEYS = ("id", "name", "summary", "type")
