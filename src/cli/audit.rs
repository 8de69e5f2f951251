//! `mirror audit`

use super::{open_project, Context, Exit};

/// Audit trail operations (the entries themselves: `mirror log --audit`).
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Check that the audit chain is intact: every entry decodes, names its predecessor,
    /// times never go backwards beyond the clock-skew tolerance, and the chain still holds the
    /// last entry this machine appended (a rewritten or replaced chain does not).
    Verify {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<Exit> {
    let Sub::Verify { json } = args.command;
    let (_, shadow) = open_project(ctx)?;
    let result = mirror::audit::verify(&shadow)?;
    // The verification itself is an audited operation, recorded after the check.
    ctx.audit_into(&shadow);
    ctx.audit_details(serde_json::json!({"entries": result.entries, "problems": result.problems}));
    if json {
        super::output::json(&result)?;
    } else {
        for p in &result.problems {
            eprintln!("error: audit trail: {p}");
        }
        if result.problems.is_empty() && !ctx.quiet {
            println!("audit trail intact: {} entries", result.entries);
        }
    }
    if result.problems.is_empty() {
        Ok(Exit::Ok)
    } else {
        anyhow::bail!(
            "the audit trail is not intact ({} problems)",
            result.problems.len()
        )
    }
}
