"""Build and operation result statuses (protocol §2.6), ordered lowest to highest.

The order decides which status wins when results merge (`worst`). brep's code proves
success < warning < error < abort < abnormal; the places of `skip` (lowest) and
`interrupt` (highest) are recalled, not verified (protocol §5, question 4).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class Status(str, enum.Enum):
    SKIP = "skip"
    SUCCESS = "success"
    WARNING = "warning"
    ERROR = "error"
    ABORT = "abort"
    ABNORMAL = "abnormal"
    INTERRUPT = "interrupt"

    @property
    def rank(self) -> int:
        """Position in the lowest-to-highest order (skip is 0)."""
        return _RANKS[self]

    # str already defines the comparison operators (alphabetical), so all four
    # are overridden here; functools.total_ordering would keep str's. Being a str
    # subclass, these also win when the plain str is on the left.
    def __lt__(self, other: object) -> bool:
        return self.rank < _comparable(other).rank

    def __le__(self, other: object) -> bool:
        return self.rank <= _comparable(other).rank

    def __gt__(self, other: object) -> bool:
        return self.rank > _comparable(other).rank

    def __ge__(self, other: object) -> bool:
        return self.rank >= _comparable(other).rank

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, text: str) -> Status:
        """The status spelled `text` exactly; ValueError naming the allowed values otherwise."""
        try:
            return cls(text)
        except ValueError:
            allowed = ", ".join(status.value for status in cls)
            raise ValueError(f"invalid status '{text}': expected one of {allowed}") from None

    @classmethod
    def worst(cls, statuses: Iterable[Status]) -> Status:
        """The highest status of `statuses`; SUCCESS when there are none."""
        return worst(statuses)


def _comparable(other: object) -> Status:
    # A plain str would otherwise compare alphabetically (Status is a str), silently
    # putting "abort" below "error".
    if not isinstance(other, Status):
        raise TypeError(
            f"cannot order Status against {type(other).__name__} {other!r}; "
            "convert it with Status.parse() first"
        )
    return other


_RANKS: dict[Status, int] = {status: index for index, status in enumerate(Status)}


def worst(statuses: Iterable[Status]) -> Status:
    """The highest status of `statuses`; SUCCESS when there are none."""
    return max(statuses, key=lambda status: status.rank, default=Status.SUCCESS)
