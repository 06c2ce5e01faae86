#!/usr/bin/env bash
# q35c developer entry point. Works on a fresh machine with Python >= 3.11, pip and apt:
#   ./dev.sh demo    set everything up, compile and run the bundled example end to end
#   ./dev.sh test    set everything up, run the test suite (pytest + lit/filecheck) on every
#                    core (pytest-xdist), without the tests marked slow
#   ./dev.sh test-all  the same, slow tests included
#   ./dev.sh setup   only set up: system tools (apt) and the .venv with q35c[dev]
# Arguments after test/test-all go to pytest (e.g. ./dev.sh test tests/test_cli.py -k run).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${Q35C_VENV:-.venv}
PY=${PYTHON:-python3}
SYSTEM_TOOLS=(gcc:gcc make:make clang:clang gfortran:gfortran mlir-opt-22:mlir-22-tools)

log() { printf '\033[1m[dev.sh]\033[0m %s\n' "$*" >&2; }

install_system_tools() {
  local missing=()
  for entry in "${SYSTEM_TOOLS[@]}"; do
    command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo -n"
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; }; then
    log "installing with apt: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    log "warning: missing ${missing[*]} and apt is not usable; tests that need them fail under CI=true"
  fi
}

setup_venv() {
  local stamp="$VENV/.q35c-installed"
  if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then return 0; fi
  log "creating $VENV and installing q35c[dev]"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools
  "$VENV/bin/python" -m pip install -q -e '.[dev]'
  touch "$stamp"
}

setup() { install_system_tools; setup_venv; }

demo() {
  setup
  local q="$VENV/bin/q35c" out=out/demo model=examples/models/llama_tiny.onnx
  rm -rf "$out"
  log "compile $model (a LLaMA-style decoder) to Q3P5 IR, dumping the IR after every pass"
  "$q" "$model" --shape input_ids=1,8 --target mlir -o "$out/llama" --dump-ir "$out/dumps"
  ls -l "$out/llama" "$out/dumps"
  log "check every dump with upstream mlir-opt-22 and q35c's IRDL export"
  "$q" irdl > "$out/q35c.irdl.mlir"
  for f in "$out"/dumps/*.mlir "$out"/llama/*.mlir; do
    mlir-opt-22 --irdl-file="$out/q35c.irdl.mlir" "$f" -o /dev/null && echo "mlir-opt-22 ok: $f"
  done
  log "run it with the reference interpreter: float and int8 activations"
  "$q" run "$model" --shape input_ids=1,8 -o "$out/run" --seed 1
  "$q" run "$model" --shape input_ids=1,8 -o "$out/run-int8" --seed 1 \
    --input input_ids="$out/run/input_ids.npy" --act int8
  log "compile it to a C library and run that too (checked against the interpreter in tests)"
  "$q" "$model" --shape input_ids=1,8 --target c -o "$out/c"
  "$q" run "$model" --shape input_ids=1,8 --target c -o "$out/run-c" \
    --input input_ids="$out/run/input_ids.npy"
  log "compile it for the Groq target, simulate it cycle by cycle, draw the timeline"
  "$q" "$model" --shape input_ids=1,8 --target groq -o "$out/groq"
  "$q" report "$out/groq"
  "$q" run "$model" --shape input_ids=1,8 --target groq -o "$out/run-groq" \
    --input input_ids="$out/run/input_ids.npy"
  log "plan a LLaMA-70B-shaped model across Groq chips (shapes only: no weights exist)"
  "$VENV/bin/python" examples/models/build_llama_shapes.py llama-70b "$out/llama70b/llama70b.onnx"
  "$q" "$out/llama70b/llama70b.onnx" --target groq --shape-only -o "$out/plan70b"
  log "the bundled .mlir example: an MLP block"
  "$q" run examples/mlp.mlir -o "$out/mlp" --seed 1
}

run_tests() {
  setup
  "$VENV/bin/python" -m pytest -n auto "$@"
}

case "${1:-}" in
  setup) setup ;;
  demo) demo ;;
  test) shift; run_tests -m "not slow" "$@" ;;
  test-all) shift; run_tests "$@" ;;
  *) echo "usage: $0 {demo|test|test-all|setup}" >&2; exit 64 ;;
esac
