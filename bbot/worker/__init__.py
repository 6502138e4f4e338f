"""The worker: runs inside a build machine, builds one task, reports over TFTP."""

from bbot.worker.cli import add_parser
from bbot.worker.run import run_worker

__all__ = ["add_parser", "run_worker"]
