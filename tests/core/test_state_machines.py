import pytest

from bbot.agent.lifecycle import TRANSITIONS as MACHINE_TRANSITIONS
from bbot.agent.lifecycle import BootLife, IllegalMachineTransition, MachineEvent, MachineState
from bbot.controller.lease import BuildState, IllegalTransition, LeaseEvent, next_state


def test_lease_life() -> None:
    state = BuildState.QUEUED
    state = next_state(state, LeaseEvent.ISSUE)
    assert state is BuildState.LEASED
    assert next_state(state, LeaseEvent.EXPIRE) is BuildState.QUEUED
    assert next_state(state, LeaseEvent.RESULT) is BuildState.BUILT


@pytest.mark.parametrize(
    "state,event",
    [
        (BuildState.BUILT, LeaseEvent.RESULT),  # a second result for a built build
        (BuildState.QUEUED, LeaseEvent.RESULT),  # a result for a task that is not out
        (BuildState.BUILT, LeaseEvent.ISSUE),
        (BuildState.QUEUED, LeaseEvent.EXPIRE),
    ],
)
def test_lease_refuses_other_moves(state: BuildState, event: LeaseEvent) -> None:
    with pytest.raises(IllegalTransition, match=f"state '{state.value}' cannot take event '{event.value}'"):
        next_state(state, event)


def test_every_boot_path_ends_discarded() -> None:
    # From every reachable state there is a way to DISCARDED.
    reachable = {MachineState.SNAPSHOT}
    changed = True
    while changed:
        changed = False
        for (src, _), dst in MACHINE_TRANSITIONS.items():
            if src in reachable and dst not in reachable:
                reachable.add(dst)
                changed = True
    for state in reachable - {MachineState.DISCARDED}:
        frontier, seen = [state], set()
        while frontier:
            s = frontier.pop()
            seen.add(s)
            frontier += [d for (src, _), d in MACHINE_TRANSITIONS.items() if src is s and d not in seen]
        assert MachineState.DISCARDED in seen, state


def test_boot_life_records_failure_and_times() -> None:
    life = BootLife("m1-abc")
    life.move(MachineEvent.BOOT)
    life.move(MachineEvent.STARTED)
    life.move(MachineEvent.FAILED, "build timed out")
    life.move(MachineEvent.DISCARD)
    assert life.state is MachineState.DISCARDED
    assert life.failure == "build timed out"
    assert life.seconds_in(MachineState.RUNNING) >= 0
    with pytest.raises(IllegalMachineTransition, match="state 'discarded' cannot take event 'boot'"):
        life.move(MachineEvent.BOOT)
