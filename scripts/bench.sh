#!/usr/bin/env bash
# Benchmark `mirror` against git, restic, borg and bup doing the same job on the same tree.
#
# Times, side by side in one run, on one project tree T:
#
#   mirror   mirror snapshot                  mirror checkout latest --to E
#            (files under .hidden/ are treasures: mirror stores them age-encrypted)
#   git      git --git-dir=B --work-tree=T add -A -f . && git commit
#                                             git --work-tree=E checkout -f (fresh index)
#   restic   restic backup . (in T)           restic restore latest --target E
#   borg     borg create --compression lz4 R::name . (in T, repo made by borg init -e none)
#                                             borg extract R::name (in E)
#   bup      bup index T && bup save -n bench --strip T
#                                             bup restore -C E bench/latest/.
#
# for: first snapshot, no-change snapshot (median of 3), one-file-change snapshot, restore
# into an empty directory, plus each repository's size on disk (du -sb) after the first
# snapshot. Peak RSS comes from GNU time. restic, borg and bup run when installed (a tool
# that is not is skipped, with a note on stderr). Prints one markdown table with each tool's
# seconds and peak MiB and the ratios mirror/git and mirror/best of restic, borg and bup,
# then how faithful each restore was (modes, mtimes, empty dirs, symlinks, hardlinks) and
# issue 7's targets. It reports; it is not a test: it exits 0 even when targets are missed
# (non-zero only when a command fails or mirror's restored tree differs from the original).
#
# Trees (BENCH_TREE):
#   synthetic  (default) BENCH_SMALL small files in nested folders, a gitignored target/ of
#              BENCH_TARGET files, a few dotfiles, 20 small treasures, one big file
#   real       like issue 7's reference tree: a Rust crate depending on serde, regex, clap,
#              tokio and anyhow with its `cargo vendor` sources, its target/ filled by
#              `cargo build` and `cargo doc`, a node_modules from `npm install` of express,
#              lodash, eslint, webpack, typescript, react and rxjs, a .gitignore
#              ignoring both. Built once (needs cargo and npm and their registries) and cached
#              in $BENCH_CACHE/real-tree; delete that directory to build it again. Each run
#              copies it and adds .hidden/ (a few small files, modes 0600, an empty folder).
#   Both get .hidden/production/big.bin: BENCH_BIG_MIB MiB from /dev/urandom.
#
# Usage:
#   scripts/bench.sh
#   BENCH_TREE=real scripts/bench.sh
#   BENCH_BIG_MIB=1024 scripts/bench.sh        # peak memory with a 1 GiB file
#   BENCH_SMALL=200 BENCH_TARGET=50 BENCH_BIG_MIB=5 MIRROR_BIN=/path/to/mirror scripts/bench.sh
#   scripts/bench-scale.sh 10000 100000        # scaling with the number of files (issue 7.6)
#
# Environment:
#   MIRROR_BIN     mirror binary (default: `cargo build --release` in the repo
#                  root, then target/release/mirror)
#   BENCH_TREE     synthetic or real                  (default synthetic)
#   BENCH_SMALL    synthetic: number of small files   (default 20000)
#   BENCH_TARGET   synthetic: files in target/        (default 5000)
#   BENCH_BIG_MIB  size of the big file in MiB        (default 200)
#   BENCH_TOOLS    tools to compare mirror with       (default "git restic borg bup")
#   BENCH_CACHE    cache of the real tree             (default ~/.cache/mirror-bench)
#   BENCH_DIR      where to create the temp work dir  (default /tmp)
#
# Needs: bash >= 5 (EPOCHREALTIME), GNU time at /usr/bin/time, python3, git; for the real
# tree cargo and npm. Every tool runs with HOME, XDG_*, git's global config and restic's and
# borg's config and caches inside the work dir, never the user's.

set -euo pipefail

# Decimal points, not commas, in EPOCHREALTIME and awk/printf.
export LC_ALL=C

BENCH_NAME=bench
repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$repo_root/scripts/bench-lib.sh"
tree_py=$repo_root/scripts/bench_tree.py

case ${1:-} in
-h | --help)
    usage "${BASH_SOURCE[0]}"
    exit 0
    ;;
