//! Fault points for the crash tests: a dev-only way to kill the server at an exact moment.
//!
//! `FERRY_FAULT=exit_after_commit` makes the server kill itself with SIGKILL right after a
//! batch's transaction commits and before its answer is sent, which is the one crash a client
//! cannot tell from "the request never arrived". The variable is read once, by the binary at
//! start ([`arm_from_env`]), and honoured **only in dev mode** (where `POST /dev/token` already
//! hands out tokens): a production server ignores it and says so in its log. Library users and
//! the in-process tests never arm it.

use std::sync::OnceLock;

/// The environment variable naming the fault to inject.
pub const FAULT_VAR: &str = "FERRY_FAULT";

/// A fault the server can be asked to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL this process right after a batch commits, before the answer is sent.
    ExitAfterCommit,
}

impl Fault {
    /// The fault named `name` (the value of [`FAULT_VAR`]).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "exit_after_commit" => Some(Self::ExitAfterCommit),
            _ => None,
        }
    }
}

static ARMED: OnceLock<Option<Fault>> = OnceLock::new();

/// Reads [`FAULT_VAR`] and arms the fault it names when `dev_mode` is on. Later calls do
/// nothing. Returns the armed fault.
pub fn arm_from_env(dev_mode: bool) -> Option<Fault> {
    *ARMED.get_or_init(|| {
        let value = std::env::var(FAULT_VAR).ok()?;
        let fault = Fault::parse(&value);
        match (fault, dev_mode) {
            (None, _) => {
                tracing::warn!(value = %value, "{FAULT_VAR} names no known fault; ignored");
                None
            }
            (Some(_), false) => {
                tracing::warn!(value = %value, "{FAULT_VAR} is ignored outside dev mode");
                None
            }
            (Some(fault), true) => {
                tracing::warn!(
                    ?fault,
                    "fault injection armed ({FAULT_VAR}): this server will kill itself on purpose"
                );
                Some(fault)
            }
        }
    })
}

/// The fault point right after a batch's `COMMIT`: with [`Fault::ExitAfterCommit`] armed, the
/// process dies here by SIGKILL (no destructor, no answer). Does nothing otherwise.
pub fn after_commit() {
    if ARMED.get().copied().flatten() == Some(Fault::ExitAfterCommit) {
        tracing::warn!("{FAULT_VAR}=exit_after_commit: killing this process after the commit");
        let pid = std::process::id().to_string();
        // `kill -KILL <own pid>` does not return; if it cannot run, abort does the same job.
        let _ignored = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_faults_parse() {
        assert_eq!(
            Fault::parse("exit_after_commit"),
            Some(Fault::ExitAfterCommit)
        );
        assert_eq!(
            Fault::parse(" exit_after_commit\n"),
            Some(Fault::ExitAfterCommit)
        );
        assert_eq!(Fault::parse("exit"), None);
        assert_eq!(Fault::parse(""), None);
    }
}
