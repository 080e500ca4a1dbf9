#!/usr/bin/env bash
# One GPU check of the CUDA attention kernels, sized for a lent H100/H200
# (nvcc 13, cmake, ninja, python3 with PyTorch; no package registry, so no
# Abseil or GoogleTest dev packages can be assumed there).
#
# Two halves:
#   tools/gpu_check.sh prepare   on the build machine: builds the gpu-labelled
#                                test binary and the timing binary for sm_90
#                                and copies them, with the shared libraries
#                                they need that are not glibc, into
#                                build-carry/ (small; carry it to the GPU).
#   tools/gpu_check.sh [run]     on the GPU machine (the device tool's `run`,
#                                carry ["build-carry"]), from the repo root:
#     1. the gpu tests: the carried cuda_kernels_test if it starts there
#        (run in 8 parallel shards = `ctest -L gpu`); otherwise a CMake build
#        there (build-gpu, -DCMAKE_CUDA_ARCHITECTURES=90) and `ctest -L gpu`
#        when its dependencies exist; otherwise the missing ones are named
#        and the tests are reported NOT RUN;
#     2. cuda_attn_bench --check: ours against naive fp32 GPU kernels (needs
#        nvcc only; built there with nvcc if the carried one does not start),
#        once with the sm_80 forward and once with the Hopper one
#        (--kernel sm90a; cuda_kernels_test's CudaSm90a* tests run it too);
#     3. the ring tests (cuda_ring_test, cuda_local_comm_test,
#        run_tool_cuda_test), the one-rank nccl tests, and the cuda-local ring
#        bench at W 1/2/4/8 (ring.txt);
#     4. cuda_attn_bench --bench (and --bench --kernel sm90a, the Hopper
#        forward) and bench/sdpa_bench.py (PyTorch SDPA, flash and cuDNN
#        backends) on the same shapes, D=128 first, and one table of TFLOP/s
#        with the ratio ours / peer (a run cut by the budget prints the rows
#        it has).
#     5. memcheck (compute-sanitizer) on a few small cases, beside step 1,
#        and the tile-shape sweep (cuda_tune --tune) and Nsight Compute on
#        the D=128 forward and backward after the timings.
#     6. the Python package's CUDA tests (tests/python/test_cuda.py) with
#        the extension prepare built, when the python3 versions match.
#   Logs go to $OUT (default out/gpu_check): setup.log, table.txt, and
#   logs.tgz holding tests.log, memcheck.log, check.log, bench.log,
#   ours.csv, sdpa.csv, tune.log and ncu.txt. The whole run stays well inside 8
#   minutes: each step's timeout is cut to a 450 s budget.
#
# Example (device tool): run(command="tools/gpu_check.sh", carry=["build-carry"],
#                             timeout_s=540)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE="${1:-run}"
CARRY="$ROOT/build-carry"
NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
CUDA_SOURCES=(attention/cuda/instantiations/fwd_hdim*.cu attention/cuda/instantiations/bwd_hdim*.cu
              attention/cuda/merge.cu)
SM90A_SOURCES=(attention/cuda/instantiations/fwd_sm90_*.cu attention/cuda/tensor_map.cc)