"") ;;
*) die "no arguments expected (see --help); the scaling benchmark is scripts/bench-scale.sh" ;;
esac

BENCH_TREE=${BENCH_TREE:-synthetic}
BENCH_SMALL=${BENCH_SMALL:-20000}
BENCH_TARGET=${BENCH_TARGET:-5000}
BENCH_BIG_MIB=${BENCH_BIG_MIB:-200}
BENCH_TOOLS=${BENCH_TOOLS:-git restic borg bup}
BENCH_DIR=${BENCH_DIR:-/tmp}
# Resolved before HOME is replaced by the isolated one.
BENCH_CACHE=${BENCH_CACHE:-$HOME/.cache/mirror-bench}
RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
NOCHANGE_RUNS=3

bench_requirements
for v in BENCH_SMALL BENCH_TARGET BENCH_BIG_MIB; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
case $BENCH_TREE in
synthetic) ((BENCH_SMALL >= 1)) || die "BENCH_SMALL must be at least 1 (one small file is modified)" ;;
real)
    if [[ ! -f $BENCH_CACHE/real-tree/ready ]]; then
        command -v cargo >/dev/null || die "BENCH_TREE=real needs cargo to build the tree"
        command -v npm >/dev/null || die "BENCH_TREE=real needs npm to build the tree"
    fi
    ;;
*) die "BENCH_TREE must be synthetic or real, got '$BENCH_TREE'" ;;
esac

# --- the tools ---------------------------------------------------------------------------

TOOLS=(mirror) # mirror first in every step, then the others in this order
OTHERS=()      # restic, borg and bup: "best of others" is the fastest of these
for t in $BENCH_TOOLS; do
    case $t in
    git) TOOLS+=(git) ;;
    restic | borg | bup)
        if command -v "$t" >/dev/null; then
            TOOLS+=("$t") OTHERS+=("$t")
        else
            log "skipping $t: not installed"
        fi
        ;;
    *) die "unknown tool in BENCH_TOOLS: $t (known: git restic borg bup)" ;;
    esac
done
has() { [[ " ${TOOLS[*]} " == *" $1 "* ]]; }

resolve_mirror_bin "$repo_root"

# --- work dir and an isolated environment ------------------------------------------------

WORK=$(mktemp -d "$BENCH_DIR/mirror-bench.XXXXXX")
BUILD_TMP=""
trap 'rm -rf -- "$WORK" ${BUILD_TMP:+"$BUILD_TMP"}' EXIT

T=$WORK/T      # the project tree, shared by every tool
S=$WORK/S      # mirror's shadow repository (outside T)
B=$WORK/B      # git's bare repository; its default index B/index is git's own
R_RESTIC=$WORK/restic
R_BORG=$WORK/borg
R_BUP=$WORK/bup
isolate_home "$WORK/home"
export RESTIC_REPOSITORY=$R_RESTIC RESTIC_PASSWORD=bench BUP_DIR=$R_BUP
# borg -e none: borg asks before using an unencrypted repository it has not seen.
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

# --- the real tree (built once, cached) --------------------------------------------------

