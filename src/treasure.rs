//! Treasure (critical) paths: the files whose loss matters most.
//!
//! For now these are the product's default patterns — any path with a component whose name
//! contains `.hidden`, `impossible`, `btfo` or `destruction`. Making them configurable (and
//! encrypting them) is the treasures issue (#3); everything that asks "is this critical?"
//! asks here.

const MARKERS: &[&str] = &[".hidden", "impossible", "btfo", "destruction"];

/// Is `path` (relative, `/`-separated) a treasure path?
pub fn is_treasure(path: &[u8]) -> bool {
    path.split(|b| *b == b'/').any(|component| {
        MARKERS
            .iter()
            .any(|m| component.windows(m.len()).any(|w| w == m.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::is_treasure;

    #[test]
    fn default_markers_match_any_component() {
        assert!(is_treasure(b"platforms/growth/.hidden/x"));
        assert!(is_treasure(b"a/the-impossible-one.rs"));
        assert!(is_treasure(b"btfo"));
        assert!(is_treasure(b"x/self-destruction/y/z"));
        assert!(!is_treasure(b"src/main.rs"));
        assert!(!is_treasure(b"hidden/x"));
    }
}
