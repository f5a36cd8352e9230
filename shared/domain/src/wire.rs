//! Enums with wire names: the words stored in PostgreSQL and sent over the API
//! (delivery, retry-job, batch and result statuses, dead-letter resolutions). One
//! trait gives each of them the same parsing, so an unknown word is refused the same
//! way everywhere, with a message that lists the accepted words from the enum itself
//! (it cannot drift from the code).

use crate::FieldError;

/// An enum whose values have fixed wire names.
pub trait WireName: Copy + Sized + 'static {
    /// Every value, in the order the documentation lists them.
    const VALUES: &'static [Self];

    /// The wire name.
    fn wire_name(self) -> &'static str;

    /// The value with this wire name.
    fn from_wire(text: &str) -> Option<Self> {
        Self::VALUES.iter().copied().find(|v| v.wire_name() == text)
    }

    /// The value of an input field, or `invalid_status` at `path` naming the accepted
    /// words (the one refusal of an unknown status, whatever the enum).
    fn parse_field(text: &str, path: &str) -> Result<Self, FieldError> {
        Self::from_wire(text).ok_or_else(|| {
            let names: Vec<&str> = Self::VALUES.iter().map(|v| v.wire_name()).collect();
            FieldError::new(
                "invalid_status",
                path,
                format!("{text:?} is not one of {}", names.join(", ")),
            )
        })
    }
}

/// Implements [`WireName`] for an enum with an inherent `ALL` array and `as_str`, and
/// gives it the inherent `parse` its callers use.
#[macro_export]
macro_rules! wire_name {
    ($($t:ty),+ $(,)?) => {$(
        impl $crate::wire::WireName for $t {
            const VALUES: &'static [Self] = &<$t>::ALL;
            fn wire_name(self) -> &'static str {
                self.as_str()
            }
        }
    )+};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::DeliveryStatus;

    /// Known words parse; an unknown one is refused with the path and every word.
    #[test]
    fn parses_and_refuses_alike() {
        assert_eq!(
            DeliveryStatus::parse_field("failed", "/status"),
            Ok(DeliveryStatus::Failed)
        );
        let e = DeliveryStatus::parse_field("done", "/statuses/1").unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.path.as_str()),
            ("invalid_status", "/statuses/1")
        );
        assert_eq!(
            e.message,
            "\"done\" is not one of pending, delivering, succeeded, retrying, failed"
        );
    }
}
