"""The errors a user can cause, and the exit codes they map to."""

from __future__ import annotations

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class AuditorError(Exception):
    """Bad input (usage, policy, checkpoint, data): shown as one line on stderr, exit code 2."""

    exit_code = EXIT_ERROR


class PolicyError(AuditorError):
    """A policy file that does not parse or validate; the message names the file and the field."""


class CheckpointError(AuditorError):
    """A checkpoint that cannot be read safely (missing, pickle-only, truncated, inconsistent)."""


class TaskError(AuditorError):
    """An unknown task or an unreadable / malformed data file."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during an audit whose draw log is flushed: `run_dir` is the folder to resume."""

    def __init__(self, run_dir: object) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir
