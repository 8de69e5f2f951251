//! `mirror.yaml`: the project's configuration, its schema and its validation.
//!
//! The file is small and read on every command, so it is parsed whole with `serde_norway`
//! and validated up front: a bad tier name or an escaping tier path is an error before any
//! work starts, with file, line and column when the YAML itself is wrong.

use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The name of the configuration file at the project root.
pub const CONFIG_FILE: &str = "mirror.yaml";

/// The only schema version this build reads and writes.
pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Schema version; always 1 for now.
    pub version: u32,
    /// Where the bare shadow repository lives; relative paths are relative to the project root.
    pub shadow: PathBuf,
    /// The directories recorded, each on its own branch `tiers/<name>`.
    pub tiers: Vec<Tier>,
    /// Extra gitignore-syntax patterns (relative to the project root) that are never recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Gitignore-syntax patterns (relative to the project root) of critical files: watched for
    /// loss and stored only age-encrypted. Absent: the defaults; `[]`: none.
    #[serde(default = "crate::treasure::default_patterns")]
    pub treasures: Vec<String>,
    /// Who can decrypt treasure files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// How the git hooks behave (`mirror hooks install`).
    #[serde(default, skip_serializing_if = "HookSettings::is_default")]
    pub hooks: HookSettings,
    /// Other git repositories the shadow is pushed to (`mirror push`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remotes: Vec<Remote>,
    /// When to push without being asked.
    #[serde(default, skip_serializing_if = "PushSettings::is_default")]
    pub push: PushSettings,
    /// How often the project is expected to be recorded.
    #[serde(default, skip_serializing_if = "Schedule::is_default")]
    pub schedule: Schedule,
    /// How `mirror watch` reacts.
    #[serde(default, skip_serializing_if = "WatchSettings::is_default")]
    pub watch: WatchSettings,
    /// A command to run when something goes wrong.
    #[serde(default, skip_serializing_if = "Alerts::is_default")]
    pub alerts: Alerts,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchSettings {
    /// A critical file that disappears is restored from the latest snapshot at once.
    #[serde(default)]
    pub auto_restore: bool,
}

impl WatchSettings {
    fn is_default(&self) -> bool {
        self == &WatchSettings::default()
    }
}

/// The events an alert can be raised for (`alerts.events`).
pub const ALERT_EVENTS: [&str; 5] = [
    "snapshot-failed",
    "snapshot-partial",
    "critical-missing",
    "push-failed",
    "verify-failed",
];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// Run with `sh -c` in the project root; the event is in `MIRROR_ALERT_*` variables and,
    /// as JSON, on standard input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Only these events (default: all of [`ALERT_EVENTS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
}

impl Alerts {
    fn is_default(&self) -> bool {
        self == &Alerts::default()
    }

    /// Whether `event` is to be raised (a command is set and the event is selected).
    pub fn wants(&self, event: &str) -> bool {
        self.command
            .as_deref()
            .is_some_and(|c| !c.trim().is_empty())
            && (self.events.is_empty() || self.events.iter().any(|e| e == event))
    }
}

/// The interval a tier may go without a snapshot before the dashboard shows it as overdue.
pub const DEFAULT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// How long a tier may go without a snapshot (`30m`, `1h`, `1day`); default 1h. Kept as
    /// written so rewriting the file keeps the user's spelling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

impl Schedule {
    fn is_default(&self) -> bool {
        self == &Schedule::default()
    }

    /// The configured interval (validated when the file was loaded), or the default.
    pub fn interval(&self) -> std::time::Duration {
        self.interval
            .as_deref()
            .and_then(|text| parse_duration(text).ok())
            .unwrap_or(DEFAULT_INTERVAL)
    }
}

/// A positive duration in the `humantime` syntax: `90s`, `5m`, `1h 30m`, `2days`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() => Err(format!("duration '{text}' must be longer than zero")),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "'{text}' is not a duration ({e}); write e.g. 30s, 15m, 1h or 1day"
        )),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    /// Names `refs/remotes/<name>/...` in the shadow, so a valid ref component.
    pub name: String,
    /// Anything `git push` accepts: a path (relative to the project root), `file://`,
    /// `ssh://`, `user@host:path`, `https://`.
    pub url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSettings {
    /// Push to every remote after each snapshot that recorded something.
    #[serde(default)]
    pub after_snapshot: bool,
}

