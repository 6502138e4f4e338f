"""The life of one build's task lease, as an explicit state machine.

A build is *queued* until the controller publishes a task for it; publishing
takes a *lease* under a fresh session (one session per attempt). The lease
ends when the session's result arrives (*built*), when its deadline passes
(back to *queued*, so the task is issued again, as brep does with its
``build-result-timeout``), or when the agent reports an infrastructure
failure (back to *queued* as well: the agent failed, not the package). Too
many attempts end the build *built* and abnormal. A forced rebuild (brep's
``?build-force``) queues a built or building build again. Nothing else moves a build,
and every move is checked against ``TRANSITIONS`` below, so a newcomer reads
the whole life of a task here.
"""

from __future__ import annotations

import enum


class BuildState(str, enum.Enum):
    QUEUED = "queued"  # waiting for a machine; no task is out
    LEASED = "leased"  # a task is out under the build's current session
    BUILT = "built"  # a result for the current session is stored: final


class LeaseEvent(str, enum.Enum):
    ISSUE = "issue"  # a task is published under a new session
    RESULT = "result"  # the current session's result was committed
    EXPIRE = "expire"  # the lease deadline passed without a result
    GIVE_UP = "give-up"  # too many attempts: the build ends abnormal
    FAIL = "fail"  # the agent (not the package) failed: the task is issued again
    FORCE = "force"  # a person asked for a rebuild (brep's ?build-force): build it again now


class IllegalTransition(RuntimeError):
    def __init__(self, state: BuildState, event: LeaseEvent) -> None:
        super().__init__(f"build in state '{state.value}' cannot take event '{event.value}'")
        self.state = state
        self.event = event


# Every allowed move, and only these.
TRANSITIONS: dict[tuple[BuildState, LeaseEvent], BuildState] = {
    (BuildState.QUEUED, LeaseEvent.ISSUE): BuildState.LEASED,
    (BuildState.LEASED, LeaseEvent.RESULT): BuildState.BUILT,
    (BuildState.LEASED, LeaseEvent.EXPIRE): BuildState.QUEUED,
    (BuildState.LEASED, LeaseEvent.FAIL): BuildState.QUEUED,
    (BuildState.LEASED, LeaseEvent.GIVE_UP): BuildState.BUILT,
    (BuildState.QUEUED, LeaseEvent.GIVE_UP): BuildState.BUILT,
    # A forced rebuild of a finished build, or of one building now (whose running
    # session is ended, so its late result is dropped as stale).
    (BuildState.BUILT, LeaseEvent.FORCE): BuildState.QUEUED,
    (BuildState.LEASED, LeaseEvent.FORCE): BuildState.QUEUED,
}


def next_state(state: BuildState, event: LeaseEvent) -> BuildState:
    """The state after ``event``, or IllegalTransition when the move is not allowed."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None