# build_real_tree DEST: builds the project in a temporary directory beside DEST and renames
# it to DEST when complete (DEST/project is the tree, DEST/ready marks it done).
build_real_tree() {
    local dest=$1
    mkdir -p -- "$(dirname -- "$dest")"
    BUILD_TMP=$(mktemp -d "$dest.tmp.XXXXXX")
    log "building the real tree in $BUILD_TMP (once; cached in $dest)"
    (
        # The build too keeps off the user's configuration and caches; only the toolchain
        # (rustup's) is shared.
        isolate_home "$BUILD_TMP/home"
        export RUSTUP_HOME CARGO_HOME=$BUILD_TMP/cargo-home
        export npm_config_cache=$BUILD_TMP/npm-cache npm_config_update_notifier=false
        unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR RUSTFLAGS CARGO_BUILD_RUSTFLAGS
        p=$BUILD_TMP/project
        mkdir -p "$p/src" "$p/.cargo"
        cd "$p"
        cat >Cargo.toml <<'TOML'
[package]
name = "benchproj"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
anyhow = "1"
clap = { version = "4", features = ["derive"] }
regex = "1"
serde = { version = "1", features = ["derive"] }
serde_json = "1"
tokio = { version = "1", features = ["rt-multi-thread", "macros", "fs", "io-util", "net", "process", "signal", "sync", "time"] }
TOML
        cat >src/main.rs <<'RUST'
//! A small program standing in for a real project: it exists to be vendored and built.
use clap::Parser;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Print the lines of FILES that match a pattern, as JSON.
#[derive(Parser, Debug)]
struct Args {
    /// The pattern to look for.
    #[arg(short, long, default_value = "[a-z]+")]
    pattern: String,
    /// The files to read.
    files: Vec<PathBuf>,
}

/// One matching line.
#[derive(Serialize, Deserialize, Debug)]
struct Hit {
    file: String,
    line: usize,
    text: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let re = Regex::new(&args.pattern)?;
    let mut hits = Vec::new();
    for file in &args.files {
        let text = tokio::fs::read_to_string(file).await?;
        for (i, line) in text.lines().enumerate() {
            if re.is_match(line) {
                hits.push(Hit { file: file.display().to_string(), line: i + 1, text: line.to_string() });
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&hits)?);
    Ok(())
}
RUST
        # `cargo vendor` prints the source replacement that makes every later build offline.
        cargo vendor --quiet vendor >.cargo/config.toml
        cargo build --offline
        cargo doc --offline
        cat >package.json <<'JSON'
{ "name": "benchproj-web", "version": "0.1.0", "private": true }
JSON
        # --ignore-scripts: nothing the packages ship is run here.
        npm install --no-audit --no-fund --ignore-scripts --loglevel=error \
            express@4 lodash@4 eslint@8 webpack@5 typescript@5 react@18 react-dom@18 rxjs@7
        printf 'target/\nnode_modules/\n' >.gitignore
        printf '# benchproj\n\nThe tree of scripts/bench.sh (BENCH_TREE=real).\n' >README.md
    ) >&2
    rm -rf -- "${BUILD_TMP:?}/home" "$BUILD_TMP/cargo-home" "$BUILD_TMP/npm-cache"
    : >"$BUILD_TMP/ready"
    # -T: fails rather than moving into DEST when a concurrent run finished first.
    if ! mv -T -- "$BUILD_TMP" "$dest" 2>/dev/null; then
        [[ -f $dest/ready ]] || die "could not rename $BUILD_TMP to $dest"
        rm -rf -- "$BUILD_TMP"
    fi
    BUILD_TMP=""
}

# --- tree generation ---------------------------------------------------------------------

mkdir -p "$T"
if [[ $BENCH_TREE == synthetic ]]; then
    log "generating tree in $T"
    # Prints the relative path of one small file, later used for the one-file change.
    change_rel=$(python3 "$tree_py" synthetic "$T" "$BENCH_SMALL" "$BENCH_TARGET")
else
    cache=$BENCH_CACHE/real-tree
    if [[ ! -f $cache/ready ]]; then
        [[ ! -e $cache ]] || die "$cache exists but is not a complete tree (no 'ready' file): remove it"
        build_real_tree "$cache"
    fi
    log "copying the real tree from $cache/project to $T"
    # -a keeps hardlinks, symlinks, modes and mtimes.
    cp -a -- "$cache/project/." "$T/"
    change_rel=src/main.rs
    # Secrets of a deployment: treasures for mirror (default pattern *.hidden*).
    mkdir -p "$T/.hidden/production/logs" "$T/.hidden/keys"
    printf 'DATABASE_URL=postgres://app:not-really@db/app\nAPI_TOKEN=0123456789abcdef\n' >"$T/.hidden/production/.env"
    printf 'replicas: 3\nimage: benchproj:0.1.0\n' >"$T/.hidden/production/deploy.yaml"
    head -c 2048 /dev/urandom | base64 >"$T/.hidden/keys/deploy_key"
    chmod 600 "$T/.hidden/production/.env" "$T/.hidden/keys/deploy_key"
fi
log "writing ${BENCH_BIG_MIB} MiB big file"
# Streamed, so a 1 GiB file needs no memory here.
# Under .hidden/production/, like issue 7's reference tree: a treasure, so mirror encrypts it.
mkdir -p "$T/.hidden/production"
head -c "$((BENCH_BIG_MIB * 1024 * 1024))" /dev/urandom >"$T/.hidden/production/big.bin"

# --- repositories (nothing timed yet) ----------------------------------------------------

# Init mirror before anything is timed, so mirror.yaml is in the tree every tool records
# (one small file; it does not distort the others' numbers).
"$MIRROR_BIN" -C "$T" init --encrypt --shadow "$S" --tier root=. >&2
has git && git init -q --bare "$B" >&2
has restic && restic -q init >&2
has borg && borg init -e none "$R_BORG" >&2
has bup && bup init >&2

read -r tree_files tree_dirs tree_empty tree_links tree_hardlinked tree_bytes tree_small_pct \
    < <(python3 "$tree_py" stats "$T")
tree_size=$(du -sh -- "$T" | cut -f1)
tree_desc="$tree_files files, $tree_dirs directories ($tree_empty empty), $tree_links symlinks, $tree_hardlinked hardlinked files, $tree_small_pct % of files under 4 KiB; $(awk -v b="$tree_bytes" 'BEGIN { printf "%.0f", b / 1e6 }') MB in files, $tree_size on disk (du -sh)"
log "tree: $tree_desc"

# Rough disk need: the tree, each repository (at most about the tree) and one restore.
disk_check "$WORK" $(((tree_bytes / 1024) * (${#TOOLS[@]} + 2) + 65536))

# Racy-git: a file modified in the same second the index is written gets re-hashed by the
# next `git add`. Let the clock move past the generation.
sleep 1
warm_cache "$T"

# --- the tools' steps --------------------------------------------------------------------

# snapshot TOOL NAME: one timed snapshot of T by TOOL (NAME: a unique name for it).
snapshot() {
    case $1 in
    mirror) mirror_snapshot "$T" ;;
    git) git_snapshot "$B" "$T" "$2" ;;
    restic)
        # In T, so the snapshot's root is T's content (restic records the absolute path).
        timed env -C "$T" restic -q backup .
        case $RC in
        0) ;;
        3) log "warning: restic could not read some files (exit 3)" ;;
        *) die "restic backup failed (exit $RC)" ;;
        esac
        ;;
    borg)
        timed env -C "$T" borg create --compression lz4 "$R_BORG::$2" .
        case $RC in
        0) ;;
        1) log "warning: borg create ended with warnings (exit 1)" ;;
        *) die "borg create failed (exit $RC)" ;;
        esac
        ;;
    bup)
        # The index pass is bup's stat cache: part of every snapshot.
        # shellcheck disable=SC2016 # expanded by the inner bash
        timed bash -c 'bup index "$1" && bup save -n bench --strip "$1"' _ "$T"
        ((RC == 0)) || die "bup index/save failed (exit $RC)"
        ;;
    esac
}

