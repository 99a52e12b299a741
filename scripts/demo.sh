#!/usr/bin/env bash
# regfs demo, from a fresh machine: installs the dependencies, builds the
# release binary, starts a throw-away registry on a free loopback port,
# pushes two sample artifacts (ORAS-style: titled files, a nested title,
# and a two-platform index), mounts the registry with regfs and looks
# around with ordinary tools. Everything it starts is stopped on exit.
#
#   bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD="" PLAIN=""; fi
step() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN"; }
show() { printf '\n$ %s\n' "$*"; "$@"; }

step "dependencies"
bash scripts/install-deps.sh

step "build"
cargo build --release
REGFS=$ROOT/target/release/regfs

WORK=$(mktemp -d "${TMPDIR:-/tmp}/regfs-demo.XXXXXX")
MNT=$WORK/mnt
REG_PID=""
cleanup() {
  set +e
  if grep -qs " $MNT " /proc/self/mountinfo; then
    "$REGFS" umount "$MNT" 2>/dev/null || fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT"
  fi
  if [ -n "$REG_PID" ]; then
    kill "$REG_PID" 2>/dev/null
    wait "$REG_PID" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "registry"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HOST=127.0.0.1:$PORT
cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: $HOST
EOF
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do
  curl -fsS "http://$HOST/v2/" >/dev/null 2>&1 && break
  kill -0 "$REG_PID" 2>/dev/null || { cat "$WORK/registry.log" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "http://$HOST/v2/" >/dev/null
echo "docker-registry listening on $HOST"

step "push sample artifacts"
PUSH=(python3 "$ROOT/tests/fixtures/push_oras.py")
SRC=$WORK/src
mkdir -p "$SRC/docs/guide"
printf 'hello from regfs\n' >"$SRC/hello.txt"
printf '# regfs demo\n\nThese files were pushed as an ORAS artifact.\n' >"$SRC/README.md"
printf 'nested titles become folders\n' >"$SRC/docs/guide/intro.txt"
(cd "$SRC" && "${PUSH[@]}" push "$HOST" demo/app:v1 hello.txt README.md docs/guide/intro.txt \
  --artifact-type application/vnd.example.demo --annotation org.opencontainers.image.description="regfs demo")
printf 'built for linux/amd64\n' >"$SRC/tool-amd64"
printf 'built for linux/arm64\n' >"$SRC/tool-arm64"
(cd "$SRC" && cp tool-amd64 tool && "${PUSH[@]}" push "$HOST" demo/tool:amd64 tool --artifact-platform linux/amd64)
(cd "$SRC" && cp tool-arm64 tool && "${PUSH[@]}" push "$HOST" demo/tool:arm64 tool --artifact-platform linux/arm64)
"${PUSH[@]}" index "$HOST" demo/tool:v1 amd64 arm64

step "mount"
mkdir -p "$MNT"
show "$REGFS" mount "$HOST" "$MNT" --cache-dir "$WORK/cache"

step "look around"
show ls -la "$MNT/demo/app/v1"
show ls -R "$MNT/demo"
show cat "$MNT/demo/app/v1/hello.txt"
show cat "$MNT/demo/app/v1/docs/guide/intro.txt"
show cat "$MNT/demo/tool/v1/linux-arm64/tool"
blob=$(python3 -c 'import json, sys
m = json.load(open(sys.argv[1]))
print(next(l["digest"] for l in m["layers"]
           if l.get("annotations", {}).get("org.opencontainers.image.title") == "README.md"))' \
  "$MNT/demo/app/v1/manifest.json")
show file "$MNT/demo/app/v1/blobs/sha256/${blob#sha256:}" "$MNT/demo/app/v1/manifest.json"
show sha256sum "$MNT/demo/app/v1/manifest.json"
show getfattr --absolute-names -d "$MNT/demo/app/v1"
show getfattr --absolute-names -d "$MNT/demo/tool/v1/linux-arm64"

step "unmount"
show "$REGFS" umount "$MNT"
echo
echo "demo finished"
