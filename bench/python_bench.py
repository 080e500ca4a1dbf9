#!/usr/bin/env python3
"""The Python package's benchmark figures, each a ratio measured in one run
on this machine (docs/PERF.md):

  kernel   ringattn.attention forward+backward against PyTorch's CPU SDPA
           (the flash kernel) at S=8192, H=8, fp32, D 64 and 128, causal and
           not; both on torch.get_num_threads() threads, timed in alternation
           (--iters rounds): the speedup is the median of the rounds' ratios
  binding  ringattn.attention forward and backward against ringattn-bench
           (the C++ API, one rank on all cores) on the same problem: the
           cost of Python, DLPack and the custom ops
  ring     ring_attention over 2 processes (one thread each) against one
           process with one thread, and against PyTorch's own ring attention
           (torch.distributed.tensor.experimental's context-parallel ring:
           its public context_parallel() needs CUDA, so its ring function
           _templated_ring_attention and its backward are called directly,
           with the CPU flash SDPA op, over gloo), S=16384, causal, zigzag,
           forward+backward

    python bench/python_bench.py [--only kernel,binding,ring] [--json FILE]

Run it from the environment tools/python_env.sh makes (it prints the
python to use); --bench-binary names ringattn-bench (default
build/tools/ringattn-bench).
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import ringattn

UCX_ENV = {"UCX_TLS": "self,sm,tcp", "UCX_NET_DEVICES": "lo"}


def fwd_bwd(attend, q, k, v, dout, **kwargs):
    """One forward and backward of attend(q, k, v, **kwargs): a timed call."""
    qq, kk, vv = (t.detach().requires_grad_() for t in (q, k, v))
    torch.autograd.grad(attend(qq, kk, vv, **kwargs), (qq, kk, vv), dout)


def paired(fn_a, fn_b, rounds, warmup=1):
    """fn_a and fn_b timed in alternation, one call each per round: returns
    their median times and the per-round ratios a/b. Pairing the calls keeps
    a VM's minute-to-minute drift out of the ratios."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    ta, tb = [], []
    for _ in range(rounds):
        for fn, acc in ((fn_a, ta), (fn_b, tb)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb), [a / b for a, b in zip(ta, tb)]


