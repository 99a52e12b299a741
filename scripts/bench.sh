#!/usr/bin/env bash
# regfs benchmark (issue 5): every figure is a ratio against a public tool,
# measured in the same run on the same data, on a private docker-registry on
# loopback. It reports; it does not gate: exit 0 when goals are missed,
# non-zero on a real error (a failed mount or command, a wrong byte).
#
#   scripts/bench.sh                                   # full size (~6 min on 2 cores)
#   BENCH_SMALL_MB=64 BENCH_LARGE_MB=256 BENCH_REPOS=20 scripts/bench.sh   # quick
#
# Environment (all optional):
#   BENCH_SMALL_MB=256   size of the "small" blob (measurements 1, 3a)
#   BENCH_LARGE_MB=2048  size of the "large" blob (measurements 2, 3b, 4)
#   BENCH_COMMIT_MB      size of the committed file (6, 7) [default: BENCH_SMALL_MB]
#   BENCH_REPOS=100 BENCH_TAGS=10          the many-tiny-artifacts registry (5)
#   BENCH_SYNC_TAGS=10 BENCH_SYNC_MB=8     the rsync repository (8): per tag an
#                                          8 KiB, a ~1 MiB and a BENCH_SYNC_MB file
#   BENCH_CMD_TIMEOUT=900  seconds any single timed command may take
#   BENCH_TMPDIR=/tmp      where the work folder goes (needs ~4x LARGE free)
#   BENCH_RESULTS_DIR=scripts/bench-results  where the table is saved ("" = don't)
#   BENCH_SMALLFILES=500  files of 2 KiB in the small-files artifact (9)
#   BENCH_MOUNT_ARGS     extra options for every regfs mount (e.g. "--request-spin 0")
#   BENCH_CHUNK_MB       the file committed with and without chunk lists (11) [default: BENCH_LARGE_MB]
#   BENCH_CHUNK_READS=1000  random 4 KiB reads of it (11)
#   BENCH_SLOW_RTT_MS=25 BENCH_SLOW_BPS=40000000  the slow link (13): a round trip
#                        before every request, each connection's blob answers capped
#   BENCH_SLOW_REPOS=20  repositories of the tiny-artifacts registry listed through it (13)
#   BENCH_PROXY_BIN      the fault proxy (examples/fault_proxy.rs) [default: built beside regfs]
#   BENCH_MIRROR_TAGS=3 BENCH_MIRROR_MB=8  the mirrored repository (10): per tag
#                                          an 8 KiB, a ~1 MiB and a BENCH_MIRROR_MB
#                                          file; v00 has an SBOM, the SBOM a signature
#   BENCH_GEN_REPOS=1000 BENCH_GEN_TAGS=100 BENCH_GEN_BIG=10000  the generated registry (12):
#                        REPOS repositories of TAGS tags and one of BIG tags, written
#                        straight into docker-registry's storage by scripts/gen_registry.py
#   BENCH_GEN_DIR        where that storage goes [default: a folder in /dev/shm when it
#                        has 4 GiB free, else in the work folder]
#   BENCH_GEN_COPY_TIMEOUT=7200  seconds the rsync -a copy of that tree (12) may take
#   BENCH_SHARE_TAGS=10 BENCH_SHARE_MB=256  the shared-blob mirror (14): tags
#                        sharing one blob of SHARE_MB MiB [default: SMALL_MB]
#   BENCH_ONLY="1 2 3 4 5 6 7 8 9 10 11 12 13 14"  run only these measurements (3 needs 1 and 2,
#                        4 needs 2, 7 needs 6: they are added); data nobody needs is not made
#   REGFS_BIN            use this binary instead of `cargo build --release`
#
# Needs: cargo, curl, skopeo, rsync, python3 with `oras` and `requests`,
# /usr/bin/docker-registry, fusermount3; for 10 the ORAS CLI (`oras` on
# PATH or in `go env GOPATH`/bin, as scripts/install-deps.sh installs it);
# openssl for rows 1 and 2's hash floor (curl alone without it). Root is needed to drop the page
# cache before cold runs (skipped, and said so, when not permitted).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPER="$ROOT/scripts/bench_helpers.py"

SMALL_MB=${BENCH_SMALL_MB:-256}
LARGE_MB=${BENCH_LARGE_MB:-2048}
COMMIT_MB=${BENCH_COMMIT_MB:-$SMALL_MB}
REPOS=${BENCH_REPOS:-100}
TAGS=${BENCH_TAGS:-10}
SYNC_TAGS=${BENCH_SYNC_TAGS:-10}
SYNC_MB=${BENCH_SYNC_MB:-8}
CMD_TIMEOUT=${BENCH_CMD_TIMEOUT:-900}
RESULTS_DIR=${BENCH_RESULTS_DIR-$ROOT/scripts/bench-results}
ONLY=" ${BENCH_ONLY:-1 2 3 4 5 6 7 8 9 10 11 12 13 14} "
SHARE_TAGS=${BENCH_SHARE_TAGS:-10}
SHARE_MB=${BENCH_SHARE_MB:-$SMALL_MB}
SLOW_RTT_MS=${BENCH_SLOW_RTT_MS:-25}
SLOW_BPS=${BENCH_SLOW_BPS:-40000000}
SLOW_REPOS=${BENCH_SLOW_REPOS:-20}
CHUNK_MB=${BENCH_CHUNK_MB:-$LARGE_MB}
CHUNK_READS=${BENCH_CHUNK_READS:-1000}
SMALLFILES=${BENCH_SMALLFILES:-500}
MIRROR_TAGS=${BENCH_MIRROR_TAGS:-3}
MIRROR_MB=${BENCH_MIRROR_MB:-8}
GEN_REPOS=${BENCH_GEN_REPOS:-1000}
GEN_TAGS=${BENCH_GEN_TAGS:-100}
GEN_BIG=${BENCH_GEN_BIG:-10000}
GEN_COPY_TIMEOUT=${BENCH_GEN_COPY_TIMEOUT:-7200}
GEN_DIR=""        # the generated registry's storage (12), removed at exit
[[ "$ONLY" == *" 3 "* ]] && ONLY+="1 2 "
[[ "$ONLY" == *" 4 "* ]] && ONLY+="2 "
[[ "$ONLY" == *" 7 "* ]] && ONLY+="6 "
want() { [[ "$ONLY" == *" $1 "* ]]; }

# ------------------------------------------------------------------ state
WORK=""
REG_PID=""
MORE_REG_PIDS=()  # the mirror targets' registries (10)
MOUNTS=()         # mountpoints we mounted (unmounted by the trap too)
DAEMONS=()        # regfs daemon PIDs we saw (killed by PID if still alive)
PROXY_PIDS=()     # fault proxies (measurement 11)
ROWS=()           # table rows, tab-separated
NOTES=()
DROP_OK=1

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# ------------------------------------------------------------------ cleanup
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    local m p i
    for p in "${PROXY_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for m in "${MOUNTS[@]}"; do
        if mountpoint -q "$m" 2>/dev/null; then
            timeout 20 fusermount3 -u "$m" 2>/dev/null || timeout 20 umount -l "$m" 2>/dev/null
        fi
    done
    for p in "${DAEMONS[@]}"; do
        for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$p" 2>/dev/null; then
            log "regfs daemon $p still running after unmount: killing it"
            kill "$p" 2>/dev/null; sleep 1; kill -9 "$p" 2>/dev/null
        fi
    done
    for p in "$REG_PID" "${MORE_REG_PIDS[@]}"; do
        if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then
            kill "$p" 2>/dev/null
            for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$p" 2>/dev/null
        fi
    done
    if [[ $rc -ne 0 && ${#ROWS[@]} -gt 0 ]]; then
        log "results so far:"
        print_table >&2
    fi
    if [[ -n "$GEN_DIR" && -d "$GEN_DIR" ]] && ! grep -qF " $GEN_DIR/" /proc/mounts; then
        rm -rf "$GEN_DIR"
    fi
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        # Never delete through a live mount.
        if grep -qF " $WORK/" /proc/mounts; then
            log "a mount under $WORK is still live; leaving $WORK in place"
        else
            rm -rf "$WORK"
        fi
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ helpers
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "inf" }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
# The median of the numbers given (an odd count: the middle one).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
mib() { awk -v a="$1" 'BEGIN { printf "%.1f", a / 1048576 }'; }
py() { python3 "$HELPER" "$@"; }
run() { timeout -k 10 "$CMD_TIMEOUT" "$@"; }

dropcache() {
    sync
    if [[ $DROP_OK -eq 1 ]] && ! { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
        DROP_OK=0
        NOTES+=("page cache could not be dropped (not root?): cold runs may be partly warm")
    fi
}

# Registry access-log accounting: mark before, summarise after. The
# registry is the source one, or the one start_registry named NAME.
reg_mark() { wc -l <"$WORK/${1:-storage}-access.log"; } # [NAME]
reg_since() { py access "$WORK/${2:-storage}-access.log" "$1" "$WORK/${2:-storage}"; } # MARK [NAME]
jget() { py jget "$1" "$2"; }

# mount_regfs MNT CACHE [OPTION...]: mount the registry, record the
# daemon's PID in DPID. mount_source SOURCE MNT CACHE [OPTION...]: the same
# for another registry.
DPID=""
mount_regfs() { mount_source "$HOST" "$@"; }
mount_source() {
    local src=$1 mnt=$2 cache=$3
    shift 3
    mkdir -p "$mnt" "$cache"
    local out
    if ! out=$(timeout -k 5 120 "$REGFS" mount "$src" "$mnt" --cache-dir "$cache" ${BENCH_MOUNT_ARGS:-} "$@" 2>&1); then
        die "regfs mount $src $mnt failed: $out (log: $cache/regfs.log: $(tail -n 5 "$cache/regfs.log" 2>/dev/null))"
    fi
    MOUNTS+=("$mnt")
    mountpoint -q "$mnt" || die "regfs mount returned but $mnt is not a mountpoint"
    DPID=""
    local i
    for i in $(seq 50); do
        DPID=$(py daemon-pid "$mnt") && break
        sleep 0.1
    done
    [[ -n "$DPID" ]] || die "cannot find the regfs daemon serving $mnt"
    DAEMONS+=("$DPID")
}

# Peak RSS (VmHWM) of the daemon, and the CPU time it has used since it
# started (user + system; each measurement has its own fresh daemon).
CLK_TCK=$(getconf CLK_TCK)
peak_rss() {
    local kb cpu
    kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null) || true
    [[ -n "$kb" ]] || { echo "?"; return; }
    # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends comm.
    cpu=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk -v t="$CLK_TCK" '{ printf "%.1f", ($12 + $13) / t }') || true
    awk -v k="$kb" -v c="${cpu:-?}" 'BEGIN { printf "%.0f MiB, %s s CPU", k / 1024, c }'
}

# CPU seconds (user + system) process PID has used so far.
cpu_s() {
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk -v t="$CLK_TCK" '{ printf "%.2f", ($12 + $13) / t }' || echo 0
}

# The note for a walk bound by CPU: what the registry and the daemon used
# while it ran, and the least time the registry's share alone needs on
# this machine's cores (requests are served in parallel at best).
cpu_note() { # ID REGISTRY_CPU DAEMON_CPU WALL
    local cores
    cores=$(nproc)
    awk -v id="$1" -v r="$2" -v d="$3" -v w="$4" -v n="$cores" 'BEGIN {
        printf "%s: CPU during the walk: the registry %.1f s, the regfs daemon %.1f s, on %d cores in %.1f s; the registry alone needs at least %.1f s of it (its CPU / cores)", id, r, d, n, w, r / n }'
}

