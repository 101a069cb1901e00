#!/usr/bin/env bash
# Regenerates every committed copy of the FastAgentic CRD from the Rust types in crds/src.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
cargo run --quiet -p fastagentic-operator -- crd >"$tmp"

targets=(crds/fastagentic.io_fastagentics.yaml)
if [[ -d charts/fastagentic-operator ]]; then
  mkdir -p charts/fastagentic-operator/crds
  targets+=(charts/fastagentic-operator/crds/fastagentic.io_fastagentics.yaml)
fi
for target in "${targets[@]}"; do
  cp "$tmp" "$target"
  echo "wrote $target"
done