impl PushSettings {
    fn is_default(&self) -> bool {
        self == &PushSettings::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// age recipients (`age1…`) and OpenSSH public keys (`ssh-ed25519 …`, `ssh-rsa …`).
    #[serde(default)]
    pub recipients: Vec<String>,
    /// The identity file that decrypts (relative to the project root); default
    /// `$XDG_CONFIG_HOME/mirror/identity.txt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSettings {
    /// A failed pre-commit snapshot blocks the commit (default: it is reported, the commit goes on).
    #[serde(default)]
    pub strict: bool,
    /// post-checkout restores missing critical files at once (only missing ones).
    #[serde(default)]
    pub auto_restore: bool,
}

impl HookSettings {
    fn is_default(&self) -> bool {
        self == &HookSettings::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub name: String,
    /// Relative to the project root, `/`-separated; `.` is the root itself.
    pub path: String,
}

impl Config {
    /// Parse and validate `text`, read from `path` (used in error messages only).
    pub fn parse(text: &str, path: &Path) -> Result<Config, Error> {
        let config: Config = serde_norway::from_str(text).map_err(|err| {
            let (line, column) = err
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            Error::Config {
                path: path.to_owned(),
                line,
                column,
                message: err.to_string(),
            }
        })?;
        let mut config = config;
        config.validate(path)?;
        // Keep only the normalised form, so no later join can follow a `..` through a symlink.
        for tier in &mut config.tiers {
            if let Ok(normal) = normalize_tier_path(&tier.path) {
                tier.path = normal;
            }
        }
        Ok(config)
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        Ok(Config::parse(&text, path)?)
    }

    pub fn to_yaml(&self) -> String {
        // Serialising plain structs of strings cannot fail; a failure would be a serde bug.
        let body = serde_norway::to_string(self).expect("Config always serialises");
        format!("# mirror configuration — schema: docs/config.md\n{body}")
    }

    fn validate(&self, path: &Path) -> Result<(), Error> {
        let invalid = |message: String| Error::ConfigInvalid {
            path: path.to_owned(),
            message,
        };
        if self.version != CONFIG_VERSION {
            return Err(invalid(format!(
                "version {} is not supported (this mirror reads version {CONFIG_VERSION})",
                self.version
            )));
        }
        if self.tiers.is_empty() {
            return Err(invalid("no tiers configured".into()));
        }
        let mut seen_names = std::collections::HashSet::new();
        let mut seen_paths = std::collections::HashSet::new();
        for tier in &self.tiers {
            validate_tier_name(&tier.name).map_err(invalid)?;
            normalize_tier_path(&tier.path).map_err(invalid)?;
            if !seen_names.insert(tier.name.as_str()) {
                return Err(invalid(format!("tier name '{}' is used twice", tier.name)));
            }
            if !seen_paths.insert(tier.path.as_str()) {
                return Err(invalid(format!("tier path '{}' is used twice", tier.path)));
            }
        }
        crate::treasure::Treasures::new(&self.treasures).map_err(invalid)?;
        let mut remote_names = std::collections::HashSet::new();
        for remote in &self.remotes {
            validate_remote_name(&remote.name).map_err(invalid)?;
            if remote.url.trim().is_empty() {
                return Err(invalid(format!(
                    "remote '{}' has an empty url",
                    remote.name
                )));
            }
            // git would read `-...` as an option (`--upload-pack=<command>`): never a URL.
            if remote.url.trim_start().starts_with('-') {
                return Err(invalid(format!(
                    "remote '{}': url '{}' starts with '-'; write a path as ./-name",
                    remote.name, remote.url
                )));
            }
            if !remote_names.insert(remote.name.as_str()) {
                return Err(invalid(format!(
                    "remote name '{}' is used twice",
                    remote.name
                )));
            }
        }
        for event in &self.alerts.events {
            if !ALERT_EVENTS.contains(&event.as_str()) {
                return Err(invalid(format!(
                    "alerts.events: unknown event '{event}' (known: {})",
                    ALERT_EVENTS.join(", ")
                )));
            }
        }
        if let Some(text) = &self.schedule.interval {
            parse_duration(text).map_err(|e| invalid(format!("schedule.interval: {e}")))?;
        }
        for r in self.recipients() {
            crate::crypt::parse_recipient(r)
                .map_err(|e| invalid(format!("encryption.recipients: {e}")))?;
        }
        Ok(())
    }

    /// The configured encryption recipients (none when there is no `encryption:` section).
    pub fn recipients(&self) -> &[String] {
        self.encryption
            .as_ref()
            .map(|e| e.recipients.as_slice())
            .unwrap_or(&[])
    }

    /// `encryption.identity`, if set.
    pub fn identity_path(&self) -> Option<&Path> {
        self.encryption.as_ref().and_then(|e| e.identity.as_deref())
    }