umount_regfs() {
    local mnt=$1 pid=$2 i
    if ! timeout -k 5 60 "$REGFS" umount "$mnt" >/dev/null 2>&1; then
        log "regfs umount $mnt failed; trying fusermount3 -u / umount -l"
        timeout 20 fusermount3 -u "$mnt" 2>/dev/null || timeout 20 umount -l "$mnt" || die "cannot unmount $mnt"
    fi
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        NOTES+=("daemon $pid did not exit within 10 s of unmounting $mnt (killed)")
        kill "$pid" 2>/dev/null || true
    fi
}

# Scan a cache's daemon log for warnings and errors worth reporting.
check_log() {
    local cache=$1 what=$2 n
    [[ -f "$cache/regfs.log" ]] || return 0
    n=$(grep -ciE 'error|warn|panic' "$cache/regfs.log" || true)
    if [[ "$n" -gt 0 ]]; then
        NOTES+=("$what: $n error/warning line(s) in regfs.log, e.g.: $(grep -iE 'error|warn|panic' "$cache/regfs.log" | head -n 2 | tr '\n' ' ' | cut -c1-300)")
    fi
}

# row ID NAME REGFS BASE RATIO GOAL RESULT RSS REQS
row() {
    local IFS=$'\t'
    ROWS+=("$*")
    printf '  => %s\n' "$(printf '%s | ' "$@")" >&2
}

# A timed measurement with a ratio goal.
goal_row() {
    local id=$1 name=$2 r=$3 b=$4 goal=$5 rss=$6 reqs=$7 q res
    q=$(ratio "$r" "$b")
    if le "$q" "$goal"; then res=met; else res=MISSED; fi
    row "$id" "$name" "$r" "$b" "$q" "<= $goal" "$res" "$rss" "$reqs"
}

print_table() {
    local header=$'#\tmeasurement\tregfs s\tbaseline s\tratio\tgoal\tresult\tdaemon peak RSS, CPU\tregistry reqs (regfs/baseline)'
    { echo "$header"; printf '%s\n' "${ROWS[@]}"; } | column -t -s $'\t'
}

verify_sha() { # FILE HEX WHAT
    local got
    got=$(run python3 "$HELPER" sha256 "$1") || die "cannot read $1 to verify it"
    [[ "$got" == "$2" ]] || die "WRONG BYTES: $3: sha256 $got, expected $2"
    log "verified $3: sha256 matches the digest"
}

# ------------------------------------------------------------------ setup
for t in curl skopeo rsync fusermount3 python3 /usr/bin/docker-registry column awk timeout; do
    command -v "$t" >/dev/null || die "missing tool: $t"
done
python3 -c 'import oras.client, requests' 2>/dev/null || die "python3 needs the oras and requests packages (pip install oras)"

echo "== machine"
echo "nproc: $(nproc)   memory: $(free -h | awk '/^Mem:/ { print $2 }')   kernel: $(uname -r)   cpu: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
echo "sizes: small ${SMALL_MB} MiB, large ${LARGE_MB} MiB, commit ${COMMIT_MB} MiB, ${REPOS}x${TAGS} tiny artifacts, sync repo ${SYNC_TAGS} tags (8 KiB + ~1 MiB + ${SYNC_MB} MiB each), mirror repo ${MIRROR_TAGS} tags (8 KiB + ~1 MiB + ${MIRROR_MB} MiB each), generated ${GEN_REPOS}x${GEN_TAGS} + ${GEN_BIG} tags"

if [[ -n "${REGFS_BIN:-}" ]]; then
    REGFS=$(realpath "$REGFS_BIN")
    log "using REGFS_BIN=$REGFS (not building)"
else
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    REGFS="$ROOT/target/release/regfs"
fi
[[ -x "$REGFS" ]] || die "no regfs binary at $REGFS"
echo "regfs: $REGFS ($("$REGFS" --version 2>/dev/null || echo '?'))"

WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/regfs-bench.XXXXXX")
log "work folder $WORK"
mkdir -p "$WORK"/{data,storage,out}

# Feature detection.
HAVE_LAZY=0
if "$REGFS" mount --help 2>/dev/null | grep -q -- '--verify' &&
    "$REGFS" mount --help 2>/dev/null | grep -A3 -- '--verify' | grep -q lazy; then
    HAVE_LAZY=1
fi
HAVE_COMMIT=0
# `regfs commit --help` alone is not proof: a CLI that takes `regfs SOURCE
# MNT` (fstab style) may read `commit` as a SOURCE and print mount's help.
if "$REGFS" --help 2>/dev/null | grep -qE '^\s+commit\s' &&
    "$REGFS" commit --help >/dev/null 2>&1; then
    HAVE_COMMIT=1
fi
# The ORAS CLI (10): on PATH, else where install-deps.sh puts it.
ORAS_CLI=$(command -v oras || true)
if [[ -z "$ORAS_CLI" ]]; then
    for go in go /usr/local/go/bin/go; do
        if command -v "$go" >/dev/null 2>&1; then
            ORAS_CLI="$("$go" env GOPATH)/bin/oras"
            break
        fi
    done
fi
[[ -n "$ORAS_CLI" && -x "$ORAS_CLI" ]] || ORAS_CLI=""
echo "features: verify lazy: $([[ $HAVE_LAZY -eq 1 ]] && echo yes || echo 'no (lazy mode not available)'), commit: $([[ $HAVE_COMMIT -eq 1 ]] && echo yes || echo 'no (regfs commit not available)'), ORAS CLI: ${ORAS_CLI:-none (10 is not measured)}"

# ---- registry
# start_registry NAME [ROOT]: a docker-registry storing into ROOT (default
# $WORK/NAME), with $WORK/NAME.yml, NAME-access.log and NAME-error.log; sets
# NEW_HOST, NEW_PID.
NEW_HOST="" NEW_PID=""
start_registry() {
    local name=$1 root=${2:-$WORK/$1} port i
    port=$(py freeport)
    NEW_HOST="127.0.0.1:$port"
    cat >"$WORK/$name.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $root
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
    /usr/bin/docker-registry serve "$WORK/$name.yml" >"$WORK/$name-access.log" 2>"$WORK/$name-error.log" &
    NEW_PID=$!
    for i in $(seq 100); do
        curl -sf -o /dev/null "http://$NEW_HOST/v2/" && break
        kill -0 "$NEW_PID" 2>/dev/null || die "docker-registry exited: $(cat "$WORK/$name-error.log")"
        sleep 0.1
    done
    curl -sf -o /dev/null "http://$NEW_HOST/v2/" || die "docker-registry did not answer on $NEW_HOST within 10 s"
}
start_registry storage
HOST=$NEW_HOST REG_PID=$NEW_PID
log "docker-registry $(/usr/bin/docker-registry --version 2>/dev/null | awk '{print $NF}') on $HOST (pid $REG_PID)"

# ---- data
DATA=$WORK/data
t0=$(now)
mkdir -p "$DATA/small" "$DATA/large" "$DATA/commit-regfs" "$DATA/commit-oras" "$DATA/sync"
if want 1 || want 13; then
    py randfile "$DATA/small/small.bin" $((SMALL_MB << 20))
    SMALL_HEX=$(py sha256 "$DATA/small/small.bin")
    (cd "$DATA/small" && py oras-push "$HOST" bench/small:v1 small.bin >/dev/null) || die "ORAS push of small.bin failed"
    log "pushed bench/small:v1 (${SMALL_MB} MiB) in $(since "$t0") s"
