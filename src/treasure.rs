//! Treasure (critical) paths: the files whose loss matters most and whose content is stored
//! only encrypted.
//!
//! `treasures:` in mirror.yaml is a list of gitignore-syntax patterns relative to the project
//! root; a pattern matching a directory covers everything below it, and `!pattern` takes a
//! path back out. Everything that asks "is this critical?" asks here.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// What `mirror init` writes, and what applies when mirror.yaml has no `treasures:` key: any
/// path with a component whose name contains `.hidden`, `impossible`, `btfo` or `destruction`.
pub const DEFAULT_PATTERNS: &[&str] = &["*.hidden*", "*impossible*", "*btfo*", "*destruction*"];

pub fn default_patterns() -> Vec<String> {
    DEFAULT_PATTERNS.iter().map(|s| s.to_string()).collect()
}

#[derive(Debug, Clone)]
pub struct Treasures {
    matcher: Gitignore,
    patterns: Vec<String>,
}

impl Treasures {
    /// Identifies the pattern list (with the tier it is applied in): verdicts recorded under
    /// the same fingerprint still hold.
    pub fn fingerprint(&self, tier_path: &str) -> u64 {
        // A collision would let stale verdicts stand, so a cryptographic hash, not a checksum.
        let mut h = gix::hash::hasher(gix::hash::Kind::Sha1);
        h.update(tier_path.as_bytes());
        for p in &self.patterns {
            h.update(b"\0");
            h.update(p.as_bytes());
        }
        let digest = h
            .try_finalize()
            .map(|id| id.as_bytes().to_vec())
            .unwrap_or_default();
        let mut first = [0u8; 8];
        for (dst, src) in first.iter_mut().zip(&digest) {
            *dst = *src;
        }
        // Never 0, which stands for "unknown" in a stat cache.
        u64::from_le_bytes(first) | 1
    }