    pub fn treasures(&self) -> anyhow::Result<crate::treasure::Treasures> {
        crate::treasure::Treasures::new(&self.treasures).map_err(anyhow::Error::msg)
    }

    /// An encryptor for the configured recipients; `None` when there are none.
    pub fn encryptor(&self) -> Option<crate::crypt::Encryptor> {
        let recipients: Vec<_> = self
            .recipients()
            .iter()
            .filter_map(|r| crate::crypt::parse_recipient(r).ok())
            .collect();
        (!recipients.is_empty()).then(|| crate::crypt::Encryptor::new(recipients))
    }

    pub fn tier_names(&self) -> Vec<String> {
        self.tiers.iter().map(|t| t.name.clone()).collect()
    }

    /// The tiers named in `names`, in configuration order; all tiers when `names` is empty.
    pub fn select_tiers(&self, names: &[String]) -> Result<Vec<Tier>, Error> {
        for name in names {
            if !self.tiers.iter().any(|t| &t.name == name) {
                return Err(Error::UnknownTier {
                    name: name.clone(),
                    valid: self.tier_names(),
                });
            }
        }
        Ok(self
            .tiers
            .iter()
            .filter(|t| names.is_empty() || names.contains(&t.name))
            .cloned()
            .collect())
    }
}

/// A tier name becomes the ref `refs/heads/tiers/<name>`, so it must be one valid ref component.
pub fn validate_tier_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.contains('/')
        || gix::validate::reference::name_partial(format!("tiers/{name}").as_str().into()).is_err();
    if bad {
        return Err(format!(
            "tier name '{name}' is not a valid git ref component (no '/', spaces, '..', '~', '^', ':', '?', '*', '[', '\\', and not ending in '.lock')"
        ));
    }
    Ok(())
}

/// Rewrite the `remotes:` block of the project's mirror.yaml (the rest stays as it is).
pub fn write_remotes(project: &crate::project::Project, remotes: &[Remote]) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct Block<'a> {
        remotes: &'a [Remote],
    }
    let path = project.config_path();
    if project.config_from_shadow {
        anyhow::bail!(
            "{} is missing (the configuration was read from the shadow repository); restore it first with `mirror checkout latest`",
            path.display()
        );
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let block = if remotes.is_empty() {
        String::new()
    } else {
        serde_norway::to_string(&Block { remotes }).context("could not write the remotes")?
    };
    let text = replace_top_level_block(&text, "remotes", &block);
    // Validate exactly as a later load would before replacing the file, and check the text
    // edit did what was meant (a comment inside the old block could hide entries from it).
    let written = Config::parse(&text, &path)?;
    if written.remotes != remotes {
        anyhow::bail!(
            "could not rewrite the `remotes:` block of {} safely (comments or unusual layout inside it?); edit it by hand",
            path.display()
        );
    }
    crate::store::write_atomically(&path, text.as_bytes())
}

/// A remote name becomes `refs/remotes/<name>/...`, so it must be one valid ref component.
pub fn validate_remote_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.contains('/')
        || gix::validate::reference::name_partial(format!("remotes/{name}").as_str().into())
            .is_err();
    if bad {
        return Err(format!(
            "remote name '{name}' is not a valid git ref component (no '/', spaces, '..', '~', '^', ':', '?', '*', '[', '\\', and not ending in '.lock')"
        ));
    }
    Ok(())
}

/// Replace the top-level `key:` block of a YAML document (the `key:` line and the indented or
/// `- ` lines under it) with `block`, or append `block` when there is none. Everything else,
/// comments included, stays byte for byte — serde_norway would drop comments on a rewrite.
/// Comments inside the replaced block are lost.
pub fn replace_top_level_block(text: &str, key: &str, block: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let is_key = |l: &str| {
        l.strip_prefix(key)
            .is_some_and(|rest| rest.starts_with(':'))
    };
    let Some(start) = lines.iter().position(|l| is_key(l)) else {
        let mut out = text.to_owned();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(block);
        return out;
    };
    let mut end = start + 1;
    while end < lines.len() {
        let l = lines[end];
        let inside = l.starts_with(' ') || l.starts_with('-') || l.starts_with('\t');
        if !inside {
            break;
        }
        end += 1;
    }
    let mut out = String::with_capacity(text.len() + block.len());
    for l in &lines[..start] {
        out.push_str(l);
    }
    out.push_str(block);
    for l in &lines[end..] {
        out.push_str(l);
    }
    out
}

