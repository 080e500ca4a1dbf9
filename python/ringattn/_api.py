"""The public functions and the torch.library custom ops behind them.

Four custom ops, each with a fake (meta) implementation so that
torch.compile(fullgraph=True) traces through them, and the forward ops with
registered autograd:

    ringattn::attention_forward / attention_backward   one device
    ringattn::ring_forward / ring_backward              a rank of a group

Tensors cross into C++ through DLPack without copies (the engine reads q,
k, v in place, with any strides whose last one is 1) and results are
written into tensors allocated here. float64 tensors on the CPU run the
float64 reference of the C++ tree instead of the kernels (O(S^2) memory):
that is how torch.autograd.gradcheck checks the autograd wiring, while the
fp32/bf16 kernels are checked against float64 SDPA in the tests.
"""
from __future__ import annotations

import collections
import hashlib
import re
import threading
from typing import List, Optional, Tuple

import numpy as np
import torch

from . import _C, _dist

_CPU_DTYPES = (torch.float32, torch.bfloat16)
_CUDA_DTYPES = (torch.bfloat16, torch.float16)
_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


# ---- argument checks (TypeError for kinds, dtypes, devices; ValueError for values)


def _check_tensors(q, k, v, *, allow_float64: bool = True) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    for name, t in (("k", k), ("v", v)):
        if t.device != q.device:
            raise TypeError(f"{name} device: expected {q.device} (q's device), got {t.device}")
        if t.dtype != q.dtype:
            raise TypeError(f"{name} dtype: expected {q.dtype} (q's dtype), got {t.dtype}")
    if q.device.type == "cpu":
        allowed = _CPU_DTYPES + ((torch.float64,) if allow_float64 else ())
    elif q.device.type == "cuda":
        allowed = _CUDA_DTYPES
    else:
        raise TypeError(f"q device: expected cpu or cuda, got {q.device}")
    if q.dtype not in allowed:
        raise TypeError(
            f"q dtype: expected one of {', '.join(str(d) for d in allowed)} on {q.device.type}, "
            f"got {q.dtype}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} rank: expected 4 ([B, S, H, D]), got {t.dim()}")


def _window(window) -> Tuple[int, int]:
    if window is None:
        return -1, -1
    try:
        left, right = window
    except (TypeError, ValueError):
        raise ValueError(f"window: expected a (left, right) pair, got {window!r}") from None
    for name, w in (("left", left), ("right", right)):
        if isinstance(w, bool) or not isinstance(w, int) or w < -1:
            raise ValueError(f"window {name}: expected an int >= -1 (-1 = unbounded), got {w!r}")
    return int(left), int(right)


def _documents(cu_seqlens) -> List[int]:
    """cu_seqlens (None, a 1-D int32/int64 tensor or array, or a sequence of
    ints) as a list; its values are checked in C++ (ValueError naming the
    entry)."""
    if cu_seqlens is None:
        return []
    if isinstance(cu_seqlens, torch.Tensor):
        if cu_seqlens.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"cu_seqlens dtype: expected torch.int32 or torch.int64, got "
                            f"{cu_seqlens.dtype}")
        cu_seqlens = cu_seqlens.detach().cpu().numpy()
    if isinstance(cu_seqlens, np.ndarray):
        if cu_seqlens.dtype not in (np.int32, np.int64):
            raise TypeError(f"cu_seqlens dtype: expected int32 or int64, got {cu_seqlens.dtype}")
        if cu_seqlens.ndim != 1:
            raise ValueError(f"cu_seqlens rank: expected 1, got {cu_seqlens.ndim}")
        return [int(x) for x in cu_seqlens]
    try:
        out = list(cu_seqlens)
    except TypeError:
        raise TypeError(f"cu_seqlens: expected a 1-D int tensor, array or sequence, got "
                        f"{type(cu_seqlens).__name__}") from None
    for i, x in enumerate(out):
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
            raise TypeError(f"cu_seqlens[{i}]: expected an int, got {x!r}")
    return [int(x) for x in out]


