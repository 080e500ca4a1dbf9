#!/usr/bin/env python3
# ringattn-run with --comm ucx under mpirun writes files bitwise identical to
# --comm local with the same W and sharding; --ranks that disagrees with the
# launched world is refused. Standard library only.
# Usage: run_ucx_test.py RINGATTN_RUN MPIRUN NP
import os
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from npy_write import write_npy  # noqa: E402


def main():
    run, mpirun, np_ = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(7)
    B, S, H, Hk, D = 1, 301, 4, 2, 32
    with tempfile.TemporaryDirectory() as tmp:
        for name, heads in (("q", H), ("k", Hk), ("v", Hk), ("do", H)):
            n = B * S * heads * D
            write_npy(os.path.join(tmp, name + ".npy"), (B, S, heads, D),
                      [rng.gauss(0, 1) for _ in range(n)])
        common = ["--q", tmp + "/q.npy", "--k", tmp + "/k.npy", "--v", tmp + "/v.npy",
                  "--dout", tmp + "/do.npy", "--causal", "--sharding", "zigzag"]
        os.mkdir(tmp + "/local")
        os.mkdir(tmp + "/ucx")
        subprocess.run([run] + common + ["--out-dir", tmp + "/local", "--ranks", str(np_)],
                       check=True)
        launch = [mpirun, "--allow-run-as-root", "--oversubscribe", "-np", str(np_)]
        subprocess.run(launch + [run] + common + ["--out-dir", tmp + "/ucx", "--comm", "ucx"],
                       check=True, timeout=120)
        for f in ("out", "lse", "dq", "dk", "dv"):
            a = open(tmp + "/local/" + f + ".npy", "rb").read()
            b = open(tmp + "/ucx/" + f + ".npy", "rb").read()
            if a != b:
                print("FAIL: %s.npy differs between --comm local and --comm ucx" % f)
                return 1
        bad = subprocess.run(launch + [run] + common + ["--out-dir", tmp + "/ucx", "--comm", "ucx",
                                                        "--ranks", str(np_ + 1)],
                             capture_output=True, text=True, timeout=120)
        if bad.returncode == 0 or "does not match the launched world size" not in bad.stderr:
            print("FAIL: --ranks %d under %d processes was not refused:\n%s" %
                  (np_ + 1, np_, bad.stderr))
            return 1
    print("ok: --comm ucx with %d processes matches --comm local bitwise" % np_)
    return 0


if __name__ == "__main__":
    sys.exit(main())
