//! Applying a ruleset: `nft -f -` (Debian's nftables), which runs a script as one transaction, so the
//! kernel sees the old table or the new one and never half of each. (kube-proxy's nftables mode drives nft
//! the same way; the Rust netlink crates for nftables are young and thinly kept.) Behind a trait, so that
//! the proxy's loop is tested without root.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::ProxyError;

/// Something that applies an nft script as one transaction, and deletes stale UDP conntrack entries.
pub trait Nftables: Send + Sync + 'static {
    fn apply(&self, script: &str) -> Result<(), ProxyError>;

    /// Deletes the conntrack entries `flushes` name (best effort: an entry already gone is no error).
    fn flush(&self, flushes: &[crate::conntrack::Flush]);
}

/// The real one: `nft -f -`, in the network namespace `netns` (a path under /run/netns) or this process's.
#[derive(Debug, Clone, Default)]
pub struct Nft {
    pub netns: Option<PathBuf>,
}

impl Nft {
    fn command(&self) -> Command {
        self.tool("nft")
    }

    /// `program` run in the proxy's network namespace.
    fn tool(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Whether nft runs here at all (a clear error at start instead of one per sync).
    pub fn check(&self) -> Result<(), ProxyError> {
        let out =
            self.command().arg("--version").output().map_err(|e| ProxyError::Nft(format!("cannot run nft: {e}")))?;
        if !out.status.success() {
            return Err(ProxyError::Nft(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(())
    }
}

impl Nftables for Nft {
    fn apply(&self, script: &str) -> Result<(), ProxyError> {
        let mut child = self
            .command()
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ProxyError::Nft(format!("cannot run nft: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).map_err(|e| ProxyError::Nft(format!("writing to nft: {e}")))?;
        }
        let out = child.wait_with_output().map_err(|e| ProxyError::Nft(format!("waiting for nft: {e}")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(ProxyError::Nft(err.lines().take(6).collect::<Vec<_>>().join("\n")));
        }
        Ok(())
    }

    fn flush(&self, flushes: &[crate::conntrack::Flush]) {
        for f in flushes {
            // conntrack exits 1 when nothing matched: not a failure.
            match self.tool("conntrack").args(f.args()).output() {
                Ok(_) => tracing::debug!(flush = ?f, "stale UDP conntrack entries deleted"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot run conntrack (apt install conntrack): stale UDP flows stay")
                }
            }
        }
    }
}