def _block_mask(block_mask, block_size) -> Tuple[Optional[torch.Tensor], int]:
    """block_mask: None, or a bool/uint8 tensor or array [nQ, nK] or [H, nQ, nK]
    (nQ = nK = ceil(S / block_size), checked by the engine)."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size: expected an int >= 1, got {block_size!r}")
    if block_mask is None:
        return None, int(block_size)
    if isinstance(block_mask, np.ndarray):
        block_mask = torch.from_numpy(block_mask)
    if not isinstance(block_mask, torch.Tensor):
        raise TypeError(f"block_mask: expected a bool or uint8 tensor or array, got "
                        f"{type(block_mask).__name__}")
    if block_mask.dtype not in (torch.bool, torch.uint8):
        raise TypeError(f"block_mask dtype: expected torch.bool or torch.uint8, got "
                        f"{block_mask.dtype}")
    if block_mask.dim() not in (2, 3):
        raise ValueError(f"block_mask rank: expected 2 ([nQ, nK]) or 3 ([H, nQ, nK]), got "
                         f"{block_mask.dim()}")
    return block_mask, int(block_size)


class _Blocks:
    """A block mask as the engine takes it: one byte per block pair, its shape
    and block size, and a digest that keys the engine caches and that the
    ranks of a group compare."""

    def __init__(self, t: torch.Tensor, size: int):
        a = t.detach().to(device="cpu", dtype=torch.uint8).contiguous().numpy()
        self.bits = (a != 0).astype(np.uint8).tobytes()
        self.shape = [int(d) for d in a.shape]
        self.size = size
        self.digest = (f"{'x'.join(map(str, self.shape))}/{size}:"
                       f"{hashlib.blake2b(self.bits, digest_size=16).hexdigest()}")

    @staticmethod
    def of(t: Optional[torch.Tensor], size: int) -> Optional["_Blocks"]:
        return None if t is None else _Blocks(t, size)


def _digest(blocks: Optional[_Blocks]):
    return None if blocks is None else blocks.digest


def _reference_blocks(blocks: Optional[_Blocks]) -> dict:
    if blocks is None:
        return {}
    return {"block_bits": blocks.bits, "block_shape": blocks.shape, "block_size": blocks.size}


def _count(name: str, x) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 0:
        raise ValueError(f"{name}: expected an int >= 0, got {x!r}")
    return int(x)


def _scalars(softcap, scale) -> Tuple[float, Optional[float]]:
    softcap = float(softcap)
    if not softcap >= 0.0 or softcap == float("inf"):
        raise ValueError(f"softcap: expected a finite value >= 0, got {softcap}")
    if scale is not None:
        scale = float(scale)
        if not scale > 0.0 or scale == float("inf"):
            raise ValueError(f"scale: expected a finite value > 0, got {scale}")
    return softcap, scale


def _stream(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0


def _engine_options(t: torch.Tensor, seqlen: int, causal, wl, wr, prefix, sink, cu_seqlens,
                    blocks, softcap, scale, deterministic, timeout,
                    sharding=None, strategy="ring") -> "_C.AttentionOptions":
    """One device (the local strategy) without `sharding`, else a rank of `strategy`."""
    o = _C.AttentionOptions()
    o.seqlen = seqlen
    o.strategy = strategy if sharding else "local"
    o.sharding = sharding or "contiguous"
    o.causal = bool(causal)
    o.window_left = wl
    o.window_right = wr
    o.prefix = prefix
    o.sink = sink
    o.cu_seqlens = list(cu_seqlens)
    if blocks is not None:
        o.set_block_mask(blocks.bits, blocks.shape, blocks.size)
    o.softcap = softcap
    o.scale = scale
    o.dtype = _DTYPE_NAMES[t.dtype]
    o.backend = "cuda" if t.is_cuda else "cpu"
    o.device = (t.device.index or 0) if t.is_cuda else 0
    o.deterministic = bool(deterministic)
    o.timeout = float(timeout or 0.0)
    o.num_threads = 0 if t.is_cuda else torch.get_num_threads()
    return o


class _LruCache:
    """A few engines (each holds its workspace), the least recently used dropped."""

    def __init__(self, size: int = 16):
        self._items = collections.OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key, make):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


_ENGINES = _LruCache()


def _single_engine(q, causal, wl, wr, prefix, sink, cu_seqlens, blocks, softcap, scale,
                   deterministic):
    key = ("single", q.device, q.dtype, q.shape[1], causal, wl, wr, prefix, sink,
           tuple(cu_seqlens), _digest(blocks), softcap, scale, deterministic,
           torch.get_num_threads())
    return _ENGINES.get(key, lambda: _C.Attention(
        None, _engine_options(q, q.shape[1], causal, wl, wr, prefix, sink, cu_seqlens, blocks,
                              softcap, scale, deterministic, 0)))


def _empty_outputs(q: torch.Tensor):
    B, S, H, _ = q.shape
    return torch.empty(q.shape, dtype=q.dtype, device=q.device), torch.empty(
        (B, H, S), dtype=torch.float32 if q.dtype != torch.float64 else torch.float64,
        device=q.device)


def _detached(*ts):
    return [t.detach() for t in ts]


def _last_dim_unit(t: torch.Tensor) -> torch.Tensor:
    # Gradients arriving from autograd may be expanded or transposed views.
    return t if t.stride(-1) == 1 and (not t.is_cuda or t.is_contiguous()) else t.contiguous()


# ---- one device -------------------------------------------------------------


@torch.library.custom_op("ringattn::attention_forward", mutates_args=())
def _attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                       window_left: int, window_right: int, prefix: int, sink: int,
                       cu_seqlens: List[int], block_mask: Optional[torch.Tensor],
                       block_size: int, softcap: float, scale: Optional[float],
                       deterministic: bool
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    q, k, v = _detached(q, k, v)
    out, lse = _empty_outputs(q)
    blocks = _Blocks.of(block_mask, block_size)
    if q.dtype == torch.float64:
        _C.reference_forward(q.contiguous(), k.contiguous(), v.contiguous(), out, lse, causal,
                             window_left, window_right, prefix, sink, cu_seqlens, softcap, scale,
                             **_reference_blocks(blocks))
        return out, lse
    engine = _single_engine(q, causal, window_left, window_right, prefix, sink, cu_seqlens,
                            blocks, softcap, scale, deterministic)
    engine.forward(q, k, v, out, lse, _stream(q))
    return out, lse


@_attention_forward.register_fake
def _(q, k, v, causal, window_left, window_right, prefix, sink, cu_seqlens, block_mask,
      block_size, softcap, scale, deterministic):
    return _empty_outputs(q)


@torch.library.custom_op("ringattn::attention_backward", mutates_args=())
def _attention_backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        out: torch.Tensor, lse: torch.Tensor, causal: bool, window_left: int,
                        window_right: int, prefix: int, sink: int, cu_seqlens: List[int],
                        block_mask: Optional[torch.Tensor], block_size: int,
                        softcap: float, scale: Optional[float], deterministic: bool
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dout, q, k, v, out, lse = _detached(dout, q, k, v, out, lse)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    blocks = _Blocks.of(block_mask, block_size)
    if q.dtype == torch.float64:
        _C.reference_backward(q.contiguous(), k.contiguous(), v.contiguous(), dout.contiguous(),
                              dq, dk, dv, causal, window_left, window_right, prefix, sink,
                              cu_seqlens, softcap, scale, **_reference_blocks(blocks))
        return dq, dk, dv
    engine = _single_engine(q, causal, window_left, window_right, prefix, sink, cu_seqlens,
                            blocks, softcap, scale, deterministic)
    engine.backward(q, k, v, out, lse, _last_dim_unit(dout), dq, dk, dv, _stream(q))
    return dq, dk, dv


@_attention_backward.register_fake
def _(dout, q, k, v, out, lse, causal, window_left, window_right, prefix, sink, cu_seqlens,
      block_mask, block_size, softcap, scale, deterministic):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _register_autograd(forward_op, backward_op):
    """forward_op(q, k, v, *params) -> (out, lse) gets the gradient
    backward_op(dout, q, k, v, out, lse, *params) -> (dq, dk, dv); lse has
    none (flash-attn's convention)."""

    def setup_context(ctx, inputs, output):
        q, k, v, *params = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.params = params
        ctx.mark_non_differentiable(lse)

    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(out)
        dq, dk, dv = backward_op(dout, q, k, v, out, lse, *ctx.params)
        return (dq, dk, dv) + (None,) * len(ctx.params)

    forward_op.register_autograd(backward, setup_context=setup_context)


_register_autograd(_attention_forward, _attention_backward)


def attention(q, k, v, *, causal: bool = False, window=None, softcap: float = 0.0,
              scale: Optional[float] = None, return_lse: bool = False,
              deterministic: bool = False, cu_seqlens=None, prefix_lm: int = 0, sink: int = 0,
              block_mask=None, block_size: int = 128):
    """Exact attention on one device (flash-attn's conventions).

    q [B, S, H, D], k and v [B, S, Hkv, D] (H a multiple of Hkv: GQA/MQA),
    torch CPU float32/bfloat16 or CUDA bfloat16/float16 tensors (float64 on
    the CPU runs the float64 reference), or NumPy arrays (no autograd).
    Returns out [B, S, H, D] and, with return_lse, lse [B, H, S] (float32,
    natural log; not differentiable). window=(left, right) as flash-attn:
    a query at i sees keys i-left..i+right, -1 unbounded. A row that sees
    no key gives out 0 and lse -inf. cu_seqlens: packed documents, the
    boundaries [0, e1, ..., S] (flash-attn's; int tensor, array or list,
    empty documents allowed): a query sees only keys of its own document.
    prefix_lm=P (with causal): the first P tokens see each other. sink=N
    (with a left window): the first N tokens stay visible to every query up
    to its right edge (StreamingLLM's attention sinks). block_mask: a
    block-sparse mask, bool or uint8 [nQ, nK] (every head) or [H, nQ, nK]
    over blocks of block_size tokens (nQ = nK = ceil(S / block_size)):
    query i sees key j only if block pair (i // block_size, j // block_size)
    is on, ANDed with the other masks; tiles of off blocks are skipped.
    """
    if isinstance(q, np.ndarray):
        return _numpy_attention(q, k, v, causal, window, softcap, scale, return_lse,
                                cu_seqlens, prefix_lm, sink, block_mask, block_size)
    _check_tensors(q, k, v)
    wl, wr = _window(window)
    softcap, scale = _scalars(softcap, scale)
    bm, bs = _block_mask(block_mask, block_size)
    out, lse = _attention_forward(q, k, v, bool(causal), wl, wr, _count("prefix_lm", prefix_lm),
                                  _count("sink", sink), _documents(cu_seqlens), bm, bs, softcap,
                                  scale, bool(deterministic))
    return (out, lse) if return_lse else out


def _numpy_attention(q, k, v, causal, window, softcap, scale, return_lse, cu_seqlens,
                     prefix_lm, sink, block_mask, block_size):
    for name, a in (("k", k), ("v", v)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name}: expected a numpy.ndarray like q, got {type(a).__name__}")
    if q.dtype != np.float32 or k.dtype != np.float32 or v.dtype != np.float32:
        raise TypeError(f"q, k, v dtype: NumPy arrays must be float32, got {q.dtype}, "
                        f"{k.dtype}, {v.dtype}")
    if q.ndim != 4:
        raise ValueError(f"q rank: expected 4 ([B, S, H, D]), got {q.ndim}")
    wl, wr = _window(window)
    softcap, scale = _scalars(softcap, scale)
    B, S, H, _ = q.shape
    out = np.empty_like(q)
    lse = np.empty((B, H, S), dtype=np.float32)
    bm, bs = _block_mask(block_mask, block_size)
    o = _engine_options(torch.empty(0), S, causal, wl, wr, _count("prefix_lm", prefix_lm),
                        _count("sink", sink), _documents(cu_seqlens), _Blocks.of(bm, bs), softcap,
                        scale, False, 0)
    _C.Attention(None, o).forward(q, k, v, out, lse, 0)
    return (out, lse) if return_lse else out


# ---- a rank of a group -----------------------------------------------------


@torch.library.custom_op("ringattn::ring_forward", mutates_args=())
def _ring_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: str, sharding: str,
                  strategy: str, causal: bool, window_left: int, window_right: int, prefix: int, sink: int,
                  cu_seqlens: List[int], block_mask: Optional[torch.Tensor], block_size: int,
                  softcap: float, scale: Optional[float],
                  deterministic: bool, timeout: float) -> Tuple[torch.Tensor, torch.Tensor]:
    q, k, v = _detached(q, k, v)
    out, lse = _empty_outputs(q)
    engine = _dist.ring_engine(q, group, sharding, strategy, causal, window_left, window_right,
                               prefix, sink, cu_seqlens, _Blocks.of(block_mask, block_size),
                               softcap, scale, deterministic, timeout)
    engine.forward(q, k, v, out, lse, _stream(q))
    return out, lse


