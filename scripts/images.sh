#!/usr/bin/env bash
# The project's images without Docker: the same static musl binaries, user and layout that
# Dockerfile.operator and Dockerfile.runtime describe, assembled with crane into OCI images and
# pushed to the real node's registry (scripts/node.sh), which containerd uses as the mirror of
# docker.io and ghcr.io.
#
#   scripts/images.sh build          cargo build --release --target x86_64-unknown-linux-musl
#                                    of both binaries, then push every image below
#   scripts/images.sh pause REF      build the pod sandbox image (scripts/images/pause.c) as REF
#   scripts/images.sh list           the image names pods use, one per line
#
# Images pushed (name pods use -> what it is):
#   ghcr.io/fastagentic/fastagentic-operator:<chart appVersion>   Dockerfile.operator's image (the
#                                                                 chart's default, so `helm install`
#                                                                 needs no image settings)
#   ghcr.io/fastagentic/fastagentic-runtime:<version>            Dockerfile.runtime's image
#   docker.io/library/your-agent:latest                          the runtime image again, under the
#                                                                 name examples/kubernetes-seed.yaml
#                                                                 uses
#   docker.io/library/python-agent:1.2.2                         examples/python-agent/Dockerfile's
#                                                                 image (examples/python-agent.yaml)
#   docker.io/library/redis:7                                    Debian's redis-server and the
#                                                                 libraries it links, for the e2e
#                                                                 `redis` Service (on kind the real
#                                                                 redis:7 is pulled instead)
#
# Settings: FASTAGENTIC_REGISTRY (default 127.0.0.1:15000), FASTAGENTIC_IMAGE_TARGET_DIR (cargo
# target dir of the musl build, default ~/.cache/fastagentic/target-images: kept between runs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REGISTRY="${FASTAGENTIC_REGISTRY:-127.0.0.1:15000}"
CACHE_DIR="${FASTAGENTIC_CACHE_DIR:-$HOME/.cache/fastagentic}"
TARGET="x86_64-unknown-linux-musl"
TARGET_DIR="${FASTAGENTIC_IMAGE_TARGET_DIR:-$CACHE_DIR/target-images}"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n1)"
APP_VERSION="$(sed -n 's/^appVersion: "*\([^"]*\)"*$/\1/p' "$ROOT/charts/fastagentic-operator/Chart.yaml")"
NONROOT=65532 # distroless' nonroot user and group, as in the Dockerfiles

log() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] ERROR: %s\n' "$*" >&2; exit 1; }

crane() {
  local bin
  bin="${FASTAGENTIC_CRANE:-$("$ROOT/scripts/node.sh" path crane)}"
  [[ -x "$bin" ]] || die "no crane at $bin (scripts/node.sh build)"
  "$bin" "$@"
}

OPERATOR_IMAGE="ghcr.io/fastagentic/fastagentic-operator:$APP_VERSION"
RUNTIME_IMAGE="ghcr.io/fastagentic/fastagentic-runtime:$VERSION"
SEED_IMAGE="docker.io/library/your-agent:latest"
REDIS_IMAGE="docker.io/library/redis:7"
PYTHON_AGENT_IMAGE="docker.io/library/python-agent:1.2.2"

# registry_ref NAME: where the local registry keeps NAME (the mirror keeps the repository path).
registry_ref() {
  local ref="$1"
  ref="${ref#docker.io/}"
  ref="${ref#ghcr.io/}"
  echo "$REGISTRY/$ref"
}

# quiet COMMAND...: run it, show its output only when it fails (crane logs every blob).
quiet() {
  local out
  if ! out="$("$@" 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "failed: $*"
  fi
}

WORK=""
cleanup() { [[ -n "$WORK" ]] && rm -rf "$WORK"; return 0; }
trap cleanup EXIT

# base_rootfs DIR: what distroless/static:nonroot gives a static binary: passwd and group with
# root and nonroot, a world-writable /tmp, CA certificates, /etc/nsswitch.conf.
base_rootfs() {
  local d="$1"
  mkdir -p "$d/etc/ssl/certs" "$d/tmp" "$d/usr/local/bin" "$d/home/nonroot"
  chmod 1777 "$d/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n' \
    "$NONROOT" "$NONROOT" >"$d/etc/passwd"
  printf 'root:x:0:\nnonroot:x:%s:\n' "$NONROOT" >"$d/etc/group"
  printf 'hosts: files dns\n' >"$d/etc/nsswitch.conf"
  if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    cp /etc/ssl/certs/ca-certificates.crt "$d/etc/ssl/certs/ca-certificates.crt"
  fi
}

# layer DIR TAR: a reproducible tar of DIR (sorted, root-owned, fixed times), except that
# /home/nonroot belongs to nonroot.
layer() {
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$1" -cf "$2" .
}

# push_image NAME LAYER-TAR MUTATE-ARGS...: a one-layer image from an empty base, with the
# config the Dockerfile would give it, pushed as NAME.
push_image() {
  local name="$1" tar="$2" ref
  shift 2
  ref="$(registry_ref "$name")"
  log "image $name ($(du -h "$tar" | cut -f1) layer) -> $ref"
  quiet crane append --oci-empty-base -f "$tar" -t "$ref"
  quiet crane mutate "$ref" --set-platform linux/amd64 -t "$ref" "$@"
}

cmd_pause() {
  local ref="$1"
  command -v musl-gcc >/dev/null 2>&1 || die "musl-gcc is missing (apt-get install musl-tools)"
  WORK="$(mktemp -d)"
  mkdir -p "$WORK/rootfs"
  musl-gcc -static -Os -s -Wall -Wextra -Werror -o "$WORK/rootfs/pause" "$ROOT/scripts/images/pause.c"
  layer "$WORK/rootfs" "$WORK/pause.tar"
  log "image $ref (pause, $(stat -c %s "$WORK/rootfs/pause") bytes)"
  quiet crane append --oci-empty-base -f "$WORK/pause.tar" -t "$ref"
  quiet crane mutate "$ref" --set-platform linux/amd64 --entrypoint /pause -u 65535:65535 -t "$ref"
}

build_binaries() {
  command -v musl-gcc >/dev/null 2>&1 || die "musl-gcc is missing (apt-get install musl-tools): ring and mimalloc need a C compiler for musl"
  if ! grep -qx "$TARGET" <<<"$(rustup target list --installed 2>/dev/null)"; then
    log "rustup target add $TARGET"
    rustup target add "$TARGET" >&2
  fi
  local start
  start=$(date +%s)
  log "cargo build --release --locked --target $TARGET -p agent-runtime -p fastagentic-operator (target dir $TARGET_DIR)"
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --locked --target "$TARGET" \
    -p agent-runtime -p fastagentic-operator)
  local bin
  for bin in fastagentic fastagentic-operator; do
    # static-pie: no NEEDED shared library (ldd says "statically linked" and exits 0 for these)
    local dynamic
    dynamic="$(readelf -d "$TARGET_DIR/$TARGET/release/$bin")"
    if grep -q '(NEEDED)' <<<"$dynamic"; then
      die "$bin is not static: it needs $(grep '(NEEDED)' <<<"$dynamic")"
    fi
  done
  log "binaries built in $(($(date +%s) - start))s"
}