fi
if want 2 || want 13; then
    t0=$(now)
    py randfile "$DATA/large/large.bin" $((LARGE_MB << 20))
    LARGE_HEX=$(py sha256 "$DATA/large/large.bin")
    (cd "$DATA/large" && py oras-push "$HOST" bench/large:v1 large.bin >/dev/null) || die "ORAS push of large.bin failed"
    log "pushed bench/large:v1 (${LARGE_MB} MiB) in $(since "$t0") s"
fi
if want 14; then
    t0=$(now)
    mkdir -p "$DATA/share"
    py randfile "$DATA/share/weights.bin" $((SHARE_MB << 20))
    for i in $(seq "$SHARE_TAGS"); do
        echo "notes of v$i" >"$DATA/share/notes.txt"
        (cd "$DATA/share" && py oras-push "$HOST" "bench/share:v$i" weights.bin notes.txt >/dev/null) || die "ORAS push of bench/share:v$i failed"
    done
    log "pushed bench/share: $SHARE_TAGS tags sharing ${SHARE_MB} MiB in $(since "$t0") s"
fi
if want 5 || want 13; then
    t0=$(now)
    py populate-many "$HOST" many "$REPOS" "$TAGS" >/dev/null || die "populating the ${REPOS}x${TAGS} registry failed"
    log "pushed ${REPOS} repositories x ${TAGS} tags under many/ in $(since "$t0") s"
fi
if want 8; then
    t0=$(now)
    py populate-sync "$HOST" bench/sync "$SYNC_TAGS" "$SYNC_MB" "$DATA/sync" >/dev/null || die "populating bench/sync failed"
    log "pushed bench/sync (${SYNC_TAGS} tags) in $(since "$t0") s"
fi