@_ring_forward.register_fake
def _(q, k, v, group, sharding, strategy, causal, window_left, window_right, prefix, sink,
      cu_seqlens, block_mask, block_size, softcap, scale, deterministic, timeout):
    return _empty_outputs(q)


@torch.library.custom_op("ringattn::ring_backward", mutates_args=())
def _ring_backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   out: torch.Tensor, lse: torch.Tensor, group: str, sharding: str,
                   strategy: str, causal: bool, window_left: int, window_right: int, prefix: int,
                   sink: int, cu_seqlens: List[int], block_mask: Optional[torch.Tensor],
                   block_size: int, softcap: float, scale: Optional[float],
                   deterministic: bool, timeout: float
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dout, q, k, v, out, lse = _detached(dout, q, k, v, out, lse)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    engine = _dist.ring_engine(q, group, sharding, strategy, causal, window_left, window_right,
                               prefix, sink, cu_seqlens, _Blocks.of(block_mask, block_size),
                               softcap, scale, deterministic, timeout)
    engine.backward(q, k, v, out, lse, _last_dim_unit(dout), dq, dk, dv, _stream(q))
    return dq, dk, dv


@_ring_backward.register_fake
def _(dout, q, k, v, out, lse, group, sharding, strategy, causal, window_left, window_right,
      prefix, sink, cu_seqlens, block_mask, block_size, softcap, scale, deterministic, timeout):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


