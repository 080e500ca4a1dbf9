"""ringattn across the ranks of a torch.distributed group.

ringattn moves the key/value blocks with its own communicators (UCX for CPU
tensors, NCCL for CUDA tensors: the overlap of compute and rotation is the
point, so the ring does not go through torch.distributed send/recv). They
are bootstrapped once per (group, device) through the group's c10d store:
every rank writes its blob under a key of its own and waits, at most the
timeout, for the others' -- a rank that never comes is a TimeoutError
naming it, not a hang. The same exchange, once per new configuration,
checks that the ranks agree on the options and on their shard lengths,
whose sum is the global length; later calls of that configuration cost no
collective at all.

Also here: positions / shard / unshard, the layout helpers.
"""
from __future__ import annotations

import atexit
import json
import os
import threading
import weakref
from datetime import timedelta
from typing import Dict, List, Optional

import torch
import torch.distributed as dist

from . import _C

_WORLD_KEY = "__world__"
_GROUPS: Dict[str, object] = {}
_LOCK = threading.Lock()


def group_name(group) -> str:
    """A string that names `group` inside the custom ops (None: the world)."""
    if group is None:
        return _WORLD_KEY
    name = getattr(group, "group_name", None) or f"group-{id(group)}"
    _GROUPS[name] = group
    return name


def _group(name: str):
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("ring_attention: torch.distributed is not initialized "
                           "(call torch.distributed.init_process_group first)")
    if name == _WORLD_KEY:
        return dist.group.WORLD
    try:
        return _GROUPS[name]
    except KeyError:
        raise ValueError(f"group: unknown process group {name!r}") from None


def _timeout(seconds: float) -> float:
    if seconds and seconds > 0:
        return float(seconds)
    env = os.environ.get("RINGATTN_TIMEOUT_MS")
    if env is None:
        return 60.0
    if not env.isdigit() or int(env) <= 0:
        raise ValueError(f"RINGATTN_TIMEOUT_MS: expected a positive integer number of "
                         f"milliseconds, got {env!r}")
    return int(env) / 1000.0


class _StoreExchange:
    """All-gathers of small blobs among the ranks of a group, through its store."""

    def __init__(self, group, name: str):
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        # A weak reference: the store (and its listening socket) goes with
        # destroy_process_group, not with ringattn's cache.
        self._store = weakref.ref(dist.distributed_c10d._get_default_store())
        self.prefix = f"ringattn/{name}/"
        self.round = 0

    @property
    def store(self):
        store = self._store()
        if store is None:
            raise RuntimeError("ringattn: the process group of these communicators was destroyed")
        return store

    def current(self) -> bool:
        """Whether the group this exchange was made for is still the live one."""
        return self._store() is dist.distributed_c10d._get_default_store()

    def _key(self, rnd: int, rank: int) -> str:
        return f"{self.prefix}{rnd}/{rank}"

    def allgather(self, blob: bytes, timeout: float) -> List[bytes]:
        self.round += 1
        rnd = self.round
        self.store.set(self._key(rnd, self.rank), blob)
        keys = [self._key(rnd, r) for r in range(self.size)]
        try:
            self.store.wait(keys, timedelta(seconds=timeout))
        except Exception as e:  # c10d raises DistStoreError / RuntimeError on a timeout
            missing = [r for r in range(self.size) if not self.store.check([keys[r]])]
            if not missing:
                raise
            raise TimeoutError(
                f"ringattn: rank {self.rank}: rank(s) {missing} of the group did not join within "
                f"{timeout:g} s (a rank that died, or never called ring_attention)") from e
        blobs = [self.store.get(k) for k in keys]
        if rnd > 1:  # every rank has read the previous round by now
            self.store.delete_key(self._key(rnd - 1, self.rank))
        return blobs


class _GroupState:
    """The communicators of one (group, device) and the exchange that made them."""

    def __init__(self, group, name: str, device: torch.device, timeout: float):
        self.exchange = _StoreExchange(group, name)
        self.rank, self.size = self.exchange.rank, self.exchange.size
        backend = "nccl" if device.type == "cuda" else "ucx"
        index = device.index if device.index is not None else (
            torch.cuda.current_device() if device.type == "cuda" else -1)
        self.world = _C.World(backend, self.rank, self.size, self.exchange.allgather, timeout,
                              index)
        self.engines: Dict[tuple, object] = {}


_STATES: Dict[tuple, _GroupState] = {}


def _state(name: str, device: torch.device, timeout: float) -> _GroupState:
    group = _group(name)
    key = (name, device.type, device.index)
    with _LOCK:
        state = _STATES.get(key)
        # After destroy_process_group and a new init_process_group the world's
        # name is the same, but its store is new, and so must the
        # communicators be (the ranks may be numbered differently now).
        if state is None or not state.exchange.current():
            state = None
            _STATES.pop(key, None)
            state = _GroupState(group, name, device, timeout)
            _STATES[key] = state
        return state


@atexit.register
def _release():
    """Drops every engine and communicator while the interpreter is whole: their
    progress threads are joined and the c10d store is let go before Python's
    teardown (destroying them during it can abort the process)."""
    with _LOCK:
        _STATES.clear()
        _GROUPS.clear()


