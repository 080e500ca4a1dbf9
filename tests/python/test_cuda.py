"""CUDA tensors: ringattn.attention (bf16, fp16) against float64 attention on
the device's stream, and the ring over NCCL across 2 GPUs. Without a device
every test skips saying so; tools/gpu_check.sh runs them on a GPU machine."""
import pytest
import torch

import ringattn
from reference import max_err, reference, tolerance

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("D", [64, 128, 256])
@pytest.mark.parametrize("mask", [dict(), dict(causal=True), dict(causal=True, window=(100, -1)),
                                  dict(softcap=3.0),
                                  dict(causal=True, cu_seqlens=[0, 100, 101, 101, 250, 333]),
                                  dict(causal=True, window=(100, -1), sink=4),
                                  dict(causal=True, prefix_lm=60),
                                  dict(causal=True, block_size=32,
                                       block_mask=torch.rand(11, 11, generator=torch.Generator()
                                                             .manual_seed(3)) < 0.5)],
                         ids=["none", "causal", "causal_w", "cap", "docs", "sink", "prefix",
                              "blocks"])
def test_cuda_attention_matches_float64(dtype, D, mask):
    q = torch.randn(2, 333, 4, D, device="cuda", dtype=dtype, requires_grad=True)
    k = torch.randn(2, 333, 2, D, device="cuda", dtype=dtype, requires_grad=True)
    v = torch.randn(2, 333, 2, D, device="cuda", dtype=dtype, requires_grad=True)
    dout = torch.randn_like(q)
    out = ringattn.attention(q, k, v, **mask)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    q64, k64, v64 = (t.detach().double().cpu().requires_grad_() for t in (q, k, v))
    out64, _ = reference(q64, k64, v64, **mask)
    g64 = torch.autograd.grad(out64, (q64, k64, v64), dout.double().cpu())
    qn, kn, vn = (t.detach().cpu().float().to(dtype).requires_grad_() for t in (q, k, v))
    out_n, _ = reference(qn, kn, vn, **mask)
    g_n = torch.autograd.grad(out_n, (qn, kn, vn), dout.cpu())
    assert max_err(out.cpu(), out64) <= tolerance(max_err(out_n, out64), dtype)
    for got, naive, want in zip(grads, g_n, g64):
        assert max_err(got.cpu(), want) <= tolerance(max_err(naive, want), dtype)


@needs_cuda
def test_cuda_attention_runs_on_the_current_stream():
    s = torch.cuda.Stream()
    q = torch.randn(1, 512, 4, 64, device="cuda", dtype=torch.bfloat16)
    with torch.cuda.stream(s):
        out = ringattn.attention(q, q, q, causal=True)
        ref = ringattn.attention(q, q, q, causal=True)  # queued behind the first
    s.synchronize()
    assert torch.equal(out, ref)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs: found %d" %
                    torch.cuda.device_count())
def test_ring_over_nccl():
    import dist_cases
    from conftest import spawn
    spawn(dist_cases.ring_matches_float64, 2, 1000, 4, 2, 128, "bfloat16", "cuda")
