//! Property tests over untrusted input: whatever bytes reach a parser — a hand-edited
//! mirror.yaml, a time or revision typed on the command line, a metadata note or stat cache
//! from a damaged disk, a URL — it returns an error, never panics. The case counts are
//! recorded in docs/reliability.md.

use proptest::prelude::*;

/// Cases per property (proptest's default is 256).
const CASES: u32 = 4096;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

thread_local! {
    /// One small shadow with a snapshot, for the revision resolver (made once per thread).
    static REPO: (crate::store::Shadow, crate::config::Config, tempfile::TempDir) = small_shadow();
}

fn small_shadow() -> (
    crate::store::Shadow,
    crate::config::Config,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let shadow =
        crate::store::Shadow::create(&dir.path().join("s.git"), dir.path(), "t").expect("shadow");
    let tree = gix::ObjectId::empty_tree(gix::hash::Kind::Sha1);
    shadow
        .write_object(&gix::objs::Tree::empty())
        .expect("tree");
    shadow
        .append_commit(
            &crate::store::tier_ref("t"),
            None,
            tree,
            "snapshot t\n\nMirror-Tier: t\n".into(),
            &crate::snapshot::signature(),
        )
        .expect("commit");
    let config = crate::config::Config::parse(
        "version: 1\nshadow: s.git\ntiers:\n- name: t\n  path: t\n",
        std::path::Path::new("mirror.yaml"),
    )
    .expect("config");
    (shadow, config, dir)
}

/// YAML-ish text: mostly the characters and keys mirror.yaml is made of, so the parser gets
/// past the first byte and into validation.
fn yamlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("version: 1\n".to_owned()),
        Just("shadow: /s\n".to_owned()),
        Just("tiers:\n".to_owned()),
        Just("- name: t\n  path: t\n".to_owned()),
        Just("  path: ../x\n".to_owned()),
        Just("treasures: [\"*\", \"!a\", \"[\"]\n".to_owned()),
        Just("encryption:\n  recipients: [age1]\n".to_owned()),
        Just("remotes:\n- name: a\n  url: ''\n".to_owned()),
        Just("push: {after_snapshot: yes}\n".to_owned()),
        Just("hooks: {strict: 3}\n".to_owned()),
        "[ -~\n\t:\\-\\[\\]{}'\"#&*!|>%@`]{0,40}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_loader_never_panics(text in yamlish()) {
        let _ = crate::config::Config::parse(&text, std::path::Path::new("mirror.yaml"));
    }

    #[test]
    fn time_parser_never_panics(text in "[0-9a-zA-Z :+\\-TZ.]{0,40}|\\PC{0,40}") {
        let now = chrono::Local::now();
        let _ = crate::history::parse_time(&text, now);
    }

    #[test]
    fn metadata_note_decoder_never_panics(data in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut with_header = b"mirror-meta 1\0".to_vec();
        with_header.extend_from_slice(&data);
        let _ = crate::meta::decode(&data);
        let _ = crate::meta::decode(&with_header);
    }

    #[test]
    fn metadata_records_with_any_numbers_never_panic(secs in any::<i64>(), nanos in any::<i64>(), size in any::<i64>()) {
        let note = format!("mirror-meta 1\0m {secs} {nanos} f\0e {size} f\0p 777 f\0");
        let _ = crate::meta::decode(note.as_bytes());
    }

    #[test]
    fn stat_cache_decoder_never_panics(data in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = crate::statcache::decode_for_fuzzing(&data);
    }

    #[test]
    fn treasure_patterns_never_panic(patterns in prop::collection::vec("\\PC{0,12}", 0..6), path in "\\PC{0,30}") {
        if let Ok(t) = crate::treasure::Treasures::new(&patterns) {
            let _ = t.is_treasure(path.as_bytes());
            let _ = t.walker("tier").is_treasure(path.as_bytes());
        }
    }

    #[test]
    fn revision_resolver_never_panics(rev in "[a-z0-9/~^@{}:.\\-]{0,24}|\\PC{0,24}") {
        REPO.with(|(shadow, config, _dir)| {
            let _ = crate::history::resolve(shadow, config, &rev);
        });
    }

    #[test]
    fn names_and_urls_never_panic(text in "\\PC{0,40}") {
        let _ = crate::config::validate_tier_name(&text);
        let _ = crate::config::validate_remote_name(&text);
        let _ = crate::config::normalize_tier_path(&text);
        let _ = crate::remote::Location::parse(&text, std::path::Path::new("/p"));
        let _ = crate::clone::default_dir(&text);
        let _ = crate::listing::is_dotgit_lookalike(text.as_bytes());
        let _ = crate::crypt::parse_recipient(&text);
    }
}
