"""Data-parallel training: N processes, one optimizer step, the same weights everywhere.

``train()`` runs data-parallel when ``torch.distributed`` is initialized (a Ray Train
worker group sets up gloo on the CPU, NCCL on GPUs; ``orchestrate run --workers N`` spawns
gloo processes; see :func:`spawn`). The scheme, chosen so that a run on N workers is the
run on one worker at the same ``batch_size``:

* ``batch_size`` is **global**. Every rank walks the same sequence of global batches (the
  loader's generator is seeded alike), cuts each into ``N x grad_accum_steps`` slices and
  trains on its own ``grad_accum_steps`` of them: each rank trains on its shard of every epoch.
* Each slice's loss is weighted by what it averages over (examples; NER: scored words) out
  of the whole global batch, so the **sum** of the ranks' gradients is the gradient of the
  global batch: the trainable parameters' gradients are summed with one ``all_reduce`` in one
  flat buffer. Under a prompt method that is the prompts and the head (kilobytes), never the
  frozen backbone; :attr:`Dist.sync_bytes` counts them.
* Every rank then takes the same clipped AdamW step: weights stay identical without being
  broadcast (a frozen backbone is never touched, so it stays bit-identical too).
* Dropout and Gumbel noise differ by rank (each rank reseeds its torch generator from
  ``(seed, rank, epoch)`` at every epoch), reproducibly, and a continued run gets the same
  streams. Prompt and head initialisation happen before, from ``seed`` alone: alike on every rank.
* Evaluation is sharded: each rank predicts a contiguous part of the split, the parts are
  gathered in order, and every rank scores the whole split, so all ranks agree on the best
  epoch and the scores equal one worker's.
* Rank 0 alone writes checkpoints, results and reports.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from .errors import TrainingError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    sync_bytes: int = 0  # bytes of gradients all-reduced per optimizer step (0 on one worker)

    @classmethod
    def current(cls) -> "Dist":
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def on(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def my_slices(self, slices: list, per_rank: int) -> list:
        """This rank's ``per_rank`` of the global batch's ``world x per_rank`` slices."""
        return slices[self.rank * per_rank:(self.rank + 1) * per_rank]

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """Per-rank random streams (dropout, Gumbel noise) for ``epoch``; a no-op on one worker."""
        if self.on:
            digest = hashlib.sha256(f"{seed}/{self.rank}/{epoch}".encode()).digest()
            torch.manual_seed(int.from_bytes(digest[:8], "little") % (2**63))

    def all_reduce_grads(self, params: list[torch.nn.Parameter], loss: float = 0.0, bad: bool = False) -> tuple[float, bool]:
        """Sum the trainable gradients over ranks in one flat buffer that also carries this
        rank's share of the step's loss and whether it saw an inf/NaN loss (a rank with no
        slice this step contributes zeros). Returns (the step's loss, any rank saw inf/NaN)."""
        if not self.on:
            return loss, bad
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor([loss, float(bad)], dtype=grads[0].dtype, device=grads[0].device)])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        self.sync_bytes = flat.numel() * flat.element_size()
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p)
            offset += n
        return float(flat[-2]), bool(flat[-1] > 0)

    def shard(self, items: list) -> list:
        """This rank's contiguous part of ``items`` (evaluation)."""
        if not self.on:
            return items
        n = len(items)
        return items[n * self.rank // self.world:n * (self.rank + 1) // self.world]

    def gather(self, part: list) -> list:
        """The ranks' parts, concatenated in rank order (every rank gets the whole list)."""
        if not self.on:
            return part
        import torch.distributed as dist

        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, part)
        return [x for p in parts for x in p]


def spawn(world: int, fn: Callable[..., Any], *args: Any, port: Optional[int] = None) -> list[Any]:
    """Run ``fn(*args)`` in ``world`` local processes joined by a gloo process group; return
    each rank's return value (rank order). What ``orchestrate run --workers N`` uses."""
    import socket

    import torch.multiprocessing as mp

    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, fn, args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    errors: list[str] = []
    for _ in procs:
        rank, ok, value = queue.get()
        if ok:
            results[rank] = pickle.loads(value)  # bytes our own child pickled (tensors copied, not shared)
        else:
            errors.append(f"rank {rank}: {value}")
    for p in procs:
        p.join()
    if errors:
        raise TrainingError("data-parallel run failed: " + "; ".join(errors))
    return [results[r] for r in range(world)]


def _rank_main(rank: int, world: int, port: int, fn, args, queue) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    threads = max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world)
        try:
            # plain pickle: a tensor put on a torch multiprocessing queue is shared memory that
            # vanishes when this process exits, before the parent reads it
            queue.put((rank, True, pickle.dumps(fn(*args))))
        finally:
            dist.destroy_process_group()
    except BaseException as e:  # report, do not hang the parent
        queue.put((rank, False, f"{type(e).__name__}: {e}"))
