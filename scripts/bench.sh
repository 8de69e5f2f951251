#!/usr/bin/env bash
# Benchmark `mirror` against plain git doing the same job.
#
# Generates a project tree (BENCH_SMALL small files in nested folders, a
# gitignored target/ of BENCH_TARGET files, a few dotfiles, one big file of
# BENCH_BIG_MIB MiB) and times, side by side in one run:
#
#   mirror snapshot         vs  git --git-dir=B --work-tree=T add -A -f . && git commit
#   (the big file and 20 small files are treasures: mirror stores them age-encrypted)
#   mirror checkout latest  vs  git --git-dir=B --work-tree=E checkout -f
#
# for: first snapshot, no-change snapshot (median of 3), one-file-change
# snapshot, and restore into an empty directory. Prints a markdown table with
# the mirror/git time ratio and the peak RSS of each side, plus disk usage of
# both repositories. It reports; it is not a test: it exits 0 even when the
# targets are missed (it exits non-zero only when a command fails or the
# restored tree differs from the original).
#
# Usage:
#   scripts/bench.sh
#   BENCH_BIG_MIB=1024 scripts/bench.sh        # peak memory with a 1 GiB file
#   BENCH_SMALL=200 BENCH_TARGET=50 BENCH_BIG_MIB=5 MIRROR_BIN=/path/to/mirror scripts/bench.sh
#
# Environment:
#   MIRROR_BIN     mirror binary (default: `cargo build --release` in the repo
#                  root, then target/release/mirror)
#   BENCH_SMALL    number of small files             (default 20000)
#   BENCH_TARGET   number of files in target/        (default 5000)
#   BENCH_BIG_MIB  size of the big file in MiB       (default 200)
#   BENCH_DIR      where to create the temp work dir (default /tmp)
#
# Needs: bash >= 5 (EPOCHREALTIME), GNU time at /usr/bin/time, python3, git.

set -euo pipefail

# Decimal points, not commas, in EPOCHREALTIME and awk/printf.
export LC_ALL=C

BENCH_SMALL=${BENCH_SMALL:-20000}
BENCH_TARGET=${BENCH_TARGET:-5000}
BENCH_BIG_MIB=${BENCH_BIG_MIB:-200}
BENCH_DIR=${BENCH_DIR:-/tmp}
NOCHANGE_RUNS=3

log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

[[ -n ${EPOCHREALTIME:-} ]] || die "bash >= 5 is required (EPOCHREALTIME)"
[[ -x /usr/bin/time ]] || die "GNU time is required at /usr/bin/time"
command -v python3 >/dev/null || die "python3 is required"
command -v git >/dev/null || die "git is required"
for v in BENCH_SMALL BENCH_TARGET BENCH_BIG_MIB; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
((BENCH_SMALL >= 1)) || die "BENCH_SMALL must be at least 1 (one small file is modified)"

# --- mirror binary -----------------------------------------------------------

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z ${MIRROR_BIN:-} ]]; then
    log "building mirror (cargo build --release) in $repo_root"
    # Build output goes to stderr so stdout stays a clean report.
    (cd -- "$repo_root" && cargo build --release) >&2
    MIRROR_BIN=$repo_root/target/release/mirror
fi
[[ -x $MIRROR_BIN ]] || die "mirror binary not found or not executable: $MIRROR_BIN"
# The commands below run from various directories.
MIRROR_BIN=$(cd -- "$(dirname -- "$MIRROR_BIN")" && pwd)/$(basename -- "$MIRROR_BIN")

# --- work dir and an isolated environment ------------------------------------

WORK=$(mktemp -d "$BENCH_DIR/mirror-bench.XXXXXX")
trap 'rm -rf -- "$WORK"' EXIT

T=$WORK/T    # the project tree, shared by both tools
S=$WORK/S    # mirror's shadow repository (outside T)
B=$WORK/B    # git's bare repository; its default index B/index is git's own
E1=$WORK/E1  # mirror restore target (must not exist or be empty)
E2=$WORK/E2  # git restore target

