#!/usr/bin/env python3
"""Static statistics of the CUDA attention kernels, without a GPU.

For each kernel of attention/cuda/instantiations/*.cu compiled for one
architecture (default sm_90): registers and spill bytes (ptxas -v), and,
when cuobjdump and nvdisasm are on PATH, the size of its main loop in SASS
(the largest region closed by a backward branch over a barrier) with the
mma, local loads and local stores in it. A spill inside the main loop costs
every tile; outside it, once per CTA. Use it to compare a change of the kernels
before a GPU is lent:

    tools/kernel_stats.py                  # all translation units
    tools/kernel_stats.py fwd_hdim128_bf16 bwd_hdim256_fp16 --arch sm_80

cuobjdump and nvdisasm are not part of the CUDA packages installed here;
PyPI has them (no GPU needed):
    pip download --no-deps -d /tmp/nv nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
    (unzip both wheels; add their nvidia/cu13/bin to PATH)
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NVCC = os.environ.get("NVCC", "/usr/local/cuda/bin/nvcc")
UNITS = os.path.join(ROOT, "attention", "cuda", "instantiations")


def short_name(mangled):
    m = re.search(r"ForwardSm90Kernel.*?FwdSm90TraitsILi(\d+)EEE.*?DTypeE(\d)ELb([01])", mangled)
    if m:
        dtype = {"1": "bf16", "2": "fp16"}.get(m.group(2), "t" + m.group(2))
        return f"FwdSm90Traits<{m.group(1)}> {dtype}{' cap' if m.group(3) == '1' else ''}"
    m = re.search(r"(Forward|Backward|BackwardDq)Kernel.*?(FwdConfig|BwdConfig|BwdDqConfig)"
                  r"I((?:Li-?\d+E|Lb[01]E)+)E.*?DTypeE(\d)ELb([01])", mangled)
    if not m:
        return mangled[:60]
    args = ",".join(re.findall(r"L[ib](-?\d+)E", m.group(3)))
    dtype = {"1": "bf16", "2": "fp16"}.get(m.group(4), "t" + m.group(4))
    return f"{m.group(2)}<{args}> {dtype}{' cap' if m.group(5) == '1' else ''}"


def compile_tu(tu, arch, out_dir):
    cubin = os.path.join(out_dir, tu + ".cubin")
    # The Hopper forward is built for sm_90a alone, with no calls
    # (attention/CMakeLists.txt), whatever --arch says.
    target = ["-gencode=arch=compute_90a,code=sm_90a", "-DRINGATTN_CUDA_NO_CALLS"] \
        if tu.startswith("fwd_sm90") else ["-arch=" + arch]
    cmd = [NVCC, "-I" + ROOT, "-isystem=/usr/local/cuda/include", "-O3", "-DNDEBUG",
           *target, "--expt-relaxed-constexpr", "-std=c++20", "-cubin", "-Xptxas", "-v",
           "-o", cubin, os.path.join(UNITS, tu + ".cu")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"nvcc failed on {tu}:\n{r.stderr}")
    regs = {}
    name = None
    for line in r.stderr.splitlines():
        # The spill line follows "Function properties for <name>" (kernels
        # and the noinline device functions they call alike).
        m = re.search(r"(?:Compiling entry function|Function properties for) '?([^'\s]+)", line)
        if m:
            name = m.group(1)
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and name:
            regs.setdefault(name, {})["spill"] = (int(m.group(1)), int(m.group(2)))
        m = re.search(r"Used (\d+) registers", line)
        if m and name:
            regs.setdefault(name, {})["regs"] = int(m.group(1))
    return cubin, regs


def loop_stats(cubin):
    if not (shutil.which("cuobjdump") and shutil.which("nvdisasm")):
        return {}
    out = subprocess.run(["cuobjdump", "-sass", cubin], capture_output=True, text=True).stdout
    stats = {}
    for func in re.split(r"\n\s*Function : ", out)[1:]:
        name = func.split("\n", 1)[0].strip()
        ins = []
        for line in func.splitlines():
            m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)([^;]*);", line)
            if m:
                ins.append((int(m.group(1), 16), m.group(3), m.group(4)))
        bars = [a for a, op, _ in ins if op.startswith("BAR.SYNC")]
        lo = hi = None
        for a, op, args in ins:
            t = re.search(r"0x([0-9a-f]+)", args) if op == "BRA" else None
            if t and int(t.group(1), 16) < a:
                t = int(t.group(1), 16)
                if any(t <= b <= a for b in bars) and (lo is None or a - t > hi - lo):
                    lo, hi = t, a
        if lo is None:
            continue
        body = [op for a, op, _ in ins if lo <= a <= hi]
        count = lambda p: sum(1 for op in body if op.startswith(p))
        stats[name] = (len(body), count("HMMA") + count("HGMMA"), count("LDL"), count("STL"))
    return stats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("units", nargs="*", help="translation units (default: all kernel .cu files)")
    ap.add_argument("--arch", default="sm_90", help="for the sm_80-class units (fwd_sm90_* are sm_90a)")
    a = ap.parse_args()
    units = a.units or sorted(f[:-3] for f in os.listdir(UNITS) if f.endswith(".cu"))
    have_sass = bool(shutil.which("cuobjdump") and shutil.which("nvdisasm"))
    print(f"{'kernel':44s} {'regs':>4s} {'spill st/ld B':>13s} | "
          + ("main loop: instructions, mma, local ld, local st" if have_sass
             else "(no cuobjdump/nvdisasm on PATH: no loop statistics)"))
    with tempfile.TemporaryDirectory() as tmp:
        for tu in units:
            cubin, regs = compile_tu(tu, a.arch, tmp)
            loops = loop_stats(cubin)
            for name in sorted(regs, key=short_name):
                if "Kernel" not in name:
                    continue
                r = regs[name]
                st, ld = r.get("spill", (0, 0))
                line = f"{short_name(name):44s} {r.get('regs', 0):4d} {st:6d}/{ld:<6d} |"
                if name in loops:
                    n, mma, ldl, stl = loops[name]
                    line += f" {n:5d} {mma:4d} {ldl:4d} {stl:4d}"
                print(line)


if __name__ == "__main__":
    main()
