#!/usr/bin/env bash
# Installs a ringattn build into a temporary prefix and builds a user's
# program against the install alone: with CMake (find_package, this
# directory's CMakeLists.txt) and with pkg-config; each must build and pass
# (a 2-rank ring against the float64 reference). Usage: run.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:?usage: run.sh BUILD_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" --component lib >/dev/null
echo "== installed:"; (cd "$prefix" && find . -type f -o -type l | sort | sed 's/^/  /')

echo "== CMake: find_package(ringattn CONFIG)"
cmake -S "$here" -B "$work/cmake" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cmake" >/dev/null
"$work/cmake/consumer"
"$work/cmake/consumer_c" | tail -n 1

echo "== pkg-config ringattn"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
static=()
[[ -e $prefix/lib/libringattn.a ]] && static=(--static)  # RINGATTN_SHARED=OFF
# shellcheck disable=SC2046  # the flags are words
c++ -O2 -o "$work/consumer_pc" "$here/main.cc" $(pkg-config "${static[@]}" --cflags --libs ringattn) \
  -pthread
LD_LIBRARY_PATH=$prefix/lib "$work/consumer_pc"
echo "install consumer: OK"
