#!/usr/bin/env bash
# ctest driver for the tokenizer reference check on the real model (label `model`):
#   run_reference_check.sh <python> <tokenizer_reference_test binary> <work dir>
# Exports the GGUF tokenizer and the reference ids with reference_tokenize.py, then runs the C++
# comparison. Exits 77 (reported by ctest as skipped) when KVWIRE_MODEL is unset or missing.
set -euo pipefail
python="$1" binary="$2" work="$3"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
model="${KVWIRE_MODEL:-}"
if [[ -z "$model" ]]; then
  echo "SKIPPED: KVWIRE_MODEL is unset (point it at the GGUF from scripts/fetch-model)"
  exit 77
fi
if [[ ! -f "$model" ]]; then
  echo "SKIPPED: KVWIRE_MODEL=$model does not exist"
  exit 77
fi
if [[ ! -x "$python" ]]; then
  echo "FAILED: $python not found; run scripts/install-deps"
  exit 1
fi
rm -rf "$work"
"$python" "$here/reference_tokenize.py" --model "$model" --out "$work"
KVWIRE_TOKENIZER_REFERENCE_DIR="$work" "$binary"