/// Normalise a tier path to a relative, `/`-separated path without `.` or `..` components
/// (the root itself is `.`), refusing anything that would leave the project root.
pub fn normalize_tier_path(path: &str) -> Result<String, String> {
    if Path::new(path).is_absolute() {
        return Err(format!(
            "tier path '{path}' is absolute; tier paths are relative to the project root"
        ));
    }
    let rel = lexically_inside(Path::new(""), Path::new(path)).ok_or_else(|| {
        format!("tier path '{path}' escapes the project root; tier paths must stay inside it")
    })?;
    if rel.components().any(|c| c.as_os_str() == ".git") {
        return Err(format!("tier path '{path}' points into a .git directory"));
    }
    // `path` is a &str, so its components are UTF-8 too.
    let rel = rel.to_string_lossy().into_owned();
    Ok(if rel.is_empty() { ".".to_owned() } else { rel })
}

/// `path` (absolute, or relative to `root`) as a path relative to `root`, with `.` and `..`
/// resolved lexically (no symlink is looked at); `None` when it leaves `root`.
pub fn lexically_inside(root: &Path, path: &Path) -> Option<PathBuf> {
    let rel = if path.is_absolute() {
        path.strip_prefix(root).ok()?
    } else {
        path
    };
    let mut parts = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(name) => parts.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

/// Turn a `--tier` path given on the command line (possibly absolute, if inside `root`) into
/// a normalised tier path.
pub fn tier_path_from_arg(root: &Path, arg: &str) -> Result<String, String> {
    if !Path::new(arg).is_absolute() {
        return normalize_tier_path(arg);
    }
    let rel = lexically_inside(root, Path::new(arg)).ok_or_else(|| {
        format!(
            "tier path '{arg}' is outside the project root {}",
            root.display()
        )
    })?;
    let rel = rel
        .to_str()
        .ok_or_else(|| format!("tier path '{arg}' is not valid UTF-8"))?;
    normalize_tier_path(if rel.is_empty() { "." } else { rel })
}

/// Find the project root: the nearest directory at or above `start` holding `mirror.yaml`.
pub fn find_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| dir.join(CONFIG_FILE).is_file())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_top_level_block_is_replaced_and_everything_else_kept() {
        let text = "# my comment\nversion: 1\nremotes:\n- name: a\n  url: /x\n# next\ntiers: []\n";
        let out = replace_top_level_block(text, "remotes", "remotes:\n- name: b\n  url: /y\n");
        assert_eq!(
            out,
            "# my comment\nversion: 1\nremotes:\n- name: b\n  url: /y\n# next\ntiers: []\n"
        );
        assert_eq!(
            replace_top_level_block(text, "remotes", ""),
            "# my comment\nversion: 1\n# next\ntiers: []\n"
        );
        // Absent: appended; a key that merely starts the same is not it.
        assert_eq!(
            replace_top_level_block("remotes_x: 1", "remotes", "remotes: []\n"),
            "remotes_x: 1\nremotes: []\n"
        );
    }

    use super::*;

    #[test]
    fn tier_paths_are_normalised_and_escapes_refused() {
        assert_eq!(normalize_tier_path("./a/b/").unwrap(), "a/b");
        assert_eq!(normalize_tier_path("a/../b").unwrap(), "b");
        assert_eq!(normalize_tier_path(".").unwrap(), ".");
        assert!(normalize_tier_path("../x").is_err());
        assert!(normalize_tier_path("a/../../x").is_err());
        assert!(normalize_tier_path("/etc").is_err());
    }

    #[test]
    fn paths_are_resolved_lexically_inside_the_root() {
        let root = Path::new("/p");
        assert_eq!(
            lexically_inside(root, Path::new("/p/a/../b")),
            Some(PathBuf::from("b"))
        );
        assert_eq!(
            lexically_inside(root, Path::new("a/./c")),
            Some(PathBuf::from("a/c"))
        );
        assert_eq!(
            lexically_inside(root, Path::new("/p")),
            Some(PathBuf::new())
        );
        assert_eq!(lexically_inside(root, Path::new("/p/../q")), None);
        assert_eq!(lexically_inside(root, Path::new("/q/x")), None);
        assert_eq!(lexically_inside(root, Path::new("a/../../x")), None);
    }

    #[test]
    fn tier_names_must_be_ref_components() {
        assert!(validate_tier_name("tier-0").is_ok());
        assert!(validate_tier_name("root").is_ok());
        for bad in ["", "a/b", "a..b", "a b", "x.lock", "a~1", "a:b"] {
            assert!(validate_tier_name(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn yaml_errors_carry_line_and_column() {
        let err = Config::parse("version: 1\ntiers: [\n", Path::new("m.yaml")).unwrap_err();
        match err {
            Error::Config { line, .. } => assert!(line >= 2, "line {line}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
