#!/usr/bin/env bash
# Multi-GPU CI: the ring over several GPUs of one machine, one process per
# GPU over the nccl communicator. For a CI runner with 2 or more NVIDIA
# GPUs, the CUDA Toolkit with NCCL, an MPI launcher (mpirun) and the
# project's build dependencies (tools/setup.sh); python3 reads the JSON.
#
#   1. build: cmake (Release, RINGATTN_CUDA=ON, RINGATTN_NCCL=ON), all targets
#   2. ctest -L gpu: the one-GPU tests (kernels, the ring on cuda-local)
#   3. for N in 2 4 8 (as many as the GPUs allow): the nccl tests under
#      mpirun -np N: nccl_comm_test (the conformance suite on device
#      buffers, fault tests) and nccl_ring_test (the ring against float64,
#      every layout and mask, dtypes, GQA, callers' streams, determinism);
#      a test that skips there is a failure
#   4. for the same N: ringattn-bench --backend cuda --comm nccl under
#      mpirun with --json, weak scaling (N * SEQ_PER_GPU tokens, causal,
#      zigzag, bf16, H 32, Hkv 8, D 128); fails when fwd_gflops_per_rank is
#      more than TOLERANCE below the baseline in bench/baselines/multigpu-nccl.json
#      (tools/perf_gate.py, the one gate)
#      for this GPU and N. Without a baseline entry it prints the figure and
#      how to record it, and does not fail.
# Exit status: 0 when every step passed, 1 otherwise; a summary at the end.
#
# Environment (all optional):
#   BUILD          build directory (default build-multigpu)
#   CUDA_ARCH      CMAKE_CUDA_ARCHITECTURES (default: the first GPU's, e.g. 90)
#   JOBS           build parallelism (default: nproc)
#   MPIRUN         launcher (default: mpirun); MPIRUN_ARGS extra arguments
#   SEQ_PER_GPU    bench tokens per GPU (default 16384); BENCH_ARGS extra flags
#   TOLERANCE      allowed drop below the baseline (default 0.10)
#   BASELINE       baseline file (default bench/baselines/multigpu-nccl.json)
#   RECORD=1       write this run's figures into the baseline file instead
#                  of comparing (commit the file afterwards)
#   LOG_DIR        logs (default $BUILD/multigpu-logs)
#   NCCL_DEBUG, RINGATTN_TIMEOUT_MS are passed to every rank.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
BUILD="${BUILD:-$ROOT/build-multigpu}"
JOBS="${JOBS:-$(nproc)}"
MPIRUN="${MPIRUN:-mpirun}"
SEQ_PER_GPU="${SEQ_PER_GPU:-16384}"
TOLERANCE="${TOLERANCE:-0.10}"
BASELINE="${BASELINE:-$ROOT/bench/baselines/multigpu-nccl.json}"
LOG_DIR="${LOG_DIR:-$BUILD/multigpu-logs}"
BENCH_FLAGS=(--backend cuda --comm nccl --dtype bf16 --heads 32 --kv-heads 8 --head-dim 128
             --causal --sharding zigzag --iters 5 --warmup 2 --compare=false)
# shellcheck disable=SC2206  # word splitting of the user's extra flags is wanted
BENCH_FLAGS+=(${BENCH_ARGS:-})

SUMMARY=()
FAILED=0
pass() { SUMMARY+=("PASS  $1"); echo "== PASS: $1"; }
fail() { SUMMARY+=("FAIL  $1"); echo "== FAIL: $1" >&2; FAILED=1; }
note() { SUMMARY+=("NOTE  $1"); echo "== NOTE: $1"; }

finish() {
  echo
  echo "multigpu_ci summary (logs in $LOG_DIR):"
  printf '  %s\n' "${SUMMARY[@]}"
  if [[ "$FAILED" -ne 0 ]]; then
    echo "multigpu_ci: FAILED"
    exit 1
  fi
  echo "multigpu_ci: OK"
  exit 0
}

# ---- the machine ---------------------------------------------------------------

if ! command -v nvidia-smi >/dev/null 2>&1; then
  fail "nvidia-smi not found: this script needs NVIDIA GPUs"
  finish
fi
mapfile -t GPU_NAMES < <(nvidia-smi --query-gpu=name --format=csv,noheader)
GPUS="${#GPU_NAMES[@]}"
GPU_NAME="${GPU_NAMES[0]:-unknown}"
if [[ -z "${CUDA_ARCH:-}" ]]; then
  CUDA_ARCH="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d '. ')"
  [[ "$CUDA_ARCH" =~ ^[0-9]+$ ]] || CUDA_ARCH="80;90"
fi
echo "multigpu_ci: $GPUS x $GPU_NAME, sm $CUDA_ARCH, build $BUILD"
mkdir -p "$LOG_DIR"
if [[ "$GPUS" -lt 2 ]]; then
  fail "found $GPUS GPU(s): the multi-GPU checks need 2 or more"
  finish
fi
for tool in cmake "$MPIRUN" python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    fail "$tool not found"
    finish
  fi
done