if want 9; then
    t0=$(now)
    mkdir -p "$DATA/smallfiles"
    for i in $(seq -w 1 "$SMALLFILES"); do
        # 2 KiB of text, one line of which a grep finds in every tenth file.
        { printf 'file %s\n' "$i"; head -c 1500 /dev/zero | tr '\0' 'x'; printf '\n'; [[ $((10#$i % 10)) -eq 0 ]] && printf 'needle %s\n' "$i"; head -c 500 /dev/zero | tr '\0' 'y'; } >"$DATA/smallfiles/f$i.txt"
    done
    (cd "$DATA/smallfiles" && py oras-push "$HOST" bench/smallfiles:v1 f*.txt >/dev/null) || die "ORAS push of the small files failed"
    log "pushed bench/smallfiles:v1 (${SMALLFILES} files of 2 KiB) in $(since "$t0") s"
fi

# The mirrored repository (10): tags of three files, an SBOM attached to
# v00 and a signature attached to the SBOM, both with the ORAS CLI.
MIRROR_OK=0
if want 10 && [[ -n "$ORAS_CLI" && $HAVE_COMMIT -eq 1 ]]; then
    t0=$(now)
    py populate-sync "$HOST" bench/mirror "$MIRROR_TAGS" "$MIRROR_MB" "$DATA/mirror" >/dev/null || die "populating bench/mirror failed"
    printf '{"spdxVersion":"SPDX-2.3","name":"bench/mirror:v00"}\n' >"$DATA/mirror/sbom.spdx.json"
    head -c 512 /dev/urandom >"$DATA/mirror/sbom.sig"
    MIRROR_SBOM=$(cd "$DATA/mirror" && run "$ORAS_CLI" attach --plain-http --no-tty --artifact-type application/spdx+json \
        "$HOST/bench/mirror:v00" sbom.spdx.json | awk '/^Digest:/ { print $2 }')
    [[ "$MIRROR_SBOM" == sha256:* ]] || die "oras attach of the SBOM to bench/mirror:v00 failed"
    (cd "$DATA/mirror" && run "$ORAS_CLI" attach --plain-http --no-tty --artifact-type application/vnd.example.signature \
        "$HOST/bench/mirror@$MIRROR_SBOM" sbom.sig >/dev/null) || die "oras attach of the signature failed"
    MIRROR_OK=1
    log "pushed bench/mirror (${MIRROR_TAGS} tags, an SBOM and its signature) in $(since "$t0") s"
fi

# A repository to commit into (an existing one, so only the tag is new).
if [[ $HAVE_COMMIT -eq 1 ]] && want 6; then
    echo seed >"$DATA/commit-regfs/seed.txt"
    (cd "$DATA/commit-regfs" && py oras-push "$HOST" bench/commit:seed seed.txt >/dev/null) || die "seeding bench/commit failed"
    rm -f "$DATA/commit-regfs/seed.txt"
    py randfile "$DATA/commit-regfs/payload.bin" $((COMMIT_MB << 20))
    py randfile "$DATA/commit-oras/payload.bin" $((COMMIT_MB << 20))
fi

# ------------------------------------------------------------------ measurements
# Cold whole read: curl of the blob vs cat through a fresh mount (and an
# empty cache). Medians of 3 alternating rounds, the page cache dropped
# before each side: on these machines the disk under the registry swings
# by 2-3x from one read to the next (one curl of 2 GiB took 2 s, the next
# 6 s), so a single pair says more about the disk than about regfs.
cold_read() { # ID NAME REPO FILE HEX [MOUNT-OPTION...] -> sets COLD_REGFS; cache in $WORK/cache-ID
    local id=$1 name=$2 repo=$3 file=$4 hex=$5
    shift 5
    local mnt=$WORK/mnt-$id cache=$WORK/cache-$id t0 tb tr mark acc reqs_b reqs_r rss round
    local curls=() hashes=() regfss=() strict=0
    if [[ " $* " != *" lazy "* ]] && command -v openssl >/dev/null; then strict=1; fi
    for round in 1 2 3; do
        dropcache
        mark=$(reg_mark)
        t0=$(now)
        run curl -sf -o /dev/null "http://$HOST/v2/bench/$repo/blobs/sha256:$hex" || die "curl of $repo blob failed"
        curls+=("$(since "$t0")")
        reqs_b=$(jget "$(reg_since "$mark")" requests)
        # A strict read cannot beat hashing the same bytes: its floor is the
        # slower of the wire (curl) and `openssl dgst -sha256` of the bytes
        # (from the page cache). A lazy read is measured against curl alone.
        if [[ $strict -eq 1 ]]; then
            cat "$DATA/$repo/$file" >/dev/null
            t0=$(now)
            run openssl dgst -sha256 "$DATA/$repo/$file" >/dev/null || die "openssl dgst of $file failed"
            hashes+=("$(since "$t0")")
        fi
        rm -rf "$cache"
        mount_regfs "$mnt" "$cache" "$@"
        dropcache
        mark=$(reg_mark)
        t0=$(now)
        run cat "$mnt/bench/$repo/v1/$file" >/dev/null || die "cat $file through regfs failed (see $cache/regfs.log)"
        regfss+=("$(since "$t0")")
        acc=$(reg_since "$mark")
        reqs_r=$(jget "$acc" requests)
        rss=$(peak_rss "$DPID")
        [[ $round -eq 3 ]] || { umount_regfs "$mnt" "$DPID"; check_log "$cache" "$name"; }
    done
    tb=$(median "${curls[@]}")
    tr=$(median "${regfss[@]}")
    if [[ $strict -eq 1 ]]; then
        local th
        th=$(median "${hashes[@]}")
        NOTES+=("$id: baseline max(curl $tb s, openssl dgst -sha256 $th s), medians of 3; regfs ${regfss[*]} s, curl ${curls[*]} s")
        le "$th" "$tb" || tb=$th
    else
        NOTES+=("$id: medians of 3; regfs ${regfss[*]} s, curl ${curls[*]} s")
    fi
    NOTES+=("$id: regfs requests $(jget "$acc" methods), $(mib "$(jget "$acc" served)") MiB served (last round)")
    verify_sha "$mnt/bench/$repo/v1/$file" "$hex" "$file read through regfs"
    verify_sha "$mnt/bench/$repo/v1/blobs/sha256/$hex" "$hex" "blobs/sha256/${hex:0:12}... through regfs"
    # The same file again in the same mount, against a warm local copy
    # (medians of 3 each).
    local tw tl i locals=() warms=()
    cat "$DATA/$repo/$file" >/dev/null
    mark=$(reg_mark)
    for i in 1 2 3; do
        t0=$(now)
        run cat "$DATA/$repo/$file" >/dev/null
        locals+=("$(since "$t0")")
        t0=$(now)
        run cat "$mnt/bench/$repo/v1/$file" >/dev/null || die "warm cat $file through regfs failed"
        warms+=("$(since "$t0")")
    done
    tl=$(median "${locals[@]}")
    tw=$(median "${warms[@]}")
    umount_regfs "$mnt" "$DPID"
    check_log "$cache" "$name"
    goal_row "$id" "$name" "$tr" "$tb" 1.1 "$rss" "$reqs_r/$reqs_b"
    goal_row "${id}w" "warm re-read in the same mount ($file) vs cat local" "$tw" "$tl" 1.05 "-" "$(jget "$(reg_since "$mark")" requests)/0"
    COLD_REGFS=$tr
}

# Warm re-read through a new mount on the same cache vs cat of a local copy.
warm_read() { # ID NAME REPO FILE LOCAL CACHE
    local id=$1 name=$2 repo=$3 file=$4 local=$5 cache=$6
    local mnt=$WORK/mnt-$id t0 tb tr mark acc reqs_r rss i locals=() regfss=()
    cat "$local" >/dev/null # warm the local copy's page cache
    # Medians of 3 rounds, each through a new mount (a few ms apart). The
    # requests counted are the reads' (each mount checks access first:
    # GET /v2/ and the catalog).
    local reqs=0 served=0
    for i in 1 2 3; do
        t0=$(now)
        run cat "$local" >/dev/null || die "cat $local failed"
        locals+=("$(since "$t0")")
        mount_regfs "$mnt" "$cache"
        mark=$(reg_mark)
        t0=$(now)
        run cat "$mnt/bench/$repo/v1/$file" >/dev/null || die "warm cat $file through regfs failed (see $cache/regfs.log)"
        regfss+=("$(since "$t0")")
        acc=$(reg_since "$mark")
        reqs=$((reqs + $(jget "$acc" requests)))
        served=$((served + $(jget "$acc" served)))
        rss=$(peak_rss "$DPID")
        umount_regfs "$mnt" "$DPID"
    done
    tb=$(median "${locals[@]}")
    tr=$(median "${regfss[@]}")
    reqs_r=$reqs
    NOTES+=("$id: the reads of 3 new mounts made $reqs registry requests, $(mib "$served") MiB served")
    check_log "$cache" "$name"
    goal_row "$id" "$name" "$tr" "$tb" 1.05 "$rss" "$reqs_r/0"
}

echo
echo "== measurements"
# Rows 1L and 2L (extra, when the mount has --verify lazy): the same cold
# read in lazy mode, where bytes can stream before the whole blob is checked.
if want 1; then
    cold_read 1 "cold cat ${SMALL_MB} MiB vs max(curl, openssl dgst)" small small.bin "$SMALL_HEX"
    want 3 && warm_read 3a "warm cat ${SMALL_MB} MiB (new mount, same cache) vs cat local" small small.bin "$DATA/small/small.bin" "$WORK/cache-1"
    rm -rf "$WORK/cache-1"
    if [[ $HAVE_LAZY -eq 1 ]]; then
        cold_read 1L "cold cat ${SMALL_MB} MiB, --verify lazy, vs curl (extra)" small small.bin "$SMALL_HEX" --verify lazy
        rm -rf "$WORK/cache-1L"
    fi
fi
if want 2; then
    cold_read 2 "cold cat ${LARGE_MB} MiB vs max(curl, openssl dgst)" large large.bin "$LARGE_HEX"
    COLD_LARGE=$COLD_REGFS
    want 3 && warm_read 3b "warm cat ${LARGE_MB} MiB (new mount, same cache) vs cat local" large large.bin "$DATA/large/large.bin" "$WORK/cache-2"
    rm -rf "$WORK/cache-2"
    if [[ $HAVE_LAZY -eq 1 ]]; then
        cold_read 2L "cold cat ${LARGE_MB} MiB, --verify lazy, vs curl (extra)" large large.bin "$LARGE_HEX" --verify lazy
        rm -rf "$WORK/cache-2L"
    fi
fi

# 4. First 4 KiB of the large blob through a fresh mount vs its cold whole read.
m4() {
    local mnt=$WORK/mnt-4 cache=$WORK/cache-4 t0 tr mark acc reqs_r served rss name extra=()
    if [[ $HAVE_LAZY -eq 1 ]]; then
        extra=(--verify lazy)
        name="head -c 4096 of ${LARGE_MB} MiB, --verify lazy, vs cold cat"
    else
        name="head -c 4096 of ${LARGE_MB} MiB, strict (lazy mode not available), vs cold cat"
        NOTES+=("4: lazy mode not available (regfs mount --help lists no --verify lazy): measured the strict default")
    fi
    mount_regfs "$mnt" "$cache" "${extra[@]}"
    dropcache
    mark=$(reg_mark)
    t0=$(now)
    run head -c 4096 "$mnt/bench/large/v1/large.bin" >"$WORK/out/head.bin" || die "head -c 4096 through regfs failed (see $cache/regfs.log)"
    tr=$(since "$t0")
    acc=$(reg_since "$mark")
    reqs_r=$(jget "$acc" requests)
    served=$(jget "$acc" served)
    rss=$(peak_rss "$DPID")
    head -c 4096 "$DATA/large/large.bin" | cmp -s - "$WORK/out/head.bin" || die "WRONG BYTES: head -c 4096 through regfs differs from the blob"
    log "verified the first 4096 bytes"
    NOTES+=("4: registry served $(mib "$served") MiB to regfs for a 4 KiB head (by the time head returned); regfs requests $(jget "$acc" methods)")
    umount_regfs "$mnt" "$DPID"
    check_log "$cache" "4"
    rm -rf "$cache"
    goal_row 4 "$name" "$tr" "$COLD_LARGE" 0.02 "$rss" "$reqs_r/-"
}
if want 4; then m4; fi

# 5. ls -R of the many-repository registry vs skopeo list-tags + inspect --raw.
m5() {
    local mnt=$WORK/mnt-5 cache=$WORK/cache-5 t0 tb tr mark acc reqs_b reqs_r rss n r t tags
    mark=$(reg_mark)
    t0=$(now)
    for ((r = 0; r < REPOS; r++)); do
        repo=$(printf 'many/r%03d' "$r")
        tags=$(run skopeo list-tags --tls-verify=false "docker://$HOST/$repo" | python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)["Tags"]))') ||
            die "skopeo list-tags $repo failed"
        for t in $tags; do
            run skopeo inspect --raw --tls-verify=false "docker://$HOST/$repo:$t" >/dev/null || die "skopeo inspect $repo:$t failed"
        done
    done
    tb=$(since "$t0")
    reqs_b=$(jget "$(reg_since "$mark")" requests)

    mount_regfs "$mnt" "$cache"
    mark=$(reg_mark)
    local rc0 dc0
    rc0=$(cpu_s "$REG_PID") dc0=$(cpu_s "$DPID")
    t0=$(now)
    run ls -R "$mnt/many" >"$WORK/out/ls-R.txt" || die "ls -R through regfs failed (see $cache/regfs.log)"
    tr=$(since "$t0")
    NOTES+=("$(cpu_note 5 "$(awk -v a="$rc0" -v b="$(cpu_s "$REG_PID")" 'BEGIN{print b-a}')" "$(awk -v a="$dc0" -v b="$(cpu_s "$DPID")" 'BEGIN{print b-a}')" "$tr")")
    acc=$(reg_since "$mark")
    reqs_r=$(jget "$acc" requests)
    rss=$(peak_rss "$DPID")
    n=$(grep -cx 'manifest.json' "$WORK/out/ls-R.txt" || true)
    [[ "$n" -eq $((REPOS * TAGS)) ]] || die "ls -R listed $n manifest.json files, expected $((REPOS * TAGS))"
    n=$(grep -c '^file-t[0-9]*\.txt$' "$WORK/out/ls-R.txt" || true)
    [[ "$n" -eq $((REPOS * TAGS)) ]] || die "ls -R listed $n titled files, expected $((REPOS * TAGS))"
    NOTES+=("5: ls -R printed $(wc -l <"$WORK/out/ls-R.txt") lines; registry requests: regfs $reqs_r $(jget "$acc" methods), skopeo $reqs_b")
    umount_regfs "$mnt" "$DPID"
    check_log "$cache" "5"
    rm -rf "$cache"
    goal_row 5 "ls -R ${REPOS}x${TAGS} vs skopeo list-tags+inspect" "$tr" "$tb" 0.03 "$rss" "$reqs_r/$reqs_b"
}
if want 5; then m5; fi

# 8. rsync out of a fresh mount vs skopeo sync to a dir.
m8() { # ID FLAGS
    local id=$1 flags=$2 mnt=$WORK/mnt-8$1 cache=$WORK/cache-8$1 dest=$WORK/out/rsync$1 t0 tb tr mark reqs_b reqs_r rss t bytes
    local sdest=$WORK/out/skopeo$1 acc
    dropcache
    mark=$(reg_mark)
    t0=$(now)
    run skopeo sync --src docker --dest dir --src-tls-verify=false "$HOST/bench/sync" "$sdest" >/dev/null 2>"$WORK/out/skopeo-sync.err" ||
        die "skopeo sync failed: $(tail -n 3 "$WORK/out/skopeo-sync.err")"
    tb=$(since "$t0")
    reqs_b=$(jget "$(reg_since "$mark")" requests)

    mount_regfs "$mnt" "$cache"
    dropcache
    mark=$(reg_mark)
    t0=$(now)
    # shellcheck disable=SC2086
    run rsync $flags "$mnt/bench/sync/" "$dest/" || die "rsync $flags out of regfs failed (see $cache/regfs.log)"
    tr=$(since "$t0")
    acc=$(reg_since "$mark")
    reqs_r=$(jget "$acc" requests)
    rss=$(peak_rss "$DPID")
    umount_regfs "$mnt" "$DPID"
    for ((t = 0; t < SYNC_TAGS; t++)); do
        local tag
        tag=$(printf 'v%02d' "$t")
        for f in notes.txt medium.bin large.bin; do
            cmp -s "$DATA/sync/$tag/$f" "$dest/$tag/$f" || die "WRONG BYTES: rsync copy of $tag/$f differs from what was pushed"
        done
    done
    log "verified the rsync copy against the pushed files"
    bytes=$(du -sb "$dest" | cut -f1)
    NOTES+=("8$id: rsync $flags copied $(mib "$bytes") MiB, skopeo sync wrote $(mib "$(du -sb "$sdest" | cut -f1)") MiB; regfs requests $(jget "$acc" methods)")
    check_log "$cache" "8$id"
    rm -rf "$cache" "$dest" "$sdest"
    goal_row "8$id" "rsync $flags of ${SYNC_TAGS} tags vs skopeo sync to dir" "$tr" "$tb" 1.0 "$rss" "$reqs_r/$reqs_b"
}
if want 8; then
    m8 "" "-a"
    m8 b "-aH"
fi

# 6, 7. commit vs ORAS push; re-commit of an unchanged tag.
# recommit_row ID WHAT MNT: run `regfs commit` on the tag, report what reached the registry.
recommit_row() {
    local id=$1 what=$2 mnt=$3 mark t0 tr acc out up writes res
    mark=$(reg_mark)
    t0=$(now)
    if ! out=$(run "$REGFS" commit "$mnt/bench/commit/v1" 2>&1); then
        die "regfs re-commit ($what) failed: $out"
    fi
    tr=$(since "$t0")
    acc=$(reg_since "$mark")
    up=$(jget "$acc" uploaded)
    writes=$(jget "$acc" writes)
    if [[ "$up" -eq 0 ]]; then res=met; else res=MISSED; fi
    NOTES+=("$id: re-commit ($what) took $tr s; registry requests $(jget "$acc" methods); $writes write request(s); $up blob bytes uploaded; regfs said: $(printf '%s' "$out" | tr '\n' '|' | cut -c1-300)")
    row "$id" "re-commit, $what: blob bytes uploaded ($writes write reqs)" "$up B" "-" "-" "0 B" "$res" "$(peak_rss "$DPID")" "$(jget "$acc" requests)/-"
}

m67() {
    local mnt=$WORK/mnt-6 cache=$WORK/cache-6 t0 tb tr tcp tc mark acc reqs_b reqs_r rss hex out
    hex=$(py sha256 "$DATA/commit-regfs/payload.bin")
    mark=$(reg_mark)
    t0=$(now)
    (cd "$DATA/commit-oras" && run python3 "$HELPER" oras-push "$HOST" bench/orascommit:v1 payload.bin >/dev/null) || die "ORAS push of payload.bin failed"
    tb=$(since "$t0")
    reqs_b=$(jget "$(reg_since "$mark")" requests)

    mount_regfs "$mnt" "$cache"
    mark=$(reg_mark)
    t0=$(now)
    mkdir "$mnt/bench/commit/v1" || die "mkdir of a new tag folder in regfs failed"
    run cp "$DATA/commit-regfs/payload.bin" "$mnt/bench/commit/v1/" || die "cp into regfs failed"
    tcp=$(since "$t0")
    if ! out=$(run "$REGFS" commit "$mnt/bench/commit/v1" 2>&1); then
        die "regfs commit failed: $out"
    fi
    tr=$(since "$t0")
    tc=$(awk -v a="$tr" -v b="$tcp" 'BEGIN { printf "%.3f", a - b }')
    acc=$(reg_since "$mark")
    reqs_r=$(jget "$acc" requests)
    rss=$(peak_rss "$DPID")
    # The registry must now hold the tag, with the file's digest as a layer.
    curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$HOST/v2/bench/commit/manifests/v1" |
        grep -q "sha256:$hex" || die "after regfs commit, bench/commit:v1 does not reference sha256:$hex"
    curl -sfI -o /dev/null "http://$HOST/v2/bench/commit/blobs/sha256:$hex" || die "after regfs commit, the blob sha256:$hex is missing"
    mark=$(reg_mark)
    verify_sha "$mnt/bench/commit/v1/payload.bin" "$hex" "payload.bin read back through regfs after commit"
    NOTES+=("6: reading payload.bin back through the mount after the commit made the registry serve $(mib "$(jget "$(reg_since "$mark")" served)") MiB")
    NOTES+=("6: regfs time is mkdir+cp ${tcp} s + commit ${tc} s; registry requests $(jget "$acc" methods); regfs said: $(printf '%s' "$out" | tr '\n' '|' | cut -c1-300)")
    goal_row 6 "mkdir+cp+commit ${COMMIT_MB} MiB vs ORAS push" "$tr" "$tb" 1.0 "$rss" "$reqs_r/$reqs_b"

    # 7a: commit again with nothing staged.
    recommit_row 7a "nothing staged" "$mnt"
    # 7b: copy the same bytes over the file again, then commit: the tag's
    # content is unchanged, so nothing should be uploaded.
    if run cp "$DATA/commit-regfs/payload.bin" "$mnt/bench/commit/v1/payload.bin" 2>"$WORK/out/recp.err" ||
        { rm -f "$mnt/bench/commit/v1/payload.bin" && run cp "$DATA/commit-regfs/payload.bin" "$mnt/bench/commit/v1/payload.bin"; } 2>>"$WORK/out/recp.err"; then
        recommit_row 7b "same bytes copied over the file" "$mnt"
    else
        NOTES+=("7b: could not copy the same file over the committed one: $(tr '\n' ' ' <"$WORK/out/recp.err" | cut -c1-200)")
        row 7b "re-commit, same bytes copied over: not measured (cp refused)" "-" "-" "-" "0 B" "not measured" "-" "-"
    fi
    umount_regfs "$mnt" "$DPID"
    check_log "$cache" "6/7"
}
if ! want 6; then
    :
elif [[ $HAVE_COMMIT -eq 1 ]]; then
    m67
else
    row 6 "not measured: regfs commit not available" "-" "-" "-" "<= 1.0" "not measured" "-" "-"
    want 7 && row 7 "re-commit of unchanged tag: not measured: regfs commit not available" "-" "-" "-" "0 B" "not measured" "-" "-"
fi

# 9. Warm access to many small files: a second `grep -r` over the titled
# files of one tag in the same mount (everything cached, kernel caches
# warm) vs `grep -r` over a local copy. Also through the tag's digest
# folder (@sha256:...), whose names never change. (blobs/ holds the same
# files again under their digests: grep the titled names only.) Medians of
# 5 rounds.
m9() {
    local mnt=$WORK/mnt-9 cache=$WORK/cache-9 t0 tb tr td mark acc reqs_r rss digest n
    # Medians of 5 alternating rounds: one grep is 10-60 ms.
    local locals=() regfss=() i
    grep -r needle "$DATA/smallfiles" >/dev/null || true
    mount_regfs "$mnt" "$cache"
    local only=(--exclude-dir=blobs --exclude-dir=referrers --exclude=manifest.json)
    run grep -r "${only[@]}" needle "$mnt/bench/smallfiles/v1" >/dev/null || die "grep -r through regfs failed (see $cache/regfs.log)"
    mark=$(reg_mark)
    for i in 1 2 3 4 5; do
        t0=$(now)
        grep -r needle "$DATA/smallfiles" >"$WORK/out/grep-local.txt" || die "grep -r over the local small files failed"
        locals+=("$(since "$t0")")
        t0=$(now)
        run grep -r "${only[@]}" needle "$mnt/bench/smallfiles/v1" >"$WORK/out/grep-regfs.txt" || die "warm grep -r through regfs failed"
        regfss+=("$(since "$t0")")
    done
    tb=$(median "${locals[@]}")
    tr=$(median "${regfss[@]}")
    n=$(wc -l <"$WORK/out/grep-regfs.txt")
    [[ "$n" -eq $(wc -l <"$WORK/out/grep-local.txt") ]] || die "WRONG RESULT: grep -r through regfs found $n lines, locally $(wc -l <"$WORK/out/grep-local.txt")"
    acc=$(reg_since "$mark")
    reqs_r=$(jget "$acc" requests)
    digest=$(getfattr --only-values -n user.oci.digest "$mnt/bench/smallfiles/v1" 2>/dev/null) || digest=""
    if [[ -n "$digest" ]]; then
        run grep -r "${only[@]}" needle "$mnt/bench/smallfiles/@$digest" >/dev/null || die "grep -r through the digest folder failed"
        t0=$(now)
        run grep -r "${only[@]}" needle "$mnt/bench/smallfiles/@$digest" >/dev/null || die "warm grep -r through the digest folder failed"
        td=$(since "$t0")
        NOTES+=("9: the same warm grep -r through @$digest (names that never change): $td s, ratio $(ratio "$td" "$tb")")
    fi
    rss=$(peak_rss "$DPID")
    umount_regfs "$mnt" "$DPID"
    check_log "$cache" "9"
    rm -rf "$cache"
    goal_row 9 "warm grep -r over ${SMALLFILES} titled 2 KiB files vs grep -r local" "$tr" "$tb" 2.0 "$rss" "$reqs_r/-"
}
if want 9; then m9; fi

# 11. Chunk digests (issue 10): a file committed by regfs (with a chunk
# list) and the same file committed with --no-chunk-lists (none), read with
# 1,000 random 4 KiB preads in lazy mode: through a proxy that corrupts one
# byte of every tenth Range answer (wrong bytes returned: goal 0), and on
# the clean registry (median latency with the list / without: goal 1.2);
# and the commit time with lists / without (goal 1.05).
start_proxy() { # MODE -> PROXY_HOST
    local out=$WORK/out/proxy-$RANDOM.txt i
    "$PROXY_BIN" "$HOST" "$1" >"$out" 2>&1 &
    PROXY_PIDS+=($!)
    for i in $(seq 100); do
        PROXY_HOST=$(head -n 1 "$out")
        [[ "$PROXY_HOST" == 127.0.0.1:* ]] && return 0
        sleep 0.1
    done
    die "fault proxy did not start: $(cat "$out")"
}
stop_proxies() {
    local p
    for p in "${PROXY_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    PROXY_PIDS=()
}
# randreads ID REPO HOST -> RR (json); a fresh lazy mount with its own cache
randreads() {
    local id=$1 repo=$2 host=$3 mnt=$WORK/mnt-$1 cache=$WORK/cache-$1 saved=$HOST
    HOST=$host mount_regfs "$mnt" "$cache" --verify lazy --timeout 10
    HOST=$saved
    RR=$(run python3 "$HELPER" randreads "$mnt/$repo/v1/chunked.bin" "$DATA/chunked/chunked.bin" "$CHUNK_READS" 4096 11) ||
        die "random reads of $repo through regfs failed (see $cache/regfs.log)"
    RR_RSS=$(peak_rss "$DPID")
    RR_VERIFY=$(getfattr --only-values -n user.oci.verify "$mnt/$repo/v1/chunked.bin" 2>/dev/null || echo '?')
    umount_regfs "$mnt" "$DPID"
    rm -rf "$cache"
}
m11() {
    local mnt=$WORK/mnt-11 cache=$WORK/cache-11 t0 tl tn rl rn
    mkdir -p "$DATA/chunked"
    py randfile "$DATA/chunked/chunked.bin" $((CHUNK_MB << 20))
    mount_regfs "$mnt" "$cache"
    mkdir -p "$mnt/bench/nochunks/v1" "$mnt/bench/chunks/v1"
    run cp "$DATA/chunked/chunked.bin" "$mnt/bench/nochunks/v1/" || die "cp into regfs failed"
    run cp "$DATA/chunked/chunked.bin" "$mnt/bench/chunks/v1/" || die "cp into regfs failed"
    sync
    t0=$(now)
    run "$REGFS" commit --no-chunk-lists "$mnt/bench/nochunks/v1" >/dev/null || die "regfs commit --no-chunk-lists failed"
    tn=$(since "$t0")
    t0=$(now)
    run "$REGFS" commit "$mnt/bench/chunks/v1" >/dev/null || die "regfs commit failed"
    tl=$(since "$t0")
    umount_regfs "$mnt" "$DPID"
    rm -rf "$cache"
    curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$HOST/v2/bench/chunks/manifests/v1" |
        grep -q 'application/vnd.regfs.chunks.v1+json' || die "bench/chunks:v1 has no chunk list layer"
    goal_row 11c "commit ${CHUNK_MB} MiB with chunk lists vs --no-chunk-lists" "$tl" "$tn" 1.05 "-" "-/-"

    start_proxy corrupt-ranges-every=10
    randreads 11a-none bench/nochunks "$PROXY_HOST"
    rn=$RR
    NOTES+=("11a: the same $CHUNK_READS reads of the layer without a list (user.oci.verify=$RR_VERIFY) through the corrupting proxy: $rn")
    randreads 11a bench/chunks "$PROXY_HOST"
    rl=$RR
    NOTES+=("11a: with the list (user.oci.verify=$RR_VERIFY): $rl")
    stop_proxies
    local wrong res
    wrong=$(jget "$rl" wrong)
    if [[ "$wrong" -eq 0 ]]; then res=met; else res=MISSED; fi
    row 11a "$CHUNK_READS random 4 KiB lazy reads, 1 in 10 ranges corrupted: wrong reads (without a list: $(jget "$rn" wrong))" "$wrong" "-" "-" "0" "$res" "$RR_RSS" "-"

    randreads 11b-none bench/nochunks "$HOST"
    rn=$RR
    randreads 11b bench/chunks "$HOST"
    rl=$RR
    NOTES+=("11b: clean registry, without a list: $rn; with: $rl")
    goal_row 11b "median latency of $CHUNK_READS random 4 KiB lazy reads, chunk list vs none" "$(jget "$rl" median_ms)" "$(jget "$rn" median_ms)" 1.2 "$RR_RSS" "-"
}
if want 11; then
    PROXY_BIN=${BENCH_PROXY_BIN:-$(dirname "$REGFS")/examples/fault_proxy}
    if [[ ! -x "$PROXY_BIN" ]]; then
        log "cargo build --release --example fault_proxy"
        (cd "$ROOT" && cargo build --release --quiet --example fault_proxy) || die "building the fault proxy failed"
        PROXY_BIN="$ROOT/target/release/examples/fault_proxy"
    fi
    m11
fi

# 13. A slow link: the same registry behind a proxy that adds a round trip
# to every request and caps each connection's blob answers (the kernel here
# has no netem). Strict cold cat vs curl through it (one connection, as
# curl uses: parallel ranges are what beat it); lazy head -c 4096 of the
# large blob in a listed folder, in round trips; ls -R of SLOW_REPOS
# repositories vs the skopeo loop through it.
m13() {
    local mnt=$WORK/mnt-13 cache=$WORK/cache-13 t0 tb tr rss saved=$HOST n r t tags
    start_proxy "slow-link=$SLOW_RTT_MS,$SLOW_BPS"
    local slow=$PROXY_HOST
    NOTES+=("13: slow link: ${SLOW_RTT_MS} ms before every request, blob answers at most $(mib "$SLOW_BPS") MiB/s per connection")

    dropcache
    t0=$(now)
    run curl -sf -o /dev/null "http://$slow/v2/bench/small/blobs/sha256:$SMALL_HEX" || die "curl through the slow link failed"
    tb=$(since "$t0")
    HOST=$slow mount_regfs "$mnt" "$cache"
    HOST=$saved
    t0=$(now)
    run cat "$mnt/bench/small/v1/small.bin" >/dev/null || die "cat through the slow link failed (see $cache/regfs.log)"
    tr=$(since "$t0")
    rss=$(peak_rss "$DPID")
    verify_sha "$mnt/bench/small/v1/small.bin" "$SMALL_HEX" "small.bin through the slow link"
    umount_regfs "$mnt" "$DPID"
    rm -rf "$cache"
    goal_row 13a "slow link: strict cold cat ${SMALL_MB} MiB vs curl" "$tr" "$tb" 0.25 "$rss" "-"

    HOST=$slow mount_regfs "$mnt" "$cache" --verify lazy
    HOST=$saved
    ls "$mnt/bench/large/v1" >/dev/null || die "ls through the slow link failed"
    t0=$(now)
    run head -c 4096 "$mnt/bench/large/v1/large.bin" >"$WORK/out/head13.bin" || die "head through the slow link failed"
    tr=$(since "$t0")
    head -c 4096 "$DATA/large/large.bin" | cmp -s - "$WORK/out/head13.bin" || die "WRONG BYTES: head -c 4096 through the slow link"
    rss=$(peak_rss "$DPID")
    umount_regfs "$mnt" "$DPID"
    rm -rf "$cache"
    goal_row 13b "slow link: lazy head -c 4096 of ${LARGE_MB} MiB (listed folder), in round trips of ${SLOW_RTT_MS} ms" \
        "$(awk -v t="$tr" -v r="$SLOW_RTT_MS" 'BEGIN { printf "%.3f", t * 1000 / r }')" 1 3 "$rss" "-"

    t0=$(now)
    for ((r = 0; r < SLOW_REPOS; r++)); do
        repo=$(printf 'many/r%03d' "$r")
        tags=$(run skopeo list-tags --tls-verify=false "docker://$slow/$repo" | python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)["Tags"]))') ||
            die "skopeo list-tags $repo through the slow link failed"
        for t in $tags; do
            run skopeo inspect --raw --tls-verify=false "docker://$slow/$repo:$t" >/dev/null || die "skopeo inspect $repo:$t failed"
        done
    done
    tb=$(since "$t0")
    HOST=$slow mount_regfs "$mnt" "$cache"
    HOST=$saved
    t0=$(now)
    for ((r = 0; r < SLOW_REPOS; r++)); do
        run ls -R "$mnt/$(printf 'many/r%03d' "$r")"
    done >"$WORK/out/ls-R13.txt" || die "ls -R through the slow link failed (see $cache/regfs.log)"
    tr=$(since "$t0")
    n=$(grep -cx 'manifest.json' "$WORK/out/ls-R13.txt" || true)
    [[ "$n" -eq $((SLOW_REPOS * TAGS)) ]] || die "ls -R through the slow link listed $n manifest.json files, expected $((SLOW_REPOS * TAGS))"
    rss=$(peak_rss "$DPID")
    umount_regfs "$mnt" "$DPID"
    rm -rf "$cache"
    stop_proxies
    goal_row 13c "slow link: ls -R ${SLOW_REPOS}x${TAGS} vs skopeo list-tags+inspect" "$tr" "$tb" 0.03 "$rss" "-"
}
if want 13; then
    [[ -x "${PROXY_BIN:-}" ]] || PROXY_BIN=${BENCH_PROXY_BIN:-$(dirname "$REGFS")/examples/fault_proxy}
    if [[ ! -x "$PROXY_BIN" ]]; then
        (cd "$ROOT" && cargo build --release --quiet --example fault_proxy) || die "building the fault proxy failed"
        PROXY_BIN="$ROOT/target/release/examples/fault_proxy"
    fi
    m13
fi

# 10. Mirroring a repository with its referrers into another registry:
# `oras backup` of every tag with referrers into a folder, then `oras
# restore` of it, vs `rsync -aH` out of a mount of the source into a
# folder, `rsync -aH` of it into a mount of the target, and `regfs commit`.
# Both targets must then hold what the source holds: the same tags at the
# same digests, the same referrers (mirror-digests compares; a mismatch
# is printed).
m10() {
    local bk=$WORK/out/oras-backup usb=$WORK/out/mirror-usb oras_host regfs_host
    local mnta=$WORK/mnt-10a cachea=$WORK/cache-10a mntb=$WORK/mnt-10b cacheb=$WORK/cache-10b
    local t0 tbk trs tb tout tin tcommit tr tmount mark acc reqs_b reqs_bt reqs_r reqs_rt
    local dpa dpb rss_a rss_b want got_o got_r res out
    start_registry mirror-oras
    oras_host=$NEW_HOST
    MORE_REG_PIDS+=("$NEW_PID")
    start_registry mirror-regfs
    regfs_host=$NEW_HOST
    MORE_REG_PIDS+=("$NEW_PID")

    dropcache
    mark=$(reg_mark)
    t0=$(now)
    run "$ORAS_CLI" backup --plain-http --no-tty --include-referrers --output "$bk" "$HOST/bench/mirror" >"$WORK/out/oras-backup.log" 2>&1 ||
        die "oras backup failed: $(tail -n 3 "$WORK/out/oras-backup.log")"
    tbk=$(since "$t0")
    t0=$(now)
    run "$ORAS_CLI" restore --plain-http --no-tty --input "$bk" "$oras_host/bench/mirror" >"$WORK/out/oras-restore.log" 2>&1 ||
        die "oras restore failed: $(tail -n 3 "$WORK/out/oras-restore.log")"
    trs=$(since "$t0")
    tb=$(awk -v a="$tbk" -v b="$trs" 'BEGIN { printf "%.3f", a + b }')
    reqs_b=$(jget "$(reg_since "$mark")" requests)
    reqs_bt=$(jget "$(reg_since 0 mirror-oras)" requests)

    t0=$(now)
    mount_regfs "$mnta" "$cachea"
    tmount=$(since "$t0")
    dpa=$DPID
    dropcache
    mark=$(reg_mark)
    t0=$(now)
    run rsync -aH "$mnta/bench/mirror/" "$usb/" || die "rsync -aH out of the source mount failed (see $cachea/regfs.log)"
    tout=$(since "$t0")
    reqs_r=$(jget "$(reg_since "$mark")" requests)
    rss_a=$(peak_rss "$dpa")
    umount_regfs "$mnta" "$dpa"
    check_log "$cachea" "10 (source mount)"
    mount_source "$regfs_host" "$mntb" "$cacheb"
    dpb=$DPID
    t0=$(now)
    mkdir -p "$mntb/bench/mirror" || die "mkdir of the repository in the target mount failed"
    run rsync -aH "$usb/" "$mntb/bench/mirror/" || die "rsync -aH into the target mount failed (see $cacheb/regfs.log)"
    tin=$(since "$t0")
    t0=$(now)
    out=$(run "$REGFS" commit "$mntb/bench/mirror" 2>&1) || die "regfs commit of the mirror failed: $out"
    tcommit=$(since "$t0")
    rss_b=$(peak_rss "$dpb")
    umount_regfs "$mntb" "$dpb"
    check_log "$cacheb" "10 (target mount)"
    reqs_rt=$(jget "$(reg_since 0 mirror-regfs)" requests)
    tr=$(awk -v a="$tout" -v b="$tin" -v c="$tcommit" 'BEGIN { printf "%.3f", a + b + c }')

    want=$(py mirror-digests "$HOST" bench/mirror) || die "cannot list what bench/mirror holds"
    got_o=$(py mirror-digests "$oras_host" bench/mirror) || die "cannot list what oras restore made"
    got_r=$(py mirror-digests "$regfs_host" bench/mirror) || die "cannot list what regfs commit made"
    res="same digests"
    local who got
    for who in oras regfs; do
        if [[ $who == oras ]]; then got=$got_o; else got=$got_r; fi
        if [[ "$(grep -v '^schema-index' <<<"$got")" != "$(grep -v '^schema-index' <<<"$want")" ]]; then
            res=MISMATCH
            log "MISMATCH: the $who mirror differs from the source (< source, > $who):"
            diff <(grep -v '^schema-index' <<<"$want") <(grep -v '^schema-index' <<<"$got") | grep '^[<>]' >&2 || true
            NOTES+=("10: MISMATCH: the $who mirror differs from the source: $(diff <(grep -v '^schema-index' <<<"$want") <(grep -v '^schema-index' <<<"$got") | grep '^[<>]' | tr '\n' ' ' | cut -c1-400)")
        fi
    done
    [[ $res == MISMATCH ]] || log "verified: both mirrors hold the source's $(grep -c '^tag ' <<<"$want") tags and $(grep -c '^referrer ' <<<"$want") referrers at the same digests"
    if [[ "$(grep '^schema-index' <<<"$got_o")" == "$(grep '^schema-index' <<<"$got_r")" ]]; then
        NOTES+=("10: the sha256-<hex> tag-schema indexes regfs wrote have the same digests as the ones oras restore copied")
    else
        NOTES+=("10: the sha256-<hex> tag-schema indexes differ between the mirrors (regfs writes its own, oras restore copies the source's): oras $(grep '^schema-index' <<<"$got_o" | awk '{ print substr($3, 8, 12) }' | tr '\n' ' '), regfs $(grep '^schema-index' <<<"$got_r" | awk '{ print substr($3, 8, 12) }' | tr '\n' ' ')")
    fi
    NOTES+=("10: oras backup ${tbk} s + oras restore ${trs} s (folder $(mib "$(du -sb "$bk" | cut -f1)") MiB); regfs rsync -aH out ${tout} s + rsync -aH in ${tin} s + commit ${tcommit} s (folder $(mib "$(du -sb "$usb" | cut -f1)") MiB; each mount took about ${tmount} s, not counted); registry requests source/target: regfs $reqs_r/$reqs_rt, ORAS $reqs_b/$reqs_bt; daemon peak RSS, CPU: source mount $rss_a, target mount $rss_b")
    rm -rf "$cachea" "$cacheb" "$bk" "$usb"
    row 10 "mirror ${MIRROR_TAGS} tags + 2 referrers: rsync -aH out, in, commit vs oras backup + restore" "$tr" "$tb" "$(ratio "$tr" "$tb")" "-" "$res" "$rss_a / $rss_b" "$((reqs_r + reqs_rt))/$((reqs_b + reqs_bt))"
}
if ! want 10; then
    :
elif [[ $MIRROR_OK -eq 1 ]]; then
    m10
else
    row 10 "mirror: not measured (needs the ORAS CLI and regfs commit)" "-" "-" "-" "-" "not measured" "-" "-"
fi

# 12. A large registry (issue 13): GEN_REPOS repositories of GEN_TAGS tags
# and one of GEN_BIG tags, written straight into a docker-registry's
# storage (scripts/gen_registry.py: seconds, not one push per tag). Each
# tag is a manifest of its own (two small titled files); the blobs are
# shared. Measured: the mount; `ls` of the GEN_BIG-tag repository; a cold
# `find` of the whole tree on a fresh mount (goal: under 5 s); the same
# `find` warm vs `find` of an `rsync -a` copy of the tree on local disk
# (goal: at most 2x); the daemon's peak RSS after all that (goal: under
# 150 MiB), and its RSS once the kernel forgot the tree (drop_caches: the
# inode table follows what the kernel holds). The walks are mounted with
# --tag-ttl 3600: a cold walk of 100,000 tags takes longer than the
# default 30 s, and a warm walk is one within the tags' TTL.
m12() {
    local mnta=$WORK/mnt-12a cachea=$WORK/cache-12a mnt=$WORK/mnt-12 cache=$WORK/cache-12
    local copy=$WORK/out/gen-copy gen_host gen_pid gen_out t0 tmount tls tcold twarm tlocal tcopy mark acc rss n want_n kb res
    local tags=$((GEN_REPOS * GEN_TAGS + GEN_BIG))
    if [[ -n "${BENCH_GEN_DIR:-}" ]]; then
        GEN_DIR=$(mktemp -d "$BENCH_GEN_DIR/regfs-bench-gen.XXXXXX")
    elif [[ -d /dev/shm && $(df -Pk /dev/shm | awk 'NR == 2 { print $4 }') -gt $((4 << 20)) ]]; then
        GEN_DIR=$(mktemp -d /dev/shm/regfs-bench-gen.XXXXXX)
    else
        GEN_DIR=$(mktemp -d "$WORK/gen.XXXXXX")
    fi
    t0=$(now)
    gen_out=$(run python3 "$ROOT/scripts/gen_registry.py" "$GEN_DIR" --repos "$GEN_REPOS" --tags "$GEN_TAGS" --big-tags "$GEN_BIG" --prefix gen) ||
        die "scripts/gen_registry.py failed"
    log "generated ${GEN_REPOS}x${GEN_TAGS} + ${GEN_BIG} tags in $GEN_DIR in $(since "$t0") s: $gen_out"
    NOTES+=("12: the registry was written by scripts/gen_registry.py in $(since "$t0") s ($gen_out), into $GEN_DIR")
    start_registry gen "$GEN_DIR"
    gen_host=$NEW_HOST gen_pid=$NEW_PID
    MORE_REG_PIDS+=("$NEW_PID")

    # The mount, and ls of the big repository, on a fresh cache.
    dropcache
    t0=$(now)
    mount_source "$gen_host" "$mnta" "$cachea"
    tmount=$(since "$t0")
    mark=$(reg_mark gen)
    t0=$(now)
    n=$(run ls "$mnta/gen/big" | wc -l) || die "ls of gen/big through regfs failed (see $cachea/regfs.log)"
    tls=$(since "$t0")
    [[ "$n" -eq "$GEN_BIG" ]] || die "ls of gen/big listed $n tags, expected $GEN_BIG"
    acc=$(reg_since "$mark" gen)
    NOTES+=("12b: ls of gen/big: regfs requests $(jget "$acc" methods)")
    rss=$(peak_rss "$DPID")
    umount_regfs "$mnta" "$DPID"
    check_log "$cachea" "12a/12b"
    rm -rf "$cachea"
    row 12a "mount of the generated registry ($((GEN_REPOS + 1)) repositories, $tags tags)" "$tmount" "-" "-" "-" "-" "-" "-"
    row 12b "ls of the ${GEN_BIG}-tag repository (cold)" "$tls" "-" "-" "-" "-" "$rss" "$(jget "$acc" requests)/-"

    # Cold find of the whole tree on a fresh mount and cache.
    mount_source "$gen_host" "$mnt" "$cache" --tag-ttl 3600
    dropcache
    mark=$(reg_mark gen)
    local rc0 dc0
    rc0=$(cpu_s "$gen_pid") dc0=$(cpu_s "$DPID")
    t0=$(now)
    run find "$mnt" >"$WORK/out/find-cold.txt" || die "cold find through regfs failed (see $cache/regfs.log)"
    tcold=$(since "$t0")
    NOTES+=("$(cpu_note 12c "$(awk -v a="$rc0" -v b="$(cpu_s "$gen_pid")" 'BEGIN{print b-a}')" "$(awk -v a="$dc0" -v b="$(cpu_s "$DPID")" 'BEGIN{print b-a}')" "$tcold")")
    acc=$(reg_since "$mark" gen)
    n=$(grep -c '/manifest\.json$' "$WORK/out/find-cold.txt" || true)
    [[ "$n" -eq "$tags" ]] || die "find listed $n manifest.json files, expected $tags"
    want_n=$(wc -l <"$WORK/out/find-cold.txt")
    NOTES+=("12c: cold find printed $want_n paths; regfs requests $(jget "$acc" methods)")
    if le "$tcold" 5; then res=met; else res=MISSED; fi
    row 12c "cold find of the whole tree ($want_n paths)" "$tcold" "-" "-" "< 5 s" "$res" "$(peak_rss "$DPID")" "$(jget "$acc" requests)/-"

    # A local copy, then warm finds of both.
    t0=$(now)
    # (Every file of every tag is read through the mount: longer than one command may take.)
    timeout -k 10 "$GEN_COPY_TIMEOUT" rsync -a "$mnt/" "$copy/" || die "rsync -a of the mount failed or took over $GEN_COPY_TIMEOUT s (see $cache/regfs.log)"
    tcopy=$(since "$t0")
    n=$(find "$copy" | wc -l)
    NOTES+=("12d: rsync -a of the mount to $copy took $tcopy s ($n paths, $(du -sk "$copy" | cut -f1) KiB)")
    run find "$mnt" >/dev/null || die "warm find through regfs failed"
    mark=$(reg_mark gen)
    t0=$(now)
    run find "$mnt" >"$WORK/out/find-warm.txt" || die "warm find through regfs failed"
    twarm=$(since "$t0")
    acc=$(reg_since "$mark" gen)
    [[ "$(wc -l <"$WORK/out/find-warm.txt")" -eq "$want_n" ]] || die "the warm find listed $(wc -l <"$WORK/out/find-warm.txt") paths, the cold one $want_n"
    find "$copy" >/dev/null
    t0=$(now)
    find "$copy" >/dev/null
    tlocal=$(since "$t0")
    rss=$(peak_rss "$DPID")
    goal_row 12d "warm find of the whole tree vs find of an rsync -a copy on local disk" "$twarm" "$tlocal" 2.0 "$rss" "$(jget "$acc" requests)/0"
    kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$DPID/status" 2>/dev/null || echo 0)
    if [[ "$kb" -gt 0 && "$kb" -lt $((150 * 1024)) ]]; then res=met; else res=MISSED; fi
    row 12e "daemon peak RSS after cold find, rsync -a and warm finds" "$(mib $((kb * 1024))) MiB" "-" "-" "< 150 MiB" "$res" "$rss" "-"
    if { sync && echo 2 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
        sleep 2
        kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$DPID/status" 2>/dev/null || echo 0)
        row 12f "daemon RSS once the kernel forgot the tree (drop_caches)" "$(mib $((kb * 1024))) MiB" "-" "-" "falls" "-" "-" "-"
    else
        row 12f "daemon RSS once the kernel forgot the tree: not measured (drop_caches needs root)" "-" "-" "-" "-" "-" "-" "-"
    fi
    umount_regfs "$mnt" "$DPID"
    check_log "$cache" "12c-12e"
    rm -rf "$cache" "$copy"
}
if want 12; then m12; fi

# 14. A mirror carries each blob once (issue 15): SHARE_TAGS tags of one
# repository share one SHARE_MB MiB blob (each has small notes of its
# own). `rsync -aH` of the repository out of a mount: bytes on the copy
# over one blob's size (goal <= 1.05) and time over `rsync -aH` of one tag
# (goal <= 1.2), each cold (fresh mount and cache; the median of three
# alternating rounds); then the copy goes into
# a mount of a second registry and is committed: every tag must have the
# same digest there, and the shared blob must be uploaded once.
m14() {
    local mnt=$WORK/mnt-14 cache=$WORK/cache-14 one=$WORK/out/share-one all=$WORK/out/share-all
    local mntb=$WORK/mnt-14b cacheb=$WORK/cache-14b t0 tone tall bytes size q res out ups want got target rss
    local round ones=() alls=()
    size=$((SHARE_MB << 20))
    for round in 1 2 3; do
        rm -rf "$one" "$all"
        mount_regfs "$mnt" "$cache"
        dropcache
        t0=$(now)
        run rsync -aH "$mnt/bench/share/v1/" "$one/" || die "rsync -aH of one tag failed (see $cache/regfs.log)"
        ones+=("$(since "$t0")")
        umount_regfs "$mnt" "$DPID"
        check_log "$cache" "14 (one tag)"
        rm -rf "$cache"
        mount_regfs "$mnt" "$cache"
        dropcache
        t0=$(now)
        run rsync -aH "$mnt/bench/share/" "$all/" || die "rsync -aH of the repository failed (see $cache/regfs.log)"
        alls+=("$(since "$t0")")
        rss=$(peak_rss "$DPID")
        umount_regfs "$mnt" "$DPID"
        check_log "$cache" "14 (all tags)"
        rm -rf "$cache"
    done
    tone=$(median "${ones[@]}")
    tall=$(median "${alls[@]}")
    NOTES+=("14b: rounds: one tag ${ones[*]} s; all tags ${alls[*]} s")
    bytes=$(du -sb "$all" | cut -f1)
    q=$(ratio "$bytes" "$size")
    if le "$q" 1.05; then res=met; else res=MISSED; fi
    row 14a "rsync -aH of $SHARE_TAGS tags sharing a ${SHARE_MB} MiB blob: bytes on the copy / the blob" "$bytes B" "$size B" "$q" "<= 1.05" "$res" "-" "-"
    goal_row 14b "rsync -aH of the $SHARE_TAGS tags vs of one tag" "$tall" "$tone" 1.2 "$rss" "-"

    start_registry share-target
    target=$NEW_HOST
    MORE_REG_PIDS+=("$NEW_PID")
    mount_source "$target" "$mntb" "$cacheb"
    mkdir -p "$mntb/bench/share" || die "mkdir in the target mount failed"
    run rsync -aH "$all/" "$mntb/bench/share/" || die "rsync -aH into the target mount failed (see $cacheb/regfs.log)"
    NOTES+=("14: staged in the target: $(du -sb "$cacheb/staging" | cut -f1) bytes on disk for the $SHARE_TAGS tags")
    out=$(run "$REGFS" commit "$mntb/bench/share" 2>&1) || die "regfs commit of the shared-blob mirror failed: $out"
    umount_regfs "$mntb" "$DPID"
    check_log "$cacheb" "14 (target)"
    ups=$(grep -c "^Uploaded .*($size bytes)" <<<"$out" || true)
    want=$(py mirror-digests "$HOST" bench/share) || die "cannot list bench/share"
    got=$(py mirror-digests "$target" bench/share) || die "cannot list the committed copy"
    if [[ "$want" == "$got" && "$ups" -eq 1 ]]; then res=met; else res=MISSED; fi
    [[ "$want" == "$got" ]] || NOTES+=("14: MISMATCH: $(diff <(echo "$want") <(echo "$got") | grep '^[<>]' | tr '\n' ' ' | cut -c1-300)")
    row 14c "the copy committed to a second registry: same digests, the shared blob uploaded once" "uploaded $ups x" "-" "-" "same, once" "$res" "-" "-"
}
if want 14; then m14; fi

# ------------------------------------------------------------------ report
echo
echo "== results (ratio = regfs / baseline; goals from issue 5)"
print_table
if [[ ${#NOTES[@]} -gt 0 ]]; then
    echo
    echo "== notes"
    printf -- '- %s\n' "${NOTES[@]}"
fi
if [[ -n "$RESULTS_DIR" ]]; then
    mkdir -p "$RESULTS_DIR"
    only=""
    [[ -n "${BENCH_ONLY:-}" ]] && only="-only-$(tr -s ' ' '-' <<<"$BENCH_ONLY")"
    f="$RESULTS_DIR/bench-$(date +%Y%m%d-%H%M%S)-${SMALL_MB}M-${LARGE_MB}M$only.txt"
    {
        echo "nproc: $(nproc)   memory: $(free -h | awk '/^Mem:/ { print $2 }')   kernel: $(uname -r)"
        echo "regfs: $("$REGFS" --version 2>/dev/null || echo '?') ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo '+dirty'))"
        echo "sizes: small ${SMALL_MB} MiB, large ${LARGE_MB} MiB, commit ${COMMIT_MB} MiB, ${REPOS}x${TAGS}, sync ${SYNC_TAGS} tags x (8 KiB + ~1 MiB + ${SYNC_MB} MiB), mirror ${MIRROR_TAGS} tags x (8 KiB + ~1 MiB + ${MIRROR_MB} MiB), generated ${GEN_REPOS}x${GEN_TAGS} + ${GEN_BIG}"
        [[ -n "${BENCH_ONLY:-}" ]] && echo "BENCH_ONLY=$BENCH_ONLY"
        print_table
        printf -- '- %s\n' "${NOTES[@]}"
    } >"$f"
    log "table saved to $f"
fi
exit 0
