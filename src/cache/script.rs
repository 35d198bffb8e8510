//! A Lua script run by its SHA-1 (EVALSHA), learnt from SCRIPT LOAD on first use, with EVAL
//! as the fallback when a server does not know it (a restarted Redis, a promoted replica).

use std::sync::RwLock;

use super::RedisKey;

/// A Lua script and, once learnt, its SHA-1 digest as Redis computes it.
pub struct Script {
    source: &'static str,
    sha: RwLock<Option<String>>,
}

/// How a script is sent.
#[derive(Clone, Copy)]
pub(super) enum Invocation {
    /// EVALSHA when the digest is known (else EVAL).
    BySha,
    /// EVAL: the whole source, which the server also caches.
    BySource,
}

impl Script {
    /// A script with the given Lua source.
    pub const fn new(source: &'static str) -> Self {
        Self { source, sha: RwLock::new(None) }
    }

    /// The script's source.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Records the digest SCRIPT LOAD answered.
    pub(super) fn learn(&self, sha: String) {
        if let Ok(mut known) = self.sha.write() {
            *known = Some(sha);
        }
    }

    /// The command that runs the script on `keys` with `args`.
    pub(super) fn command(&self, keys: &[RedisKey], args: &[u64], invocation: Invocation) -> redis::Cmd {
        let sha = match invocation {
            Invocation::BySha => self.sha.read().ok().and_then(|known| known.clone()),
            Invocation::BySource => None,
        };
        let mut command = match &sha {
            Some(sha) => {
                let mut command = redis::cmd("EVALSHA");
                command.arg(sha);
                command
            }
            None => {
                let mut command = redis::cmd("EVAL");
                command.arg(self.source);
                command
            }
        };
        command.arg(keys.len());
        for key in keys {
            command.arg(key.as_str());
        }
        for arg in args {
            command.arg(*arg);
        }
        command
    }

    /// Whether the digest is known yet.
    pub(super) fn is_learnt(&self) -> bool {
        self.sha.read().map(|known| known.is_some()).unwrap_or(false)
    }
}
