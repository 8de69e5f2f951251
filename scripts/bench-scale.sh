#!/usr/bin/env bash
# How mirror's snapshots scale with the number of files (issue 7, point 6).
#
#   scripts/bench-scale.sh [--with-git] [N ...]       default: 10000 100000 1000000
#
# For each N, a tree of N small files (1 to 100 bytes each), 100 per directory, two levels
# deep (d000/e00/f00, as scripts/bench-watch.sh), recorded by mirror as one tier. One table
# row per N: the time to generate the tree; the first snapshot, the no-change snapshot
# (median of 3) and the one-file-change snapshot, each with its time and peak RSS; the lstat
# floor (Python os.walk + lstat of every file, timed inside Python without its start-up,
# median of 3) and the ratio no-change/floor
# (issue 7's target: at most 1.5 at every size); the shadow repository's size (du -sb).
# With --with-git, git does the same three snapshots (add -A -f + commit into a bare
# repository with its own index, as in scripts/bench.sh) and the no-change ratio mirror/git
# is added. A report, not a test: exits 0 whatever the numbers (non-zero only when a command
# fails).
#
# Disk: every file takes a block (4 KiB) in the tree, and again in a repository that keeps
# it as a loose object: a million files need ~4 GB for the tree, up to as much for mirror's
# shadow and, with --with-git, for git's. Each size's work dir is deleted before the next.
#
# Environment:
#   MIRROR_BIN   mirror binary (default: `cargo build --release` in the repo root)
#   BENCH_DIR    where to create the temp work dirs (default /tmp)
#
# Needs: bash >= 5 (EPOCHREALTIME), GNU time at /usr/bin/time, python3, git.

set -euo pipefail
export LC_ALL=C

BENCH_NAME=bench-scale
repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$repo_root/scripts/bench-lib.sh"
tree_py=$repo_root/scripts/bench_tree.py

with_git=false
sizes=()
for arg in "$@"; do
    case $arg in
    -h | --help)
        usage "${BASH_SOURCE[0]}"
        exit 0
        ;;
    --with-git) with_git=true ;;
    *)
        if [[ ! $arg =~ ^[0-9]+$ ]] || ((arg < 1)); then
            die "sizes are positive integers, got '$arg' (see --help)"
        fi
        sizes+=("$arg")
        ;;
    esac
done
((${#sizes[@]})) || sizes=(10000 100000 1000000)
BENCH_DIR=${BENCH_DIR:-/tmp}

bench_requirements
resolve_mirror_bin "$repo_root"

WORK=""
trap '[[ -z $WORK ]] || rm -rf -- "$WORK"' EXIT

echo "# mirror snapshots by number of files"
echo
versions=$("$MIRROR_BIN" --version 2>/dev/null || echo "mirror (unknown version)")
! $with_git || versions+=", $(git --version)"
echo "$(date -u '+%Y-%m-%d %H:%M:%S UTC'), nproc $(nproc), $versions"
echo "tree: N files of 1-100 bytes, 100 per directory, two levels deep; one tier; page cache warm"
echo
header="| files | generate s | first s | first peak MiB | no-change s (median of 3) | no-change peak MiB | one-change s | one-change peak MiB | lstat floor s | no-change/floor | shadow MiB |"
rule="|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
if $with_git; then
    header+=" git first s | git no-change s | git one-change s | no-change mirror/git |"
    rule+="---:|---:|---:|---:|"
fi
echo "$header"
echo "$rule"

missed=()
for n in "${sizes[@]}"; do
    WORK=$(mktemp -d "$BENCH_DIR/mirror-bench-scale.XXXXXX")
    T=$WORK/T S=$WORK/S B=$WORK/B
    isolate_home "$WORK/home"
    # The tree, mirror's shadow with one loose object per file, git's likewise.
    copies=2
    ! $with_git || copies=3
    disk_check "$WORK" $((n * 4 * copies + 65536))

    log "$n files: generating the tree"
    mkdir -p "$T"
    t0=$EPOCHREALTIME
    change_rel=$(python3 "$tree_py" small "$T" "$n")
    gen=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')

    "$MIRROR_BIN" -C "$T" init --shadow "$S" --tier root=. >&2
    ! $with_git || git init -q --bare "$B" >&2
    # Racy-git: let the clock move past the generation (see scripts/bench.sh).
    sleep 1
    warm_cache "$T"

    log "$n files: first snapshot"
    mirror_snapshot "$T"
    first_s=$ELAPSED first_kib=$PEAK_KIB
    if $with_git; then
        git_snapshot "$B" "$T" first
        g_first=$ELAPSED
    fi

    log "$n files: no-change snapshot x3"
    ms=() mk=() gs=()
    for i in 1 2 3; do
        mirror_snapshot "$T"
        ms+=("$ELAPSED") mk+=("$PEAK_KIB")
        if $with_git; then
            git_snapshot "$B" "$T" "no-change $i"
            gs+=("$ELAPSED")
        fi
    done
    nc_s=$(median "${ms[@]}") nc_kib=$(maxof "${mk[@]}")

    log "$n files: one-file-change snapshot ($change_rel)"
    printf 'changed at %s\n' "$EPOCHREALTIME" >>"$T/$change_rel"
    mirror_snapshot "$T"
    ch_s=$ELAPSED ch_kib=$PEAK_KIB
    if $with_git; then
        git_snapshot "$B" "$T" one-file-change
        g_change=$ELAPSED
    fi

    log "$n files: lstat floor"
    floor=$(lstat_floor "$T")

    r=$(ratio "$nc_s" "$floor")
    if [[ $r == n/a ]] || awk -v r="$r" 'BEGIN { exit !(r > 1.5) }'; then missed+=("$n ($r)"); fi
    row="| $n | $gen | $first_s | $(mib "$first_kib") | $nc_s | $(mib "$nc_kib") | $ch_s | $(mib "$ch_kib") | $floor | $r | $(awk -v b="$(du -sb -- "$S" | cut -f1)" 'BEGIN { printf "%.1f", b / 1048576 }') |"
    if $with_git; then
        g_nc=$(median "${gs[@]}")
        row+=" $g_first | $g_nc | $g_change | $(ratio "$nc_s" "$g_nc") |"
    fi
    echo "$row"

    rm -rf -- "$WORK"
    WORK=""
done
echo
if ((${#missed[@]})); then
    echo "Target (issue 7) missed: the no-change snapshot within 1.5x the lstat floor at every size; not at: ${missed[*]}"
else
    echo "Target (issue 7) met: the no-change snapshot within 1.5x the lstat floor at every size."
fi
exit 0
