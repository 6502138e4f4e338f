from bbot.controller.registry import Registry, machine_matches
from bbot.manifest import MachineHeader, TaskRequest


def request(agent: str, *machines: str) -> TaskRequest:
    return TaskRequest(agent=agent, toolchain_name="bbot", toolchain_version="0.1.0",
                       machines=[MachineHeader(id=f"{agent}-{m}", name=m, summary=m) for m in machines])


def test_patterns() -> None:
    assert machine_matches("linux*-gcc*", "linux_debian_12-gcc_13")
    assert not machine_matches("linux*-gcc*", "windows_11-msvc_17")
    assert machine_matches("*", "anything")


def test_live_machines_only() -> None:
    registry = Registry(heartbeat=1.0)
    registry.announce(request("a1", "linux_debian_12-gcc_13"), now=100.0)
    registry.announce(request("a2", "windows_11-msvc_17"), now=100.0)
    machine = registry.machine_for("linux*", now=101.0)
    assert machine is not None and machine.name == "linux_debian_12-gcc_13"
    assert registry.machine_for("freebsd*", now=101.0) is None
    # Three heartbeats missed: the agent and its machines are gone.
    assert registry.machine_for("linux*", now=104.0) is None
    registry.announce(request("a1", "linux_debian_12-gcc_13"), now=104.0)
    assert registry.machine_for("linux*", now=104.5) is not None