def ring_engine(q: torch.Tensor, name: str, sharding: str, strategy: str, causal: bool, wl: int,
                wr: int,
                prefix: int, sink: int, cu_seqlens: List[int], blocks, softcap: float,
                scale: Optional[float], deterministic: bool, timeout: float):
    """The engine of this rank for q's configuration; its first use agrees with the peers."""
    from ._api import _engine_options  # circular at import time

    seconds = _timeout(timeout)
    state = _state(name, q.device, seconds)
    local = int(q.shape[1])
    options = {
        "sharding": sharding, "strategy": strategy, "causal": bool(causal), "window": [wl, wr], "prefix_lm": prefix,
        "sink": sink, "cu_seqlens": list(cu_seqlens),
        "block_mask": None if blocks is None else blocks.digest, "softcap": softcap, "scale": scale, "dtype": str(q.dtype), "batch": int(q.shape[0]),
        "heads": int(q.shape[2]), "head_dim": int(q.shape[3]),
        "deterministic": bool(deterministic),
    }
    key = (local, json.dumps(options, sort_keys=True), torch.get_num_threads())
    engine = state.engines.get(key)
    if engine is not None:
        return engine
    mine = json.dumps({"options": options, "shard": local}, sort_keys=True).encode()
    theirs = [json.loads(b) for b in state.exchange.allgather(mine, seconds)]
    for r, t in enumerate(theirs):
        for opt, value in options.items():
            if t["options"].get(opt) != value:
                raise ValueError(
                    f"ring_attention: option {opt} differs across the ranks of the group: rank "
                    f"{state.rank} has {value!r}, rank {r} has {t['options'].get(opt)!r}")
    shards = [t["shard"] for t in theirs]
    seqlen = sum(shards)
    expected = _C.shard_lengths(sharding, seqlen, state.size, cu_seqlens=list(cu_seqlens))
    if shards != expected:
        raise ValueError(
            f"ring_attention: shard lengths {shards} (ranks 0..{state.size - 1}) are not the "
            f"{sharding} layout of S={seqlen} over {state.size} ranks, which is {expected}: pass "
            f"each rank's ringattn.shard(...) of the full sequence")
    o = _engine_options(q, seqlen, causal, wl, wr, prefix, sink, cu_seqlens, blocks, softcap,
                        scale, deterministic, seconds, sharding, strategy)
    engine = _C.Attention(state.world, o)
    state.engines[key] = engine
    return engine


# ---- layouts -------------------------------------------------------------------


def _rank_size(group):
    if group is None and not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def positions(seqlen: int, *, group=None, sharding: str = "zigzag", device=None,
              cu_seqlens=None) -> torch.Tensor:
    """The global positions of this rank's tokens under `sharding`, in local order.

    For rotary embeddings and for sharding labels; an int64 tensor of
    length S_r. Without an initialized process group: one rank, 0..S-1.
    The balanced sharding depends on the documents: pass the cu_seqlens
    that ring_attention gets.
    """
    from ._api import _documents  # circular at import time

    if isinstance(seqlen, bool) or not isinstance(seqlen, int) or seqlen < 0:
        raise ValueError(f"seqlen: expected an int >= 0, got {seqlen!r}")
    rank, size = _rank_size(group)
    pos = _C.positions(sharding, seqlen, size, rank, cu_seqlens=_documents(cu_seqlens))
    return torch.tensor(pos, dtype=torch.int64, device=device)


def shard(x: torch.Tensor, *, dim: int = 1, group=None, sharding: str = "zigzag",
          cu_seqlens=None):
    """This rank's shard of the full tensor `x` along `dim` (the sequence)."""
    pos = positions(x.shape[dim], group=group, sharding=sharding, device=x.device,
                    cu_seqlens=cu_seqlens)
    return x.index_select(dim, pos)


def unshard(x: torch.Tensor, *, dim: int = 1, group=None, sharding: str = "zigzag",
            cu_seqlens=None):
    """The full tensor, in global order, from every rank's shard `x` along `dim`."""
    from ._api import _documents  # circular at import time

    docs = _documents(cu_seqlens)
    rank, size = _rank_size(group)
    if size == 1:
        return x
    local = torch.tensor([x.shape[dim]], dtype=torch.int64, device=x.device)
    lengths = [torch.empty_like(local) for _ in range(size)]
    dist.all_gather(lengths, local, group=group)
    lengths = [int(t.item()) for t in lengths]
    seqlen = sum(lengths)
    if lengths != _C.shard_lengths(sharding, seqlen, size, cu_seqlens=docs):
        raise ValueError(f"unshard: shard lengths {lengths} are not the {sharding} layout of "
                         f"S={seqlen} over {size} ranks")
    longest = max(lengths)
    pad = list(x.shape)
    pad[dim] = longest - x.shape[dim]
    padded = torch.cat([x, x.new_zeros(pad)], dim=dim) if pad[dim] else x.contiguous()
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded, group=group)
    full_shape = list(x.shape)
    full_shape[dim] = seqlen
    full = x.new_empty(full_shape)
    for r in range(size):
        pos = torch.tensor(_C.positions(sharding, seqlen, size, r, cu_seqlens=docs),
                           dtype=torch.int64,
                           device=x.device)
        full.index_copy_(dim, pos, parts[r].narrow(dim, 0, lengths[r]))
    return full
