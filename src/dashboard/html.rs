//! The dashboard page, rendered on the server: the same HTML is served live by `mirror
//! dashboard` and written whole by `mirror report --html`, so the static report needs no
//! script. Every piece of data (path names, messages, remote URLs) goes through [`escape`].

use std::fmt::Write;

use crate::audit::{Outcome, Recorded};
use crate::history::format_local;
use crate::remote::State;
use crate::units::{age, bytes};

use super::{rfc3339_secs, Dashboard, Local, TierView, AUDIT_SCAN, TIMELINE_DAYS};

/// The live page's script: it refreshes `<main id="dash">` from `/fragment`.
pub const SCRIPT: &str = include_str!("dashboard.js");

/// Pending changes listed per tier before "and N more".
const CHANGES_SHOWN: usize = 10;

pub enum Mode {
    /// Served by `mirror dashboard`: loads `/dashboard.js`, which refreshes every N seconds.
    Live { refresh_secs: u32 },
    /// A self-contained file: no script, nothing loaded from anywhere.
    Static,
}

/// Escape text for HTML element content and double-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole page.
pub fn page(d: &Dashboard, mode: &Mode) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let title = format!("mirror — {}", d.local.project);
    let refresh = match mode {
        Mode::Live { refresh_secs } => format!(" data-refresh=\"{refresh_secs}\""),
        Mode::Static => String::new(),
    };
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body{refresh}>\n\
         <main id=\"dash\">\n",
        escape(&title)
    );
    out.push_str(&fragment(d));
    out.push_str("</main>\n<footer>");
    match mode {
        Mode::Live { .. } => out.push_str(
            "<span id=\"live\">live view · read-only</span>\n</footer>\n\
             <script src=\"/dashboard.js\"></script>\n",
        ),
        Mode::Static => out.push_str(
            "static report · run <code>mirror dashboard</code> for a live view</footer>\n",
        ),
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// The contents of `<main id="dash">`: what the live page swaps in on each refresh.
pub fn fragment(d: &Dashboard) -> String {
    let mut out = String::with_capacity(16 * 1024);
    header(&mut out, d);
    tiers(&mut out, d);
    timeline(&mut out, d);
    remotes(&mut out, d);
    verify(&mut out, d);
    failures(&mut out, d);
    milestones(&mut out, d);
    out
}

fn header(out: &mut String, d: &Dashboard) {
    let l = d.local;
    let problems = d.problems();
    let _ = write!(
        out,
        "<header>\n<h1>mirror</h1>\n<p class=\"sub\">{} on {} · shadow {} · updated {}</p>\n",
        escape(&l.project),
        escape(&l.host),
        escape(&l.shadow),
        format_local(l.generated)
    );
    if problems.is_empty() {
        let _ = writeln!(
            out,
            "<div id=\"verdict\" class=\"verdict ok\">✔ All {} tier(s) protected</div>",
            l.tiers.len()
        );
    } else {
        let _ = write!(
            out,
            "<div id=\"verdict\" class=\"verdict bad\">✖ {} problem(s) need attention<ul>",
            problems.len()
        );
        for p in &problems {
            let _ = write!(out, "<li>{}</li>", escape(p));
        }
        out.push_str("</ul></div>\n");
    }
    out.push_str("</header>\n");
}

fn tiers(out: &mut String, d: &Dashboard) {
    out.push_str(
        "<section id=\"tiers\">\n<h2>Tiers</h2>\n<table>\n<thead><tr><th>tier</th>\
         <th>last snapshot</th><th>recorded</th><th>critical files</th>\
         <th>pending since</th></tr></thead>\n<tbody>\n",
    );
    for t in &d.local.tiers {
        tier_row(out, t, d.local);
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn tier_row(out: &mut String, t: &TierView, local: &Local) {
    let s = &t.status;
    let _ = write!(
        out,
        "<tr class=\"tier\" data-tier=\"{}\"><td><b class=\"name\">{}</b><br><span class=\"dim\">{}</span></td>",
        escape(&s.tier),
        escape(&s.tier),
        escape(&s.path)
    );
    match (&s.last, t.age_secs, t.checked) {
        (Some(last), Some(secs), Some(checked)) => {
            let class = if t.overdue { "bad" } else { "ok" };
            let unchanged_since = if checked > last.time {
                format!(
                    "<br><span class=\"dim\">unchanged since; checked {} ago</span>",
                    age(secs)
                )
            } else {
                String::new()
            };
            let _ = write!(
                out,
                "<td class=\"{class}\" title=\"expected every {}\">{}<br><span class=\"age\">{} ago</span> <code>{}</code>{unchanged_since}</td>",
                age(local.interval_secs as i64),
                format_local(last.time),
                age(local.generated - last.time),
                &last.id.to_hex_with_len(7).to_string()
            );
        }
        _ => out.push_str("<td class=\"bad\">no snapshot yet</td>"),
    }
    match &t.recorded {
        Some(r) => {
            let _ = write!(
                out,
                "<td>{} file{}<br><span class=\"dim\">{}</span></td>",
                r.files,
                if r.files == 1 { "" } else { "s" },
                bytes(r.bytes)
            );
        }
        None => out.push_str("<td class=\"dim\">—</td>"),
    }
    let present = s.critical.len();
    let missing = &s.critical_missing;
    if missing.is_empty() {
        let _ = write!(out, "<td class=\"ok\">{present} present</td>");
    } else {
        let _ = write!(
            out,
            "<td class=\"bad\">{present} present, {} MISSING<ul class=\"paths\">",
            missing.len()
        );
        for p in missing.iter().take(CHANGES_SHOWN) {
            let _ = write!(out, "<li>{}</li>", escape(p));
        }
        more(out, missing.len());
        out.push_str("</ul></td>");
    }
    if s.missing {
        out.push_str("<td class=\"bad\">tier directory is missing</td>");
    } else if s.changes.is_empty() {
        out.push_str("<td class=\"ok\">clean</td>");
    } else {
        let _ = write!(out, "<td class=\"warn\">{}<ul class=\"paths\">", s.counts);
        for c in s.changes.iter().take(CHANGES_SHOWN) {
            let _ = write!(
                out,
                "<li><code>{}</code> {}</li>",
                c.status,
                escape(&c.path)
            );
        }
        more(out, s.changes.len());
        out.push_str("</ul></td>");
    }
    out.push_str("</tr>\n");
    let notes = s
        .unreadable
        .iter()
        .map(|n| format!("could not read {}: {}", n.path, n.reason))
        .chain(s.warnings.iter().cloned());
    for note in notes {
        let _ = writeln!(
            out,
            "<tr class=\"note\"><td></td><td colspan=\"4\" class=\"warn\">{}</td></tr>",
            escape(&note)
        );
    }
}

fn more(out: &mut String, total: usize) {
    if total > CHANGES_SHOWN {
        let _ = write!(
            out,
            "<li class=\"dim\">and {} more</li>",
            total - CHANGES_SHOWN
        );
    }
}

/// One row per tier, one mark per snapshot, over the last [`TIMELINE_DAYS`] days; drawn here
/// so the page needs no charting script and works offline and in a static report.
fn timeline(out: &mut String, d: &Dashboard) {
    const LABEL: f64 = 150.0;
    const WIDTH: f64 = 960.0;
    const ROW: f64 = 30.0;
    const TOP: f64 = 22.0;
    let l = d.local;
    let end = l.generated;
    let start = end - TIMELINE_DAYS * 86_400;
    // Room on the right for the "now" label.
    let plot = WIDTH - LABEL - 40.0;
    let x = |t: i64| LABEL + plot * ((t.clamp(start, end) - start) as f64) / ((end - start) as f64);
    let height = TOP + ROW * l.tiers.len().max(1) as f64 + 6.0;
    let _ = write!(
        out,
        "<section id=\"history\">\n<h2>Snapshots, last {TIMELINE_DAYS} days</h2>\n\
         <svg id=\"timeline\" class=\"chart\" role=\"img\" aria-label=\"snapshots per tier over the last {TIMELINE_DAYS} days\" \
         viewBox=\"0 0 {WIDTH} {height}\" width=\"100%\" preserveAspectRatio=\"xMinYMin meet\">\n"
    );
    // Midnight gridlines, labelled with the local day.
    let _ = writeln!(
        out,
        "<line class=\"now\" x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{height:.1}\"/>\
         <text class=\"axis\" x=\"{2:.1}\" y=\"12\">now</text>",
        x(end),
        TOP - 6.0,
        x(end) + 3.0
    );
    for midnight in local_midnights(start, end) {
        let px = x(midnight);
        if x(end) - px < 70.0 {
            // Today's label would run into "now".
            continue;
        }
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{px:.1}\" y1=\"{}\" x2=\"{px:.1}\" y2=\"{height:.1}\"/>\
             <text class=\"axis\" x=\"{:.1}\" y=\"12\">{}</text>",
            TOP - 6.0,
            px + 3.0,
            day_label(midnight)
        );
    }
    for (i, t) in l.tiers.iter().enumerate() {
        let y = TOP + ROW * i as f64 + ROW / 2.0;
        let _ = writeln!(
            out,
            "<text class=\"tier-label\" x=\"4\" y=\"{:.1}\">{}</text>\
             <line class=\"lane\" x1=\"{LABEL}\" y1=\"{y:.1}\" x2=\"{WIDTH}\" y2=\"{y:.1}\"/>",
            y + 4.0,
            escape(&truncate(&t.status.tier, 20))
        );
        if t.timeline.is_empty() {
            let _ = writeln!(
                out,
                "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\">no snapshots in this period</text>",
                LABEL + 8.0,
                y - 6.0
            );
        }
        // Oldest first, so the newest is drawn on top.
        for s in t.timeline.iter().rev() {
            let class = if s.partial {
                "mark partial"
            } else if s.trigger == "pre-checkout" {
                "mark safety"
            } else {
                "mark"
            };
            let tags = if s.tags.is_empty() {
                String::new()
            } else {
                format!(" · tag {}", s.tags.join(", "))
            };
            let radius = if s.tags.is_empty() { 4.5 } else { 6.5 };
            let _ = writeln!(
                out,
                "<circle class=\"{class}\" cx=\"{:.1}\" cy=\"{y:.1}\" r=\"{radius}\"><title>{}</title></circle>",
                x(s.time),
                escape(&format!(
                    "{} · {} · {} {}{}{}",
                    t.status.tier,
                    format_local(s.time),
                    s.trigger,
                    s.stats,
                    if s.partial { " · partial" } else { "" },
                    tags
                ))
            );
        }
    }
    out.push_str(
        "</svg>\n<p class=\"legend\"><span class=\"dot\"></span> snapshot \
         <span class=\"dot partial\"></span> partial \
         <span class=\"dot safety\"></span> safety copy before a checkout · larger: tagged</p>\n\
         </section>\n",
    );
}

/// The local midnights (epoch seconds) within `(start, end]`.
fn local_midnights(start: i64, end: i64) -> Vec<i64> {
    use chrono::{Days, Local, TimeZone};
    let Some(today) = Local.timestamp_opt(end, 0).single().map(|t| t.date_naive()) else {
        return Vec::new();
    };
    let mut out: Vec<i64> = (0..=(TIMELINE_DAYS as u64 + 1))
        .filter_map(|back| today.checked_sub_days(Days::new(back)))
        .filter_map(|date| date.and_hms_opt(0, 0, 0))
        .filter_map(|m| Local.from_local_datetime(&m).earliest())
        .map(|m| m.timestamp())
        .filter(|&t| t > start && t <= end)
        .collect();
    out.sort_unstable();
    out
}

fn day_label(secs: i64) -> String {
    use chrono::{Local, TimeZone};
    match Local.timestamp_opt(secs, 0).single() {
        Some(t) => t.format("%a %d %b").to_string(),
        None => String::new(),
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut t: String = text.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

fn remotes(out: &mut String, d: &Dashboard) {
    let l = d.local;
    out.push_str("<section id=\"remotes\">\n<h2>Remote mirrors</h2>\n");
    if l.remotes.is_empty() {
        out.push_str(
            "<p class=\"dim\">No remotes configured — add one with \
             <code>mirror remote add NAME URL</code>.</p>\n</section>\n",
        );
        return;
    }
    match d.remotes {
        Some(check) => {
            let _ = writeln!(
                out,
                "<p class=\"dim\">checked {}</p>",
                format_local(check.checked)
            );
        }
        None => out.push_str("<p class=\"dim\">checking the remotes…</p>\n"),
    }
    out.push_str(
        "<table>\n<thead><tr><th>remote</th><th>state</th><th>last successful push</th>\
         <th>last attempt</th></tr></thead>\n<tbody>\n",
    );
    for (name, url) in &l.remotes {
        let status = d
            .remotes
            .and_then(|c| c.statuses.iter().find(|s| &s.remote == name));
        let (class, state) = match status {
            None => ("dim", "not checked yet".to_owned()),
            Some(s) => match s.state {
                State::UpToDate => ("ok", "in sync".to_owned()),
                State::Ahead if s.ahead > 0 => (
                    "warn",
                    format!("has {} snapshot(s) this repo lacks", s.ahead),
                ),
                State::Ahead => ("warn", "has snapshots this repo lacks".to_owned()),
                State::Behind => ("bad", format!("behind by {} snapshot(s)", s.behind)),
                State::Diverged => ("bad", format!("diverged (lacks {} of ours)", s.behind)),
                State::Unreachable => (
                    "bad",
                    format!(
                        "unreachable: {}",
                        s.error.as_deref().unwrap_or("unknown error")
                    ),
                ),
                State::Empty => ("bad", "empty (never pushed)".to_owned()),
            },
        };
        let pushes = l.pushes.get(name);
        let never = if l.audit_complete {
            "never".to_owned()
        } else {
            format!("not among the newest {AUDIT_SCAN} audit entries")
        };
        let last_ok = pushes
            .and_then(|p| p.last_ok.as_ref())
            .map(|p| seen_time(&p.time))
            .unwrap_or_else(|| never.clone());
        let attempt = match pushes.and_then(|p| p.last_attempt.as_ref()) {
            Some(p) => format!(
                "{} · {}{}",
                seen_time(&p.time),
                p.result,
                p.error
                    .as_deref()
                    .map(|e| format!(": {}", first_line(e)))
                    .unwrap_or_default()
            ),
            None => never.clone(),
        };
        let _ = writeln!(
            out,
            "<tr class=\"remote\"><td><b>{}</b><br><span class=\"dim\">{}</span></td>\
             <td class=\"{class}\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            escape(url),
            escape(&state),
            escape(&last_ok),
            escape(&attempt)
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn verify(out: &mut String, d: &Dashboard) {
    out.push_str("<section id=\"verify\">\n<h2>Integrity</h2>\n");
    match &d.local.last_verify {
        None if d.local.audit_complete => {
            out.push_str("<p class=\"warn\">Never verified — run <code>mirror verify</code>.</p>\n")
        }
        None => {
            let _ = writeln!(
                out,
                "<p class=\"warn\">No verify among the newest {AUDIT_SCAN} audit entries — run <code>mirror verify</code>.</p>"
            );
        }
        Some(v) => {
            let details = &v.entry.details;
            let objects = details.get("objects").and_then(|v| v.as_u64());
            let problems = details.get("problems").and_then(|v| v.as_u64());
            let (class, verdict) = match v.entry.result {
                Outcome::Ok => ("ok", "no problems".to_owned()),
                _ => (
                    "bad",
                    format!(
                        "{} problem(s): {}",
                        problems.map(|p| p.to_string()).unwrap_or("some".into()),
                        v.entry.error.as_deref().map(first_line).unwrap_or("")
                    ),
                ),
            };
            let _ = writeln!(
                out,
                "<p class=\"{class}\">Last verify {}: {}{}</p>",
                escape(&seen_time(&v.entry.time)),
                escape(&verdict),
                objects
                    .map(|n| format!(" ({n} objects checked)"))
                    .unwrap_or_default()
            );
        }
    }
    out.push_str("</section>\n");
}

fn failures(out: &mut String, d: &Dashboard) {
    out.push_str("<section id=\"failures\">\n<h2>Recent failures and partial results</h2>\n");
    if d.local.failures.is_empty() {
        out.push_str("<p class=\"ok\">None in the audit trail.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<table>\n<thead><tr><th>time</th><th>operation</th><th>result</th><th>error</th></tr></thead>\n<tbody>\n",
    );
    for e in &d.local.failures {
        audit_row(out, e);
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn audit_row(out: &mut String, e: &Recorded) {
    let result = match e.entry.result {
        Outcome::Ok => "ok",
        Outcome::Partial => "partial",
        Outcome::Failed => "failed",
    };
    let class = if e.entry.result == Outcome::Partial {
        "warn"
    } else {
        "bad"
    };
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td><code>mirror {}</code><br><span class=\"dim\">{}@{}</span></td>\
         <td class=\"{class}\">{result}</td><td>{}</td></tr>",
        escape(&seen_time(&e.entry.time)),
        escape(&e.entry.args.join(" ")),
        escape(&e.entry.user),
        escape(&e.entry.host),
        escape(e.entry.error.as_deref().map(first_line).unwrap_or(""))
    );
}

fn milestones(out: &mut String, d: &Dashboard) {
    let l = d.local;
    out.push_str("<section id=\"milestones\">\n<h2>Milestones</h2>\n");
    if l.milestones.is_empty() {
        out.push_str(
            "<p class=\"dim\">No milestone tags — mark one with <code>mirror tag NAME</code>.</p>\n</section>\n",
        );
        return;
    }
    if l.milestone_count > l.milestones.len() {
        let _ = writeln!(
            out,
            "<p class=\"dim\">newest {} of {}</p>",
            l.milestones.len(),
            l.milestone_count
        );
    }
    out.push_str(
        "<table>\n<thead><tr><th>tag</th><th>time</th><th>tiers</th><th>message</th></tr></thead>\n<tbody>\n",
    );
    for m in &l.milestones {
        let tiers: Vec<&str> = m.tiers.iter().map(|(t, _)| t.as_str()).collect();
        let _ = writeln!(
            out,
            "<tr><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&m.name),
            format_local(m.time),
            escape(&tiers.join(", ")),
            escape(first_line(&m.message))
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

/// An audit time (RFC 3339) in local time with its age.
fn seen_time(rfc3339: &str) -> String {
    match rfc3339_secs(rfc3339) {
        Some(t) => format!(
            "{} ({} ago)",
            format_local(t),
            age(chrono::Utc::now().timestamp() - t)
        ),
        None => rfc3339.to_owned(),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

const STYLE: &str = r#"
:root { --ok: #1a7f37; --bad: #c62828; --warn: #9a6700; --dim: #667085; --line: #d0d7de;
        --bg: #ffffff; --fg: #1f2328; --panel: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; padding: 1.5rem 2rem; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: var(--fg); background: var(--bg); }
h1 { margin: 0; font-size: 1.6rem; letter-spacing: .02em; }
h2 { font-size: 1.05rem; margin: 1.6rem 0 .5rem; border-bottom: 1px solid var(--line); padding-bottom: .2rem; }
.sub, .dim { color: var(--dim); }
.sub { margin: .2rem 0 .8rem; word-break: break-all; }
.verdict { padding: .7rem 1rem; border-radius: 6px; font-weight: 600; }
.verdict.ok { background: #dafbe1; color: var(--ok); }
.verdict.bad { background: #ffebe9; color: var(--bad); }
.verdict ul { margin: .3rem 0 0 1.2rem; padding: 0; font-weight: 400; }
table { border-collapse: collapse; width: 100%; }
th { text-align: left; font-weight: 600; color: var(--dim); font-size: .85rem; }
th, td { padding: .45rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
td.ok, p.ok { color: var(--ok); }
td.bad, p.bad { color: var(--bad); font-weight: 600; }
td.warn, p.warn { color: var(--warn); }
ul.paths { margin: .2rem 0 0; padding-left: 1rem; font-weight: 400; color: var(--fg); word-break: break-all; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; background: var(--panel); padding: 0 .25rem; border-radius: 3px; }
svg.chart { background: var(--panel); border-radius: 6px; max-width: 960px; display: block; }
svg .grid { stroke: var(--line); }
svg .lane { stroke: #e4e8ec; }
svg .now { stroke: var(--dim); stroke-dasharray: 3 3; }
svg .axis { fill: var(--dim); font-size: 11px; }
svg .tier-label { fill: var(--fg); font-size: 12px; font-weight: 600; }
svg .mark { fill: #0969da; fill-opacity: .75; stroke: #fff; stroke-width: 1; }
svg .mark.partial { fill: #d4a72c; }
svg .mark.safety { fill: #8c959f; }
.legend { color: var(--dim); font-size: .85rem; }
.dot { display: inline-block; width: .7rem; height: .7rem; border-radius: 50%; background: #0969da; vertical-align: middle; }
.dot.partial { background: #d4a72c; } .dot.safety { background: #8c959f; }
footer { margin-top: 2rem; color: var(--dim); font-size: .85rem; }
footer .bad { color: var(--bad); }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_every_html_special_character() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(escape("plain/path.txt"), "plain/path.txt");
    }

    #[test]
    fn truncate_keeps_short_names_and_marks_cut_ones() {
        assert_eq!(truncate("tier-0", 20), "tier-0");
        assert_eq!(truncate("abcdefghij", 5), "abcd…");
    }
}
