"""The build2 manifest format and the typed bbot manifests (no I/O)."""

from bbot.manifest.bbot import (
    Machine,
    MachineHeader,
    OperationResult,
    Result,
    ResultRequest,
    Task,
    TaskRequest,
    TaskResponse,
)
from bbot.manifest.status import Status, worst
from bbot.manifest.text import (
    Manifest,
    ManifestError,
    Pair,
    iter_stream,
    merge_comment,
    parse_manifest,
    parse_stream,
    sanitize_value,
    serialize_manifest,
    serialize_stream,
    split_comment,
)

__all__ = [
    "Machine",
    "MachineHeader",
    "Manifest",
    "ManifestError",
    "OperationResult",
    "Pair",
    "Result",
    "ResultRequest",
    "Status",
    "Task",
    "TaskRequest",
    "TaskResponse",
    "iter_stream",
    "merge_comment",
    "parse_manifest",
    "parse_stream",
    "sanitize_value",
    "serialize_manifest",
    "serialize_stream",
    "split_comment",
    "worst",
]
