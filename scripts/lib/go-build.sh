# shellcheck shell=bash
# Building pinned Go programs from the Go module proxy into a cache, shared by
# scripts/control-plane.sh and scripts/node.sh. The sourcing script defines log, die and
# bin_path NAME (the cached path of NAME's binary).

human_size() { numfmt --to=iec-i --suffix=B "$(stat -c %s "$1")" 2>/dev/null || stat -c %s "$1"; }

go_env() {
  command -v go >/dev/null 2>&1 || die "the go command is not installed: no binary can be built"
  export CGO_ENABLED=0
  export GOFLAGS="-mod=mod -buildvcs=false"
  # Every pinned module declares go <= 1.26, so the installed Go is used as it is.
  export GOTOOLCHAIN="${FASTAGENTIC_GOTOOLCHAIN:-local}"
}

# go_build NAME MODULE_DIR PACKAGE LDFLAGS: builds PACKAGE inside MODULE_DIR into the cache.
go_build() {
  local name="$1" moddir="$2" pkg="$3" ldflags="$4" out start secs
  out="$(bin_path "$name")"
  start=$(date +%s)
  log "building $name: go build -p ${GO_BUILD_P:-2} -trimpath $pkg (in $moddir, log $moddir/build-$name.log)"
  if ! (cd "$moddir" && go build -p "${GO_BUILD_P:-2}" -trimpath -ldflags="-s -w $ldflags" \
    -o "$out.tmp" "$pkg") >"$moddir/build-$name.log" 2>&1; then
    tail -n 30 "$moddir/build-$name.log" >&2 || true
    rm -f "$out.tmp"
    log "could not build $name from $pkg: see $moddir/build-$name.log"
    return 1
  fi
  mv -f "$out.tmp" "$out"
  secs=$(($(date +%s) - start))
  printf '%s\n' "$secs" >"$out.build-seconds"
  log "built $name in ${secs}s: $out ($(human_size "$out"))"
}

# new_module DIR: an empty throwaway Go module at DIR.
new_module() {
  local dir="$1"
  rm -rf "$dir"
  mkdir -p "$dir"
  printf 'module fastagentic.invalid/build/%s\n\ngo 1.26\n' "$(basename "$dir")" >"$dir/go.mod"
}

# go_mod_file MODULE_DIR MODULE@VERSION: path of that module's go.mod in the module cache.
go_mod_file() {
  (cd "$1" && go mod download -json "$2" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
}
