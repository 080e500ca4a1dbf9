"""ringattn.attention on one device against float64 attention: forward, lse
and gradients, for every mask, softcap, GQA/MQA, odd lengths, fp32 and
bf16, with flash-attn's tolerance rule (at most 2x the error of a naive
implementation in the same precision). Also the NumPy path, the float64
path (gradcheck), torch.compile, and the reference itself against SDPA."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ringattn
from reference import max_err, reference, tolerance

MASKS = [
    dict(),
    dict(causal=True),
    dict(window=(17, 5)),
    dict(causal=True, window=(33, -1)),
    dict(window=(-1, 4)),
    dict(softcap=2.5),
    dict(causal=True, softcap=1.5),
]
SHAPES = [  # B, S, H, Hkv, D
    (1, 1, 2, 2, 32),
    (1, 7, 3, 1, 16),
    (2, 129, 4, 2, 64),
    (1, 300, 2, 2, 128),
    (1, 97, 8, 1, 48),
]


def _inputs(B, S, H, Hk, D, dtype, requires_grad=True):
    q = torch.randn(B, S, H, D).to(dtype)
    k = torch.randn(B, S, Hk, D).to(dtype)
    v = torch.randn(B, S, Hk, D).to(dtype)
    for t in (q, k, v):
        t.requires_grad_(requires_grad)
    return q, k, v


def _expect_float64_close(q, k, v, dtype, call_mask, ref_mask):
    """ringattn.attention(**call_mask) against the float64 reference
    (**ref_mask): out, finite lse, and the gradients, by flash-attn's rule."""
    dout = torch.randn(q.shape).to(dtype)
    out, lse = ringattn.attention(q, k, v, return_lse=True, **call_mask)
    assert out.dtype == dtype and out.shape == q.shape and lse.dtype == torch.float32
    assert lse.shape == (q.shape[0], q.shape[2], q.shape[1])
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
    q64, k64, v64 = [t.detach().double().requires_grad_() for t in (q, k, v)]
    out64, lse64 = reference(q64, k64, v64, **ref_mask)
    g64 = torch.autograd.grad(out64, (q64, k64, v64), dout.double())
    qn, kn, vn = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out_n, _ = reference(qn, kn, vn, **ref_mask)
    g_n = torch.autograd.grad(out_n, (qn, kn, vn), dout)
    assert max_err(out, out64) <= tolerance(max_err(out_n, out64), dtype)
    finite = lse64[torch.isfinite(lse64)]
    assert max_err(lse, lse64) <= 1e-4 * max(1.0, finite.abs().max().item() if finite.numel() else 0)
    for name, got, naive, want in zip("qkv", (dq, dk, dv), g_n, g64):
        assert max_err(got, want) <= tolerance(max_err(naive, want), dtype), f"d{name}"
    return out, q64, k64, v64


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b%d_s%d_h%d_kv%d_d%d" % s)
@pytest.mark.parametrize("mask", MASKS, ids=lambda m: "_".join(f"{k}{v}" for k, v in m.items())
                         or "none")
def test_matches_float64(shape, mask, dtype):
    _expect_float64_close(*_inputs(*shape, dtype), dtype, mask, mask)


def test_reference_agrees_with_sdpa():
    q, k, v = _inputs(2, 77, 4, 4, 32, torch.float64, requires_grad=False)
    for causal in (False, True):
        want = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                              v.transpose(1, 2), is_causal=causal)
        got, _ = reference(q, k, v, causal=causal)
        assert max_err(got, want.transpose(1, 2)) < 1e-12


def test_strided_inputs_are_read_in_place():
    # q as a view of a [B, H, S, D] tensor: any strides, last one 1.
    base = torch.randn(1, 4, 65, 32)
    q = base.transpose(1, 2)
    k = torch.randn(1, 65, 4, 32)
    v = torch.randn(1, 65, 4, 32)
    got = ringattn.attention(q, k, v, causal=True)
    want, _ = reference(q.double(), k.double(), v.double(), causal=True)
    assert max_err(got, want) < 1e-5


