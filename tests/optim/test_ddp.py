"""GO under DistributedDataParallel (two CPU processes, gloo): every rank perturbs its replica identically."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from auditor.optim import GaussianAugmented


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # same initial replica on every rank
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    go = GaussianAugmented(net, torch.optim.AdamW(ddp.parameters(), lr=0.05), sigma=0.1, seed=11)
    data = torch.Generator().manual_seed(100 + rank)  # each rank its own data shard
    checks = []
    for _ in range(3):
        for _ in range(2):  # accumulation: no all-reduce on the first micro-batch
            x, y = torch.randn(8, 4, generator=data), torch.randn(8, 1, generator=data)
            with go.perturbed():
                flat = torch.cat([p.detach().flatten() for p in net.parameters()])
                seen = [torch.empty_like(flat) for _ in range(world)]
                dist.all_gather(seen, flat)
                checks.append(all(torch.equal(seen[0], s) for s in seen))
                torch.nn.functional.mse_loss(ddp(x), y).backward()
        go.step()
        go.zero_grad()
    flat = torch.cat([p.detach().flatten() for p in net.parameters()])
    seen = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(seen, flat)
    checks.append(all(torch.equal(seen[0], s) for s in seen))
    dist.destroy_process_group()
    if rank == 0:
        with open(out, "w") as f:
            f.write(",".join(str(int(c)) for c in checks))


def test_ranks_draw_the_same_noise_and_stay_in_sync(tmp_path) -> None:
    out = tmp_path / "checks.txt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    checks = out.read_text().split(",")
    assert len(checks) == 7 and set(checks) == {"1"}