# restore TOOL DIR: one timed restore of TOOL's latest snapshot into the new directory DIR.
restore() {
    [[ $1 == mirror ]] || mkdir "$2"
    case $1 in
    mirror) timed "$MIRROR_BIN" -C "$T" checkout latest --to "$2" --quiet ;;
    git)
        # A bare repo checks out fine with --work-tree. A fresh GIT_INDEX_FILE keeps B's
        # index (stat data of T) untouched and makes git start from nothing, as mirror
        # does; `checkout -f` then writes every file of HEAD into DIR.
        timed env GIT_INDEX_FILE="$WORK/restore.index" \
            git "${GIT_OPTS[@]}" --git-dir="$B" --work-tree="$2" checkout -q -f
        ;;
    restic) timed restic -q restore latest --target "$2" ;;
    borg) timed env -C "$2" borg extract "$R_BORG::change" ;;
    bup) timed bup restore -q -C "$2" bench/latest/. ;;
    esac
    ((RC == 0)) || die "$1 restore failed (exit $RC)"
}

repo_dir() {
    case $1 in
    mirror) echo "$S" ;;
    git) echo "$B" ;;
    restic) echo "$R_RESTIC" ;;
    borg) echo "$R_BORG" ;;
    bup) echo "$R_BUP" ;;
    esac
}