def test_deterministic_run_after_run():
    q, k, v = _inputs(1, 200, 4, 2, 64, torch.float32)
    dout = torch.randn(q.shape)
    runs = []
    for _ in range(3):
        out = ringattn.attention(q, k, v, causal=True, deterministic=True)
        runs.append((out,) + torch.autograd.grad(out, (q, k, v), dout))
    for r in runs[1:]:
        for a, b in zip(runs[0], r):
            assert torch.equal(a, b)


def test_numpy_arrays_without_autograd():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 50, 2, 32), dtype=np.float32)
    k = rng.standard_normal((1, 50, 1, 32), dtype=np.float32)
    v = rng.standard_normal((1, 50, 1, 32), dtype=np.float32)
    out, lse = ringattn.attention(q, k, v, causal=True, return_lse=True)
    assert isinstance(out, np.ndarray) and out.shape == q.shape and lse.shape == (1, 2, 50)
    want, want_lse = reference(*(torch.from_numpy(a).double() for a in (q, k, v)), causal=True)
    assert max_err(torch.from_numpy(out), want) < 1e-5
    assert max_err(torch.from_numpy(lse), want_lse) < 1e-4


@pytest.mark.parametrize("mask", [dict(), dict(causal=True, window=(3, -1)), dict(softcap=1.0),
                                  dict(window=(2, 1))], ids=["none", "causal_w", "cap", "w"])
def test_gradcheck_float64(mask):
    # float64 runs the float64 reference of the C++ tree (the kernels store
    # fp32/bf16): gradcheck checks the custom op's autograd wiring and the
    # backward formula against finite differences.
    q, k, v = _inputs(1, 6, 4, 2, 5, torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, c: ringattn.attention(a, b, c, **mask),
                                    (q, k, v), eps=1e-6, atol=1e-7)


DOCS = [0, 1, 1, 40, 64, 100, 230, 300]  # a one-token document, an empty one, tile edges


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("mask", [dict(causal=True), dict(), dict(causal=True, window=(30, -1)),
                                  dict(causal=True, prefix_lm=20), dict(softcap=2.0, causal=True)],
                         ids=["causal", "none", "causal_w", "prefix", "cap"])
@pytest.mark.parametrize("form", ["list", "int32", "int64", "numpy"])
def test_packed_documents_match_float64(mask, dtype, form):
    docs = {"list": DOCS, "int32": torch.tensor(DOCS, dtype=torch.int32),
            "int64": torch.tensor(DOCS), "numpy": np.array(DOCS, dtype=np.int64)}[form]
    out, q64, k64, v64 = _expect_float64_close(*_inputs(1, 300, 4, 2, 32, dtype), dtype,
                                               dict(cu_seqlens=docs, **mask),
                                               dict(cu_seqlens=DOCS, **mask))
    # Documents are really separate: no query sees another document.
    assert max_err(out, reference(q64, k64, v64, **mask)[0]) > 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("mask", [dict(causal=True, window=(30, -1), sink=4),
                                  dict(causal=True, window=(20, -1), sink=70),
                                  dict(window=(40, 10), sink=3),
                                  dict(causal=True, window=(25, -1), sink=5, cu_seqlens=DOCS)],
                         ids=["sink4", "sink70", "bidir", "docs"])
def test_sinks_match_float64(mask, dtype):
    _expect_float64_close(*_inputs(1, 300, 4, 2, 32, dtype), dtype, mask, mask)


def test_packed_documents_gradcheck_and_numpy():
    q, k, v = _inputs(1, 9, 2, 1, 4, torch.float64)
    docs = [0, 2, 2, 7, 9]
    assert torch.autograd.gradcheck(
        lambda a, b, c: ringattn.attention(a, b, c, causal=True, cu_seqlens=docs), (q, k, v),
        eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(
        lambda a, b, c: ringattn.attention(a, b, c, causal=True, window=(2, -1), sink=2),
        (q, k, v), eps=1e-6, atol=1e-7)
    rng = np.random.default_rng(3)
    qn, kn, vn = (rng.standard_normal((1, 70, 2, 16), dtype=np.float32) for _ in range(3))
    out = ringattn.attention(qn, kn, vn, causal=True, cu_seqlens=np.array([0, 30, 70]))
    want, _ = reference(*(torch.from_numpy(a).double() for a in (qn, kn, vn)), causal=True,
                        cu_seqlens=[0, 30, 70])
    assert max_err(torch.from_numpy(out), want) < 1e-5


def _blocks(shape, seed, dtype=torch.bool):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < 0.5).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("mask", [dict(), dict(causal=True), dict(causal=True, window=(60, -1)),
                                  dict(causal=True, cu_seqlens=DOCS),
                                  dict(causal=True, window=(30, -1), sink=4)],
                         ids=["none", "causal", "causal_w", "docs", "sink"])
