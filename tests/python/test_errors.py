"""Bad input gets the named exception with the argument in its message --
ValueError for shapes and values, TypeError for kinds, dtypes and devices
-- and nothing crashes. (Options that differ across ranks and a rank that
never calls are in test_ring.py.)"""
import numpy as np
import pytest
import torch

import ringattn


def _qkv(S=16, H=4, Hk=2, D=32, dtype=torch.float32):
    return (torch.randn(1, S, H, D, dtype=dtype), torch.randn(1, S, Hk, D, dtype=dtype),
            torch.randn(1, S, Hk, D, dtype=dtype))


def _raises(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


def test_shapes_are_value_errors():
    q, k, v = _qkv()
    _raises(ValueError, "q rank", ringattn.attention, q[0], k, v)
    _raises(ValueError, "k rank", ringattn.attention, q, k[0], v)
    _raises(ValueError, "k shape", ringattn.attention, q, k[:, :10], v[:, :10])
    _raises(ValueError, "v shape", ringattn.attention, q, k, v[..., :16])
    _raises(ValueError, "heads", ringattn.attention, q, torch.randn(1, 16, 3, 32),
            torch.randn(1, 16, 3, 32))
    _raises(ValueError, "head dim", ringattn.attention, torch.randn(1, 4, 1, 600),
            torch.randn(1, 4, 1, 600), torch.randn(1, 4, 1, 600))


def test_dtypes_and_devices_are_type_errors():
    q, k, v = _qkv()
    _raises(TypeError, "k dtype", ringattn.attention, q, k.double(), v)
    _raises(TypeError, "q dtype", ringattn.attention, q.half(), k.half(), v.half())
    _raises(TypeError, "q dtype", ringattn.attention, q.int(), k.int(), v.int())
    _raises(TypeError, "k device", ringattn.attention, q, k.to("meta"), v)
    _raises(TypeError, "q device", ringattn.attention, q.to("meta"), k.to("meta"), v.to("meta"))
    _raises(TypeError, "v: expected a torch.Tensor", ringattn.attention, q, k, [1.0])
    _raises(TypeError, "NumPy arrays must be float32", ringattn.attention,
            np.zeros((1, 4, 1, 8)), np.zeros((1, 4, 1, 8)), np.zeros((1, 4, 1, 8)))
    _raises(TypeError, "float64", ringattn.ring_attention, q.double(), k.double(), v.double())


def test_non_contiguous_last_dimension_is_named():
    q, k, v = _qkv()
    q_bad = torch.randn(1, 16, 4, 64)[..., ::2]
    _raises(ValueError, "q innermost stride", ringattn.attention, q_bad, k, v)
    k_bad = torch.randn(1, 16, 2, 32).transpose(2, 3).contiguous().transpose(2, 3)
    _raises(ValueError, "k innermost stride", ringattn.attention, q, k_bad, v)


def test_options_are_checked():
    q, k, v = _qkv()
    _raises(ValueError, "window", ringattn.attention, q, k, v, window=5)
    _raises(ValueError, "window left", ringattn.attention, q, k, v, window=(-3, 0))
    _raises(ValueError, "window right", ringattn.attention, q, k, v, window=(1, 2.5))
    _raises(ValueError, "softcap", ringattn.attention, q, k, v, softcap=-1.0)
    _raises(ValueError, "softcap", ringattn.attention, q, k, v, softcap=float("nan"))
    _raises(ValueError, "scale", ringattn.attention, q, k, v, scale=0.0)
    _raises(ValueError, "sharding", ringattn.ring_attention, q, k, v, sharding="diagonal")
    _raises(ValueError, "timeout", ringattn.ring_attention, q, k, v, timeout=-1)
    _raises(ValueError, "seqlen", ringattn.positions, -1)


def test_documents_are_checked():
    q, k, v = _qkv()
    _raises(ValueError, r"cu_seqlens\[0\]: expected 0, got 1", ringattn.attention, q, k, v,
            cu_seqlens=[1, 16])
    _raises(ValueError, r"cu_seqlens\[2\] \(the last boundary\): expected seqlen = 16, got 15",
            ringattn.attention, q, k, v, cu_seqlens=[0, 4, 15])
    _raises(ValueError, r"cu_seqlens\[2\]: expected >= cu_seqlens\[1\] = 9", ringattn.attention,
            q, k, v, cu_seqlens=[0, 9, 3, 16])
    _raises(ValueError, "cu_seqlens", ringattn.attention, q, k, v, cu_seqlens=[0])
    _raises(TypeError, "cu_seqlens dtype", ringattn.attention, q, k, v,
            cu_seqlens=torch.tensor([0.0, 16.0]))
    _raises(TypeError, r"cu_seqlens\[1\]: expected an int", ringattn.attention, q, k, v,
            cu_seqlens=[0, 16.0])
    _raises(ValueError, "cu_seqlens rank", ringattn.attention, q, k, v,
            cu_seqlens=np.zeros((2, 2), dtype=np.int64))
    _raises(ValueError, "mask.prefix", ringattn.attention, q, k, v, prefix_lm=4)  # not causal
    _raises(ValueError, "prefix_lm", ringattn.attention, q, k, v, causal=True, prefix_lm=-1)
    _raises(ValueError, "mask.sink: expected 0 unless the mask has a left window",
            ringattn.attention, q, k, v, causal=True, sink=2)
    _raises(ValueError, "sink: expected an int >= 0", ringattn.attention, q, k, v, sink=-3)
    _raises(ValueError, "cu_seqlens", ringattn.shard, torch.zeros(1, 16), sharding="balanced",
            cu_seqlens=[0, 5])


def test_ring_without_a_process_group_says_so():
    q, k, v = _qkv()
    _raises(RuntimeError, "init_process_group", ringattn.ring_attention, q, k, v)


def test_environment_timeout_is_checked(monkeypatch):
    from ringattn import _dist
    monkeypatch.setenv("RINGATTN_TIMEOUT_MS", "soon")
    _raises(ValueError, "RINGATTN_TIMEOUT_MS", _dist._timeout, 0.0)
    monkeypatch.setenv("RINGATTN_TIMEOUT_MS", "2500")
    assert _dist._timeout(0.0) == 2.5
    assert _dist._timeout(7.0) == 7.0
