//! The man pages and shell completions, written from the CLI definition
//! itself (clap_mangen, clap_complete) so they never drift from `--help`.
//! `cargo xtask package` runs the hidden `sip-lb generate-docs DIR` and
//! puts the files in the Debian package.
use std::path::Path;

use anyhow::{Context, Result};
use clap_complete::Shell;

/// Writes `DIR/man/sip-lb.1` (and one page per subcommand, `sip-lb-run.1`, ...)
/// and `DIR/completions/{sip-lb.bash,_sip-lb,sip-lb.fish}`.
pub fn write(mut cmd: clap::Command, dir: &Path) -> Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    clap_mangen::generate_to(cmd.clone(), &man).with_context(|| format!("writing man pages to {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "sip-lb", &completions)
            .with_context(|| format!("writing {shell} completions to {}", completions.display()))?;
    }
    Ok(())
}
