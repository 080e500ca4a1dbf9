#!/usr/bin/env bash
# The sanitizer lanes of CI (CMakePresets.json; CUDA off, GPU code is not run
# on a CPU anyway):
#   asan  AddressSanitizer + UndefinedBehaviorSanitizer over every CPU test
#         (golden_run excepted: its pinned bits are those of the Release
#         build's optimisation; the tests under mpirun without leak checks)
#   tsan  ThreadSanitizer over the local communicator, the world and the
#         ring (the code whose threads talk to each other)
# Usage: tools/sanitize.sh asan|tsan [extra ctest arguments]. Run after
# tools/setup.sh (the same packages); builds build-asan/ or build-tsan/.
set -euo pipefail
cd "$(dirname "$0")/.."
lane=${1:?usage: tools/sanitize.sh asan|tsan}
shift
root=$(pwd)
start=$(date +%s)
cmake --preset "$lane" >/dev/null
case "$lane" in
  asan)
    cmake --build build-asan -j "$(nproc)"
    export ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1
    export LSAN_OPTIONS=suppressions=$root/tests/sanitizers/lsan.supp:print_suppressions=0
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    built=$(date +%s)
    ctest --test-dir build-asan --output-on-failure -j "$(nproc)" --timeout 900 -LE 'gpu|mpi|install' \
      -E '^golden_run_test$' "$@"
    # Under mpirun, without leak checking: MPI unloads its plugins before
    # LeakSanitizer reports, so their memory cannot be told from ours
    # (every ringattn code path of these tests also runs in-process above).
    ASAN_OPTIONS=detect_leaks=0 ctest --test-dir build-asan --output-on-failure --timeout 900 \
      -L mpi "$@"
    ;;
  tsan)
    # UCX's memory hooks (ucm, loaded with the library) intercept madvise
    # on every new thread's stack, inside ThreadSanitizer's own interceptor:
    # a crash at the first thread. The ring's tests do not need them.
    export UCX_MEM_EVENTS=no
    cmake --build build-tsan -j "$(nproc)" --target local_comm_test world_test ring_test
    export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$root/tests/sanitizers/tsan.supp
    built=$(date +%s)
    ctest --test-dir build-tsan --output-on-failure -j "$(nproc)" --timeout 900 -LE gpu \
      -R '^(LocalWorld|LocalComm|Local/|World|Ring\.|RingApi|LocalStrategy|Sweep/RingTest)' "$@"
    ;;
  *)
    echo "tools/sanitize.sh: expected asan or tsan, got '$lane'" >&2
    exit 2
    ;;
esac
end=$(date +%s)
echo "sanitize $lane: build $((built - start)) s, tests $((end - built)) s"