    pub fn new(patterns: &[String]) -> Result<Treasures, String> {
        // The root only anchors patterns containing a slash; paths are always given relative.
        let mut builder = GitignoreBuilder::new("");
        for pattern in patterns {
            builder
                .add_line(None, pattern)
                .map_err(|e| format!("treasure pattern '{pattern}' is invalid: {e}"))?;
        }
        let matcher = builder
            .build()
            .map_err(|e| format!("treasure patterns are invalid: {e}"))?;
        Ok(Treasures {
            matcher,
            patterns: patterns.to_vec(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_empty()
    }

    /// Is `path` (relative to the project root, `/`-separated) a treasure, itself or through a
    /// directory above it?
    pub fn is_treasure(&self, path: &[u8]) -> bool {
        if self.matcher.is_empty() || path.is_empty() {
            return false;
        }
        // Paths are relative; a leading `/` can only come from a crafted tree, and the matcher
        // would panic on it (found by the property tests).
        let path = trim_root(path);
        self.matcher
            .matched_path_or_any_parents(Path::new(OsStr::from_bytes(path)), false)
            .is_ignore()
    }

    /// Is `rel`, a path inside the tier at `tier_path` (`.` for the root), a treasure?
    pub fn in_tier(&self, tier_path: &str, rel: &[u8]) -> bool {
        self.is_treasure(&project_path(tier_path, rel))
    }

    /// A checker for many paths of one tier in sorted order (a walk): the verdict on a
    /// directory is remembered for the files after it, so a file costs one match instead of
    /// one per ancestor.
    pub fn walker<'a>(&'a self, tier_path: &'a str) -> TreasureWalker<'a> {
        TreasureWalker {
            treasures: self,
            tier_path,
            last_dir: None,
        }
    }
}

pub struct TreasureWalker<'a> {
    treasures: &'a Treasures,
    tier_path: &'a str,
    /// (directory relative to the tier, whether it or an ancestor is a treasure)
    last_dir: Option<(Vec<u8>, bool)>,
}

impl TreasureWalker<'_> {
    /// Is the file `rel` (relative to the tier root) a treasure? Same answer as
    /// [`Treasures::in_tier`].
    pub fn is_treasure(&mut self, rel: &[u8]) -> bool {
        let matcher = &self.treasures.matcher;
        if matcher.is_empty() {
            return false;
        }
        let full = project_path(self.tier_path, rel);
        // The file's own match decides first (`!pattern` can take it back out), as in
        // `matched_path_or_any_parents`; then its directories.
        match matcher.matched(Path::new(OsStr::from_bytes(&full)), false) {
            ignore::Match::Ignore(_) => return true,
            ignore::Match::Whitelist(_) => return false,
            ignore::Match::None => {}
        }
        let dir = match rel.iter().rposition(|b| *b == b'/') {
            Some(i) => &rel[..i],
            None => {
                return self.tier_path != "."
                    && self.treasures.is_dir_treasure(self.tier_path.as_bytes())
            }
        };
        if let Some((last, verdict)) = &self.last_dir {
            if last == dir {
                return *verdict;
            }
        }
        let verdict = self
            .treasures
            .is_dir_treasure(&project_path(self.tier_path, dir));
        self.last_dir = Some((dir.to_vec(), verdict));
        verdict
    }
}

impl Treasures {
    fn is_dir_treasure(&self, dir: &[u8]) -> bool {
        let dir = trim_root(dir);
        self.matcher
            .matched_path_or_any_parents(Path::new(OsStr::from_bytes(dir)), true)
            .is_ignore()
    }
}

fn trim_root(path: &[u8]) -> &[u8] {
    let start = path.iter().position(|b| *b != b'/').unwrap_or(path.len());
    &path[start..]
}

/// `rel` inside the tier at `tier_path`, relative to the project root.
fn project_path(tier_path: &str, rel: &[u8]) -> Vec<u8> {
    if tier_path == "." {
        return rel.to_vec();
    }
    let mut full = Vec::with_capacity(tier_path.len() + 1 + rel.len());
    full.extend_from_slice(tier_path.as_bytes());
    full.push(b'/');
    full.extend_from_slice(rel);
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(patterns: &[&str]) -> Treasures {
        Treasures::new(&patterns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn default_patterns_match_any_component() {
        let d = t(DEFAULT_PATTERNS);
        assert!(d.is_treasure(b"platforms/growth/.hidden/x"));
        assert!(d.is_treasure(b"a/the-impossible-one.rs"));
        assert!(d.is_treasure(b"btfo"));
        assert!(d.is_treasure(b"x/self-destruction/y/z"));
        assert!(d.is_treasure(b"x/notes.hidden.txt"));
        assert!(!d.is_treasure(b"src/main.rs"));
        assert!(!d.is_treasure(b"hidden/x"));
    }

    #[test]
    fn directories_cover_their_content_and_negation_unmarks() {
        let c = t(&["secrets/", "/top.key", "!secrets/public.txt"]);
        assert!(c.is_treasure(b"secrets/a/b.txt"));
        assert!(c.is_treasure(b"deep/secrets/x"));
        assert!(c.is_treasure(b"top.key"));
        assert!(!c.is_treasure(b"sub/top.key"));
        assert!(!c.is_treasure(b"secrets/public.txt"));
        assert!(c.in_tier("tier-0", b"secrets/x"));
        assert!(!t(&[]).is_treasure(b".hidden/x"));
    }

    #[test]
    fn the_walker_agrees_with_the_plain_check() {
        let patterns = t(&[
            "*.hidden*",
            "secrets/",
            "!secrets/public.txt",
            "/tier-0/top/x",
            "*.key",
        ]);
        let paths: &[&[u8]] = &[
            b".hidden/a",
            b".hidden/b/c",
            b"a/b",
            b"a/secrets/public.txt",
            b"a/secrets/z",
            b"notes.hidden.txt",
            b"top/x",
            b"top/x/y",
            b"top/y",
            b"z/id.key",
            b"z/other",
        ];
        for tier in [".", "tier-0", "secrets"] {
            let mut walker = patterns.walker(tier);
            for p in paths {
                assert_eq!(
                    walker.is_treasure(p),
                    patterns.in_tier(tier, p),
                    "tier {tier}, path {}",
                    String::from_utf8_lossy(p)
                );
            }
        }
    }
}
