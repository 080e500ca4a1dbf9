"""ringattn: exact long-context attention with ring (sequence) parallelism.

One device::

    out = ringattn.attention(q, k, v, causal=True)          # q [B, S, H, D], k, v [B, S, Hkv, D]

Across the ranks of a torch.distributed group, each rank passing ITS shard
of the sequence in the layout's order (ringattn.shard cuts it)::

    out = ringattn.ring_attention(q, k, v, causal=True, sharding="zigzag")

Both are autograd functions and torch.library custom ops (torch.compile
traces them without graph breaks). ringattn moves the key/value blocks
itself -- UCX for CPU tensors, NCCL for CUDA tensors -- bootstrapped through
the group's store, and overlaps the rotation with the compute. Bad input
raises ValueError (shapes, options), TypeError (dtypes, devices),
TimeoutError (a peer that does not answer within the timeout),
NotImplementedError (a backend this build lacks) or RuntimeError, with the
C++ engine's message.
"""
from ._api import attention, ring_attention
from ._dist import positions, shard, unshard

try:
    from importlib.metadata import version as _version

    __version__ = _version("ringattn")
except Exception:  # an uninstalled source tree
    __version__ = "0+unknown"

__all__ = ["attention", "ring_attention", "shard", "unshard", "positions", "__version__"]
