#!/usr/bin/env bash
# The Python package in a virtual environment: creates .venv (once),
# installs the test dependencies (PyTorch and NumPy from PyPI, pytest) and
# then the package itself with `pip install .` (scikit-build-core builds
# the C++ library and ringattn._C; build/python-<tag>/ keeps that build for
# the next run). Used by tools/test.sh and the Python benchmarks; prints the
# environment's python on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${RINGATTN_VENV:-.venv}
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
# PyTorch from PyPI is large (its CUDA libraries come with it): pip's cache
# keeps the download for the next run.
"$py" -m pip install -q --upgrade pip >&2
"$py" -m pip install -q "torch>=2.4" numpy pytest pytest-timeout >&2
"$py" -m pip install -q . >&2
echo "$py"
