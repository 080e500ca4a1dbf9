#!/usr/bin/env python3
"""The performance regression gate: every CI path's one check of speed.

Compares ringattn-bench --json output (one object, or a sweep's array)
against a baseline of RATIOS measured in one run -- the speedup over one
rank, the overlap efficiency, the fraction of the GEMM ceiling measured in
the same run, bytes sent per ring step -- never absolute times on a shared
CPU. An absolute throughput (fwd_gflops_per_rank, ...) is accepted only from
a baseline marked "dedicated": true (a GPU runner of its own, as
tools/multigpu_ci.sh uses). Fails, with a readable table, when a figure
moves the wrong way by more than its tolerance.

    tools/perf_gate.py --baseline bench/baselines/cpu-2core.json --run build/tools/ringattn-bench
    tools/perf_gate.py --baseline B.json RESULT.json... [--context gpu="NVIDIA H100"] [--record]

--run runs the bench with the baseline's own "bench_args" (the gate's
command lives beside its numbers). A baseline:

    {"about": "...", "machine": "...", "dedicated": false,
     "bench_args": ["--seq", "8192", ..., "--sweep", "ranks=2,4"],
     "tolerance": 0.25,                       # allowed relative move, default
     "tolerances": {"fwd_bytes_per_step": 0},  # per metric
     "points": [{"where": {"ranks": 2}, "expect": {"speedup_vs_1_rank": 1.8, ...}}]}

A result point is matched by "where" (its keys and values, the --context
ones included); every metric of "expect" is checked. --record writes the
measured figures into the matching points (adding points for results that
match none, keyed by --record-keys). Exit status: 0 pass, 1 a regression,
2 the gate could not judge (a bad file, a point or metric missing; with
--allow-missing a result without a baseline point is a note instead).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

# Direction of each metric: +1 higher is better, -1 lower is better.
RATIOS = {
    "speedup_vs_1_rank": +1,
    "bwd_speedup_vs_1_rank": +1,
    "overlap_efficiency": +1,
    "bwd_overlap_efficiency": +1,
    "fwd_fraction_of_ceiling": +1,
    "bwd_fraction_of_ceiling": +1,
    "fwd_bytes_per_step": -1,
    "bwd_bytes_per_step": -1,
}
ABSOLUTE = {  # only from a dedicated runner
    "fwd_gflops_per_rank": +1,
    "fwd_gflops": +1,
    "bwd_gflops": +1,
}


def derived(point):
    """The point's figures, with bytes sent per ring step (rotations)."""
    p = dict(point)
    rotations = max(int(p.get("ring_steps") or 1) - 1, 0)
    for d in ("fwd", "bwd"):
        sent = p.get(f"{d}_bytes_sent_per_rank")
        if sent is not None:
            p[f"{d}_bytes_per_step"] = sent / rotations if rotations else 0.0
    return p


def text(v):
    """A value as the bench's flags spell it (JSON true -> "true")."""
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def matches(point, where):
    for k, v in where.items():
        got = point.get(k)
        if got is None and isinstance(point.get("sweep"), dict):
            got = point["sweep"].get(k)
        if text(got) != text(v):
            return False
    return True


def label(where):
    return " ".join(f"{k}={v}" for k, v in where.items()) or "(all)"


def fail_usage(msg):
    print(f"perf_gate: {msg}", file=sys.stderr)
    sys.exit(2)


