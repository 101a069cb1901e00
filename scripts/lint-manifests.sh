#!/usr/bin/env bash
# Third-party checks of what we ship: kube-score (github.com/zegl/kube-score, built from its Go
# module) on `fastagentic-operator render` of every example and on `helm template` of the chart.
#
#   scripts/lint-manifests.sh            check (builds kube-score on first use)
#   scripts/lint-manifests.sh --build    only build (or reuse) kube-score
#
# Every finding kube-score reports either is fixed in the builders or the chart, or is ignored
# below with the reason written next to it; anything else fails the check. Before checking our
# manifests the script checks a deliberately bad Deployment (tests/fixtures/lint/bad.yaml) and
# fails unless kube-score rejects it, so a check that stopped finding anything cannot pass.
#
# Settings: FASTAGENTIC_KUBE_SCORE_VERSION (default below), FASTAGENTIC_OPERATOR_BIN (else built
# with cargo), FASTAGENTIC_HELM (else scripts/control-plane.sh path helm, built if missing),
# FASTAGENTIC_CACHE_DIR (binary cache, default ~/.cache/fastagentic).
set -euo pipefail
cd "$(dirname "$0")/.."

KUBE_SCORE_VERSION="${FASTAGENTIC_KUBE_SCORE_VERSION:-v1.20.0}"
CACHE_DIR="${FASTAGENTIC_CACHE_DIR:-$HOME/.cache/fastagentic}"
BIN_DIR="$CACHE_DIR/bin"
BUILD_DIR="$CACHE_DIR/build"

log() { printf '[lint-manifests] %s\n' "$*" >&2; }
die() { printf '[lint-manifests] ERROR: %s\n' "$*" >&2; exit 2; }
bin_path() { echo "$BIN_DIR/$1-$KUBE_SCORE_VERSION"; }

# shellcheck source=scripts/lib/go-build.sh
source scripts/lib/go-build.sh

# The checks we do not follow, each with its reason. kube-score's test names.
IGNORED_TESTS=(
    # imagePullPolicy is the user's choice (spec.imagePullPolicy; the chart's image.pullPolicy):
    # with immutable tags or digests IfNotPresent is right, and the examples use tags.
    container-image-pull-policy
    # Hard pod anti-affinity keeps pods Pending on small clusters; the operator spreads pods
    # softly with topologySpreadConstraints across nodes and zones instead (README, Decisions).
    deployment-has-host-podantiaffinity
    # An autoscaled Deployment is created at minReplicas so it does not start with 1 pod; the
    # same reconcile hands spec.replicas to the HPA (README, Decisions). render shows the object
    # as created.
    deployment-targeted-by-hpa-does-not-have-replicas-configured
)

# Checks ignored for one input only, with the reason.
#
# pod-networkpolicy: a NetworkPolicy is opt-in (spec.networkPolicy; the chart's
# networkPolicy.enabled): which namespaces may call the agents, and where they may connect, is
# the cluster's to decide, and a policy without a plugin that enforces it does nothing.
# examples/production-large.yaml and the chart with tests/fixtures/lint/chart-network-policy.yaml
# carry one with ingress and egress rules, so the check runs on them with nothing ignored.
declare -A TARGET_IGNORES=(
    # The guide's own manifests use `:latest` and have no PodDisruptionBudget or
    # NetworkPolicy; examples/kubernetes-seed.yaml reproduces them (the other examples pin a tag).
    [render-kubernetes-seed]="container-image-tag deployment-has-poddisruptionbudget pod-networkpolicy"
    # A disruption budget is opt-in (spec.disruptionBudget): the production examples set one;
    # staging and the model-API example show the smallest resource for their case.
    [render-staging]="deployment-has-poddisruptionbudget pod-networkpolicy"
    [render-model-agent]="deployment-has-poddisruptionbudget pod-networkpolicy"
    [render-production-small]="pod-networkpolicy"
    # The OpenAI and Python examples show the smallest resource for their case; a NetworkPolicy
    # is opt-in as everywhere (the Python agent listens on the pod's loopback only, so its port is
    # closed to other pods without one).
    [render-openai]="pod-networkpolicy"
    [render-python-agent]="pod-networkpolicy"
    # The development example runs one replica on purpose.
    [render-dev]="deployment-replicas pod-networkpolicy"
    # One operator replica is the chart's default (leader election makes two possible).
    [chart]="deployment-replicas pod-networkpolicy"
    [chart-two-replicas]="pod-networkpolicy"
    [chart-network-policy]="deployment-replicas"
)

