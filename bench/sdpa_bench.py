#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention timings: the peer of the CUDA
kernels in tools/gpu_check.sh.

Same shapes and counting as bench/cuda_attn_bench.cu: bf16, D in {64, 128, 256},
S in {2048, 8192, 16384}, causal and not, B = 16384 // S, H = 2048 // D,
tensors laid out [B, S, H, D] (viewed as [B, H, S, D] for SDPA, as models
do); median of --reps runs timed with CUDA events after warm-up; forward
FLOPs 4*B*H*S*S*D (causal: half), backward 2.5x that. Backends: FLASH
(FlashAttention-2 class) and CUDNN, each where PyTorch offers it.

  sdpa_bench.py [--reps N] [--csv sdpa.csv] [--ours ours.csv [--ours ours_sm90a.csv]]

With --ours (the CSV of `cuda_attn_bench --bench --csv`) it prints one table
of TFLOP/s for ours and each backend, and the ratio ours / peer.
"""
import argparse
import csv
import os
import signal
import statistics
import sys

# D=128 first (issue 5's targets), as in cuda_attn_bench: a run cut by a
# time budget loses the D=256 rows first.
SHAPES = [(d, s, causal) for d in (128, 64, 256) for s in (2048, 8192, 16384) for causal in (False, True)]


class Cut(Exception):
    """SIGTERM (the time budget's `timeout`): stop and print what is done."""


def on_sigterm(signum, frame):
    raise Cut()


def flops(b, h, s, d, causal):
    return 4.0 * b * h * s * s * d * (0.5 if causal else 1.0)


def time_ms(torch, fn, reps, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def bench_sdpa(reps):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name(0)}", flush=True)
    rows = []
    try:
        bench_rows(torch, F, sdpa_kernel, backends, reps, rows)
    except Cut:
        print(f"cut by SIGTERM after {len(rows)} rows: the table below is partial", flush=True)
    return rows


def bench_rows(torch, F, sdpa_kernel, backends, reps, rows):
    for d, s, causal in SHAPES:  # shape by shape: a cut run keeps whole rows
        for name, backend in backends:
            b, h = 16384 // s, 2048 // d
            row = {"impl": name, "D": d, "S": s, "B": b, "H": h, "causal": int(causal)}
            try:
                gen = torch.Generator(device="cuda").manual_seed(0)

                def make():
                    x = torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, generator=gen)
                    return x.transpose(1, 2).requires_grad_(True)  # [B, H, S, D] view of bshd

                q, k, v = make(), make(), make()
                with sdpa_kernel([backend]):
                    with torch.no_grad():
                        fwd = time_ms(torch, lambda: F.scaled_dot_product_attention(
                            q, k, v, is_causal=causal), reps)
                    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                    grad = torch.randn_like(out)
                    bwd = time_ms(torch, lambda: torch.autograd.grad(
                        out, (q, k, v), grad, retain_graph=True), reps)
                fl = flops(b, h, s, d, causal)
                row.update(fwd_ms=fwd, fwd_tflops=fl / fwd / 1e9, bwd_ms=bwd,
                           bwd_tflops=2.5 * fl / bwd / 1e9)
                del q, k, v, out, grad
            except RuntimeError as e:  # backend not available for this shape/card
                row.update(error=str(e).splitlines()[0][:120])
            torch.cuda.empty_cache()
            rows.append(row)
            status = (f"fwd {row['fwd_tflops']:.1f} bwd {row['bwd_tflops']:.1f} TFLOP/s"
                      if "error" not in row else f"n/a: {row['error']}")
            print(f"{name:5s} D={d:<3d} S={s:<5d} B={b:<2d} H={h:<2d} causal={int(causal)}: {status}",
                  flush=True)


def write_csv(path, rows):
    keys = ["impl", "D", "S", "B", "H", "causal", "fwd_ms", "fwd_tflops", "bwd_ms", "bwd_tflops", "error"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def read_ours(paths):
    """Rows of cuda_attn_bench CSVs by (D, S, causal); the Hopper kernels'
    forward (impl ringattn-sm90a) as fwd90."""
    ours = {}
    for path in paths:
        if not os.path.exists(path):  # e.g. a bench the budget cut: its columns say n/a
            print(f"no {path}", file=sys.stderr)
            continue
        with open(path) as f:
            for r in csv.DictReader(f):
                key = (int(r["D"]), int(r["S"]), bool(int(r["causal"])))
                row = ours.setdefault(key, {})
                if r["impl"] == "ringattn-sm90a":
                    row["fwd90"] = float(r["fwd_tflops"])
                else:
                    row.update({k: float(r[k]) for k in ("fwd_tflops", "bwd_tflops", "bwd_det_tflops")})
    return ours


def fmt(x):
    return f"{x:7.1f}" if x is not None else "    n/a"


def ratio(a, b):
    return f"{a / b:6.2f}" if a is not None and b else "   n/a"


def print_table(rows, ours):
    peer = {(r["impl"], r["D"], r["S"], bool(r["causal"])): r for r in rows}

    def get(impl, key, field):
        r = peer.get((impl,) + key)
        return r.get(field) if r else None

    print()
    print("TFLOP/s, bf16 (ours = ringattn CUDA kernels; sm90a = the Hopper forward, "
          "RINGATTN_CUDA_KERNELS=sm90a; det = deterministic backward)")
    print(f"{'D':>3} {'S':>6} {'causal':>6} | {'fwd ours':>8} {'flash':>7} {'cudnn':>7} "
          f"{'/flash':>6} {'/cudnn':>6} | {'sm90a':>7} {'/flash':>6} {'/cudnn':>6} | "
          f"{'bwd ours':>8} {'det':>7} {'flash':>7} {'cudnn':>7} {'/flash':>6} {'/cudnn':>6}")
    for d, s, causal in SHAPES:
        key = (d, s, causal)
        o = ours.get(key, {})
        of, ob, od = o.get("fwd_tflops"), o.get("bwd_tflops"), o.get("bwd_det_tflops")
        o9 = o.get("fwd90")
        ff, cf = get("flash", key, "fwd_tflops"), get("cudnn", key, "fwd_tflops")
        fb, cb = get("flash", key, "bwd_tflops"), get("cudnn", key, "bwd_tflops")
        print(f"{d:>3} {s:>6} {('yes' if causal else 'no'):>6} | {fmt(of):>8} {fmt(ff)} {fmt(cf)} "
              f"{ratio(of, ff)} {ratio(of, cf)} | {fmt(o9)} {ratio(o9, ff)} {ratio(o9, cf)} | "
              f"{fmt(ob):>8} {fmt(od)} {fmt(fb)} {fmt(cb)} {ratio(ob, fb)} {ratio(ob, cb)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--csv", help="write the SDPA timings here")
    ap.add_argument("--ours", action="append",
                    help="CSV from cuda_attn_bench --bench --csv (repeatable: the --kernel sm90a "
                         "one too), for the combined table")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    rows = bench_sdpa(args.reps)
    if args.csv:
        write_csv(args.csv, rows)
    if args.ours:
        try:
            ours = read_ours(args.ours)
        except (OSError, KeyError, ValueError) as e:
            print(f"cannot read {args.ours}: {e}", file=sys.stderr)
            ours = {}
        print_table(rows, ours)
    return 0


if __name__ == "__main__":
    sys.exit(main())
