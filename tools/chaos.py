#!/usr/bin/env python3
"""Chaos test of the UCX ring: ringattn-run (forward and backward) with W
ranks under mpirun, and in each trial one rank is, at a random moment,
  kill     killed (SIGKILL),
  stop     stopped (SIGSTOP) for good (once every other rank has exited,
           the test kills it: the launcher would wait for it forever),
  delay    stopped for a while shorter than the timeout, then continued,
  corrupt  made to send a corrupted message (a byte flipped in one small
           TCP message, where ringattn's message headers travel; an
           LD_PRELOAD shim, with UCX on TCP).
Every trial must end with the outputs bitwise equal to a clean run's
("correct") or with the job exiting non-zero within the timeout plus SLACK
seconds of the fault, with a message naming a rank ("error"). A hang or a
wrong answer with exit code 0 fails the script.

Usage: chaos.py --run build/tools/ringattn-run [--trials 100] [--np 3]
                [--timeout-ms 2000] [--seed 1] [--table FILE.md] [--cycle]
Standard library only; needs mpirun and a C compiler (for the shim)."""
import argparse
import collections
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "tools"))
from npy_write import write_npy  # noqa: E402

SLACK = 5.0  # seconds allowed beyond the timeout for every rank to exit

# Flips one byte of the N-th outgoing socket message of 64..200 bytes (a
# ringattn header or reply over UCX's TCP transport) in the process that
# has CHAOS_CORRUPT_AT=N.
SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
static long seen;
static ssize_t (*real_sendmsg)(int, const struct msghdr*, int);
static ssize_t (*real_send)(int, const void*, size_t, int);
static long target(void) { const char* t = getenv("CHAOS_CORRUPT_AT"); return t ? atol(t) : -1; }
static int hit(size_t len) { return len >= 64 && len <= 200 && ++seen == target(); }
ssize_t send(int fd, const void* buf, size_t len, int flags) {
  if (!real_send) real_send = dlsym(RTLD_NEXT, "send");
  if (hit(len)) {
    char copy[200];
    memcpy(copy, buf, len);
    copy[len - 1 - (seen * 7) % 48] ^= 0x5a;
    return real_send(fd, copy, len, flags);
  }
  return real_send(fd, buf, len, flags);
}
ssize_t sendmsg(int fd, const struct msghdr* m, int flags) {
  if (!real_sendmsg) real_sendmsg = dlsym(RTLD_NEXT, "sendmsg");
  size_t len = 0;
  for (size_t i = 0; i < m->msg_iovlen; ++i) len += m->msg_iov[i].iov_len;
  if (hit(len)) {
    char copy[200];
    size_t at = 0;
    for (size_t i = 0; i < m->msg_iovlen; ++i) {
      memcpy(copy + at, m->msg_iov[i].iov_base, m->msg_iov[i].iov_len);
      at += m->msg_iov[i].iov_len;
    }
    copy[len - 1 - (seen * 7) % 48] ^= 0x5a;
    struct iovec one = {copy, len};
    struct msghdr c = *m;
    c.msg_iov = &one;
    c.msg_iovlen = 1;
    return real_sendmsg(fd, &c, flags);
  }
  return real_sendmsg(fd, m, flags);
}
"""

# Runs the tool with the shim in the victim rank only (OpenMPI's rank variable).
WRAPPER = """#!/bin/sh
if [ "$OMPI_COMM_WORLD_RANK" = "$CHAOS_VICTIM" ] && [ -n "$CHAOS_SHIM" ]; then
  export LD_PRELOAD="$CHAOS_SHIM"
else
  unset CHAOS_CORRUPT_AT
fi
exec "$@"
"""


JOB = "CHAOS_JOB=%d" % os.getpid()  # marks this script's ranks (and no one else's)


def our_ranks(name):
    """{rank: pid} of this script's running ranks (by OMPI_COMM_WORLD_RANK)."""
    pids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            if os.path.basename(os.readlink("/proc/%s/exe" % p)) != name:
                continue
            env = open("/proc/%s/environ" % p, "rb").read().split(b"\0")
        except OSError:
            continue
        if JOB.encode() not in env:
            continue
        for e in env:
            if e.startswith(b"OMPI_COMM_WORLD_RANK="):
                pids[int(e.split(b"=")[1])] = int(p)
    return pids


