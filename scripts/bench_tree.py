#!/usr/bin/env python3
"""Tree helpers for scripts/bench.sh and scripts/bench-scale.sh.

  bench_tree.py synthetic ROOT N_SMALL N_TARGET   generate bench.sh's synthetic tree (without
                                                 its big file); prints the relative path of
                                                 the small file the one-file change modifies
  bench_tree.py small ROOT N                      N small files (1-100 bytes), 100 per directory,
                                                 two levels deep; prints the path to change
  bench_tree.py stats ROOT                        prints: files dirs empty_dirs symlinks
                                                 hardlinked_files bytes pct_files_under_4k
  bench_tree.py compare ORIG RESTORED [NAME...]   compares a restored tree with the original
                                                 (entries named NAME are left out, anywhere);
                                                 prints "ok" or "differs" (content: paths, file
                                                 bytes, link targets, types), then a summary
                                                 line that also counts what metadata was lost
"""
import math
import os
import random
import stat
import sys


def write(root, rel, data):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def synthetic(root, n_small, n_target):
    # Seeded RNG: the same layout and content every run, so runs are comparable.
    # Content is half words, half random bytes: it compresses somewhat, like code.
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
        write(root, rel, content(1024, 10240))
        if first is None:
            first = rel

    # Gitignored build output: ~100 files per folder.
    for i in range(n_target):
        d, idx = divmod(i, 100)
        write(root, f"target/debug/deps/d{d:03d}/obj{idx:03d}.o", content(512, 4096))

    # Hidden files and folders, some of them also ignored.
    write(root, ".gitignore", b"target/\n.env\n.cache/\n")
    write(root, ".env", b"SECRET=not-really\n")
    write(root, ".editorconfig", b"root = true\n[*]\nindent_style = space\n")
    write(root, ".config/tool/settings.toml", content(200, 800))
    write(root, ".vscode/settings.json", b'{"editor.tabSize": 4}\n')
    for i in range(20):
        write(root, f".cache/blobs/c{i:02d}.bin", content(1024, 4096))
    # Treasures (default patterns): stored age-encrypted by mirror, in plaintext by git.
    for i in range(20):
        write(root, f"platform/.hidden/keys/k{i:02d}.txt", content(200, 2048))
    print(first)


def small(root, n):
    # Cheap deterministic content of 1-100 bytes: a slice of a fixed text.
    text = b"".join(b"%d lorem ipsum dolor sit amet\n" % i for i in range(40))
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for i in range(n):
        d = os.path.join(root, f"d{i // 10000:03d}", f"e{i // 100 % 100:02d}")
        if i % 100 == 0:
            os.makedirs(d, exist_ok=True)
        size = 1 + (i * 7919) % 100
        off = i % 300
        fd = os.open(os.path.join(d, f"f{i % 100:02d}"), flags, 0o644)
        os.write(fd, text[off:off + size])
        os.close(fd)
    i = n // 2
    print(f"d{i // 10000:03d}/e{i // 100 % 100:02d}/f{i % 100:02d}")


def scan(root, exclude=()):
    """rel path -> (kind, mode, mtime_ns, size, inode key, link target, is empty dir)."""
    out = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in exclude]
        for name in dirs + files:
            if name in exclude:
                continue
            p = os.path.join(d, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                kind, target = "l", os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                kind, target = "d", None
            elif stat.S_ISREG(st.st_mode):
                kind, target = "f", None
            else:
                kind, target = "o", None
            empty = kind == "d" and not any(True for _ in os.scandir(p))
            out[os.path.relpath(p, root)] = (kind, st.st_mode & 0o7777, st.st_mtime_ns,
                                             st.st_size, (st.st_dev, st.st_ino, st.st_nlink),
                                             target, empty)
    return out


def stats(root):
    entries = scan(root)
    files = [e for e in entries.values() if e[0] == "f"]
    inodes = {}
    for e in files:
        inodes[e[4][:2]] = inodes.get(e[4][:2], 0) + 1
    hardlinked = sum(n for n in inodes.values() if n > 1)
    size = sum(e[3] for e in files)
    under4k = sum(1 for e in files if e[3] < 4096)
    print(len(files), sum(1 for e in entries.values() if e[0] == "d"),
          sum(1 for e in entries.values() if e[6]), sum(1 for e in entries.values() if e[0] == "l"),
          hardlinked, size, round(100 * under4k / max(1, len(files))))


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def compare(orig, restored, exclude):
    a, b = scan(orig, exclude), scan(restored, exclude)
    missing = [p for p in a if p not in b]
    missing_entries = sum(1 for p in missing if a[p][0] != "d")
    missing_empty = sum(1 for p in missing if a[p][6])
    extra = sum(1 for p in b if p not in a)
    types = content = links = modes = mtimes = 0
    n_files = n_modes = 0
    for p, ea in a.items():
        eb = b.get(p)
        if eb is None:
            continue
        if ea[0] != eb[0]:
            types += 1
            continue
        if ea[0] == "f":
            n_files += 1
            if ea[3] != eb[3] or not same_bytes(os.path.join(orig, p), os.path.join(restored, p)):
                content += 1
            if abs(ea[2] - eb[2]) >= 1_000_000_000:
                mtimes += 1
        if ea[0] == "l" and ea[5] != eb[5]:
            links += 1
        if ea[0] in "fd":
            n_modes += 1
            if ea[1] != eb[1]:
                modes += 1
    groups = {}
    for p, e in a.items():
        if e[0] == "f" and e[4][2] > 1:
            groups.setdefault(e[4][:2], []).append(p)
    groups = [g for g in groups.values() if len(g) > 1]
    kept = sum(1 for g in groups
               if all(p in b and b[p][0] == "f" for p in g) and len({b[p][4][:2] for p in g}) == 1)
    empty = sum(1 for e in a.values() if e[6])
    symlinks = sum(1 for e in a.values() if e[0] == "l")
    bad = missing_entries or extra or types or content or links
    print("differs" if bad else "ok")
    parts = []
    if bad:
        parts.append(f"DIFFERS: {missing_entries} files/links missing, {extra} extra, "
                     f"{types} of another type, {content} with other bytes, "
                     f"{links} symlinks with another target")
    else:
        parts.append(f"content identical ({n_files} files)")
    parts.append(f"modes kept {n_modes - modes}/{n_modes}")
    parts.append(f"mtimes kept (within 1 s) {n_files - mtimes}/{n_files}")
    parts.append(f"empty dirs {empty - missing_empty}/{empty}")
    parts.append(f"symlinks {symlinks - sum(1 for p in missing if a[p][0] == 'l') - links}/{symlinks}")
    parts.append(f"hardlink groups kept {kept}/{len(groups)}")
    print(", ".join(parts))


def main(argv):
    if len(argv) == 5 and argv[1] == "synthetic":
        synthetic(argv[2], int(argv[3]), int(argv[4]))
    elif len(argv) == 4 and argv[1] == "small":
        small(argv[2], int(argv[3]))
    elif len(argv) == 3 and argv[1] == "stats":
        stats(argv[2])
    elif len(argv) >= 4 and argv[1] == "compare":
        compare(argv[2], argv[3], set(argv[4:]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
