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
}

impl Treasures {
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
        Ok(Treasures { matcher })
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
        self.matcher
            .matched_path_or_any_parents(Path::new(OsStr::from_bytes(path)), false)
            .is_ignore()
    }

    /// Is `rel`, a path inside the tier at `tier_path` (`.` for the root), a treasure?
    pub fn in_tier(&self, tier_path: &str, rel: &[u8]) -> bool {
        if tier_path == "." {
            return self.is_treasure(rel);
        }
        let mut full = Vec::with_capacity(tier_path.len() + 1 + rel.len());
        full.extend_from_slice(tier_path.as_bytes());
        full.push(b'/');
        full.extend_from_slice(rel);
        self.is_treasure(&full)
    }
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
}
