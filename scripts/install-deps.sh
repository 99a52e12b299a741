#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine (as root, or
# with sudo). Idempotent and quick when all is already there.
#
#   apt: fuse3 (fusermount3), docker-registry (the test registry), skopeo,
#        attr (getfattr/setfattr), file, rsync, curl, time, apache2-utils
#        (htpasswd, bcrypt for the registry's basic auth), openssl (the
#        CAs and certificates of the HTTPS tests), python3 + pip
#   pip: oras (the ORAS Python SDK used by tests/fixtures/push_oras.py)
#   go:  the ORAS CLI and crane, pinned (tests/it/peers.rs runs them as
#        peers), installed into `go env GOPATH`/bin; the modules of
#        tests/ggcr-registry (go-containerregistry's registry, which the
#        tests build on first use); go itself from /usr/local/go, else
#        apt's golang-go
set -euo pipefail

ORAS_VERSION=v1.3.6
CRANE_VERSION=v0.22.1

export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# binary -> Debian package
declare -A NEED=(
  [fusermount3]=fuse3
  [docker-registry]=docker-registry
  [skopeo]=skopeo
  [getfattr]=attr
  [setfattr]=attr
  [file]=file
  [rsync]=rsync
  [curl]=curl
  [htpasswd]=apache2-utils
  [openssl]=openssl
  [python3]=python3
)
missing=()
for bin in "${!NEED[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("${NEED[$bin]}")
done
# `time` is a shell keyword: check the program itself.
[ -x /usr/bin/time ] || missing+=(time)
if ! python3 -m pip --version >/dev/null 2>&1; then missing+=(python3-pip); fi

if [ "${#missing[@]}" -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  echo "install-deps: apt-get install $pkgs"
  # No init system here: keep package scripts from starting services (the
  # docker-registry package would start one on :5000). Tests run their own.
  created_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  cleanup() { if [ -n "$created_policy" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi; }
  trap cleanup EXIT
  $SUDO apt-get update -q
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -q $pkgs </dev/null
  cleanup
  trap - EXIT
fi

if ! python3 -c 'import oras.client' >/dev/null 2>&1; then
  echo "install-deps: pip install oras"
  python3 -m pip install -q oras </dev/null \
    || python3 -m pip install -q --break-system-packages oras </dev/null
fi

# The ORAS CLI and crane, built from their pinned module versions. A
# binary already in GOPATH/bin is kept when it reports the pinned version.
if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then
    export PATH="/usr/local/go/bin:$PATH"
  else
    echo "install-deps: apt-get install golang-go"
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q golang-go </dev/null
  fi
fi
GOBIN_DIR="$(go env GOPATH)/bin"
installed_version() { # binary -> the version it reports, or nothing
  case "$1" in
    oras) "$GOBIN_DIR/oras" version 2>/dev/null | awk '/^Version:/ {print "v" $2}' ;;
    crane) "$GOBIN_DIR/crane" version 2>/dev/null ;;
  esac
}
for tool in "oras oras.land/oras/cmd/oras $ORAS_VERSION" \
            "crane github.com/google/go-containerregistry/cmd/crane $CRANE_VERSION"; do
  read -r bin module version <<<"$tool"
  if [ "$(installed_version "$bin")" != "$version" ]; then
    echo "install-deps: go install $module@$version"
    go install "$module@$version" </dev/null
  fi
done

# go-containerregistry's registry (the tests' registry with the referrers
# API): its modules now, so that the tests build it without the network.
# (Quiet and without the network when they are in the module cache.)
(cd "$(dirname "$0")/../tests/ggcr-registry" && go mod download </dev/null)

# FUSE device (normally present; create it if the node is missing).
if [ ! -e /dev/fuse ]; then
  $SUDO modprobe fuse 2>/dev/null || true
  [ -e /dev/fuse ] || { $SUDO mknod -m 0666 /dev/fuse c 10 229 || true; }
fi

# Final check, so that a broken environment fails here with a clear line
# rather than deep inside a test.
for bin in fusermount3 docker-registry skopeo getfattr setfattr file rsync curl htpasswd python3; do
  command -v "$bin" >/dev/null 2>&1 || { echo "install-deps: $bin still missing" >&2; exit 1; }
done
[ -x /usr/bin/time ] || { echo "install-deps: /usr/bin/time still missing" >&2; exit 1; }
python3 -c 'import oras.client' || { echo "install-deps: python3 cannot import oras" >&2; exit 1; }
for tool in "oras $ORAS_VERSION" "crane $CRANE_VERSION"; do
  read -r bin version <<<"$tool"
  [ "$(installed_version "$bin")" = "$version" ] \
    || { echo "install-deps: $GOBIN_DIR/$bin is not $version" >&2; exit 1; }
done
[ -e /dev/fuse ] || echo "install-deps: warning: no /dev/fuse; mount tests will fail" >&2
echo "install-deps: ok"
