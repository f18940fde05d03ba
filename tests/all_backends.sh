#!/usr/bin/env bash
# Runs the whole suite once per Keras backend; fails if any run fails.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=2
for backend in tensorflow jax torch; do
  echo "=== KERAS_BACKEND=${backend}"
  KERAS_BACKEND="${backend}" python -m pytest -q "$@"
done
