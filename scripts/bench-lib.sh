# shellcheck shell=bash
# Helpers shared by scripts/bench.sh and scripts/bench-scale.sh. Sourced, not run.
#
# The sourcing script sets BENCH_NAME (the prefix of its messages) and, before calling
# `timed`, WORK (its temporary work directory).

log() { printf '%s: %s\n' "${BENCH_NAME:-bench}" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "${BENCH_NAME:-bench}" "$*" >&2
    exit 1
}

# usage FILE: prints the comment block at the top of FILE (after the #! line).
usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$1"; }

bench_requirements() {
    [[ -n ${EPOCHREALTIME:-} ]] || die "bash >= 5 is required (EPOCHREALTIME)"
    [[ -x /usr/bin/time ]] || die "GNU time is required at /usr/bin/time"
    command -v python3 >/dev/null || die "python3 is required"
    command -v git >/dev/null || die "git is required"
}

# resolve_mirror_bin REPO_ROOT: sets MIRROR_BIN to an absolute path; without MIRROR_BIN in
# the environment, builds the release binary first (its output goes to stderr).
resolve_mirror_bin() {
    if [[ -z ${MIRROR_BIN:-} ]]; then
        log "building mirror (cargo build --release) in $1"
        (cd -- "$1" && cargo build --release) >&2
        MIRROR_BIN=$1/target/release/mirror
    fi
    [[ -x $MIRROR_BIN ]] || die "mirror binary not found or not executable: $MIRROR_BIN"
    # The commands run from various directories.
    MIRROR_BIN=$(cd -- "$(dirname -- "$MIRROR_BIN")" && pwd)/$(basename -- "$MIRROR_BIN")
}

# isolate_home DIR: no tool may read or write the real user's configuration, data or
# caches: every home, XDG base directory and tool-specific location is under DIR (the
# caches stay, as a user has them, but there).
isolate_home() {
    local h=$1
    mkdir -p "$h"/{data,config,cache,state,runtime}
    chmod 700 "$h/runtime"
    : >"$h/gitconfig"
    export HOME=$h
    export XDG_DATA_HOME=$h/data XDG_CONFIG_HOME=$h/config XDG_CACHE_HOME=$h/cache
    export XDG_STATE_HOME=$h/state XDG_RUNTIME_DIR=$h/runtime
    export GIT_CONFIG_GLOBAL=$h/gitconfig GIT_CONFIG_NOSYSTEM=1
    export RESTIC_CACHE_DIR=$h/cache/restic
    export BORG_BASE_DIR=$h BORG_CACHE_DIR=$h/cache/borg BORG_CONFIG_DIR=$h/config/borg
    # Run from a git hook, these would point every git command elsewhere; the identity
    # and repositories of the tools are chosen by the scripts alone.
    unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
    unset MIRROR_IDENTITY RESTIC_REPOSITORY RESTIC_REPOSITORY_FILE RESTIC_PASSWORD_FILE
    unset RESTIC_PASSWORD_COMMAND BORG_REPO BORG_PASSPHRASE BORG_PASSCOMMAND BUP_DIR
}

# timed CMD...: runs CMD under GNU time. Sets ELAPSED (s), PEAK_KIB, RC.
# /usr/bin/time's %e only has 10 ms resolution and no-change snapshots are fast, so wall
# time comes from EPOCHREALTIME around the same call (it adds the ~1 ms exec of time
# itself, equally to every tool). %M is the max RSS of the child or, for `bash -c 'a && b'`,
# of the largest of its descendants. The command's stdout goes to stderr so stdout stays a
# clean report.
# shellcheck disable=SC2034 # ELAPSED, PEAK_KIB and RC are for the caller
timed() {
    local tf=$WORK/time.out t0 t1
    t0=$EPOCHREALTIME
    RC=0
    /usr/bin/time -f '%e %M' -o "$tf" "$@" >&2 || RC=$?
    t1=$EPOCHREALTIME
    ELAPSED=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    # On failure time prepends "Command exited with non-zero status N".
    read -r _ PEAK_KIB < <(tail -n 1 "$tf")
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
maxof() { printf '%s\n' "$@" | sort -g | tail -n 1; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
ratio() { awk -v m="$1" -v g="$2" 'BEGIN { if (g > 0) printf "%.2f", m / g; else print "n/a" }'; }

# lstat_floor DIR: seconds (median of 3) of Python's os.walk + lstat of every file, the
# floor of any snapshot that looks at each file once. Timed inside Python, so the
# interpreter's start-up (tens of ms, more than the walk of a small tree) is not counted
# (scripts/bench-watch.sh's floor counts it).
lstat_floor() {
    local runs=()
    for _ in 1 2 3; do
        runs+=("$(python3 -c '
import os, sys, time
t0 = time.perf_counter()
for d, _, fs in os.walk(sys.argv[1]):
    for f in fs: os.lstat(os.path.join(d, f))
print(f"{time.perf_counter() - t0:.3f}")' "$1")")
    done
    median "${runs[@]}"
}

# warm_cache DIR: reads every file of DIR once, so whichever tool runs first does not pay
# for cold reads. (Through a pipe: GNU tar writing to /dev/null reads no file at all.)
warm_cache() { tar -cf - -C "$1" . | cat >/dev/null; }

# mirror_snapshot TREE: one timed `mirror snapshot` of the project at TREE.
mirror_snapshot() {
    timed "$MIRROR_BIN" -C "$1" snapshot --quiet
    case $RC in
    0) ;;
    3) log "warning: mirror snapshot reported a partial snapshot (exit 3)" ;;
    *) die "mirror snapshot failed (exit $RC)" ;;
    esac
}

# gc.auto=0/maintenance.auto=false: otherwise `git commit` may start a background gc
# after the first commit (tens of thousands of loose objects) that would run during the
# following steps and skew every tool's timings.
GIT_OPTS=(-c user.name=b -c user.email=b@b -c gc.auto=0 -c maintenance.auto=false)

# git_snapshot BARE TREE MESSAGE: `git add -A -f . && git commit` of TREE into the bare
# repository BARE (whose own index B/index is git's stat cache), as one timed process.
# --allow-empty: with nothing changed `git commit` exits 1; mirror records a snapshot
# regardless, so git must too.
git_snapshot() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timed bash -c '
        b=$1 t=$2 msg=$3; shift 3
        git "$@" --git-dir="$b" --work-tree="$t" add -A -f . &&
        git "$@" --git-dir="$b" --work-tree="$t" commit -q --allow-empty -m "$msg"
    ' _ "$1" "$2" "bench $3" "${GIT_OPTS[@]}"
    ((RC == 0)) || die "git add/commit failed (exit $RC)"
}

# disk_check DIR NEED_KIB: warns when DIR's file system has less free space than that.
disk_check() {
    local avail
    avail=$(df -Pk -- "$1" | awk 'NR == 2 { print $4 }')
    if ((avail < $2)); then
        log "warning: ~$(($2 / 1024)) MiB may be needed in $1, only $((avail / 1024)) MiB free"
    fi
}