@pytest.mark.parametrize("blocks", ["shared", "per_head", "uint8_numpy", "all_off", "diagonal"])
def test_block_masks_match_float64(mask, dtype, blocks):
    size = 32 if blocks != "diagonal" else 64
    n = (300 + size - 1) // size
    bm = {"shared": _blocks((n, n), 1), "per_head": _blocks((4, n, n), 2),
          "uint8_numpy": _blocks((n, n), 3, torch.uint8).numpy() * 7,
          "all_off": torch.zeros(n, n, dtype=torch.bool),
          "diagonal": torch.eye(n, dtype=torch.bool)}[blocks]
    ref_bm = torch.as_tensor(bm) != 0
    out, *_ = _expect_float64_close(*_inputs(1, 300, 4, 2, 32, dtype), dtype,
                                    dict(block_mask=bm, block_size=size, **mask),
                                    dict(block_mask=ref_bm, block_size=size, **mask))
    if blocks == "all_off":
        assert torch.count_nonzero(out) == 0


def test_block_masks_gradcheck_compile_and_errors():
    q, k, v = _inputs(1, 9, 2, 1, 4, torch.float64)
    bm = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=torch.bool)
    assert torch.autograd.gradcheck(
        lambda a, b, c: ringattn.attention(a, b, c, block_mask=bm, block_size=3), (q, k, v),
        eps=1e-6, atol=1e-7)
    qf, kf, vf = (t.detach().float() for t in (q, k, v))
    compiled = torch.compile(lambda a, b, c: ringattn.attention(a, b, c, causal=True,
                                                                block_mask=bm, block_size=3),
                             fullgraph=True)
    assert torch.equal(compiled(qf, kf, vf),
                       ringattn.attention(qf, kf, vf, causal=True, block_mask=bm, block_size=3))
    with pytest.raises(ValueError, match=r"block_mask shape: expected \[3, 3\] or \[H, 3, 3\]"):
        ringattn.attention(qf, kf, vf, block_mask=torch.ones(2, 2, dtype=torch.bool),
                           block_size=3)
    with pytest.raises(ValueError, match="block_mask heads: expected 1 or the query heads H = 2, got 3"):
        ringattn.attention(qf, kf, vf, block_mask=torch.ones(3, 3, 3, dtype=torch.bool),
                           block_size=3)
    with pytest.raises(TypeError, match="block_mask dtype: expected torch.bool or torch.uint8"):
        ringattn.attention(qf, kf, vf, block_mask=torch.ones(3, 3), block_size=3)
    with pytest.raises(ValueError, match="block_mask rank: expected 2"):
        ringattn.attention(qf, kf, vf, block_mask=torch.ones(3, dtype=torch.bool), block_size=3)
    with pytest.raises(ValueError, match="block_size: expected an int >= 1, got 0"):
        ringattn.attention(qf, kf, vf, block_mask=bm, block_size=0)


def test_torch_compile_fullgraph_equals_eager():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(64, 3 * 64)

        def forward(self, x):
            B, S, _ = x.shape
            q, k, v = self.proj(x).view(B, S, 3, 4, 16).unbind(2)
            a = ringattn.attention(q, k, v, causal=True, window=(20, 0))
            b = ringattn.attention(q, k, v, softcap=3.0)
            c = ringattn.attention(q, k, v, causal=True, cu_seqlens=[0, 30, 30, 75], prefix_lm=5)
            return (a + b + c).square().mean()

    torch.manual_seed(1)
    model = Block()
    x = torch.randn(2, 75, 64)
    eager = model(x)
    eager.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True)
    got = compiled(x)
    got.backward()
    assert torch.allclose(got, eager, rtol=1e-6, atol=1e-7)
    for g, p in zip(grads, model.parameters()):
        assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-7)
