#!/usr/bin/env python3
# ringattn-eval with --comm ucx under mpirun: rank 0 writes report.md and
# report.json with every verdict PASS, and the figures that do not depend on
# timing agree with --comm local at the same W: the exactness errors
# bitwise (the ring is deterministic for a given W and layout), the needle
# scores, the memory per rank. --fault drop-ring-step makes every rank exit
# 1 with reachability FAIL; --ranks that disagrees with the launched world
# is refused. Standard library only.
# Usage: run_eval_ucx_test.py RINGATTN_EVAL MPIRUN NP
import json
import os
import re
import subprocess
import sys
import tempfile

# Small and fixed: --max-seq caps every ladder, so the sizes do not depend
# on the timings; one thread per rank in both runs.
COMMON = ["--quick", "--max-seq", "512", "--threads", "1", "--seed", "3"]
QUANTITIES = ("out", "lse", "dq", "dk", "dv")


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def load(d):
    for f in ("report.md", "report.json"):
        if not os.path.isfile(os.path.join(d, f)):
            fail("%s was not written in %s" % (f, d))
    with open(os.path.join(d, "report.json")) as f:
        return json.load(f), open(os.path.join(d, "report.md")).read()


def run(cmd, timeout=120):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def main():
    evl, mpirun, np_ = sys.argv[1], sys.argv[2], int(sys.argv[3])
    launch = [mpirun, "--allow-run-as-root", "--oversubscribe", "-np", str(np_)]
    with tempfile.TemporaryDirectory() as tmp:
        local_dir, ucx_dir, fault_dir = (os.path.join(tmp, n) for n in ("local", "ucx", "fault"))
        rc, out = run([evl] + COMMON + ["--comm", "local", "--ranks", str(np_), "--out", local_dir])
        if rc != 0:
            fail("--comm local exited %d:\n%s" % (rc, out))
        rc, out = run(launch + [evl] + COMMON + ["--comm", "ucx", "--out", ucx_dir])
        if rc != 0:
            fail("--comm ucx under mpirun exited %d:\n%s" % (rc, out))
        local, _ = load(local_dir)
        ucx, md = load(ucx_dir)

        if not ucx["pass"] or any(not v["pass"] for v in ucx["verdicts"]):
            fail("--comm ucx verdicts: %s" % ucx["verdicts"])
        for check in ("exactness", "reachability", "cost"):
            if "**%s: PASS**" % check not in md:
                fail("report.md lacks '**%s: PASS**'" % check)
        env = ucx["environment"]
        if env.get("comm") != "ucx" or env.get("processes") != np_:
            fail("environment does not describe %d ucx processes: %s" % (np_, env))
        if ucx["options"]["ranks"] != np_:
            fail("options.ranks %s, launched %d" % (ucx["options"]["ranks"], np_))
        # No pretending: the W sweep is reported as not measured.
        note = ucx["exactness"].get("growth_with_world_not_measured", "")
        if "W=%d" % np_ not in note or ucx["exactness"]["growth_with_world"]:
            fail("W sweep under ucx: note %r, growth %s" % (note,
                                                           ucx["exactness"]["growth_with_world"]))
        if "Error vs W: **not measured**" not in md:
            fail("report.md does not say that error vs W was not measured")

        # Exactness: every ucx run has a local twin at the same W, bitwise.
        def key(r):
            return (r["phase"], r["seqlen"], r["dtype"], r["sharding"], r["mask_kind"], r["world"])
        twins = {key(r): r for r in local["exactness"]["runs"] if r["world"] == np_}
        runs = ucx["exactness"]["runs"]
        if not runs or len(runs) != len(twins):
            fail("%d exactness runs under ucx, %d at W=%d under local" %
                 (len(runs), len(twins), np_))
        for r in runs:
            if r["world"] != np_ or key(r) not in twins:
                fail("exactness run %s has no local twin" % (key(r),))
            for q in QUANTITIES:
                if r[q] != twins[key(r)][q]:
                    fail("exactness %s %s: ucx %s != local %s" % (key(r), q, r[q],
                                                                 twins[key(r)][q]))
        # Reachability: the same needles, probes and scores.
        lc, uc = local["reachability"]["configurations"], ucx["reachability"]["configurations"]
        if [(c["sharding"], c["mask_kind"]) for c in lc] != \
                [(c["sharding"], c["mask_kind"]) for c in uc]:
            fail("reachability configurations differ")
        def untimed(c):
            return [{k: v for k, v in r.items() if k != "fwd_seconds"} for r in c["runs"]]
        for a, b in zip(lc, uc):
            if untimed(a) != untimed(b):
                fail("reachability %s %s differs" % (a["sharding"], a["mask_kind"]))
        lv = {v["check"]: v["reason"] for v in local["verdicts"]}
        uv = {v["check"]: v["reason"] for v in ucx["verdicts"]}
        if lv["reachability"] != uv["reachability"]:
            fail("reachability verdicts differ:\n  %s\n  %s" % (lv["reachability"],
                                                              uv["reachability"]))
        # Cost: several lengths at the launched W; memory per rank as local's.
        points = ucx["cost"]["points"]
        if len({p["seqlen"] for p in points}) < 3 or any(p["world"] != np_ for p in points):
            fail("cost points under ucx: %s" % [(p["seqlen"], p["world"]) for p in points])
        local_mem = {(p["seqlen"], p["world"]): p["stats"]["rank_bytes"]
                     for p in local["cost"]["points"]}
        shared = 0
        for p in points:
            k = (p["seqlen"], p["world"])
            if k in local_mem:
                shared += 1
                if p["stats"]["rank_bytes"] != local_mem[k]:
                    fail("memory per rank at S=%d W=%d: ucx %d, local %d" %
                         (k + (p["stats"]["rank_bytes"], local_mem[k])))
        if shared == 0:
            fail("no cost point in common with the local run")

        # A dropped ring step: reachability FAIL, and every rank exits 1. Each
        # rank's status is echoed by a wrapper that itself exits 0, since
        # mpirun kills the other ranks once one exits non-zero.
        script = '"$0" "$@"; echo "exit-status rank=${OMPI_COMM_WORLD_RANK:-?} rc=$?"'
        _, out = run(launch + ["sh", "-c", script, evl] + COMMON +
                      ["--comm", "ucx", "--sharding", "zigzag", "--dtype", "fp32",
                       "--fault", "drop-ring-step", "--out", fault_dir])
        codes = dict(re.findall(r"exit-status rank=(\d+) rc=(\d+)", out))
        if sorted(codes) != [str(r) for r in range(np_)] or \
                any(c != "1" for c in codes.values()):
            fail("--fault drop-ring-step: mpirun exited %d, ranks %s:\n%s" % (rc, codes, out))
        faulty, md = load(fault_dir)
        verdict = {v["check"]: v["pass"] for v in faulty["verdicts"]}
        if faulty["pass"] or verdict.get("reachability") is not False:
            fail("--fault drop-ring-step did not FAIL reachability: %s" % faulty["verdicts"])
        if "**reachability: FAIL**" not in md:
            fail("report.md of the faulty run lacks '**reachability: FAIL**'")

        rc, out = run(launch + [evl] + COMMON + ["--comm", "ucx", "--ranks", str(np_ + 1),
                                                  "--out", fault_dir])
        if rc == 0 or "does not match the launched world size" not in out:
            fail("--ranks %d under %d processes was not refused:\n%s" % (np_ + 1, np_, out))
    print("ok: ringattn-eval --comm ucx with %d processes: PASS, %d exactness runs bitwise as "
          "--comm local, drop-ring-step FAILs on every rank" % (np_, len(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
