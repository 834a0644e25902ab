//! Azure VM power states, as the Compute instance view reports them (`PowerState/running`, ...): one
//! vocabulary for the VmPower function and the lease decisions. (The simulator, `azure-sim`, has its own
//! copy of these names and meets this type only as text on the wire.)

use serde::{Deserialize, Serialize};

/// Azure VM power states (`PowerState/…` codes of the instance view).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    Starting,
    Running,
    Stopping,
    Stopped,
    Deallocating,
    Deallocated,
}

impl PowerState {
    pub const ALL: [PowerState; 6] = [
        Self::Starting,
        Self::Running,
        Self::Stopping,
        Self::Stopped,
        Self::Deallocating,
        Self::Deallocated,
    ];

    /// `running`, `deallocated`, … as in `PowerState/running`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Deallocating => "deallocating",
            Self::Deallocated => "deallocated",
        }
    }

    /// Parses a state name, ignoring case (`PowerState/` prefix allowed).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let text = text
            .get(..11)
            .filter(|p| p.eq_ignore_ascii_case("PowerState/"))
            .map_or(text, |_| &text[11..]);
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }

    /// The instance view's `displayStatus` (`VM running`).
    pub fn display_status(self) -> &'static str {
        match self {
            Self::Starting => "VM starting",
            Self::Running => "VM running",
            Self::Stopping => "VM stopping",
            Self::Stopped => "VM stopped",
            Self::Deallocating => "VM deallocating",
            Self::Deallocated => "VM deallocated",
        }
    }

    /// A state an operation passes through.
    pub fn is_transitional(self) -> bool {
        matches!(self, Self::Starting | Self::Stopping | Self::Deallocating)
    }

    /// Whether compute is billed in this state (everything but `deallocated`; a `stopped` VM is still
    /// allocated and billed).
    pub fn is_allocated(self) -> bool {
        self != Self::Deallocated
    }
}
