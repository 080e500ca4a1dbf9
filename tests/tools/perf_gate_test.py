#!/usr/bin/env python3
"""tools/perf_gate.py on synthetic bench results: a pass, a regression in
each direction, a figure it must not judge (an absolute one on a shared
machine), a point or metric the baseline lacks, --record, and a sweep's
array matched point by point. Usage: perf_gate_test.py tools/perf_gate.py"""
import json
import os
import subprocess
import sys
import tempfile

GATE = sys.argv[1]
failures = 0


def point(ranks, speedup, overlap, fwd_bytes, steps=2, gflops=100.0):
    return {"seq_len": 4096, "ranks": ranks, "speedup_vs_1_rank": speedup,
            "overlap_efficiency": overlap, "fwd_bytes_sent_per_rank": fwd_bytes,
            "ring_steps": steps, "fwd_gflops_per_rank": gflops, "sweep": {"ranks": str(ranks)}}


def gate(tmp, result, baseline, *args):
    rp, bp = os.path.join(tmp, "r.json"), os.path.join(tmp, "b.json")
    with open(rp, "w") as f:
        json.dump(result, f)
    with open(bp, "w") as f:
        json.dump(baseline, f)
    r = subprocess.run([sys.executable, GATE, rp, "--baseline", bp, *args],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with open(bp) as f:
        return r.returncode, r.stdout, json.load(f)


def expect(what, cond, out=""):
    global failures
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures += 1
        print(out)


BASE = {"machine": "test", "tolerance": 0.1, "tolerances": {"fwd_bytes_per_step": 0},
        "points": [{"where": {"ranks": 2}, "expect": {"speedup_vs_1_rank": 1.8,
                                                      "overlap_efficiency": 0.95,
                                                      "fwd_bytes_per_step": 1000}},
                   {"where": {"ranks": 4}, "expect": {"speedup_vs_1_rank": 1.7}}]}

with tempfile.TemporaryDirectory() as tmp:
    code, out, _ = gate(tmp, [point(2, 1.75, 0.97, 1000), point(4, 1.9, 0.9, 3000, 4)], BASE)
    expect("within tolerance passes (a sweep's array, point by point)", code == 0 and "PASS" in out, out)
    code, out, _ = gate(tmp, point(2, 1.5, 0.97, 1000), BASE)
    expect("a speedup 17% lower fails with a table", code == 1 and "REGRESSION" in out
           and "speedup_vs_1_rank" in out and "-16.7%" in out, out)
    code, out, _ = gate(tmp, point(2, 1.8, 0.95, 2000, 3), BASE)
    expect("bytes per ring step: 1000, exact, passes", code == 0, out)
    code, out, _ = gate(tmp, point(2, 1.8, 0.95, 2002, 3), BASE)
    expect("one byte more per step fails (tolerance 0, lower is better)", code == 1, out)
    code, out, _ = gate(tmp, point(2, 2.5, 1.0, 500, 2), BASE)
    expect("better figures pass", code == 0, out)
    absolute = {"points": [{"where": {"ranks": 2}, "expect": {"fwd_gflops_per_rank": 90}}]}
    code, out, _ = gate(tmp, point(2, 1.8, 0.95, 1000), absolute)
    expect("an absolute figure on a shared machine is refused", code == 2
           and "dedicated" in out, out)
    code, out, _ = gate(tmp, point(2, 1.8, 0.95, 1000, gflops=70), {**absolute, "dedicated": True})
    expect("... and judged on a dedicated runner", code == 1 and "REGRESSION" in out, out)
    code, out, _ = gate(tmp, point(8, 1.8, 0.95, 1000), BASE)
    expect("a point the baseline lacks cannot be judged", code == 2 and "no baseline point" in out, out)
    code, out, _ = gate(tmp, point(8, 1.8, 0.95, 1000), BASE, "--allow-missing")
    expect("... unless missing points are allowed (a note)", code == 0 and "note:" in out, out)
    code, out, _ = gate(tmp, {"seq_len": 4096, "ranks": 2}, BASE)
    expect("a metric the result lacks cannot be judged", code == 2 and "has no" in out, out)
    code, out, rec = gate(tmp, [point(2, 1.6, 0.9, 4000, 3), point(16, 1.1, 0.8, 10, 2)],
                          {"points": [{"where": {"ranks": 2}, "expect": {}}]},
                          "--record", "--context", "gpu=H100")
    where16 = [p for p in rec["points"] if p["where"].get("ranks") == 16]
    expect("--record fills the matching point and adds the others",
           code == 0 and rec["points"][0]["expect"]["speedup_vs_1_rank"] == 1.6
           and rec["points"][0]["expect"]["fwd_bytes_per_step"] == 2000.0
           and len(where16) == 1 and where16[0]["where"]["gpu"] == "H100", json.dumps(rec))
    # The CI baseline itself: its own figures pass; the same with one ratio
    # planted 20% worse fails.
    ci_path = os.path.join(os.path.dirname(os.path.abspath(GATE)), "..", "bench", "baselines",
                           "cpu-2core.json")
    with open(ci_path) as f:
        ci = json.load(f)
    own = []
    for bp in ci["points"]:
        r = {**bp["where"], **bp["expect"], "ring_steps": 2}
        r["fwd_bytes_sent_per_rank"] = r.pop("fwd_bytes_per_step")
        r["bwd_bytes_sent_per_rank"] = r.pop("bwd_bytes_per_step")
        own.append(r)
    code, out, _ = gate(tmp, own, ci)
    expect("the CI baseline's own figures pass it", code == 0, out)
    own[0]["speedup_vs_1_rank"] *= 0.8
    code, out, _ = gate(tmp, own, ci)
    expect("a speedup planted 20% worse fails it", code == 1 and "REGRESSION" in out, out)
    # --run --retries: each figure judged by its best run. A fake bench
    # answers run after run from a list; its args come from the baseline.
    def fake_bench(answers):
        script = os.path.join(tmp, "bench.py")
        with open(os.path.join(tmp, "answers.json"), "w") as f:
            json.dump(answers, f)
        with open(script, "w") as f:
            f.write(f"""#!{sys.executable}
import json, os, sys
state = {os.path.join(tmp, "count")!r}
n = int(open(state).read()) if os.path.exists(state) else 0
open(state, "w").write(str(n + 1))
answers = json.load(open({os.path.join(tmp, "answers.json")!r}))
json.dump(answers[min(n, len(answers) - 1)], open(sys.argv[sys.argv.index("--json") + 1], "w"))
""")
        os.chmod(script, 0o755)
        if os.path.exists(os.path.join(tmp, "count")):
            os.remove(os.path.join(tmp, "count"))
        return script

    def run_gate(answers, retries):
        bp = os.path.join(tmp, "b.json")
        with open(bp, "w") as f:
            json.dump({**BASE, "bench_args": ["--x", "1"]}, f)
        r = subprocess.run([sys.executable, GATE, "--baseline", bp, "--run", fake_bench(answers),
                            "--retries", str(retries)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return r.returncode, r.stdout

    noisy = [point(2, 1.5, 0.97, 1000), point(2, 1.8, 0.7, 1000)]  # a different figure low each time
    code, out = run_gate(noisy, 1)
    expect("noise in different figures across runs passes (each figure's best run)",
           code == 0 and "best of 2 runs" in out, out)
    code, out = run_gate(noisy, 0)
    expect("... and fails with one run", code == 1, out)
    code, out = run_gate([point(2, 1.5, 0.97, 1000), point(2, 1.52, 0.97, 1000),
                          point(2, 1.49, 0.97, 1000)], 2)
    expect("a figure low in every run fails", code == 1 and "best of 3 runs" in out, out)
print(f"{'PASS' if failures == 0 else 'FAIL'}: {failures} failure(s)")
sys.exit(1 if failures else 0)
