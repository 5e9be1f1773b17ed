//! Applying a ruleset: `nft -f -` (Debian's nftables), which runs a script as one transaction, so the
//! kernel sees the old table or the new one and never half of each. (kube-proxy's nftables mode drives nft
//! the same way; the Rust netlink crates for nftables are young and thinly kept.) Behind a trait, so that
//! the proxy's loop is tested without root.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::ProxyError;

/// Something that applies an nft script as one transaction.
pub trait Nftables: Send + Sync + 'static {
    fn apply(&self, script: &str) -> Result<(), ProxyError>;
}

/// The real one: `nft -f -`, in the network namespace `netns` (a path under /run/netns) or this process's.
#[derive(Debug, Clone, Default)]
pub struct Nft {
    pub netns: Option<PathBuf>,
}

impl Nft {
    fn command(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("nft");
                c
            }
            None => Command::new("nft"),
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
}
