"""The per-draw log of an audit: an append-only, locked JSONL file, and how draws are recorded in it.

Every draw is appended to the log and flushed before the next starts; a resumed run re-reads the
finished draws (a line torn by a crash is cut off and that draw redone).

Record format (one line per draw): ``{"draw": i, "results": {TASK: {...}}}`` where each task holds
``value`` (the unit before rounding: the mean 0/1 outcome, averaged over an antithetic pair),
``evaluations``, ``correct`` (successes per sign), ``examples`` (the scored example indices as
ranges, e.g. ``"0-7,12,15-23"``, in scoring order) and ``outcomes`` (one hex string per sign: the
0/1 outcome of each listed example, packed 8 to a byte, first example in the high bit). That is
enough to recount every unit, rebuild per-example flip rates, and replay a draw example by example.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auditor.errors import AuditorError

RECORD_FORMAT = 2  # draw-log lines carry per-example outcomes (examples + outcomes)


@dataclass
class DrawOutcomes:
    """Which examples one draw scored for a task, and their 0/1 outcomes (one array per sign)."""

    draw: int
    indices: list[int]
    outcomes: list[np.ndarray]


def encode_indices(indices: Sequence[int]) -> str:
    """Example indices as comma-separated ascending runs: [0, 1, 2, 5] -> "0-2,5" (order kept)."""
    parts: list[str] = []
    start = prev = None
    for i in indices:
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
        start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ",".join(parts)


def decode_indices(text: str) -> list[int]:
    """The inverse of `encode_indices`."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def encode_outcomes(outcomes: np.ndarray) -> str:
    """0/1 outcomes packed 8 to a byte (first in the high bit), as hex."""
    return np.packbits(np.asarray(outcomes, dtype=np.uint8)).tobytes().hex()


def decode_outcomes(text: str, n: int) -> np.ndarray:
    """The inverse of `encode_outcomes` for n outcomes."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:n].astype(np.uint8)


def record_outcomes(task: str, rec: dict[str, Any], draw: int) -> DrawOutcomes:
    """Per-example outcomes of one logged task result."""
    try:
        idx = decode_indices(rec["examples"])
        return DrawOutcomes(draw, idx, [decode_outcomes(h, len(idx)) for h in rec["outcomes"]])
    except (KeyError, ValueError, TypeError) as exc:
        raise AuditorError(f"draw {draw}, task {task}: log line lacks per-example outcomes") from exc


def read_header(path: Path) -> dict[str, Any]:
    """The header line of a draw log; AuditorError when the file is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            return dict(json.loads(f.readline())["header"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AuditorError(f"{path}: not a draw log (bad header)") from exc


def read_draws(path: Path, repair: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, records) of a draw log, checked: draws 0, 1, 2, ... each once, every line whole.

    A last line without its newline is a draw cut off mid-write: with `repair` the file is truncated
    to the last whole line (the draw is redone), otherwise it is ignored. Any other damage (a bad
    line in the middle, a draw twice, a draw missing) is an AuditorError naming the line.
    """
    header = read_header(path)
    data = path.read_bytes()
    whole = data.rfind(b"\n") + 1
    if whole < len(data) and repair:
        with open(path, "r+b") as f:
            f.truncate(whole)
            f.flush()
            os.fsync(f.fileno())
    records: list[dict[str, Any]] = []
    for lineno, line in enumerate(data[:whole].split(b"\n")[1:-1], start=2):
        try:
            rec = json.loads(line)
            draw = rec["draw"]
            if not isinstance(draw, int) or not isinstance(rec["results"], dict):
                raise ValueError("draw must be an integer and results an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditorError(f"{path}: line {lineno} is not a draw record ({exc})") from exc
        if draw != len(records):
            what = "repeats" if draw < len(records) else "skips to"
            raise AuditorError(
                f"{path}: line {lineno} {what} draw {draw} (expected draw {len(records)}): the log is damaged"
            )
        records.append(rec)
    return header, records


class DrawLog:
    """Append-only JSONL: a header that pins the run, then one line per finished draw.

    The run folder is locked (flock on `.auditor.lock`, which names the holder) for the lifetime of
    the log, so two runs can never interleave lines in one log.
    """

    LOCK = ".auditor.lock"

    def __init__(self, path: Path, header: dict[str, Any], resume: bool) -> None:
        self.path = path
        self.done: dict[int, dict[str, Any]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._lock(path.parent / self.LOCK)
        try:
            if resume and path.exists():
                self._read(header)
                self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the whole run
            else:
                if path.exists() and not resume:
                    raise AuditorError(
                        f"{path}: a draw log already exists; pass --resume to continue it or another --out"
                    )
                self._fh = open(path, "w", encoding="utf-8")  # noqa: SIM115 - held open for the whole run
                self._write({"header": header})
        except BaseException:
            self._unlock()
            raise

    @classmethod
    def check_free(cls, run_dir: Path) -> None:
        """AuditorError naming the holder when another run holds `run_dir` (the lock is not kept)."""
        import fcntl

        lock_path = Path(run_dir) / cls.LOCK
        if lock_path.exists():
            fd = cls._lock(lock_path)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    def _lock(lock_path: Path) -> int:
        import datetime as dt
        import fcntl
        import socket
        import sys

        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise AuditorError(
                f"{lock_path.parent}: run folder in use by {holder}; wait for it to finish or pass another --out"
            ) from exc
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        who = f"pid {os.getpid()} on {socket.gethostname()} since {now} ({' '.join(sys.argv[:6])[:200]})"
        os.ftruncate(fd, 0)
        os.pwrite(fd, who.encode("utf-8"), 0)
        return fd

    def _unlock(self) -> None:
        import fcntl

        if self._lock_fd >= 0:
            os.ftruncate(self._lock_fd, 0)  # the file stays: unlinking it would race with a waiting run
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _read(self, header: dict[str, Any]) -> None:
        first = read_header(self.path)
        if first != header:
            diff = sorted(k for k in set(first) | set(header) if first.get(k) != header.get(k))
            raise AuditorError(f"{self.path}: cannot resume, the run differs in: {', '.join(diff)}")
        _, records = read_draws(self.path, repair=True)  # a torn last line is cut before appending
        self.done = {int(rec["draw"]): rec for rec in records}

    def _write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, sort_keys=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def append(self, draw: int, results: dict[str, Any]) -> None:
        self._write({"draw": draw, "results": results})

    def close(self) -> None:
        self._fh.close()
        self._unlock()