# Neither tool may read or write the real user's config, data or caches.
mkdir -p "$WORK/home"/{data,config,cache}
: >"$WORK/home/gitconfig"
export HOME=$WORK/home
export XDG_DATA_HOME=$WORK/home/data
export XDG_CONFIG_HOME=$WORK/home/config
export XDG_CACHE_HOME=$WORK/home/cache
export GIT_CONFIG_GLOBAL=$WORK/home/gitconfig
export GIT_CONFIG_NOSYSTEM=1

# Rough disk need: the big file exists in T, S, B, E1 and E2.
need_kib=$(((BENCH_BIG_MIB * 5 + (BENCH_SMALL + BENCH_TARGET) * 6 / 1024 * 4 + 64) * 1024))
avail_kib=$(df -Pk -- "$WORK" | awk 'NR == 2 { print $4 }')
if ((avail_kib < need_kib)); then
    log "warning: ~$((need_kib / 1024)) MiB may be needed in $WORK, only $((avail_kib / 1024)) MiB free"
fi

# --- tree generation ---------------------------------------------------------

log "generating tree in $T"
mkdir -p "$T"
# Seeded RNG: the same layout and content every run, so runs are comparable.
# Content is half words, half random bytes: it compresses somewhat, like code.
# Prints the relative path of one small file, later used for the one-file change.
change_rel=$(python3 - "$T" "$BENCH_SMALL" "$BENCH_TARGET" <<'PY'
import math, os, random, sys

root, n_small, n_target = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(20240601)
words = ("fn let mut pub struct impl self return match if else for while loop "
         "use mod crate type enum trait where async await const static ref "
         "Some None Ok Err String Vec Option Result Box u8 u32 u64 usize").split()

def content(lo, hi):
    size = rng.randint(lo, hi)
    text_len = size // 2
    parts, n = [], 0
    while n < text_len:
        line = " ".join(rng.choices(words, k=rng.randint(3, 12))) + "\n"
        parts.append(line)
        n += len(line)
    text = "".join(parts).encode()[:text_len]
    return text + rng.randbytes(size - len(text))

def write(rel, data):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)

# Small files: 3 levels of folders, ~20 files per leaf folder.
leaf_dirs = max(1, math.ceil(n_small / 20))
fan = max(1, math.ceil(leaf_dirs ** (1 / 3)))
exts = (".txt", ".rs", ".md", ".json", ".toml", ".dat")
first = None
for i in range(n_small):
    leaf, idx = divmod(i, 20)
    a, rest = divmod(leaf, fan * fan)
    b, c = divmod(rest, fan)
    rel = f"src/a{a:02d}/b{b:02d}/c{c:02d}/f{idx:02d}{exts[i % len(exts)]}"
    write(rel, content(1024, 10240))
    if first is None:
        first = rel

# Gitignored build output: ~100 files per folder.
for i in range(n_target):
    d, idx = divmod(i, 100)
    write(f"target/debug/deps/d{d:03d}/obj{idx:03d}.o", content(512, 4096))

# Hidden files and folders, some of them also ignored.
write(".gitignore", b"target/\n.env\n.cache/\n")
write(".env", b"SECRET=not-really\n")
write(".editorconfig", b"root = true\n[*]\nindent_style = space\n")
write(".config/tool/settings.toml", content(200, 800))
write(".vscode/settings.json", b'{"editor.tabSize": 4}\n')
for i in range(20):
    write(f".cache/blobs/c{i:02d}.bin", content(1024, 4096))
# Treasures (default patterns): stored age-encrypted by mirror, in plaintext by git.
for i in range(20):
    write(f"platform/.hidden/keys/k{i:02d}.txt", content(200, 2048))

print(first)
PY
)
log "writing ${BENCH_BIG_MIB} MiB big file"
# Streamed, so a 1 GiB file needs no memory here.
# Under .hidden/production/, like issue 7's reference tree: a treasure, so mirror encrypts it.
mkdir -p "$T/.hidden/production"
head -c "$((BENCH_BIG_MIB * 1024 * 1024))" /dev/urandom >"$T/.hidden/production/big.bin"

