#!/usr/bin/env bash
# Validates `fastagentic-operator render` output for every example against the Kubernetes 1.33
# OpenAPI schemas with kubernetes-validate (PyPI) in strict mode (unknown fields are errors).
#
#   scripts/validate-render.sh            validate (installs kubernetes-validate on first use)
#   scripts/validate-render.sh --check    exit 3 if kubernetes-validate is not installed, 0 if it is
#   scripts/validate-render.sh --install  install kubernetes-validate if missing, validate nothing
#
# kubernetes-validate lives in a virtualenv under ~/.cache/fastagentic/venv (override with
# FASTAGENTIC_VENV). The operator binary is FASTAGENTIC_OPERATOR_BIN if set, else built with
# cargo. Exit status: 0 all valid, 1 a document is invalid, 2 setup failed.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=1.33.0
VENV="${FASTAGENTIC_VENV:-$HOME/.cache/fastagentic/venv}"
TOOL="$VENV/bin/kubernetes-validate"

if [[ "${1:-}" == "--check" ]]; then
    [[ -x "$TOOL" ]] && exit 0 || exit 3
fi

if [[ ! -x "$TOOL" ]]; then
    echo "==> installing kubernetes-validate into $VENV"
    if ! python3 -m venv "$VENV"; then
        echo "error: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
        exit 2
    fi
    if ! "$VENV/bin/pip" install --quiet kubernetes-validate; then
        echo "error: pip install kubernetes-validate failed" >&2
        exit 2
    fi
fi

if [[ "${1:-}" == "--install" ]]; then
    echo "kubernetes-validate: $("$TOOL" --version 2>&1 | head -n 1) in $VENV"
    exit 0
fi

BIN="${FASTAGENTIC_OPERATOR_BIN:-}"
if [[ -z "$BIN" ]]; then
    echo "==> building fastagentic-operator"
    cargo build --quiet -p fastagentic-operator
    BIN="${CARGO_TARGET_DIR:-target}/debug/fastagentic-operator"
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
status=0
for example in examples/*.yaml; do
    name="$(basename "$example" .yaml)"
    # Only FastAgentic files (examples/ may also hold compose files and the like).
    grep -q '^kind: FastAgentic' "$example" || continue
    "$BIN" render -f "$example" > "$out/$name.yaml"
    echo "==> kubernetes-validate --strict --kubernetes-version $K8S_VERSION (render $example)"
    if ! "$TOOL" --strict --kubernetes-version "$K8S_VERSION" "$out/$name.yaml"; then
        status=1
    fi
done
exit "$status"