# Results: SEC[tool/step] (seconds; bytes for the size row) and KIB[tool/step].
declare -A SEC KIB FIDELITY
STEPS=(first nochange change restore size)
declare -A LABEL=(
    [first]="first snapshot"
    [nochange]="no-change snapshot (median of $NOCHANGE_RUNS)"
    [change]="one-file-change snapshot"
    [restore]="restore into empty dir (warm cache)"
    [size]="repository size after first snapshot, MiB (du -sb)"
)

cd "$WORK"

# --- 1. first snapshot -------------------------------------------------------------------

for t in "${TOOLS[@]}"; do
    log "first snapshot: $t"
    snapshot "$t" first
    SEC[$t/first]=$ELAPSED KIB[$t/first]=$PEAK_KIB
    SEC[$t/size]=$(du -sb -- "$(repo_dir "$t")" | cut -f1)
done

# --- 2. no-change snapshot, median of NOCHANGE_RUNS --------------------------------------

declare -A runs_s runs_kib
for ((i = 1; i <= NOCHANGE_RUNS; i++)); do
    for t in "${TOOLS[@]}"; do
        log "no-change snapshot $i/$NOCHANGE_RUNS: $t"
        snapshot "$t" "nochange-$i"
        runs_s[$t]+=" $ELAPSED" runs_kib[$t]+=" $PEAK_KIB"
    done
done
for t in "${TOOLS[@]}"; do
    # Time: median. Memory: the peak over all runs.
    # shellcheck disable=SC2086 # the runs are space-separated numbers
    SEC[$t/nochange]=$(median ${runs_s[$t]}) KIB[$t/nochange]=$(maxof ${runs_kib[$t]})
done

# --- 3. one-file-change snapshot ---------------------------------------------------------

# Changed once; every tool sees the same change (size and mtime differ).
printf '// changed at %s\n' "$EPOCHREALTIME" >>"$T/$change_rel"
for t in "${TOOLS[@]}"; do
    log "one-file-change snapshot ($change_rel): $t"
    snapshot "$t" change
    SEC[$t/change]=$ELAPSED KIB[$t/change]=$PEAK_KIB
done

# --- 4. restore into an empty directory, and what it restored ----------------------------

for t in "${TOOLS[@]}"; do
    log "restore into an empty directory: $t"
    E=$WORK/E-$t
    restore "$t" "$E"
    SEC[$t/restore]=$ELAPSED KIB[$t/restore]=$PEAK_KIB
    if [[ $t == mirror ]]; then
        # Correctness, cheaply: mirror's restore must equal the tree.
        if ! diff -r --no-dereference "$T" "$E" --exclude mirror.yaml >"$WORK/diff.out" 2>&1; then
            head -n 20 "$WORK/diff.out" >&2
            echo "FAIL: mirror restore differs from the original tree (diff -r T E, first lines above)"
            exit 1
        fi
    fi
    if [[ $t == git ]]; then
        # The baseline must have restored everything too, or its times mean nothing.
        e_files=$(find "$E" -type f | wc -l)
        ((e_files == tree_files)) || log "warning: git restored $e_files files, tree has $tree_files"
    fi
    # How faithful the restore is (the tools differ on metadata); mirror.yaml as above.
    { read -r verdict && read -r "FIDELITY[$t]"; } < <(python3 "$tree_py" compare "$T" "$E" mirror.yaml)
    [[ $verdict == ok ]] || log "warning: $t's restore differs from the tree: ${FIDELITY[$t]}"
    # One restore at a time on the disk.
    rm -rf -- "$E"
done

log "lstat floor"
floor=$(lstat_floor "$T")

# --- report ------------------------------------------------------------------------------

vs() { # step tool: mirror/tool ratio or n/a
    if has "$2"; then ratio "${SEC[mirror/$1]}" "${SEC[$2/$1]}"; else echo "n/a"; fi
}
# best_other STEP: "ratio (tool)" of mirror against the fastest of restic, borg and bup.
best_other() {
    local best="" t
    for t in "${OTHERS[@]}"; do
        if [[ -z $best ]] || awk -v a="${SEC[$t/$1]}" -v b="${SEC[$best/$1]}" 'BEGIN { exit !(a < b) }'; then
            best=$t
        fi
    done
    if [[ -z $best ]]; then echo "n/a"; else echo "$(ratio "${SEC[mirror/$1]}" "${SEC[$best/$1]}") ($best)"; fi
}
version() {
    case $1 in
    mirror) "$MIRROR_BIN" --version 2>/dev/null || echo "mirror (unknown version)" ;;
    git) git --version ;;
    restic) restic version | cut -d' ' -f1-2 ;;
    borg) borg --version ;;
    bup) echo "bup $(bup --version)" ;;
    esac
}

