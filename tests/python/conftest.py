"""Shared pieces of the Python tests: the float64 reference, flash-attn's
tolerance rule, and a launcher for W processes in a gloo group (the ring
itself runs over ringattn's UCX communicator on loopback)."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

# UCX on loopback only, as the C++ tests do.
UCX_ENV = {"UCX_TLS": "self,sm,tcp", "UCX_NET_DEVICES": "lo"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, fn, args):
    os.environ.update(UCX_ENV, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    import torch.distributed as dist
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn, world, *args):
    """Runs fn(rank, world, *args) in `world` processes of one gloo group; a
    failure in any of them fails the caller with its traceback."""
    mp.spawn(_worker, args=(world, free_port(), fn, args), nprocs=world, join=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
