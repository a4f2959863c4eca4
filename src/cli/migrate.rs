//! `migrate --from --to`: copying one store's contents into another, or saying what it
//! would copy.

use std::path::PathBuf;

use anyhow::Context as _;
use portcullis::clock::Clock as _;
use portcullis::clock::SystemClock;
use portcullis::migrate::{self, Location};

/// `migrate --from --to`. The locations are parsed here, not by clap, whose errors would
/// repeat a URL (and its password) to the terminal.
pub async fn move_store(
    from: String,
    to: String,
    ca_file: Option<PathBuf>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let from: Location = from.parse().map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to: Location = to.parse().map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let now = SystemClock.now();
    let source = migrate::open(&from, false, ca_file.clone())
        .await
        .with_context(|| format!("cannot open {from}"))?;
    if dry_run {
        // A destination that does not exist yet is empty, not an error.
        let destination = migrate::open(&to, false, ca_file).await.ok();
        let (counts, missing) = migrate::plan(&source, destination.as_ref(), now).await?;
        println!("{from} holds {counts}");
        println!(
            "{} records would be copied into {to}, or are there with other contents:",
            missing.len()
        );
        for m in &missing {
            println!("  {m}");
        }
        return Ok(());
    }
    let destination = migrate::open(&to, true, ca_file)
        .await
        .with_context(|| format!("cannot open {to}"))?;
    let moved = migrate::copy(&source, &destination, now).await?;
    println!("{from} holds {}", moved.source);
    println!("added to {to}: {}", moved.added);
    println!("verified: every record of {from} is in {to}, unchanged");
    Ok(())
}