if [[ $BENCH_TREE == synthetic ]]; then
    tree_kind="synthetic: $BENCH_SMALL small files (1-10 KB) in nested folders ($(du -sh -- "$T/src" | cut -f1)), gitignored target/ $BENCH_TARGET files ($(du -sh -- "$T/target" | cut -f1)), dotfiles, 20 small treasures and the big file"
else
    tree_kind="real (cached at $cache): a Rust crate with cargo vendor sources, its target/ after cargo build and cargo doc ($(du -sh -- "$T/target" | cut -f1)), a node_modules ($(find "$T/node_modules" -type f | wc -l) files, $(du -sh -- "$T/node_modules" | cut -f1)), .hidden/ with small secrets and the big file"
fi
versions=""
for t in "${TOOLS[@]}"; do versions+="$(version "$t"), "; done

others=$(printf '%s, ' "${TOOLS[@]:1}")
echo "# mirror vs ${others%, } benchmark"
echo
echo "$(date -u '+%Y-%m-%d %H:%M:%S UTC'), nproc $(nproc), ${versions%, }"
echo "tree ($tree_kind; big file .hidden/production/big.bin ${BENCH_BIG_MIB} MiB from /dev/urandom, a treasure encrypted by mirror): $tree_desc"
echo "page cache: warm for every step (nothing dropped); lstat floor (Python os.walk + lstat of every file, without interpreter start-up, median of 3): $floor s"
echo
header="| step |" rule="|---|"
for t in "${TOOLS[@]}"; do header+=" $t s | $t peak MiB |" rule+="---:|---:|"; done
echo "$header mirror/git | mirror/best of others |"
echo "$rule---:|---:|"
for step in "${STEPS[@]}"; do
    row="| ${LABEL[$step]} |"
    for t in "${TOOLS[@]}"; do
        if [[ $step == size ]]; then
            row+=" $(awk -v b="${SEC[$t/size]}" 'BEGIN { printf "%.1f", b / 1048576 }') | |"
        else
            row+=" ${SEC[$t/$step]} | $(mib "${KIB[$t/$step]}") |"
        fi
    done
    echo "$row $(vs "$step" git) | $(best_other "$step") |"
done
echo
echo "Restores compared with the tree (modes of files and directories; mtimes of files):"
echo
for t in "${TOOLS[@]}"; do echo "- $t: ${FIDELITY[$t]}"; done

# Issue 7's targets, from this run's ratios.
target() { # description ratio limit: met when ratio <= limit
    if [[ $2 == n/a ]]; then
        echo "- $1: n/a (not run)"
    elif awk -v v="$2" -v l="$3" 'BEGIN { exit !(v <= l) }'; then
        echo "- $1: ${2}x, met"
    else
        echo "- $1: ${2}x, missed"
    fi
}
echo
echo "Targets (issue 7):"
echo
target "first snapshot <= 0.33x git" "$(vs first git)" 0.33
target "first snapshot faster than borg" "$(vs first borg)" 0.999
target "first snapshot faster than restic" "$(vs first restic)" 0.999
p=$(mib "${KIB[mirror/first]}")
echo "- first snapshot peak RSS < 100 MiB: $p MiB, $(awk -v p="$p" 'BEGIN { print (p < 100 ? "met" : "missed") }')"
target "no-change snapshot <= 1.0x git" "$(vs nochange git)" 1.0
target "one-file-change snapshot <= 1.0x git" "$(vs change git)" 1.0
target "restore faster than restic" "$(vs restore restic)" 0.999
target "restore <= 0.8x git checkout -f" "$(vs restore git)" 0.8
target "repository size after the first snapshot <= restic's" "$(vs size restic)" 1.0
exit 0