# Launcher arguments: Open MPI as root needs --allow-run-as-root; ranks
# unbound (each has a progress thread beside the bench's); environment
# forwarded by name.
LAUNCH=("$MPIRUN")
if "$MPIRUN" --version 2>&1 | grep -qi "open mpi"; then
  [[ "$(id -u)" -eq 0 ]] && LAUNCH+=(--allow-run-as-root)
  LAUNCH+=(--bind-to none)
  for var in NCCL_DEBUG NCCL_DEBUG_SUBSYS NCCL_SOCKET_IFNAME RINGATTN_TIMEOUT_MS CUDA_VISIBLE_DEVICES; do
    [[ -n "${!var:-}" ]] && LAUNCH+=(-x "$var")
  done
fi
# shellcheck disable=SC2206
LAUNCH+=(${MPIRUN_ARGS:-})

# ---- 1. build ---------------------------------------------------------------------

GENERATOR=()
command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)
if cmake -S "$ROOT" -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release \
     -DRINGATTN_CUDA=ON -DRINGATTN_NCCL=ON -DRINGATTN_MPI=ON \
     "-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH" >"$LOG_DIR/configure.log" 2>&1 &&
   cmake --build "$BUILD" -j"$JOBS" >"$LOG_DIR/build.log" 2>&1; then
  pass "build (Release, CUDA and NCCL on, sm $CUDA_ARCH)"
else
  tail -n 30 "$LOG_DIR/configure.log" "$LOG_DIR/build.log" 2>/dev/null
  fail "build (see configure.log, build.log)"
  finish
fi
NCCL_TEST="$BUILD/tests/comm/nccl_comm_test"
NCCL_RING_TEST="$BUILD/tests/runtime/nccl_ring_test"
BENCH="$BUILD/tools/ringattn-bench"

# ---- 2. one-GPU tests -----------------------------------------------------------------

if ctest --test-dir "$BUILD" -L gpu --output-on-failure >"$LOG_DIR/ctest-gpu.log" 2>&1; then
  pass "ctest -L gpu ($(grep -Eo '[0-9]+ tests failed out of [0-9]+' "$LOG_DIR/ctest-gpu.log" | tail -n1))"
else
  tail -n 40 "$LOG_DIR/ctest-gpu.log"
  fail "ctest -L gpu (see ctest-gpu.log)"
fi

# ---- 3. nccl tests under mpirun ------------------------------------------------------------

SIZES=()
for n in 2 4 8; do
  [[ "$n" -le "$GPUS" ]] && SIZES+=("$n")
done
for n in "${SIZES[@]}"; do
  for test in "$NCCL_TEST" "$NCCL_RING_TEST"; do
    name="$(basename "$test")"
    log="$LOG_DIR/${name}_np$n.log"
    if timeout 1200 "${LAUNCH[@]}" -np "$n" "$test" --gtest_color=no >"$log" 2>&1; then
      # Under mpirun with a GPU per rank nothing may skip for want of GPUs.
      if grep -Eq "needs 2 GPUs|needs one process per GPU|NCCL not built" "$log"; then
        fail "$name, $n ranks: tests skipped for want of GPUs or NCCL (see $(basename "$log"))"
      else
        pass "$name, $n ranks ($(grep -c '^\[       OK \]' "$log") passed over all ranks)"
      fi
    else
      grep -E "^\[  FAILED  \]|Failure|error" "$log" | head -n 20
      fail "$name, $n ranks (see $(basename "$log"))"
    fi
  done
done

# ---- 4. throughput against the baseline --------------------------------------------------------

# The comparison: tools/perf_gate.py, the gate every CI path uses (its
# table on stdout; exit 1 on a drop beyond the tolerance). A GPU and N
# without a recorded point are a note; RECORD=1 records them.
check_baseline() {
  local args=("$2" --baseline "$BASELINE" --tolerance "$TOLERANCE" --context "gpu=$GPU_NAME"
              --allow-missing)
  [[ "${RECORD:-0}" == 1 ]] && args+=(--record --record-keys ranks,seq_len)
  python3 "$ROOT/tools/perf_gate.py" "${args[@]}"
}

for n in "${SIZES[@]}"; do
  seq=$((n * SEQ_PER_GPU))
  json="$LOG_DIR/bench_np$n.json"
  log="$LOG_DIR/bench_np$n.log"
  rm -f "$json"
  if timeout 1200 "${LAUNCH[@]}" -np "$n" "$BENCH" "${BENCH_FLAGS[@]}" --seq "$seq" \
       --json "$json" >"$log" 2>&1 && [[ -s "$json" ]]; then
    if verdict="$(check_baseline "$n" "$json")"; then
      echo "$verdict"
      if [[ "$verdict" == *"no baseline point"* || "$verdict" == *"recorded"* ]]; then
        note "bench, $n GPUs (S=$seq): ${verdict##*$'\n'}"
      else
        pass "bench, $n GPUs (S=$seq): ${verdict##*$'\n'}"
      fi
    else
      echo "$verdict"
      fail "bench, $n GPUs (S=$seq): ${verdict##*$'\n'}"
    fi
  else
    tail -n 20 "$log"
    fail "bench, $n GPUs (see $(basename "$log"))"
  fi
done

finish
