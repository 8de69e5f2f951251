#!/usr/bin/env bash
# Measure what `mirror watch` buys: the snapshot after one change, re-examining only the paths
# the filesystem events named, against the plain no-change `mirror snapshot` (one lstat per
# file) and a Python lstat-everything floor, on a tier of N files.
#
#   scripts/bench-watch.sh [N ...]        default: 10000 100000
#
# Files are empty (an inode each, no data block), 100 per directory, two levels deep, so a
# million of them fit on a small disk; the costs measured here are per path, not per byte.
# The watch logs each snapshot's duration itself (`... (N ms)`), which is what is reported
# for it (median of 5 single-file changes at different depths of the tree, and the first of
# them, which loads the stat cache the watch then keeps in memory). BENCH_KEEP_LOG=PREFIX keeps
# each size's watch log as PREFIX.N.
set -euo pipefail
export LC_ALL=C
repo="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z ${MIRROR_BIN:-} ]]; then
    cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
    MIRROR_BIN="$repo/target/release/mirror"
fi
sizes=("$@")
((${#sizes[@]})) || sizes=(10000 100000)

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
seconds() { local s=$EPOCHREALTIME; "$@" >/dev/null 2>&1; awk -v a="$s" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.3f\n", b-a}'; }

printf '| files | generate | first snapshot | peak RSS | no-change snapshot | lstat floor (python) | watch: one change |\n'
printf '|---|---|---|---|---|---|---|\n'
for n in "${sizes[@]}"; do
    work="$(mktemp -d "${BENCH_DIR:-/tmp}/bench-watch.XXXXXX")"
    server=""
    trap '[[ -n $server ]] && kill $server 2>/dev/null; rm -rf "$work"' EXIT
    export HOME="$work/home" XDG_CONFIG_HOME="$work/home/config" XDG_DATA_HOME="$work/home/data"
    export GIT_CONFIG_GLOBAL="$work/home/gitconfig"
    mkdir -p "$HOME" && : > "$GIT_CONFIG_GLOBAL"
    mkdir -p "$work/p/t"
    gen=$(seconds python3 - "$work/p/t" "$n" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 10000:03d}", f"e{i // 100 % 100:02d}")
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    open(os.path.join(d, f"f{i % 100:02d}"), "w").close()
PY
)
    cd "$work/p"
    "$MIRROR_BIN" init -q --tier t=t >/dev/null
    first=$( { /usr/bin/time -f '%e %M' "$MIRROR_BIN" -q snapshot >/dev/null; } 2>&1 | tail -1)
    nochange=$(for _ in 1 2 3; do seconds "$MIRROR_BIN" -q snapshot; done | median)
    floor=$(for _ in 1 2 3; do seconds python3 -c '
import os, sys
for d, _, fs in os.walk(sys.argv[1]):
    for f in fs: os.lstat(os.path.join(d, f))' t; done | median)
    "$MIRROR_BIN" watch --debounce 300ms > "$work/watch.out" 2>"$work/watch.err" &
    server=$!
    wait_lines() { for _ in $(seq 600); do (( $(grep -c ' watch: ' "$work/watch.out" || true) >= $1 )) && return 0; sleep 0.1; done; echo "watch did not log (stderr: $(cat "$work/watch.err"))" >&2; exit 1; }
    wait_lines 1
    dirs=$(( (n + 99) / 100 ))
    for k in 1 2 3 4 5; do
        i=$(( (k * 7919 * 100) % (dirs * 100) ))
        echo "change $k" > "t/d$(printf %03d $((i / 10000)))/e$(printf %02d $((i / 100 % 100)))/f$(printf %02d $((i % 100)))"
        wait_lines $((k + 1))
    done
    kill "$server"; wait "$server" 2>/dev/null || true; server=""
    times=$(grep ' watch: ' "$work/watch.out" | tail -5 | sed -E 's/.*\(([0-9]+) ms\)$/\1/')
    # The first snapshot after the start loads the stat cache from disk; the rest find it
    # held in memory. Both are shown: median of the five, and the first.
    watchms="$(median <<<"$times") ms (first: $(head -1 <<<"$times") ms)"
    read -r first_s first_kib <<<"$first"
    printf '| %d | %ss | %ss | %d MiB | %ss | %ss | %s |\n' "$n" "$gen" "$first_s" $((first_kib / 1024)) "$nochange" "$floor" "$watchms"
    [[ -n ${BENCH_KEEP_LOG:-} ]] && cp "$work/watch.out" "$BENCH_KEEP_LOG.$n"
    cd /; rm -rf "$work"; trap - EXIT
done