build_redis_rootfs() {
  local d="$1" server
  server="$(command -v redis-server)" || die "redis-server is missing (apt-get install redis-server)"
  server="$(readlink -f "$server")"
  base_rootfs "$d"
  mkdir -p "$d/usr/bin" "$d/data"
  chmod 1777 "$d/data"
  cp "$server" "$d/usr/bin/redis-server"
  copy_libs "$d" "$server"
}

# copy_libs DIR FILE...: the shared libraries FILEs need, and the dynamic loader, into DIR at
# the paths they are asked for.
copy_libs() {
  local d="$1" lib
  shift
  while read -r lib; do
    [[ -n "$lib" && -e "$lib" && ! -e "$d$lib" ]] || continue
    mkdir -p "$d$(dirname "$lib")"
    cp -L "$lib" "$d$lib"
  done < <(for f in "$@"; do ldd "$f" 2>/dev/null || true; done |
    awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }' | sort -u)
}

# build_python_agent_rootfs DIR: what examples/python-agent/Dockerfile gives, from Debian's
# python3.11 (its standard library without tests and GUI modules), the pinned requirements
# installed by pip, and the example app in /app.
build_python_agent_rootfs() {
  local d="$1" python=/usr/bin/python3.11 venv="${FASTAGENTIC_VENV:-$CACHE_DIR/venv}"
  [[ -x "$python" ]] || die "$python is missing (apt-get install python3)"
  [[ -x "$venv/bin/pip" ]] || die "no pip in $venv (scripts/test.sh makes it)"
  base_rootfs "$d"
  mkdir -p "$d/usr/bin" "$d/usr/lib" "$d/app"
  cp "$python" "$d/usr/bin/python3.11"
  ln -s python3.11 "$d/usr/bin/python3"
  tar -C /usr/lib --exclude='__pycache__' --exclude='python3.11/test' --exclude='python3.11/idlelib' \
    --exclude='python3.11/tkinter' --exclude='python3.11/turtledemo' --exclude='python3.11/ensurepip' \
    --exclude='python3.11/dist-packages' --exclude='python3.11/site-packages' -cf - python3.11 |
    tar -C "$d/usr/lib" -xf -
  local site="$d/usr/local/lib/python3.11/dist-packages"
  quiet "$venv/bin/pip" install --quiet --no-compile --only-binary=:all: --target "$site" \
    -r "$ROOT/examples/python-agent/requirements.txt"
  rm -rf "${site:?}/bin"
  printf '#!/usr/bin/python3.11\nimport sys\nfrom fastagentic.cli import app\nsys.exit(app())\n' \
    >"$d/usr/local/bin/fastagentic"
  chmod 0755 "$d/usr/local/bin/fastagentic"
  install -m 0644 "$ROOT/examples/python-agent/app.py" "$d/app/app.py"
  local sos=()
  mapfile -t sos < <(find "$d/usr/lib/python3.11" "$site" -name '*.so*' -type f)
  copy_libs "$d" "$python" "${sos[@]}"
}

