#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine (as root, or
# with sudo). Idempotent and quick when all is already there.
#
#   apt: fuse3 (fusermount3), docker-registry (the test registry), skopeo,
#        attr (getfattr/setfattr), file, rsync, curl, time, apache2-utils
#        (htpasswd, bcrypt for the registry's basic auth), python3 + pip
#   pip: oras (the ORAS Python SDK used by tests/fixtures/push_oras.py)
set -euo pipefail

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
[ -e /dev/fuse ] || echo "install-deps: warning: no /dev/fuse; mount tests will fail" >&2
echo "install-deps: ok"
