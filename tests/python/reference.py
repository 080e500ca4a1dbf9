"""A dense attention reference in torch (any dtype, autograd), with the
engine's semantics: scale, softcap c*tanh(x/c), flash-attn windows by
global position, packed documents (cu_seqlens), prefix-LM, attention sinks, block masks
(shared or per head), GQA; a row that
sees no key gives out 0 and lse -inf.
Run in float64 it is the ground truth; run in the storage dtype it is the
naive implementation whose error sets the tolerance (flash-attn's rule:
at most 2x the naive error, plus a small atol)."""
import math

import torch


def reference(q, k, v, *, causal=False, window=None, softcap=0.0, scale=None, q_pos=None,
              k_pos=None, cu_seqlens=None, prefix_lm=0, sink=0, block_mask=None,
              block_size=128):
    B, S, H, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    q_pos = torch.arange(S) if q_pos is None else q_pos
    k_pos = torch.arange(Sk) if k_pos is None else k_pos
    kk = k.repeat_interleave(H // Hk, dim=2)
    vv = v.repeat_interleave(H // Hk, dim=2)
    x = torch.einsum("bihd,bjhd->bhij", q, kk) * scale
    if softcap > 0:
        x = softcap * torch.tanh(x / softcap)
    left, right = window if window is not None else (-1, -1)
    rel = k_pos[None, :] - q_pos[:, None]  # j - i
    left_ok = torch.ones(S, Sk, dtype=torch.bool)
    if left >= 0:
        left_ok &= rel >= -left
    in_prefix = (k_pos < prefix_lm)[None, :]  # every query sees the prefix up to its right edge
    visible = torch.ones(S, Sk, dtype=torch.bool)  # the right edge and the document
    if right >= 0:
        visible &= (rel <= right) | in_prefix
    if causal:
        visible &= (rel <= 0) | in_prefix
    if cu_seqlens is not None:  # packed documents: the same document only
        bounds = torch.as_tensor(list(cu_seqlens), dtype=torch.int64)[1:-1]
        doc_q = torch.bucketize(q_pos, bounds, right=True)
        doc_k = torch.bucketize(k_pos, bounds, right=True)
        visible &= doc_q[:, None] == doc_k[None, :]
    visible &= left_ok | (k_pos < sink)[None, :]  # sinks ignore the left window
    if block_mask is not None:  # [nQ, nK] or [H, nQ, nK] by global block
        bm = torch.as_tensor(block_mask).to(torch.bool)
        on = bm[..., (q_pos // block_size)[:, None], (k_pos // block_size)[None, :]]
        visible = visible & on  # [S, Sk] or [H, S, Sk]
    visible = visible.to(q.device)
    x = x.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(x, dim=-1)  # [B, H, S]
    p = torch.exp(x - lse[..., None]).nan_to_num(0.0)
    out = torch.einsum("bhij,bjhd->bihd", p, vv)
    return out, lse


def max_err(a, b):
    a, b = a.double(), b.double()
    both_inf = torch.isinf(a) & torch.isinf(b) & (torch.sign(a) == torch.sign(b))
    return (a - b).masked_fill(both_inf, 0).abs().max().item()


def tolerance(naive_err, dtype):
    atol = {torch.float32: 1e-5, torch.bfloat16: 2e-3, torch.float16: 5e-4}[dtype]
    return 2.0 * naive_err + atol
