#!/usr/bin/env bash
# Build a demo project with a week of history and take docs/dashboard.png of its dashboard.
# Needs chromium and faketime (apt-get install -y chromium faketime); the demo lives in a
# temporary HOME, so the real user's configuration is never touched.
#
#   scripts/dashboard-screenshot.sh [OUT.png]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$repo/docs/dashboard.png}"
for tool in chromium faketime; do
    command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install -y chromium faketime" >&2; exit 1; }
done
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
mirror="$repo/target/release/mirror"

demo="$(mktemp -d)"
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$demo"' EXIT
export HOME="$demo/home" XDG_CONFIG_HOME="$demo/home/.config" XDG_DATA_HOME="$demo/home/.local/share"
export GIT_CONFIG_GLOBAL="$demo/home/.gitconfig"
mkdir -p "$HOME" && : > "$GIT_CONFIG_GLOBAL"
p="$demo/acme-shop"
mkdir -p "$p"/tier-0/src "$p"/tier-0/.hidden/production "$p"/tier-minus10/node_modules/left-pad \
         "$p"/tier-minus10/target/release
cd "$p"
echo 'fn main() { println!("shop"); }' > tier-0/src/main.rs
echo 'DATABASE_URL=postgres://shop@db/prod' > tier-0/.hidden/production/env
head -c 200000 /dev/urandom > tier-0/.hidden/production/signing.key
echo 'module.exports = s => s' > tier-minus10/node_modules/left-pad/index.js
head -c 3000000 /dev/urandom > tier-minus10/target/release/shop

# `at WHEN CMD...`: run mirror as if it were WHEN (every time mirror records comes from the clock).
at() { local when; when="$(date -d "$1" '+%Y-%m-%d %H:%M:%S')"; shift; faketime "$when" "$mirror" "$@"; }
edit() { echo "// $RANDOM" >> "$1"; }

at '7 days ago' init --encrypt -q
at '7 days ago' snapshot -q -m 'first backup'
for ago in '6 days ago' '5 days ago 14:00' '5 days ago 16:30' '4 days ago'; do
    edit tier-0/src/main.rs; at "$ago" snapshot -q --trigger pre-commit
done
at '4 days ago 18:00' tag v1.0 -m 'release 1.0'
git init -q --bare "$demo/usb-disk.git"
"$mirror" remote add usb-disk "$demo/usb-disk.git" >/dev/null
"$mirror" remote add nas "$demo/nas-offline.git" >/dev/null
echo 'not a repository' > "$demo/nas-offline.git"
for ago in '3 days ago' '2 days ago 09:00' '2 days ago 11:00' '2 days ago 17:00'; do
    edit tier-0/src/main.rs; head -c 3000000 /dev/urandom > tier-minus10/target/release/shop
    at "$ago" snapshot -q --trigger pre-commit
done
at '2 days ago 17:05' push usb-disk >/dev/null
at '2 days ago 17:10' verify -q
for ago in '1 day ago 10:00' '1 day ago 12:00' '1 day ago 15:00' '5 hours ago'; do
    edit tier-0/src/main.rs; at "$ago" snapshot -q --trigger post-checkout
done
at '30 minutes ago' checkout no-such-tag >/dev/null 2>&1 || true
# The newest snapshot at the real time, so its stat cache vouches for the files written above
# (under a faked clock every file would look modified after the snapshot started).
edit tier-0/src/main.rs; "$mirror" snapshot -q --trigger pre-commit
edit tier-0/src/main.rs; echo 'TODO' > tier-0/notes.txt

"$mirror" dashboard --port 0 > "$demo/url" 2>"$demo/err" &
server=$!
for _ in $(seq 100); do grep -q http "$demo/url" 2>/dev/null && break; sleep 0.1; done
url="$(grep -o 'http://[^ ]*' "$demo/url")"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1500 \
    --virtual-time-budget=5000 --screenshot="$out" "$url" 2>/dev/null
echo "wrote $out"