def timed(fn, iters, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---- kernel: ringattn.attention vs SDPA -----------------------------------------


def kernel(args):
    rows = []
    for D in (64, 128):
        for causal in (False, True):
            B, S, H = 1, args.seq, 8
            g = torch.Generator().manual_seed(0)
            q, k, v, dout = (torch.randn(B, S, H, D, generator=g) for _ in range(4))

            qt, kt, vt, dt = (t.transpose(1, 2).contiguous() for t in (q, k, v, dout))

            def sdpa():
                with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
                    fwd_bwd(F.scaled_dot_product_attention, qt, kt, vt, dt, is_causal=causal)

            t_sdpa, t_ours, ratios = paired(
                sdpa, lambda: fwd_bwd(ringattn.attention, q, k, v, dout, causal=causal),
                args.iters)
            row = dict(D=D, causal=causal, S=S, H=H, threads=torch.get_num_threads(),
                       sdpa_s=t_sdpa, ringattn_s=t_ours, speedup=statistics.median(ratios),
                       speedup_min=min(ratios), speedup_max=max(ratios), rounds=len(ratios))
            rows.append(row)
            print(f"kernel  D={D:<4} causal={causal!s:<5}  SDPA {t_sdpa:7.3f} s  ringattn "
                  f"{t_ours:7.3f} s  speedup {row['speedup']:5.2f}x (rounds {min(ratios):.2f}"
                  f"-{max(ratios):.2f})", flush=True)
    return rows


# ---- binding: ringattn.attention vs ringattn-bench ---------------------------------


def binding(args):
    rows = []
    for D in (64, 128):
        B, S, H = 1, args.seq, 8
        with tempfile.TemporaryDirectory() as tmp:
            out_json = os.path.join(tmp, "bench.json")
            cmd = [args.bench_binary, "--ranks", "1", "--compare=false", "--seq", str(S),
                   "--heads", str(H), "--head-dim", str(D), "--causal", "--dtype", "fp32",
                   "--iters", str(args.iters), "--warmup", "1",
                   "--threads", str(torch.get_num_threads()), "--json", out_json]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            with open(out_json) as f:
                cpp = json.load(f)
        g = torch.Generator().manual_seed(0)
        q, k, v, dout = (torch.randn(B, S, H, D, generator=g) for _ in range(4))
        qq, kk, vv = (t.requires_grad_() for t in (q, k, v))
        out = ringattn.attention(qq, kk, vv, causal=True)
        t_fwd = timed(lambda: ringattn.attention(qq, kk, vv, causal=True), args.iters)
        t_bwd = timed(lambda: torch.autograd.grad(out, (qq, kk, vv), dout, retain_graph=True),
                      args.iters)
        row = dict(D=D, S=S, H=H, cpp_fwd_ms=cpp["fwd_ms"], cpp_bwd_ms=cpp["bwd_ms"],
                   py_fwd_ms=t_fwd * 1e3, py_bwd_ms=t_bwd * 1e3,
                   overhead_fwd=t_fwd * 1e3 / cpp["fwd_ms"] - 1,
                   overhead_bwd=t_bwd * 1e3 / cpp["bwd_ms"] - 1)
        rows.append(row)
        print(f"binding D={D:<4} causal  fwd: bench {cpp['fwd_ms']:8.1f} ms, Python "
              f"{t_fwd * 1e3:8.1f} ms ({row['overhead_fwd']:+.1%});  bwd: bench "
              f"{cpp['bwd_ms']:8.1f} ms, Python {t_bwd * 1e3:8.1f} ms "
              f"({row['overhead_bwd']:+.1%})", flush=True)
    return rows


# ---- ring: 2 processes vs 1, and vs PyTorch's ring ------------------------------------


def _torch_ring(q, k, v, dout, group):
    """PyTorch's context-parallel ring on [B, H, S, D] shards, forward+backward."""
    from torch.distributed.tensor.experimental._context_parallel import _attention as cp

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
    bop = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default
    out, lse = cp._templated_ring_attention(group, 2, op, q, k, v, is_causal=True)[:2]
    cp._templated_ring_attention_backward(group, 2, bop, grad_out=dout, grad_out_name="grad_out",
                                          query=q, key=k, value=v, out=out, logsumexp=lse,
                                          is_causal=True, dropout_p=0.0)


def _ring_worker(rank, world, port, S, H, D, iters, results):
    os.environ.update(UCX_ENV, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(0)
    full = [torch.randn(1, S, H, D, generator=g) for _ in range(4)]
    q, k, v, dout = (ringattn.shard(t) for t in full)

    def ours():
        fwd_bwd(ringattn.ring_attention, q, k, v, dout, causal=True)

    qt, kt, vt, dt = (t.transpose(1, 2).contiguous() for t in (q, k, v, dout))

    def theirs():
        _torch_ring(qt, kt, vt, dt, dist.group.WORLD)

    def both_start(fn):  # every rank starts each timed call together
        def run():
            dist.barrier()
            fn()
        return run

    t_ours = timed(both_start(ours), iters)
    t_theirs = timed(both_start(theirs), iters)
    if rank == 0:
        results.put((t_ours, t_theirs))
    dist.destroy_process_group()


def ring(args):
    S, H, D = args.ring_seq, 8, 64
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(1, S, H, D, generator=g) for _ in range(4))

    t_one = timed(lambda: fwd_bwd(ringattn.attention, q, k, v, dout, causal=True), args.iters)
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ring_worker, args=(2, port, S, H, D, args.iters, results), nprocs=2,
                       join=True, start_method="spawn")
    t_ring, t_torch = results.get()
    row = dict(S=S, H=H, D=D, one_process_one_thread_s=t_one, ringattn_2proc_s=t_ring,
               torch_ring_2proc_s=t_torch, speedup_vs_1=t_one / t_ring,
               speedup_vs_torch_ring=t_torch / t_ring)
    print(f"ring    S={S} causal zigzag fwd+bwd: 1 process 1 thread {t_one:.3f} s, ringattn 2 "
          f"processes {t_ring:.3f} s ({row['speedup_vs_1']:.2f}x), PyTorch ring 2 processes "
          f"{t_torch:.3f} s (ringattn {row['speedup_vs_torch_ring']:.2f}x faster)", flush=True)
    return [row]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="kernel,binding,ring")
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--ring-seq", type=int, default=16384)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--bench-binary", default=os.path.join(
        os.path.dirname(__file__), "..", "build", "tools", "ringattn-bench"))
    p.add_argument("--json", default="")
    args = p.parse_args()
    print(f"python_bench: torch {torch.__version__}, ringattn {ringattn.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cores", flush=True)
    report = {}
    for part in args.only.split(","):
        report[part] = {"kernel": kernel, "binding": binding, "ring": ring}[part](args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
