//! Dead letters' resolution: how an operator resolved a dead-lettered job, as stored
//! in `job_dead_letters.resolution` and `dead_letter_actions.action`, returned by the
//! admin API and listed in its OpenAPI schema, and the status filter of the list.

use serde::{Deserialize, Serialize};

/// How an operator resolved a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(as = DeadLetterResolution))]
pub enum Resolution {
    /// The job was re-published.
    Replayed,
    /// Nothing was published; the record stays.
    Discarded,
}

impl Resolution {
    /// Every resolution.
    pub const ALL: [Resolution; 2] = [Resolution::Replayed, Resolution::Discarded];

    /// The stored and API word.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Replayed => "replayed",
            Resolution::Discarded => "discarded",
        }
    }

    /// Parses a stored or API word.
    pub fn parse(text: &str) -> Option<Self> {
        <Self as crate::wire::WireName>::from_wire(text)
    }
}

/// Which dead letters a list shows, by resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum DeadLetterStatus {
    /// Waiting for an operator.
    Unresolved,
    /// Replayed.
    Replayed,
    /// Discarded.
    Discarded,
}

impl DeadLetterStatus {
    /// Every status.
    pub const ALL: [DeadLetterStatus; 3] = [
        DeadLetterStatus::Unresolved,
        DeadLetterStatus::Replayed,
        DeadLetterStatus::Discarded,
    ];

    /// The API word.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterStatus::Unresolved => "unresolved",
            DeadLetterStatus::Replayed => "replayed",
            DeadLetterStatus::Discarded => "discarded",
        }
    }

    /// The resolution this status selects; `None` for unresolved.
    pub fn resolution(self) -> Option<Resolution> {
        match self {
            DeadLetterStatus::Unresolved => None,
            DeadLetterStatus::Replayed => Some(Resolution::Replayed),
            DeadLetterStatus::Discarded => Some(Resolution::Discarded),
        }
    }
}

crate::wire_name!(Resolution, DeadLetterStatus);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::WireName;

    /// Wire names round-trip, serde uses the same words, and the filter maps to the
    /// resolution of the same name.
    #[test]
    fn words_round_trip() {
        for r in Resolution::ALL {
            assert_eq!(Resolution::parse(r.as_str()), Some(r));
            assert_eq!(
                serde_json::to_value(r).ok(),
                Some(serde_json::json!(r.as_str()))
            );
        }
        for s in DeadLetterStatus::ALL {
            assert_eq!(DeadLetterStatus::from_wire(s.as_str()), Some(s));
            assert_eq!(
                s.resolution().map(Resolution::as_str),
                Some(s.as_str()).filter(|w| *w != "unresolved")
            );
        }
        assert!(DeadLetterStatus::parse_field("all", "/status").is_err());
    }
}