_register_autograd(_ring_forward, _ring_backward)


def ring_attention(q, k, v, *, group=None, sharding: str = "zigzag", causal: bool = False,
                   window=None, softcap: float = 0.0, scale: Optional[float] = None,
                   return_lse: bool = False, deterministic: bool = False,
                   timeout: Optional[float] = None, cu_seqlens=None, prefix_lm: int = 0,
                   sink: int = 0, block_mask=None, block_size: int = 128,
                   strategy: str = "ring"):
    """Exact attention over a sequence sharded across a torch.distributed group.

    Every rank of `group` (default: the world) passes its own shard, in the
    order of `sharding` ("zigzag", "contiguous", "striped", or "balanced":
    equal visible work per rank for packed documents; ringattn.shard cuts a
    full tensor so, given the same cu_seqlens): q [B, S_r, H, D], k and v
    [B, S_r, Hkv, D]. The global length is the sum of the shards, which may
    differ by the remainder of the layout. cu_seqlens: packed documents by
    GLOBAL position, the same on every rank (see attention()); the ring
    skips the key blocks no local query can see; prefix_lm, sink and
    block_mask (by GLOBAL block, the same on every rank) as in attention().
    CPU tensors travel over UCX,
    CUDA tensors over NCCL (ringattn's own communicators, bootstrapped once
    per group through its store). Options must agree on every rank: a
    difference is a ValueError on every rank naming the option and both
    values. `timeout` (seconds; default RINGATTN_TIMEOUT_MS, else 60): a
    peer that dies or never calls is a TimeoutError within it. strategy: how
    the ranks share the call -- "ring" (KV blocks rotate, overlapped with the
    compute), "allgather" (gather the visible KV rows, attend once),
    "ulysses" (all-to-all to head shards; needs H >= group size), "hybrid:UxR"
    (Ulysses over U ranks, the ring over R such groups, U x R = group size) or
    "auto" (the planner picks from measured costs; docs/PLANNER.md); the same
    results within the tolerance rule. Returns out
    (and lse [B, H, S_r]) for this rank's rows; backward runs the ring
    backward.
    """
    _check_tensors(q, k, v, allow_float64=False)
    wl, wr = _window(window)
    softcap, scale = _scalars(softcap, scale)
    if sharding not in ("zigzag", "contiguous", "striped", "balanced"):
        raise ValueError(
            f"sharding: expected zigzag, contiguous, striped or balanced, got {sharding!r}")
    if timeout is not None and not float(timeout) > 0.0:
        raise ValueError(f"timeout: expected seconds > 0, got {timeout}")
    if not isinstance(strategy, str) or not (
            strategy in ("ring", "allgather", "ulysses", "auto")
            or re.fullmatch(r"hybrid:[1-9][0-9]*x[1-9][0-9]*", strategy)):
        raise ValueError(
            f"strategy: expected ring, allgather, ulysses, hybrid:UxR or auto, got {strategy!r}")
    bm, bs = _block_mask(block_mask, block_size)
    out, lse = _ring_forward(q, k, v, _dist.group_name(group), sharding, strategy, bool(causal),
                             wl, wr,
                             _count("prefix_lm", prefix_lm), _count("sink", sink),
                             _documents(cu_seqlens), bm, bs, softcap, scale,
                             bool(deterministic), float(timeout) if timeout is not None else 0.0)
    return (out, lse) if return_lse else out