prepare() {
  local build="$ROOT/build-gpu-prep"
  cmake -S "$ROOT" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DRINGATTN_CUDA=ON \
    "-DCMAKE_EXE_LINKER_FLAGS=-Wl,--as-needed" || return 1
  cmake --build "$build" -j"$(nproc)" --target cuda_kernels_test cuda_attn_bench cuda_tune \
    cuda_ring_test cuda_local_comm_test run_tool_cuda_test nccl_comm_test nccl_ring_test \
    ringattn-run ringattn-bench || return 1
  # The Python package for this machine's python3 (the GPU machine reaches no
  # registry: nanobind and pytest travel too); step 6 of the run uses it
  # when the GPU machine's python3 has the same version.
  local pydeps="$build/pydeps"
  python3 -m pip install -q --target "$pydeps" nanobind pytest pytest-timeout || return 1
  cmake -S "$ROOT" -B "$build" -DRINGATTN_PYTHON=ON -DPython_EXECUTABLE="$(command -v python3)" \
    -Dnanobind_DIR="$(PYTHONPATH="$pydeps" python3 -m nanobind --cmake_dir)" || return 1
  cmake --build "$build" -j"$(nproc)" --target _C || return 1
  rm -rf "$CARRY"
  mkdir -p "$CARRY/bin" "$CARRY/lib" "$CARRY/python/ringattn"
  cp python/ringattn/*.py "$build"/python/_C*.so "$CARRY/python/ringattn/"
  cp -r "$pydeps"/{pytest,_pytest,pluggy,iniconfig,packaging,pytest_timeout.py,py.py} \
    "$CARRY/python/" 2>/dev/null || true
  python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' >"$CARRY/python/version"
  cp "$build/tests/attention/cuda_kernels_test" "$build/bench/cuda_attn_bench" \
    "$build/bench/cuda_tune" "$build/tests/runtime/cuda_ring_test" \
    "$build/tests/comm/cuda_local_comm_test" "$build/tests/tools/run_tool_cuda_test" \
    "$build/tests/comm/nccl_comm_test" "$build/tests/runtime/nccl_ring_test" \
    "$build/tools/ringattn-run" "$build/tools/ringattn-bench" "$CARRY/bin/"
  # Shared libraries the binaries need, except glibc's own (the GPU
  # machine's newer glibc runs binaries built against this one).
  for bin in "$CARRY"/bin/* "$CARRY"/python/ringattn/_C*.so; do
    ldd "$bin" | awk '/=> \//{print $3}'
  done | sort -u | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libresolv.so*) ;;
      *) cp -L "$lib" "$CARRY/lib/" ;;
    esac
  done
  ls -la "$CARRY/bin" "$CARRY/lib"
  # One xz archive: the binaries and libraries (OpenBLAS alone is 35 MB)
  # would pass the device tool's 64 MiB limit on what travels.
  tar cf - -C "$CARRY" bin lib python | xz -6 -T"$(nproc)" >"$ROOT/carry.tar.xz.tmp" || return 1
  rm -rf "$CARRY"
  mkdir -p "$CARRY"
  mv "$ROOT/carry.tar.xz.tmp" "$CARRY/carry.tar.xz"
  du -sh "$CARRY"
  echo "ready: carry [\"build-carry\"] and run tools/gpu_check.sh on the GPU machine"
}

if [[ "$MODE" == "prepare" ]]; then
  prepare
  exit $?
fi
if [[ "$MODE" != "run" ]]; then
  echo "usage: $0 [prepare|run]" >&2
  exit 2
fi

START=$(date +%s)
OUT="${OUT:-$ROOT/out/gpu_check}"
mkdir -p "$OUT"
SETUP="$OUT/setup.log"
: >"$SETUP"
log() { echo "[gpu_check $(date +%T)] $*" | tee -a "$SETUP"; }

# Every step's timeout is cut to what is left of a 450-second budget, so
# that the whole check ends well inside 8 minutes even when a step hangs.
DEADLINE=$((START + 450))
cap() {  # cap SECONDS: min(SECONDS, time left), at least 1
  local left=$((DEADLINE - $(date +%s)))
  (( left < 1 )) && left=1
  echo $(( $1 < left ? $1 : left ))
}
log "repo $ROOT, OUT $OUT"
{
  nvidia-smi 2>&1 || echo "nvidia-smi failed"
  "$NVCC" --version 2>&1 || echo "no nvcc"
  cmake --version 2>&1 | head -1 || echo "no cmake"
  python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' 2>&1
  uname -a
  ldd --version 2>&1 | head -1
} >>"$SETUP" 2>&1

# ---------------------------------------------------------------- binaries
if [[ -f "$CARRY/carry.tar.xz" && ! -d "$CARRY/bin" ]]; then
  log "unpacking build-carry/carry.tar.xz"
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
    "$CARRY/carry.tar.xz" "$CARRY" >>"$SETUP" 2>&1 || log "unpacking FAILED (see setup.log)"
fi
TEST_BIN=""
BENCH_BIN=""
TEST_MODE="not run"
# The carried libraries (libstdc++ included) serve the carried binaries
# only, never python3 and PyTorch.
carried() { LD_LIBRARY_PATH="$CARRY/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"; }
if [[ -x "$CARRY/bin/cuda_kernels_test" ]]; then
  if carried timeout 60 "$CARRY/bin/cuda_kernels_test" --gtest_list_tests >>"$SETUP" 2>&1; then
    TEST_BIN="$CARRY/bin/cuda_kernels_test"
    TEST_MODE="carried binary"
    log "carried cuda_kernels_test starts here"
  else
    log "carried cuda_kernels_test does not start here (see setup.log): building here"
  fi
else
  log "no carried build-carry/ (run 'tools/gpu_check.sh prepare' where the deps are, carry build-carry)"
fi
if [[ -x "$CARRY/bin/cuda_attn_bench" ]]; then
  carried timeout 30 "$CARRY/bin/cuda_attn_bench" --help >>"$SETUP" 2>&1
  rc=$?
  if [[ $rc == 2 ]]; then  # its usage message: the binary starts
    BENCH_BIN="$CARRY/bin/cuda_attn_bench"
  else
    log "carried cuda_attn_bench does not start here (rc=$rc)"
  fi
fi

if [[ -z "$TEST_BIN" ]]; then
  # Build with CMake here; this needs Abseil, GoogleTest, Google Benchmark,
  # OpenBLAS and libxsmm development packages, which a bare GPU image lacks.
  if timeout "$(cap 60)" cmake -S "$ROOT" -B "$ROOT/build-gpu" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_CUDA_ARCHITECTURES=90 -DRINGATTN_CUDA=ON >>"$SETUP" 2>&1 &&
     timeout "$(cap 200)" cmake --build "$ROOT/build-gpu" -j"$(nproc)" \
      --target cuda_kernels_test cuda_attn_bench >>"$SETUP" 2>&1; then
    TEST_MODE="ctest in build-gpu"
    BENCH_BIN="$ROOT/build-gpu/bench/cuda_attn_bench"
    log "built build-gpu here"
  else
    missing=$(grep -oE 'Could not find a package configuration file provided by "[^"]+"|libxsmm not found|Could NOT find [A-Za-z0-9_]+' \
              "$SETUP" | sort -u | tr '\n' ';')
    log "CMake build here failed; missing dependencies: ${missing:-unknown (see setup.log)}"
    log "the gpu tests are NOT RUN; the nvcc-only self-check below still compares against naive GPU kernels"
  fi
fi
if [[ -z "$BENCH_BIN" ]]; then
  log "building cuda_attn_bench with nvcc alone (sm_90)"
  mkdir -p "$ROOT/build-gpu/nvcc"
  pids=()
  for src in "${CUDA_SOURCES[@]}" bench/cuda_attn_bench.cu; do
    obj="$ROOT/build-gpu/nvcc/$(basename "$src").o"
    timeout "$(cap 200)" "$NVCC" -std=c++20 -O3 --expt-relaxed-constexpr -I"$ROOT" \
      -gencode arch=compute_90,code=sm_90 -c "$src" -o "$obj" >>"$SETUP" 2>&1 &
    pids+=($!)
  done
  # The Hopper forward: sm_90a only, and no calls (attention/CMakeLists.txt).
  for src in "${SM90A_SOURCES[@]}"; do
    obj="$ROOT/build-gpu/nvcc/$(basename "$src").o"
    timeout "$(cap 200)" "$NVCC" -std=c++20 -O3 --expt-relaxed-constexpr -I"$ROOT" \
      -DRINGATTN_CUDA_NO_CALLS -gencode arch=compute_90a,code=sm_90a -c "$src" -o "$obj" \
      >>"$SETUP" 2>&1 &
    pids+=($!)
  done
  ok=1
  for p in "${pids[@]}"; do wait "$p" || ok=0; done
  if [[ $ok == 1 ]] && "$NVCC" -o "$ROOT/build-gpu/nvcc/cuda_attn_bench" "$ROOT"/build-gpu/nvcc/*.o \
       >>"$SETUP" 2>&1; then
    BENCH_BIN="$ROOT/build-gpu/nvcc/cuda_attn_bench"
  else
    log "nvcc build of cuda_attn_bench FAILED (see setup.log)"
  fi
fi
log "setup done in $(( $(date +%s) - START )) s"

# ---------------------------------------------------------------- memcheck
# compute-sanitizer's memcheck over a few small cases (forward, backward,
# merge, odd lengths), beside the test shards; it is waited for before any
# timing starts.
SAN_PID=""
SANITIZER="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
if [[ -n "$TEST_BIN" && -n "$SANITIZER" ]]; then
  log "memcheck: $SANITIZER on a few small cases"
  carried timeout "$(cap 150)" "$SANITIZER" --tool memcheck --error-exitcode 9 "$TEST_BIN" --gtest_brief=1 \
    '--gtest_filter=*sq7_sk7*:*sq129_sk129_h2_hk1_d*_causal_u_u_bf16*:*sq1_sk1000*:CudaKernel.MergeMatchesHost:CudaKernel.RowDotMatchesHost:CudaKernel.DeterministicModeIsBitwiseReproducible' \
    >"$OUT/memcheck.log" 2>&1 &
  SAN_PID=$!
fi

# ---------------------------------------------------------------- tests
# run_shards BIN LOG SECONDS: a carried gtest binary in 8 parallel shards,
# their outputs appended to LOG; non-zero when a shard failed.
run_shards() {
  local bin="$1" logf="$2" secs="$3" rc=0 i pids=()
  for i in 0 1 2 3 4 5 6 7; do
    GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$i RINGATTN_RUN_BINARY="$CARRY/bin/ringattn-run" \
      carried timeout "$(cap "$secs")" "$bin" --gtest_brief=1 >"$logf.shard$i" 2>&1 &
    pids+=($!)
  done
  for i in 0 1 2 3 4 5 6 7; do
    wait "${pids[$i]}" || rc=1
    { echo "=== $(basename "$bin") shard $i"; cat "$logf.shard$i"; } >>"$logf"
    rm -f "$logf.shard$i"
  done
  return $rc
}
# summarize LOG: "passed N, skipped N, failed N" over gtest's summaries.
gtest_count() { grep -oE "^\[  $1 *\] [0-9]+ test" "$2" | awk '{s += $4} END {print s + 0}'; }
summarize() {
  echo "passed $(gtest_count PASSED "$1"), skipped $(gtest_count SKIPPED "$1"), failed $(grep -cE '^\[  FAILED  \] [A-Za-z]' "$1")"
}

TESTS_RC=0
case "$TEST_MODE" in
  "carried binary")
    log "gpu tests: cuda_kernels_test in 8 shards"
    : >"$OUT/tests.log"
    run_shards "$TEST_BIN" "$OUT/tests.log" 180 || TESTS_RC=1
    ;;
  "ctest in build-gpu")
    log "gpu tests: ctest -L gpu"
    (cd "$ROOT/build-gpu" && timeout "$(cap 180)" ctest -L gpu -j 8 --output-on-failure) >"$OUT/tests.log" 2>&1 ||
      TESTS_RC=1
    ;;
  *)
    echo "gpu tests NOT RUN: no test binary could start or be built here (see setup.log)" \
      >"$OUT/tests.log"
    TESTS_RC=2
    ;;
esac
log "gpu tests ($TEST_MODE): rc=$TESTS_RC; $(summarize "$OUT/tests.log")"
grep -E '^\[  FAILED  \]|Failure|error' "$OUT/tests.log" | head -20 | tee -a "$SETUP"

# ---------------------------------------------------------------- ring tests
# The ring on one GPU (cuda backend, cuda-local communicator), the
# communicator's conformance suite on device buffers, and ringattn-run
# --backend cuda against --backend cpu: each in 8 shards.
RING_RC=none
if [[ "$TEST_MODE" == "carried binary" ]]; then
  RING_RC=0
  for t in cuda_ring_test cuda_local_comm_test run_tool_cuda_test; do
    [[ -x "$CARRY/bin/$t" ]] || { log "$t: not carried"; RING_RC=1; continue; }
    log "ring tests: $t in 8 shards"
    run_shards "$CARRY/bin/$t" "$OUT/ring_tests.log" 150 || RING_RC=1
  done
  log "ring tests: rc=$RING_RC; $(summarize "$OUT/ring_tests.log")"
  grep -E '^\[  FAILED  \]|Failure' "$OUT/ring_tests.log" | head -20 | tee -a "$SETUP"
fi

# ---------------------------------------------------------------- nccl smoke
# One GPU cannot hold two NCCL ranks; RINGATTN_NCCL_TEST_ONE_RANK=1 runs the
# nccl conformance suite as a one-rank world (setup, self-messages,
# barrier, abort). libnccl comes from PyTorch's wheel (not carried: 218 MB).
NCCL_RC=none
if [[ -x "$CARRY/bin/nccl_comm_test" ]]; then
  NCCL_LIB="${RINGATTN_NCCL_LIBRARY:-$(find /opt /usr /root -name 'libnccl.so.2*' 2>/dev/null | head -1)}"
  if [[ -n "$NCCL_LIB" ]]; then
    log "nccl one-rank smoke test with $NCCL_LIB"
    RINGATTN_NCCL_LIBRARY="$NCCL_LIB" RINGATTN_NCCL_TEST_ONE_RANK=1 carried timeout "$(cap 90)" \
      "$CARRY/bin/nccl_comm_test" --gtest_brief=1 >"$OUT/nccl.log" 2>&1
    NCCL_RC=$?
    log "nccl smoke rc=$NCCL_RC: $(grep -E '^\[  (PASSED|SKIPPED|FAILED) ' "$OUT/nccl.log" | tr '\n' ' ')"
    if [[ -x "$CARRY/bin/nccl_ring_test" ]]; then
      # The ring over a one-rank NCCL world (no transfer; the harness, the
      # caller's-stream path and the checks on the GPU).
      RINGATTN_NCCL_LIBRARY="$NCCL_LIB" RINGATTN_NCCL_TEST_ONE_RANK=1 carried timeout "$(cap 90)" \
        "$CARRY/bin/nccl_ring_test" --gtest_brief=1 >>"$OUT/nccl.log" 2>&1 || NCCL_RC=$?
      log "nccl ring one-rank: $(grep -E '^\[  (PASSED|SKIPPED|FAILED) ' "$OUT/nccl.log" | tail -n +2 | tr '\n' ' ')"
    fi
  else
    log "nccl smoke: no libnccl.so.2 found here"
  fi
fi

SAN_RC=none
if [[ -n "$SAN_PID" ]]; then
  wait "$SAN_PID"; SAN_RC=$?
  log "memcheck rc=$SAN_RC: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1)"
  grep -E '^========= (Invalid|Program hit|  at )' "$OUT/memcheck.log" | head -12 | tee -a "$SETUP"
fi

# ---------------------------------------------------------------- python package
# tests/python/test_cuda.py (ringattn.attention on CUDA tensors against
# float64; the ring over NCCL skips with one GPU) with the extension prepare
# built, when this machine's python3 is the version it was built for and
# has PyTorch with CUDA. Otherwise NOT RUN, saying why: building it here
# needs the C++ dependencies of pip install . (Abseil, libxsmm, UCX, ...).
PY_RC="not run"
PY_WANT="$(cat "$CARRY/python/version" 2>/dev/null)"
PY_HAVE="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"
if [[ -z "$PY_WANT" ]]; then
  log "python package: NOT RUN (no carried extension)"
elif [[ "$PY_WANT" != "$PY_HAVE" ]]; then
  log "python package: NOT RUN (carried for python $PY_WANT, this machine has $PY_HAVE)"
else
  log "python package: tests/python/test_cuda.py with the carried extension"
  # The extension's libraries, but not the carried C++ runtime: PyTorch
  # needs this machine's own libstdc++.
  mkdir -p "$CARRY/pylib"
  for lib in "$CARRY"/lib/*; do
    case "$(basename "$lib")" in libstdc++*|libgcc_s*) ;; *) ln -sf "$lib" "$CARRY/pylib/" ;; esac
  done
  PYTHONPATH="$CARRY/python" LD_LIBRARY_PATH="$CARRY/pylib" timeout "$(cap 120)" \
    python3 -m pytest -q -rs -p no:cacheprovider tests/python/test_cuda.py >"$OUT/python.log" 2>&1
  PY_RC=$?
  log "python package rc=$PY_RC: $(tail -1 "$OUT/python.log")"
fi

# ---------------------------------------------------------------- self-check
CHECK_RC=2
CHECK90_RC=2
if [[ -n "$BENCH_BIN" ]]; then
  log "self-check: $BENCH_BIN --check"
  carried timeout "$(cap 60)" "$BENCH_BIN" --check >"$OUT/check.log" 2>&1
  CHECK_RC=$?
  grep -E 'FAIL|summary' "$OUT/check.log" | tee -a "$SETUP"
  log "self-check: $BENCH_BIN --check --kernel sm90a (the Hopper forward)"
  carried timeout "$(cap 60)" "$BENCH_BIN" --check --kernel sm90a >"$OUT/check_sm90a.log" 2>&1
  CHECK90_RC=$?
  grep -E 'FAIL|summary' "$OUT/check_sm90a.log" | tee -a "$SETUP"
fi

# ---------------------------------------------------------------- GPU ring
# The cuda-local ring, W in {1, 2, 4, 8} virtual ranks on this one GPU, on
# the same total problem (bf16, S=32768, H=16, D=128), against one rank
# doing all of it (the bench's comparison run): the ring's overhead, since
# the ranks share the chip. Before the kernel timings: issue 6's figures
# must not be the ones a tight budget cuts.
if [[ -x "$CARRY/bin/ringattn-bench" ]]; then
  for causal in false true; do
    for w in 1 2 4 8; do
      log "ring bench: cuda-local W=$w causal=$causal"
      carried timeout "$(cap 60)" "$CARRY/bin/ringattn-bench" --backend cuda --comm cuda-local \
        --dtype bf16 --ranks "$w" --seq 32768 --heads 16 --kv-heads 16 --head-dim 128 \
        --sharding zigzag --causal="$causal" --iters 5 --warmup 2 \
        --json "$OUT/ring_w${w}_causal_${causal}.json" >>"$OUT/ring_bench.log" 2>&1 ||
        log "ring bench rc=$? (see ring_bench.log)"
    done
  done
  python3 - "$OUT" >"$OUT/ring.txt" 2>&1 <<'PY'
import glob, json, os, sys
rows = []
for f in sorted(glob.glob(os.path.join(sys.argv[1], "ring_w*_causal_*.json"))):
    try:
        rows.append(json.load(open(f)))
    except Exception as e:
        print(f"{os.path.basename(f)}: unreadable ({e})")
rows.sort(key=lambda r: (r["causal"], r["ranks"]))
print("cuda-local ring on one GPU, bf16, S=32768, H=16, D=128, zigzag; speedup = 1 rank / W ranks (ideal 1)")
print(f"{'causal':>6} {'W':>2} | {'fwd ms':>8} {'bwd ms':>8} | {'fwd x1':>7} {'bwd x1':>7} | {'overlap f':>9} {'overlap b':>9}")
for r in rows:
    f = lambda k: float("nan") if r.get(k) is None else r[k]
    print(f"{str(r['causal']):>6} {r['ranks']:>2} | {f('fwd_ms'):8.2f} {f('bwd_ms'):8.2f} | "
          f"{f('speedup_vs_1_rank'):7.3f} {f('bwd_speedup_vs_1_rank'):7.3f} | "
          f"{f('overlap_efficiency'):9.3f} {f('bwd_overlap_efficiency'):9.3f}")
PY
  cat "$OUT/ring.txt"
  # The one performance gate (tools/perf_gate.py) on the same JSONs,
  # against the H100 baseline of ratios (W=1 has none: a note).
  python3 "$ROOT/tools/perf_gate.py" --baseline "$ROOT/bench/baselines/h100-cuda-local.json" \
    --allow-missing "$OUT"/ring_w*_causal_*.json >"$OUT/perf_gate.txt" 2>&1 ||
    log "perf gate rc=$? (see perf_gate.txt)"
  cat "$OUT/perf_gate.txt"
  # Every strategy on cuda-local W=4 (docs/PLANNER.md), with the planner's
  # calibration and prediction beside each measurement.
  for strategy in ring allgather ulysses hybrid:2x2; do
    log "strategy bench: cuda-local W=4 $strategy"
    carried timeout "$(cap 40)" "$CARRY/bin/ringattn-bench" --backend cuda --comm cuda-local \
      --dtype bf16 --ranks 4 --seq 32768 --heads 16 --kv-heads 4 --head-dim 128 --causal \
      --strategy "$strategy" --plan --calibrate --compare=false --iters 3 --warmup 1 \
      --json "$OUT/strategy_${strategy/:/_}.json" >>"$OUT/strategy_bench.log" 2>&1 ||
      log "strategy bench $strategy rc=$? (see strategy_bench.log)"
  done
  grep -h "measured\|<- choice\|planner calibration" "$OUT/strategy_bench.log" >"$OUT/strategies.txt" || true
  cat "$OUT/strategies.txt"
fi

# ---------------------------------------------------------------- timing
if [[ -n "$BENCH_BIN" ]]; then
  log "timing ours"
  carried timeout "$(cap 160)" "$BENCH_BIN" --bench --reps 10 --csv "$OUT/ours.csv" >"$OUT/bench.log" 2>&1 ||
    log "ours: bench rc=$? (see bench.log)"
  log "timing ours, the Hopper forward (--kernel sm90a)"
  carried timeout "$(cap 60)" "$BENCH_BIN" --bench --kernel sm90a --reps 10 --csv "$OUT/ours_sm90a.csv" \
    >"$OUT/bench_sm90a.log" 2>&1 || log "ours sm90a: bench rc=$? (see bench_sm90a.log)"
fi
log "timing PyTorch SDPA"
PYTHONUNBUFFERED=1 timeout "$(cap 190)" python3 "$ROOT/bench/sdpa_bench.py" --reps 10 --csv "$OUT/sdpa.csv" \
  --ours "$OUT/ours.csv" --ours "$OUT/ours_sm90a.csv" >"$OUT/table.txt" 2>&1 ||
  log "sdpa_bench rc=$? (see table.txt)"

# ---------------------------------------------------------------- tile sweep
# The launched tile shapes against their neighbours (attention/cuda/traits.h).
if [[ -x "$CARRY/bin/cuda_tune" ]]; then
  log "tile sweep: cuda_tune --tune"
  carried timeout "$(cap 90)" "$CARRY/bin/cuda_tune" --tune --reps 10 >"$OUT/tune.log" 2>&1 ||
    log "cuda_tune rc=$? (see tune.log)"
fi

# ---------------------------------------------------------------- profile
# Nsight Compute on the D=128, S=8192 forward and backward (one launch each):
# throughput against the ceilings, warp stalls, occupancy. Clocks left alone.
NCU="$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)"
if [[ -n "$NCU" && -n "$BENCH_BIN" ]]; then
  for k in ForwardKernel BackwardKernel ForwardSm90Kernel; do
    log "ncu: $k, D=128 S=8192"
    kernel=sm80
    [[ $k == ForwardSm90Kernel ]] && kernel=sm90a
    carried timeout "$(cap 60)" "$NCU" --clock-control none -k "regex:^$k" -c 1 \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
      --section WarpStateStats --section Occupancy --section LaunchStats \
      "$BENCH_BIN" --bench --kernel "$kernel" --reps 1 --shape 128 8192 0 >>"$OUT/ncu.txt" 2>&1 ||
      log "ncu rc=$? (see ncu.txt)"
  done
fi

echo
cat "$OUT/bench.log" 2>/dev/null | tail -15
echo
sed -n '/^TFLOP/,$p' "$OUT/table.txt"
echo
log "tests: $TEST_MODE rc=$TESTS_RC | ring tests rc=$RING_RC | nccl smoke rc=$NCCL_RC | python rc=$PY_RC | memcheck rc=$SAN_RC | self-check rc=$CHECK_RC | self-check sm90a rc=$CHECK90_RC | total $(( $(date +%s) - START )) s"
# The device tool brings back at most 8 files: the detailed logs travel as
# one archive beside setup.log and table.txt.
(cd "$OUT" && ls | grep -vE '^(setup\.log|table\.txt|ring\.txt|logs\.tgz)$' | tar czf logs.tgz -T - &&
  ls | grep -vE '^(setup\.log|table\.txt|ring\.txt|logs\.tgz)$' | xargs -r rm -f)
[[ $TESTS_RC == 0 && $CHECK_RC == 0 && $CHECK90_RC == 0 && ( $RING_RC == 0 || $RING_RC == none ) ]]