def kill_all(name):
    for pid in our_ranks(name).values():
        for sig in (signal.SIGKILL, signal.SIGCONT):
            try:
                os.kill(pid, sig)
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="the ringattn-run binary")
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--np", type=int, default=3)
    ap.add_argument("--timeout-ms", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kinds", default="kill,stop,delay,corrupt")
    ap.add_argument("--table", help="write the result table (Markdown) here")
    ap.add_argument("--cycle", action="store_true",
                    help="take the kinds in turn (every kind in a short run) instead of at random")
    a = ap.parse_args()
    if not (1 <= a.trials <= 100000 and 2 <= a.np <= 64 and 100 <= a.timeout_ms <= 600000):
        ap.error("--trials in [1, 100000], --np in [2, 64], --timeout-ms in [100, 600000]")
    kinds = a.kinds.split(",")
    if not kinds or any(k not in ("kill", "stop", "delay", "corrupt") for k in kinds):
        ap.error("--kinds: a list of kill, stop, delay, corrupt")
    run = os.path.abspath(a.run)
    name = os.path.basename(os.path.realpath(run))
    timeout = a.timeout_ms / 1000.0
    rng = random.Random(a.seed)
    tmp = tempfile.mkdtemp(prefix="ringattn-chaos-")
    try:
        B, S, H, Hk, D = 1, 1536, 4, 2, 64
        gen = random.Random(3)
        for nm, heads in (("q", H), ("k", Hk), ("v", Hk), ("do", H)):
            write_npy(os.path.join(tmp, nm + ".npy"), (B, S, heads, D),
                      [gen.gauss(0, 1) for _ in range(B * S * heads * D)])
        shim = os.path.join(tmp, "shim.so")
        with open(os.path.join(tmp, "shim.c"), "w") as f:
            f.write(SHIM)
        subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", shim, os.path.join(tmp, "shim.c"), "-ldl"],
                       check=True)
        wrapper = os.path.join(tmp, "wrap.sh")
        with open(wrapper, "w") as f:
            f.write(WRAPPER)
        os.chmod(wrapper, 0o755)
        common = ["--q", tmp + "/q.npy", "--k", tmp + "/k.npy", "--v", tmp + "/v.npy",
                  "--dout", tmp + "/do.npy", "--causal", "--sharding", "zigzag"]
        launch = [a.mpirun, "--allow-run-as-root", "--oversubscribe", "-np", str(a.np), wrapper, run]
        env = dict(os.environ, RINGATTN_TIMEOUT_MS=str(a.timeout_ms))
        env[JOB.split("=")[0]] = JOB.split("=")[1]

        def outputs(d):
            return {f: open(os.path.join(d, f + ".npy"), "rb").read()
                    for f in ("out", "lse", "dq", "dk", "dv")}

        ref_dir = os.path.join(tmp, "ref")
        os.mkdir(ref_dir)
        t0 = time.monotonic()
        subprocess.run(launch + common + ["--comm", "ucx", "--out-dir", ref_dir], env=env, check=True,
                       capture_output=True, timeout=120)
        clean = time.monotonic() - t0
        ref = outputs(ref_dir)
        print("chaos: W=%d, timeout %.1f s, clean run %.2f s, %d trials" % (a.np, timeout, clean, a.trials))

        table = collections.defaultdict(collections.Counter)
        slowest = collections.defaultdict(float)
        failures = []
        notes = []  # passing trials whose output is worth reading
        for trial in range(a.trials):
            kind = kinds[trial % len(kinds)] if a.cycle else rng.choice(kinds)
            victim = rng.randrange(a.np)
            moment = rng.uniform(0.0, clean)
            out_dir = os.path.join(tmp, "t%d" % trial)
            os.mkdir(out_dir)
            tenv = dict(env, CHAOS_VICTIM=str(victim))
            if kind == "corrupt":
                # UCX over TCP, so that the messages pass through send/sendmsg.
                tenv.update(UCX_TLS="tcp,self", CHAOS_SHIM=shim, CHAOS_CORRUPT_AT=str(rng.randint(1, 40)))
            log = open(os.path.join(tmp, "t%d.log" % trial), "w+")
            start = time.monotonic()
            job = subprocess.Popen(launch + common + ["--comm", "ucx", "--out-dir", out_dir], env=tenv,
                                   stdout=log, stderr=subprocess.STDOUT)
            fault_at = start
            faulted = kind == "corrupt"
            resume_at = None
            released = None  # stop: when the other ranks had all exited
            pid = None
            while job.poll() is None:
                now = time.monotonic()
                if not faulted and now - start >= moment:
                    pid = our_ranks(name).get(victim)
                    if pid is not None:
                        os.kill(pid, signal.SIGKILL if kind == "kill" else signal.SIGSTOP)
                        faulted, fault_at = True, now
                        if kind == "delay":
                            resume_at = now + rng.uniform(0.1, 0.5) * timeout
                if resume_at is not None and now >= resume_at:
                    try:
                        os.kill(pid, signal.SIGCONT)
                    except OSError:
                        pass
                    resume_at = None
                if kind == "stop" and faulted and released is None:
                    # Every other rank has exited: the launcher would wait for
                    # the stopped one forever; that is the test's to end.
                    if not set(our_ranks(name)) - {victim}:
                        released = now
                        kill_all(name)
                if now - max(fault_at, start) > timeout + SLACK + 60:
                    break
                time.sleep(0.005)
            hung = job.poll() is None
            if hung:
                job.kill()
                kill_all(name)
                job.wait()
            elapsed = (released or time.monotonic()) - (fault_at if faulted else start)
            if kind == "stop" and pid is not None:
                kill_all(name)  # the stopped rank, should the launcher have left it
            log.seek(0)
            text = log.read()
            log.close()
            try:
                got = outputs(out_dir)
            except OSError:
                got = None
            if hung:
                outcome = "HANG"
            elif job.returncode == 0:
                outcome = "correct" if got == ref else "WRONG (exit 0)"
            elif released is not None and got == ref:
                # The others finished with the right outputs; only the stopped
                # rank (killed by the test) was left.
                outcome = "correct"
            else:
                # A rank named by ringattn, or by mpirun (which ends the job
                # at once when a rank dies), or MPI's start-up, which cannot
                # name one (see docs/RELIABILITY.md).
                named = re.search(r"ringattn[-a-z]*: .*(rank \d|MPI_Init_thread did not return)|"
                                  r"mpirun noticed that process rank \d", text) is not None
                if not named and "Primary job  terminated normally" in text:
                    # The launcher ended every rank before any could print.
                    outcome = "error, ended by mpirun unnamed"
                elif not named:
                    outcome = "error NOT naming a rank"
                elif elapsed > timeout + SLACK + (clean if kind == "corrupt" else 0):
                    outcome = "SLOW error"
                else:
                    outcome = "error"
            if not faulted:
                kind_label = kind + " (finished first)"
            else:
                kind_label = kind
            table[kind_label][outcome] += 1
            if outcome in ("error", "correct") or outcome.startswith("error"):
                slowest[kind_label] = max(slowest[kind_label], elapsed if job.returncode else 0)
            ok = outcome in ("correct", "error", "error, ended by mpirun unnamed")
            first = next((l for l in text.splitlines() if l.startswith("ringattn")), "")
            print("trial %3d: %-8s rank %d at %.2f s -> %s (%.2f s)%s%s" %
                  (trial, kind, victim, moment, outcome, elapsed, "" if ok else "  <-- FAIL",
                   "\n           " + first[:160] if first else ""))
            if not ok:
                failures.append((trial, kind, outcome, text[-2000:]))
            elif "unnamed" in outcome:
                notes.append((trial, kind, outcome, text[-2000:]))
            shutil.rmtree(out_dir, ignore_errors=True)

        outcomes = ["correct", "error", "error, ended by mpirun unnamed", "SLOW error", "error NOT naming a rank", "WRONG (exit 0)", "HANG"]
        lines = ["| fault | trials | " + " | ".join(outcomes) + " | slowest error exit (s) |",
                 "|---|---" * 1 + "|---" * (len(outcomes) + 1) + "|"]
        for k in sorted(table):
            c = table[k]
            lines.append("| %s | %d | %s | %s |" % (k, sum(c.values()), " | ".join(str(c[o]) for o in outcomes),
                                                    "%.2f" % slowest[k] if slowest[k] else "-"))
        summary = "\n".join(lines)
        print(summary)
        if a.table:
            with open(a.table, "w") as f:
                f.write("W=%d ranks (ringattn-run --comm ucx under mpirun, forward and backward, "
                        "S=%d), timeout %.1f s, clean run %.2f s, seed %d\n\n%s\n" %
                        (a.np, S, timeout, clean, a.seed, summary))
        for trial, kind, outcome, text in notes:
            print("---- trial %d (%s, not a failure): %s\n%s" % (trial, kind, outcome, text))
        for trial, kind, outcome, text in failures:
            print("---- trial %d (%s): %s\n%s" % (trial, kind, outcome, text))
        return 1 if failures else 0
    finally:
        kill_all(name)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