# Init mirror before anything is timed, so mirror.yaml is in the tree both
# tools record (one small file; it does not distort git's numbers).
"$MIRROR_BIN" -C "$T" init --encrypt --shadow "$S" --tier root=. >&2
git init -q --bare "$B"

tree_files=$(find "$T" -type f | wc -l)
tree_size=$(du -sh -- "$T" | cut -f1)

# Racy-git: a file modified in the same second the index is written gets
# re-hashed by the next `git add`. Let the clock move past the generation.
sleep 1
# Warm the page cache so whichever tool runs first does not pay for cold reads.
tar -cf - -C "$T" . >/dev/null

# --- timing helpers ----------------------------------------------------------

# timed CMD...: runs CMD under GNU time. Sets ELAPSED (s), PEAK_KIB, RC.
# /usr/bin/time's %e only has 10 ms resolution and no-change snapshots are
# fast, so wall time comes from EPOCHREALTIME around the same call (it adds
# the ~1 ms exec of time itself, equally to both tools). %M is the max RSS of
# the child or, for `bash -c 'a && b'`, of the largest of its descendants.
# The command's stdout goes to stderr so stdout stays a clean report.
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

# gc.auto=0/maintenance.auto=false: otherwise `git commit` may start a
# background gc after the first commit (25k loose objects) that would run
# during the following steps and skew both tools' timings.
GIT_OPTS=(-c user.name=b -c user.email=b@b -c gc.auto=0 -c maintenance.auto=false)

run_mirror_snapshot() {
    timed "$MIRROR_BIN" -C "$T" snapshot --quiet
    case $RC in
    0) ;;
    3) log "warning: mirror snapshot reported a partial snapshot (exit 3)" ;;
    *) die "mirror snapshot failed (exit $RC)" ;;
    esac
}

run_git_snapshot() {
    # One timed process for add+commit. --allow-empty: with nothing changed
    # `git commit` exits 1; mirror records a snapshot regardless, so git must too.
    # shellcheck disable=SC2016 # expanded by the inner bash
    timed bash -c '
        b=$1 t=$2 msg=$3; shift 3
        git "$@" --git-dir="$b" --work-tree="$t" add -A -f . &&
        git "$@" --git-dir="$b" --work-tree="$t" commit -q --allow-empty -m "$msg"
    ' _ "$B" "$T" "bench $1" "${GIT_OPTS[@]}"
    ((RC == 0)) || die "git add/commit failed (exit $RC)"
}

# Results, keyed by step name.
declare -A M_S M_KIB G_S G_KIB
STEPS=()