cmd_build() {
  build_binaries
  WORK="$(mktemp -d)"
  local rel="$TARGET_DIR/$TARGET/release"
  local labels=(-l "org.opencontainers.image.licenses=Apache-2.0" -l "org.opencontainers.image.version=$VERSION")

  base_rootfs "$WORK/operator"
  install -m 0755 "$rel/fastagentic-operator" "$WORK/operator/usr/local/bin/fastagentic-operator"
  layer "$WORK/operator" "$WORK/operator.tar"
  push_image "$OPERATOR_IMAGE" "$WORK/operator.tar" "${labels[@]}" \
    -l "org.opencontainers.image.title=fastagentic-operator" \
    -u "$NONROOT:$NONROOT" -e PATH=/usr/local/bin:/usr/bin:/bin \
    --entrypoint /usr/local/bin/fastagentic-operator --cmd run --exposed-ports 8080/tcp,8081/tcp

  base_rootfs "$WORK/runtime"
  install -m 0755 "$rel/fastagentic" "$WORK/runtime/usr/local/bin/fastagentic"
  layer "$WORK/runtime" "$WORK/runtime.tar"
  local name
  for name in "$RUNTIME_IMAGE" "$SEED_IMAGE"; do
    push_image "$name" "$WORK/runtime.tar" "${labels[@]}" \
      -l "org.opencontainers.image.title=fastagentic" \
      -u "$NONROOT:$NONROOT" -e PATH=/usr/local/bin:/usr/bin:/bin \
      -e FASTAGENTIC_HOST=0.0.0.0 -e FASTAGENTIC_PORT=8000 \
      --cmd fastagentic,run --exposed-ports 8000/tcp
  done

  build_redis_rootfs "$WORK/redis"
  layer "$WORK/redis" "$WORK/redis.tar"
  push_image "$REDIS_IMAGE" "$WORK/redis.tar" -l "org.opencontainers.image.title=redis-server (Debian)" \
    -u 999:999 -w /data --entrypoint /usr/bin/redis-server \
    --cmd --protected-mode,no,--save,,--appendonly,no,--dir,/data --exposed-ports 6379/tcp

  build_python_agent_rootfs "$WORK/python-agent"
  layer "$WORK/python-agent" "$WORK/python-agent.tar"
  push_image "$PYTHON_AGENT_IMAGE" "$WORK/python-agent.tar" \
    -l "org.opencontainers.image.title=python-agent (examples/python-agent)" \
    -u "$NONROOT:$NONROOT" -w /app -e PATH=/usr/local/bin:/usr/bin:/bin \
    -e PYTHONDONTWRITEBYTECODE=1 -e PYTHONUNBUFFERED=1 \
    --cmd fastagentic,run,app:app,--host,0.0.0.0,--port,8000 --exposed-ports 8000/tcp
  log "pushed to $REGISTRY: $OPERATOR_IMAGE, $RUNTIME_IMAGE, $SEED_IMAGE, $REDIS_IMAGE, $PYTHON_AGENT_IMAGE"
}

cmd_list() {
  printf '%s\n' "$OPERATOR_IMAGE" "$RUNTIME_IMAGE" "$SEED_IMAGE" "$REDIS_IMAGE" "$PYTHON_AGENT_IMAGE"
}

case "${1:-}" in
  build) cmd_build ;;
  pause)
    [[ $# -eq 2 ]] || die "usage: $0 pause REF"
    cmd_pause "$2"
    ;;
  list) cmd_list ;;
  *)
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
