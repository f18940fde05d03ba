#!/usr/bin/env bash
# Runs the whole suite once per Keras backend; fails if any run fails.
#
# TensorFlow's run (the training binary's tests run there only) goes beside JAX's run followed by
# PyTorch's: the two chains take about as long, and most of a test's time is one Python thread
# tracing or compiling, so on a 2-core machine they finish in a little more than the longer one
# instead of the sum. Each run writes its own log, printed whole once both chains are done.
# Extra arguments go to every pytest run (`bash tests/all_backends.sh tests/vit_test.py -x`).
set -uo pipefail
export TF_CPP_MIN_LOG_LEVEL=2
# Tests marked backend_independent (tests/conftest.py) run in PyTorch's run only: the chain of
# JAX and PyTorch is the shorter one (TensorFlow's alone runs the training binary's tests).
export KERAS_VIT_TESTS_BACKEND_INDEPENDENT_UNDER=torch
# XLA (JAX, and TensorFlow's jit-compiled training steps) compiles every new model and input
# shape, and on these tiny test models most of that time is LLVM optimizing code that then runs
# a few times: level 0 skips those passes and computes the same results (explain_test on JAX:
# 100 s -> 60 s). Benchmarks and training runs outside the tests keep XLA's default.
export XLA_FLAGS="${XLA_FLAGS:+${XLA_FLAGS} }--xla_backend_optimization_level=0"
logs=$(mktemp -d)
trap 'rm -rf "${logs}"' EXIT

run() {  # run BACKEND [pytest args...]: its output to $logs/BACKEND.log, its status to .rc
  local backend=$1
  shift
  KERAS_BACKEND="${backend}" python -m pytest -q "$@" >"${logs}/${backend}.log" 2>&1
  echo $? >"${logs}/${backend}.rc"
}

run tensorflow "$@" &
tensorflow_chain=$!
run jax "$@"
run torch "$@"
wait "${tensorflow_chain}"

status=0
for backend in tensorflow jax torch; do
  echo "=== KERAS_BACKEND=${backend}"
  cat "${logs}/${backend}.log"
  rc=$(cat "${logs}/${backend}.rc")
  if [ "${rc}" != 0 ]; then
    echo "=== KERAS_BACKEND=${backend} failed (pytest exit status ${rc})"
    status=1
  fi
done
exit "${status}"
