"""Draws sharded over processes with torch.distributed (torchrun, accelerate launch, any rendezvous).

Every rank holds a model replica (or, with a device map, a replica spread over its own GPUs). The
draws run in rounds: rank 0 broadcasts the next `world_size` unlogged draw indices, rank k computes
the k-th, and rank 0 gathers the finished records (opaque dicts, whatever the draw log stores) and
consumes them in index order exactly as a single process would: it logs them, updates the
sequential bounds and decides whether to stop. Records computed past the stop are dropped, so the
log, the stop and the certificate do not depend on timing or on the number of processes. A round
after the stop is never broadcast; the workers get `None` and return. Only rank 0 writes.

Resuming: rank 0 reads the log, and since only unlogged draws are ever handed out, every rank skips
the logged ones. A rank that dies takes the job down (torchrun stops the others); the log on rank 0
holds every draw consumed so far, and `--resume` continues from there with any number of ranks.

Object collectives run in a gloo group, also on GPU nodes: they carry a few hundred bytes per draw.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Compute = Callable[[int], dict[str, Any]]

# A draw of a large model can take minutes; a collective waits at most this long for the slowest rank.
COLLECTIVE_TIMEOUT = dt.timedelta(hours=2)


def launched_world_size() -> int:
    """WORLD_SIZE as set by torchrun / accelerate launch (1 when started plainly); no torch import."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def launched_rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


@dataclass
class Sharding:
    """This process's place in the job: the draws it computes and the group it talks through."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    group: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> str:
        """'auto' or 'cuda' mean this rank's own GPU (cuda:LOCAL_RANK) when there are GPUs; others are kept."""
        import torch

        if requested in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return requested

    def gpus(self) -> list[int]:
        """The GPUs of this node that this rank may spread a device-mapped model over (an even split)."""
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        per_rank = n // self.local_world_size
        if per_rank == 0:
            return [self.local_rank % n] if n else []
        return list(range(self.local_rank * per_rank, (self.local_rank + 1) * per_rank))

    def _broadcast(self, value: Any) -> Any:
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def _gather(self, value: Any) -> list[Any] | None:
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, out, dst=0, group=self.group)
        return out


def from_environment() -> Sharding | None:
    """Join the process group a launcher set up (WORLD_SIZE > 1), or None for a plain single process."""
    world = launched_world_size()
    if world <= 1:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
        group = dist.group.WORLD
    else:  # a caller (e.g. accelerate) set up NCCL: objects go over a gloo group of their own
        group = dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT)
    return Sharding(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
        group=group,
    )


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


class ShardedDraws:
    """Rank 0's draw source for `sample.run_draws`: rounds of `world_size` draws, records gathered in order."""

    def __init__(self, sharding: Sharding) -> None:
        assert sharding.is_main, "only rank 0 consumes draws"
        self.sharding = sharding
        self._ready: dict[int, dict[str, Any]] = {}
        self.rounds = 0

    def results(self, draw: int, pending: Sequence[int], compute: Compute) -> dict[str, Any]:
        if draw not in self._ready:
            assignment = list(pending[: self.sharding.world_size])
            assert assignment and assignment[0] == draw, "draws are consumed in index order"
            self.sharding._broadcast(assignment)
            gathered = self.sharding._gather((draw, compute(draw)))
            assert gathered is not None
            self._ready.update((d, rec) for d, rec in gathered if d is not None)
            self.rounds += 1
        return self._ready.pop(draw)

    def finish(self) -> None:
        """Tell the workers there is no next round; drop the records computed past the stop."""
        self.sharding._broadcast(None)
        self._ready.clear()


def serve_draws(sharding: Sharding, compute: Compute) -> int:
    """A worker rank's loop: compute the draw rank 0 assigns each round until it says stop.

    Returns how many draws this rank computed (some may have been dropped past a stop).
    """
    assert not sharding.is_main, "rank 0 consumes draws, it does not serve them"
    done = 0
    while True:
        assignment = sharding._broadcast(None)
        if assignment is None:
            return done
        mine = assignment[sharding.rank] if sharding.rank < len(assignment) else None
        record = compute(mine) if mine is not None else None
        done += mine is not None
        sharding._gather((mine, record))
