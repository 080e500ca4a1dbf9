#!/usr/bin/env python3
# Bitwise regression of ringattn-run: thirteen fixed cases (every sharding,
# every mask, GQA/MQA, softcap, scale, bf16, W = 1..5, empty shards, forward
# and backward) whose output files must hash to the values recorded in
# golden_run.sha256. A refactoring that changes one bit of out, lse, dq, dk
# or dv fails here, naming the case and the file. Standard library only.
#
#   golden_run.py check  RINGATTN_RUN     compare with golden_run.sha256
#   golden_run.py record RINGATTN_RUN     rewrite golden_run.sha256
#
# Each rank runs one thread, libxsmm is pinned to its AVX2 code
# (LIBXSMM_TARGET=hsw) and so are the kernels' tile ops (RINGATTN_CPU_ISA=
# avx2), so the figures do not depend on the machine's core count or on
# whether it has AVX-512.
import hashlib
import os
import random
import subprocess
import sys
import tempfile

from npy_write import write_npy

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden_run.sha256")

# name: (B, S, H, Hkv, D, seed, flags)
CASES = {
    "w1_none": (1, 97, 2, 2, 32, 1, ["--ranks", "1"]),
    "w2_zigzag_causal_gqa": (1, 130, 4, 2, 64, 2, ["--ranks", "2", "--sharding", "zigzag", "--causal"]),
    "w3_striped_causal_mqa": (1, 101, 2, 1, 16, 3,
                              ["--ranks", "3", "--sharding", "striped", "--causal"]),
    "w4_striped5_causal_window": (1, 150, 2, 2, 32, 4,
                                  ["--ranks", "4", "--sharding", "striped", "--stripe", "5",
                                   "--causal", "--window", "20,-1"]),
    "w5_contiguous_window": (1, 123, 2, 1, 32, 5,
                             ["--ranks", "5", "--window", "17,9"]),
    "w3_zigzag_right_window": (1, 111, 2, 2, 24, 6,
                               ["--ranks", "3", "--sharding", "zigzag", "--window", "-1,6"]),
    "w2_softcap_causal": (1, 77, 2, 2, 32, 7,
                          ["--ranks", "2", "--causal", "--softcap", "5"]),
    "w4_zigzag_bf16_causal_gqa": (1, 140, 4, 2, 32, 8,
                                  ["--ranks", "4", "--sharding", "zigzag", "--causal",
                                   "--dtype", "bf16"]),
    "w5_zigzag_causal_window_b2": (2, 131, 2, 2, 16, 9,
                                   ["--ranks", "5", "--sharding", "zigzag", "--causal",
                                    "--window", "31,0"]),
    "w1_bf16_causal_softcap": (1, 90, 2, 1, 64, 10,
                               ["--ranks", "1", "--causal", "--dtype", "bf16", "--softcap", "3"]),
    "w3_scale_h3_d48": (1, 88, 3, 3, 48, 11, ["--ranks", "3", "--scale", "0.3"]),
    "w2_striped4_window_b2": (2, 70, 3, 3, 80, 12,
                              ["--ranks", "2", "--sharding", "striped", "--stripe", "4",
                               "--window", "8,8"]),
    "w4_tiny_causal": (1, 3, 2, 2, 8, 13, ["--ranks", "4", "--causal"]),
}
OUTPUTS = ("out.npy", "lse.npy", "dq.npy", "dk.npy", "dv.npy")


def run_case(run, name, tmp):
    B, S, H, Hk, D, seed, flags = CASES[name]
    rng = random.Random(seed)  # uniform(): exact in double, the same on every Python
    case_dir = os.path.join(tmp, name)
    out_dir = os.path.join(case_dir, "out")
    os.makedirs(out_dir)
    for t, heads in (("q", H), ("k", Hk), ("v", Hk), ("do", H)):
        write_npy(os.path.join(case_dir, t + ".npy"), (B, S, heads, D),
                  [rng.uniform(-2.0, 2.0) for _ in range(B * S * heads * D)])
    cmd = [run] + ["--%s=%s" % (t, os.path.join(case_dir, t + ".npy")) for t in ("q", "k", "v")]
    cmd += ["--dout", os.path.join(case_dir, "do.npy"), "--out-dir", out_dir, "--threads", "1"]
    env = dict(os.environ, LIBXSMM_TARGET="hsw", RINGATTN_CPU_ISA="avx2", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd + flags, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit("%s: ringattn-run failed (%d):\n%s%s" % (name, proc.returncode, proc.stdout,
                                                          proc.stderr))
    hashes = {}
    for f in OUTPUTS:
        with open(os.path.join(out_dir, f), "rb") as fh:
            hashes[f] = hashlib.sha256(fh.read()).hexdigest()
    return hashes


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("check", "record"):
        sys.exit("usage: golden_run.py check|record RINGATTN_RUN")
    mode, run = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        got = {name: run_case(run, name, tmp) for name in CASES}
    lines = ["%s %s %s" % (name, f, got[name][f]) for name in CASES for f in OUTPUTS]
    if mode == "record":
        with open(GOLDEN, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        print("recorded %d hashes of %d cases in %s" % (len(lines), len(CASES), GOLDEN))
        return
    want = {}
    with open(GOLDEN) as fh:
        for line in fh:
            name, f, h = line.split()
            want[(name, f)] = h
    bad = [(n, f) for n in CASES for f in OUTPUTS if want.get((n, f)) != got[n][f]]
    missing = [k for k in want if k[0] not in CASES]
    for n, f in bad:
        print("MISMATCH %s %s: expected %s, got %s" % (n, f, want.get((n, f)), got[n][f]))
    for n, f in missing:
        print("MISSING case %s (%s) in golden_run.py" % (n, f))
    if bad or missing:
        sys.exit("%d of %d output files differ from the recorded bits" % (len(bad) + len(missing),
                                                                          len(lines)))
    print("all %d output files of %d cases bitwise identical to the record" % (len(lines),
                                                                               len(CASES)))


if __name__ == "__main__":
    main()
