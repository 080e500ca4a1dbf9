#!/usr/bin/env bash
# The fuzz lane (CI): builds the libFuzzer targets of tests/fuzz with clang
# (CMakePresets.json, preset fuzz: ASan+UBSan) and runs each for SECONDS
# (default 30) from its seed corpus in tests/fuzz/corpus. A crash leaves its
# input in build-fuzz/crash-*; put it in the target's corpus (and fix the
# code): the seeds run again every time, so a crash once found stays a test.
# Usage: tools/fuzz.sh [SECONDS]. Needs clang (tools/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
cmake --preset fuzz >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target fuzz_npy fuzz_message fuzz_text fuzz_docs
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for target in npy message text docs; do
  work=$(mktemp -d)
  cp tests/fuzz/corpus/$target/* "$work"/
  echo "== fuzz_$target: ${seconds} s"
  log="$work.log"
  status=0
  (cd build-fuzz && ./tests/fuzz/fuzz_$target -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 "$work" >"$log" 2>&1) || status=$?
  grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|==|SUMMARY|INFO: seed corpus)" "$log" || true
  rm -rf "$work"
  # A failure is the fuzzer's exit status, a sanitizer's report (UBSan can
  # stop the run without libFuzzer writing a crash file), or a crash file.
  if ((status != 0)) || grep -q "^SUMMARY: " "$log" ||
     ls build-fuzz/crash-* build-fuzz/leak-* build-fuzz/timeout-* >/dev/null 2>&1; then
    grep -E -A30 "runtime error|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)" "$log" | head -60 >&2 || true
    echo "fuzz_$target: failed (exit status $status; build-fuzz/crash-*, leak-* or timeout-* hold any input)" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
done
echo "fuzz: every target ran ${seconds} s without a failure"
