#!/usr/bin/env bash
# Builds regfs (release) and installs it, with its man pages and shell
# completions, where each is looked for:
#
#   $DESTDIR$PREFIX/bin/regfs
#   $DESTDIR$PREFIX/share/man/man1/regfs.1, regfs-<command>.1
#   $DESTDIR$PREFIX/share/bash-completion/completions/regfs
#   $DESTDIR$PREFIX/share/zsh/site-functions/_regfs
#   $DESTDIR$PREFIX/share/fish/vendor_completions.d/regfs.fish
#
#   PREFIX    default /usr/local
#   DESTDIR   staging root for packaging (default: none, install in place)
#   REGFS_BIN install this binary instead of building one (the tests
#             install a debug build this way)
#
# The man pages and completions are the committed man/ and completions/,
# which tests keep in step with the CLI definition.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX="${PREFIX:-/usr/local}"
DESTDIR="${DESTDIR:-}"
root="$DESTDIR$PREFIX"

if [ -n "${REGFS_BIN:-}" ]; then
  bin="$REGFS_BIN"
else
  cargo build --release --locked
  target_dir=$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  bin="$target_dir/release/regfs"
fi
[ -x "$bin" ] || { echo "install: no regfs binary at $bin" >&2; exit 1; }

install -d "$root/bin" "$root/share/man/man1" \
  "$root/share/bash-completion/completions" \
  "$root/share/zsh/site-functions" \
  "$root/share/fish/vendor_completions.d"
install -m 0755 "$bin" "$root/bin/regfs"
install -m 0644 man/*.1 "$root/share/man/man1/"
install -m 0644 completions/regfs.bash "$root/share/bash-completion/completions/regfs"
install -m 0644 completions/_regfs "$root/share/zsh/site-functions/_regfs"
install -m 0644 completions/regfs.fish "$root/share/fish/vendor_completions.d/regfs.fish"

echo "install: regfs $("$root/bin/regfs" --version | awk '{print $2}') in $root/bin"
echo "install: man pages in $root/share/man/man1, completions for bash, zsh and fish in $root/share"