record() { # step mirror_s mirror_kib git_s git_kib
    STEPS+=("$1")
    M_S[$1]=$2 M_KIB[$1]=$3 G_S[$1]=$4 G_KIB[$1]=$5
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
maxof() { printf '%s\n' "$@" | sort -g | tail -n 1; }

cd "$WORK"

# --- 1. first snapshot -------------------------------------------------------

log "first snapshot"
run_mirror_snapshot
m_s=$ELAPSED m_kib=$PEAK_KIB
run_git_snapshot first
record "first snapshot" "$m_s" "$m_kib" "$ELAPSED" "$PEAK_KIB"

# --- 2. no-change snapshot, median of NOCHANGE_RUNS --------------------------

log "no-change snapshot x$NOCHANGE_RUNS"
ms=() mk=() gs=() gk=()
for ((i = 1; i <= NOCHANGE_RUNS; i++)); do
    run_mirror_snapshot
    ms+=("$ELAPSED") mk+=("$PEAK_KIB")
    run_git_snapshot "no-change $i"
    gs+=("$ELAPSED") gk+=("$PEAK_KIB")
done
# Time: median. Memory: the peak over all runs.
record "no-change snapshot (median of $NOCHANGE_RUNS)" \
    "$(median "${ms[@]}")" "$(maxof "${mk[@]}")" "$(median "${gs[@]}")" "$(maxof "${gk[@]}")"

# --- 3. one-file-change snapshot ---------------------------------------------

log "one-file-change snapshot ($change_rel)"
# Changed once; both tools see the same change (size and mtime differ).
printf 'changed at %s\n' "$EPOCHREALTIME" >>"$T/$change_rel"
run_mirror_snapshot
m_s=$ELAPSED m_kib=$PEAK_KIB
run_git_snapshot one-file-change
record "one-file-change snapshot" "$m_s" "$m_kib" "$ELAPSED" "$PEAK_KIB"

# --- 4. restore into an empty directory --------------------------------------

log "restore into empty directories"
timed "$MIRROR_BIN" -C "$T" checkout latest --to "$E1" --quiet
((RC == 0)) || die "mirror checkout failed (exit $RC)"
m_s=$ELAPSED m_kib=$PEAK_KIB
mkdir "$E2"
# A bare repo checks out fine with --work-tree. A fresh GIT_INDEX_FILE keeps
# B's index (stat data of T) untouched and makes git start from nothing, as
# mirror does; `checkout -f` then writes every file of HEAD into E2.
timed env GIT_INDEX_FILE="$WORK/restore.index" \
    git "${GIT_OPTS[@]}" --git-dir="$B" --work-tree="$E2" checkout -q -f
((RC == 0)) || die "git checkout failed (exit $RC)"
record "restore into empty dir (warm cache)" "$m_s" "$m_kib" "$ELAPSED" "$PEAK_KIB"

# Correctness, cheaply: mirror's restore must equal the tree.
if ! diff -r "$T" "$E1" --exclude mirror.yaml >"$WORK/diff.out" 2>&1; then
    head -n 20 "$WORK/diff.out" >&2
    echo "FAIL: mirror restore differs from the original tree (diff -r T E1, first lines above)"
    exit 1
fi
# And the baseline must have restored everything too, or its times mean nothing.
e2_files=$(find "$E2" -type f | wc -l)
if ((e2_files != tree_files)); then
    log "warning: git restored $e2_files files, tree has $tree_files"
fi

# --- report ------------------------------------------------------------------

ratio() { awk -v m="$1" -v g="$2" 'BEGIN { if (g > 0) printf "%.2f", m / g; else print "n/a" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

mirror_version=$("$MIRROR_BIN" --version 2>/dev/null || echo "mirror (unknown version)")
small_size=$(du -sh -- "$T/src" | cut -f1)
target_size=$(du -sh -- "$T/target" | cut -f1)

echo "# mirror vs git benchmark"
echo
echo "$(date -u '+%Y-%m-%d %H:%M:%S UTC'), nproc $(nproc), $(git --version), ${mirror_version}"
echo "tree: $tree_files files, $tree_size: $BENCH_SMALL small files ($small_size)," \
    "gitignored target/ $BENCH_TARGET files ($target_size), 1 big file ${BENCH_BIG_MIB} MiB and 20 small files as treasures (.hidden: age-encrypted by mirror), plus dotfiles"
echo "page cache: warm for every step (nothing dropped)"
echo
echo "| step | mirror s | git s | ratio mirror/git | mirror peak MiB | git peak MiB |"
echo "|---|---:|---:|---:|---:|---:|"
for step in "${STEPS[@]}"; do
    printf '| %s | %s | %s | %s | %s | %s |\n' "$step" \
        "${M_S[$step]}" "${G_S[$step]}" "$(ratio "${M_S[$step]}" "${G_S[$step]}")" \
        "$(mib "${M_KIB[$step]}")" "$(mib "${G_KIB[$step]}")"
done
echo
echo "disk usage: mirror shadow S $(du -sh -- "$S" | cut -f1), git bare B $(du -sh -- "$B" | cut -f1) (git: auto-gc off, no repack)"

# Targets: no-change no slower than git; first snapshot at most 1.5x git.
missed() { # step limit
    local r
    r=$(ratio "${M_S[$1]}" "${G_S[$1]}")
    if [[ $r != n/a ]] && awk -v r="$r" -v l="$2" 'BEGIN { exit !(r > l) }'; then
        echo "target missed: $1: mirror/git = $r (target <= $2)"
    fi
}
echo
missed "${STEPS[1]}" 1.0
missed "${STEPS[0]}" 1.5
exit 0