ensure_kube_score() {
    local out
    out="$(bin_path kube-score)"
    if [[ -x "$out" ]]; then
        log "kube-score: cached $out"
        return 0
    fi
    mkdir -p "$BIN_DIR" "$BUILD_DIR"
    go_env
    local dir="$BUILD_DIR/kube-score-$KUBE_SCORE_VERSION"
    new_module "$dir"
    printf '\nrequire github.com/zegl/kube-score %s\n' "$KUBE_SCORE_VERSION" >>"$dir/go.mod"
    go_build kube-score "$dir" github.com/zegl/kube-score/cmd/kube-score \
        "-X main.version=$KUBE_SCORE_VERSION" || die "could not build kube-score $KUBE_SCORE_VERSION"
}

ensure_kube_score
KUBE_SCORE="$(bin_path kube-score)"
[[ "${1:-}" == "--build" ]] && exit 0

ignore_flags=()
for t in "${IGNORED_TESTS[@]}"; do
    ignore_flags+=(--ignore-test "$t")
done

# score NAME FILE: kube-score's findings for FILE (CRITICAL and WARNING), one per line.
score() {
    local flags=("${ignore_flags[@]}") t
    for t in ${TARGET_IGNORES[$1]:-}; do
        flags+=(--ignore-test "$t")
    done
    "$KUBE_SCORE" score --output-format ci --kubernetes-version v1.33 "${flags[@]}" "$2" \
        | grep -E '^\[(CRITICAL|WARNING)\]' || true
}

status=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "a deliberately bad Deployment must be rejected (tests/fixtures/lint/bad.yaml)"
bad="$(score bad tests/fixtures/lint/bad.yaml)"
if [[ -z "$bad" ]]; then
    log "FAIL: kube-score found nothing in the bad fixture: the check cannot fail"
    status=1
else
    printf '%s\n' "$bad" | sed 's/^/  expected: /' >&2
fi

BIN="${FASTAGENTIC_OPERATOR_BIN:-}"
if [[ -z "$BIN" ]]; then
    cargo build --quiet -p fastagentic-operator
    BIN="${CARGO_TARGET_DIR:-target}/debug/fastagentic-operator"
fi
HELM="${FASTAGENTIC_HELM:-}"
if [[ -z "$HELM" ]]; then
    scripts/control-plane.sh build helm >&2
    HELM="$(scripts/control-plane.sh path helm)"
fi

check() { # name file
    local found
    found="$(score "$1" "$2")"
    if [[ -n "$found" ]]; then
        log "FAIL: $1"
        printf '%s\n' "$found" | sed 's/^/  /' >&2
        status=1
    else
        log "ok: $1"
    fi
}

for example in examples/*.yaml; do
    grep -q '^kind: FastAgentic' "$example" || continue
    name="render-$(basename "$example" .yaml)"
    "$BIN" render -f "$example" >"$work/$name.yaml"
    check "$name" "$work/$name.yaml"
done
for variant in "chart" "chart-two-replicas --set replicaCount=2" \
    "chart-network-policy -f tests/fixtures/lint/chart-network-policy.yaml"; do
    name="${variant%% *}"
    values="${variant#"$name"}"
    # shellcheck disable=SC2086 # the flags are words
    "$HELM" template fastagentic-operator charts/fastagentic-operator \
        --namespace fastagentic-system $values >"$work/chart.yaml"
    check "$name" "$work/chart.yaml"
done
exit "$status"