def load(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail_usage(f"{what} {path}: {e}")


def run_bench(binary, args):
    fd, out = tempfile.mkstemp(suffix=".json", prefix="perf_gate_")
    os.close(fd)
    try:
        cmd = [binary, *args, "--json", out]
        print("perf_gate: " + " ".join(cmd), flush=True)
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            print(r.stdout)
            fail_usage(f"the bench failed (exit {r.returncode})")
        with open(out) as f:
            return json.load(f)
    finally:
        os.unlink(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("result", nargs="*", help="ringattn-bench --json output(s)")
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--run", metavar="BENCH", help="run BENCH with the baseline's bench_args")
    ap.add_argument("--tolerance", type=float, help="override the baseline's default tolerance")
    ap.add_argument("--context", action="append", default=[], metavar="KEY=VALUE",
                    help="a key every result point gets (the GPU name, say)")
    ap.add_argument("--record", action="store_true", help="write the measured figures instead")
    ap.add_argument("--record-keys", default="ranks,seq_len",
                    help="keys of a new point's where (with the --context keys)")
    ap.add_argument("--allow-missing", action="store_true",
                    help="a result with no baseline point is a note, not an error")
    ap.add_argument("--retries", type=int, default=0,
                    help="with --run: run again after a regression, up to N times, and judge "
                         "each figure by its best run (a regression must show in every run: "
                         "a shared VM's noise)")
    a = ap.parse_args()
    if a.run and not a.record:
        for attempt in range(a.retries + 1):
            code = judge(a)
            if code != 1:
                return code
            if attempt < a.retries:
                print(f"perf_gate: a regression after {attempt + 1} run(s); running again")
        return 1
    return judge(a)


_EARLIER = []  # the points of the earlier runs of this gate (--retries)


def best_of(runs):
    """Figure by figure, the best of the runs of the same sweep."""
    merged = [dict(p) for p in runs[-1]]
    for earlier in runs[:-1]:
        if len(earlier) != len(merged):
            continue
        for m, e in zip(merged, earlier):
            for k, sign in {**RATIOS, **ABSOLUTE}.items():
                if m.get(k) is None or e.get(k) is None:
                    continue
                m[k] = max(m[k], e[k]) if sign > 0 else min(m[k], e[k])
    return merged


def judge(a):

    base = load(a.baseline, "--baseline")
    if not isinstance(base, dict) or not isinstance(base.get("points", []), list):
        fail_usage(f"--baseline {a.baseline}: expected an object with a list of points")
    dedicated = bool(base.get("dedicated", False))
    if a.run:
        if not isinstance(base.get("bench_args"), list):
            fail_usage(f"--run: the baseline {a.baseline} has no bench_args list")
        results = run_bench(a.run, [str(x) for x in base["bench_args"]])
    elif a.result:
        results = []
        for path in a.result:
            r = load(path, "result")
            results += r if isinstance(r, list) else [r]
    else:
        fail_usage("expected a result file or --run BENCH")
    if isinstance(results, dict):
        results = [results]
    context = {}
    for kv in a.context:
        if "=" not in kv:
            fail_usage(f"--context {kv}: expected KEY=VALUE")
        k, v = kv.split("=", 1)
        context[k] = v
    points = [derived({**r, **context}) for r in results]
    runs_judged = 1
    if a.run:
        _EARLIER.append(points)
        points = best_of(_EARLIER)
        runs_judged = len(_EARLIER)
    tol_default = a.tolerance if a.tolerance is not None else float(base.get("tolerance", 0.2))
    tols = base.get("tolerances", {})

    if a.record:
        keys = [k for k in a.record_keys.split(",") if k] + list(context)
        for p in points:
            mine = [bp for bp in base.setdefault("points", []) if matches(p, bp.get("where", {}))]
            if not mine:
                mine = [{"where": {k: p.get(k) for k in keys}, "expect": {}}]
                base["points"].append(mine[0])
            for bp in mine:
                known = {**RATIOS, **(ABSOLUTE if dedicated else {})}
                metrics = bp["expect"] or {m: None for m in known if p.get(m) is not None}
                for m in metrics:
                    if p.get(m) is not None:
                        bp["expect"][m] = round(float(p[m]), 4)
        with open(a.baseline, "w") as f:
            json.dump(base, f, indent=2)
            f.write("\n")
        print(f"perf_gate: recorded {len(points)} point(s) into {a.baseline}")
        return 0

    rows, regressions, problems, notes = [], 0, [], []
    for p in points:
        mine = [bp for bp in base.get("points", []) if matches(p, bp.get("where", {}))]
        where = {k: p.get(k) for k in ("ranks", "seq_len")}
        if not mine:
            (notes if a.allow_missing else problems).append(
                f"no baseline point for {label(where)} in {a.baseline}")
            continue
        for bp in mine:
            for metric, want in bp.get("expect", {}).items():
                sign = RATIOS.get(metric)
                if sign is None and metric in ABSOLUTE:
                    if not dedicated:
                        problems.append(f"{metric}: an absolute figure, only from a baseline "
                                        "marked \"dedicated\": true (a runner of its own)")
                        continue
                    sign = ABSOLUTE[metric]
                if sign is None:
                    problems.append(f"{metric}: not a ratio the gate knows "
                                    f"({', '.join(sorted(RATIOS))})")
                    continue
                got = p.get(metric)
                if got is None:
                    problems.append(f"{label(bp['where'])}: the result has no {metric}")
                    continue
                tol = float(tols.get(metric, tol_default))
                change = (got - want) / want if want else (0.0 if got == want else float("inf"))
                bad = sign * change < -tol - 1e-9  # rounding of recorded figures
                regressions += bad
                rows.append((label(bp["where"]), metric, want, got, change,
                             -sign * tol, "REGRESSION" if bad else "ok"))

    head = ("point", "metric", "baseline", "measured", "change", "allowed", "verdict")
    table = [head] + [(w, m, f"{b:.4g}", f"{g:.4g}", f"{c:+.1%}", f"{t:+.0%}", v)
                      for w, m, b, g, c, t, v in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    best = f", each figure the best of {runs_judged} runs" if runs_judged > 1 else ""
    print(f"perf_gate: {a.baseline} ({base.get('machine', 'machine not stated')}){best}")
    for r in table:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)))
    for n in notes:
        print(f"  note: {n}")
    for pr in problems:
        print(f"  cannot judge: {pr}")
    if problems:
        return 2
    if regressions:
        print(f"perf_gate: FAIL, {regressions} figure(s) beyond their tolerance")
        return 1
    print(f"perf_gate: PASS, {len(rows)} figure(s) within their tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
