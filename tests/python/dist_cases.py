"""What each rank of the multi-process tests runs (a module of its own, so
that spawned processes import it). Every function takes (rank, world, ...)
and asserts; a failure fails the test with its traceback."""
import os
import time

import torch
import torch.distributed as dist

import ringattn
from reference import max_err, reference, tolerance

MASKS = [dict(), dict(causal=True), dict(window=(37, 11)), dict(causal=True, window=(50, -1)),
         dict(causal=True, softcap=2.0)]


def ring_matches_float64(rank, world, S, H, Hk, D, dtype_name, device="cpu", strategy="ring",
                         shardings=("zigzag", "contiguous", "striped")):
    dtype = getattr(torch, dtype_name)
    if device == "cuda":
        torch.cuda.set_device(rank)
    g = torch.Generator().manual_seed(7)  # the same full tensors on every rank
    q, k, v, dout = (torch.randn(1, S, h, D, generator=g).to(dtype) for h in (H, Hk, Hk, H))
    for sharding in shardings:
        pos = ringattn.positions(S, sharding=sharding)
        for mask in MASKS:
            where = f"rank {rank} of {world}, {strategy}, {sharding}, {mask}"
            ql, kl, vl = (ringattn.shard(t, sharding=sharding).to(device).requires_grad_()
                          for t in (q, k, v))
            out, lse = ringattn.ring_attention(ql, kl, vl, sharding=sharding, return_lse=True,
                                               strategy=strategy, **mask)
            grads = torch.autograd.grad(out, (ql, kl, vl),
                                        ringattn.shard(dout, sharding=sharding).to(device))
            out, lse, grads = out.cpu(), lse.cpu(), [t.cpu() for t in grads]
            # Float64 and naive (storage-dtype) attention on the full tensors.
            q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
            out64, lse64 = reference(q64, k64, v64, **mask)
            g64 = torch.autograd.grad(out64, (q64, k64, v64), dout.double())
            qn, kn, vn = (t.clone().requires_grad_() for t in (q, k, v))
            out_n, _ = reference(qn, kn, vn, **mask)
            g_n = torch.autograd.grad(out_n, (qn, kn, vn), dout)
            mine = lambda t: t.index_select(1, pos)  # this rank's rows of a full tensor
            assert max_err(out, mine(out64)) <= tolerance(max_err(mine(out_n), mine(out64)),
                                                          dtype), where
            assert max_err(lse, lse64.index_select(2, pos)) <= 1e-4 * max(
                1.0, lse64.abs().max().item()), where
            for name, got, naive, want in zip("qkv", grads, g_n, g64):
                assert max_err(got, mine(want)) <= tolerance(
                    max_err(mine(naive), mine(want)), dtype), f"d{name}, {where}"


def layout_round_trips(rank, world, S):
    x = torch.arange(2 * S * 3, dtype=torch.float32).view(2, S, 3)
    for sharding in ("zigzag", "contiguous", "striped"):
        pos = ringattn.positions(S, sharding=sharding)
        local = ringattn.shard(x, sharding=sharding)
        assert torch.equal(local, x[:, pos]), sharding
        assert torch.equal(ringattn.unshard(local, sharding=sharding), x), sharding
        everyone = [torch.empty(0, dtype=torch.int64)] * world
        gathered = [None] * world
        dist.all_gather_object(gathered, pos.tolist())
        assert sorted(sum(gathered, [])) == list(range(S)), sharding
        del everyone


def ring_is_deterministic(rank, world):
    q, k, v = (ringattn.shard(torch.randn(1, 256, 4, 32, generator=torch.Generator().manual_seed(3)))
               .requires_grad_() for _ in range(3))
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(4))
    runs = []
    for _ in range(2):
        out = ringattn.ring_attention(q, k, v, causal=True)
        runs.append((out,) + torch.autograd.grad(out, (q, k, v), dout))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def options_that_differ_fail_everywhere(rank, world):
    q, k, v = (torch.randn(1, 32, 2, 16) for _ in range(3))
    try:
        ringattn.ring_attention(q, k, v, causal=(rank == 0), timeout=20)
    except ValueError as e:
        assert "option causal differs" in str(e) and "rank" in str(e), str(e)
    else:
        raise AssertionError(f"rank {rank}: differing options were not refused")
    try:  # block masks that differ in one bit
        bm = torch.ones(4, 4, dtype=torch.bool)
        bm[1, rank] = False
        ringattn.ring_attention(q, k, v, block_mask=bm, block_size=16, timeout=20)
    except ValueError as e:
        assert "option block_mask differs" in str(e), str(e)
    else:
        raise AssertionError(f"rank {rank}: differing block masks were not refused")
    try:  # shard lengths that are no layout of their sum
        ringattn.ring_attention(*(torch.randn(1, 10 + 5 * rank, 2, 16) for _ in range(3)),
                                sharding="contiguous", timeout=20)
    except ValueError as e:
        assert "shard lengths" in str(e), str(e)
    else:
        raise AssertionError(f"rank {rank}: bad shard lengths were not refused")


def silent_rank_times_out(rank, world, silent):
    q, k, v = (torch.randn(1, 64, 2, 16) for _ in range(3))
    if rank == silent:
        time.sleep(8)  # never calls; stays alive past the others' timeout
        return
    t0 = time.monotonic()
    try:
        ringattn.ring_attention(q, k, v, causal=True, timeout=3)
    except TimeoutError as e:
        assert str(silent) in str(e), str(e)
    else:
        raise AssertionError(f"rank {rank}: no TimeoutError with rank {silent} silent")
    assert time.monotonic() - t0 < 3 + 5, "the timeout took too long"


