//! `mirror report`

use std::path::PathBuf;

use super::{Context, Exit};

/// Write the dashboard page as one self-contained HTML file (no script, nothing loaded from
/// elsewhere), e.g. for a cron e-mail or a CI artefact.
#[derive(clap::Args)]
pub struct Args {
    /// Where to write the page (`-`: standard output).
    #[arg(long, value_name = "FILE")]
    html: PathBuf,

    /// Do not contact the remotes (their state is shown as not checked).
    #[arg(long)]
    no_remotes: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    use mirror::dashboard::{self, html};
    let (project, shadow) = dashboard::open(&ctx.cwd)?;
    let local = dashboard::gather_local(&project, &shadow, &mut Default::default())?;
    let check = (!args.no_remotes).then(|| dashboard::check_remotes(&project, &shadow));
    let page = dashboard::Dashboard {
        local: &local,
        remotes: check.as_ref(),
        extra_errors: &[],
    };
    let problems = page.problems();
    let text = html::page(&page, &html::Mode::Static);
    if args.html.as_os_str() == "-" {
        use std::io::Write;
        std::io::stdout().lock().write_all(text.as_bytes())?;
    } else {
        let path = ctx.cwd.join(&args.html);
        match std::fs::symlink_metadata(&path) {
            // A symlink, a device (`/dev/stdout`), a fifo: written through, never replaced.
            Ok(md) if !md.file_type().is_file() => std::fs::write(&path, text.as_bytes())
                .map_err(|e| anyhow::anyhow!("could not write {}: {e}", path.display()))?,
            // Whole or not at all: a mail job reading the file never sees half a page.
            _ => mirror::store::write_atomically(&path, text.as_bytes())?,
        }
        if !ctx.quiet {
            println!("wrote {}", path.display());
        }
    }
    for p in &problems {
        eprintln!("attention: {p}");
    }
    Ok(Exit::Ok)
}