def compiled_ring_equals_eager(rank, world):
    torch.manual_seed(5)
    proj = torch.nn.Linear(32, 3 * 32)

    def block(x):
        B, S, _ = x.shape
        q, k, v = proj(x).view(B, S, 3, 2, 16).unbind(2)
        return ringattn.ring_attention(q, k, v, causal=True, window=(40, 0)).square().mean()

    x = ringattn.shard(torch.randn(1, 200, 32, generator=torch.Generator().manual_seed(6)))
    eager = block(x)
    eager.backward()
    grads = [p.grad.clone() for p in proj.parameters()]
    proj.zero_grad()
    got = torch.compile(block, fullgraph=True)(x)
    got.backward()
    assert torch.allclose(got, eager, rtol=1e-6, atol=1e-7)
    for g, p in zip(grads, proj.parameters()):
        assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-7)



def dead_rank_is_an_error(rank, world, dead, strategy="ring"):
    q, k, v = (torch.randn(1, 64, 4, 16) for _ in range(3))
    ringattn.ring_attention(q, k, v, causal=True, timeout=3, strategy=strategy)  # everyone, once
    if rank == dead:
        os._exit(0)  # dies between calls, without a word
    t0 = time.monotonic()
    try:
        ringattn.ring_attention(q, k, v, causal=True, timeout=3, strategy=strategy)
    except (TimeoutError, RuntimeError) as e:
        assert str(dead) in str(e), str(e)
    else:
        raise AssertionError(f"rank {rank}: no error with rank {dead} dead")
    assert time.monotonic() - t0 < 3 + 5, "the failure took too long"
    os._exit(0)  # the group lost a member: skip the collective teardown


def ring_with_documents(rank, world, S):
    """Packed documents across the ring, every sharding (balanced included),
    forward and backward against float64; the layout helpers round-trip."""
    g = torch.Generator().manual_seed(11)
    q, k, v, dout = (torch.randn(1, S, h, 32, generator=g) for h in (4, 2, 2, 4))
    docs = [0, 1, 1, S // 7, S // 3, S // 3 + 2, S - 40, S]  # one spans ranks, tiny and empty ones
    # Block masks by global block, with the documents: shared, and one per head.
    shared = torch.rand(-(-S // 16), -(-S // 16), generator=g) < 0.5
    per_head = torch.rand(4, -(-S // 25), -(-S // 25), generator=g) < 0.6
    for sharding in ("zigzag", "contiguous", "striped", "balanced"):
        pos = ringattn.positions(S, sharding=sharding, cu_seqlens=docs)
        for mask in (dict(causal=True), dict(), dict(causal=True, window=(25, -1), prefix_lm=10),
                     dict(causal=True, window=(20, -1), sink=4),
                     dict(causal=True, block_mask=shared, block_size=16),
                     dict(block_mask=per_head, block_size=25)):
            where = f"rank {rank} of {world}, {sharding}, {mask}"
            shard = lambda t: ringattn.shard(t, sharding=sharding, cu_seqlens=docs)
            ql, kl, vl = (shard(t).requires_grad_() for t in (q, k, v))
            out = ringattn.ring_attention(ql, kl, vl, sharding=sharding, cu_seqlens=docs, **mask)
            grads = torch.autograd.grad(out, (ql, kl, vl), shard(dout))
            q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
            out64, _ = reference(q64, k64, v64, cu_seqlens=docs, **mask)
            g64 = torch.autograd.grad(out64, (q64, k64, v64), dout.double())
            qn, kn, vn = (t.clone().requires_grad_() for t in (q, k, v))
            out_n, _ = reference(qn, kn, vn, cu_seqlens=docs, **mask)
            g_n = torch.autograd.grad(out_n, (qn, kn, vn), dout)
            mine = lambda t: t.index_select(1, pos)
            assert max_err(out, mine(out64)) <= tolerance(max_err(mine(out_n), mine(out64)),
                                                          torch.float32), where
            for name, got, naive, want in zip("qkv", grads, g_n, g64):
                assert max_err(got, mine(want)) <= tolerance(
                    max_err(mine(naive), mine(want)), torch.float32), f"d{name}, {where}"
        x = torch.arange(S, dtype=torch.float32).view(1, S)
        assert torch.equal(ringattn.unshard(ringattn.shard(x, sharding=sharding, cu_seqlens=docs),
                                            sharding=sharding, cu_seqlens=docs), x), sharding


def a_new_group_gets_new_communicators(rank, world, ports):
    """destroy_process_group, then a new world with the ranks in reverse order:
    ring_attention bootstraps new communicators through the new store (the
    old ones number the ranks the old way) and is right again."""
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 96, h, 32, generator=g) for h in (4, 2, 2))
    full = ringattn.attention(q, k, v, causal=True)
    for port in ports:
        out = ringattn.ring_attention(*(ringattn.shard(t) for t in (q, k, v)), causal=True)
        assert max_err(out, ringattn.shard(full)) <= 1e-5, f"rank {dist.get_rank()}"
        rank = dist.get_rank()
        dist.destroy_process_group()
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                rank=world - 1 - rank, world_size=world)


def strategy_errors(rank, world):
    q = k = v = torch.randn(1, 8, 2, 16)
    for bad in ("fastest", "hybrid:3x1", "hybrid"):
        try:
            ringattn.ring_attention(q, k, v, strategy=bad, timeout=20)
        except ValueError as e:
            assert "strategy" in str(e), str(e)
        else:
            raise AssertionError(f"strategy={bad!r} was accepted")
    # Different strategies on different ranks: a ValueError on every rank.
    try:
        ringattn.ring_attention(q, k, v, strategy="ring" if rank == 0 else "allgather", timeout=20)
    except ValueError as e:
        assert "strategy" in str(e), str(e)
    else:
        raise AssertionError("strategies that differ across ranks were accepted")
