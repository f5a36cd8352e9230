//! Partner integrations: their fixed list of types, the scopes their credentials may
//! hold, and the field rules both doors (REST and gRPC) apply.

use crate::FieldError;

/// What kind of partner system an integration connects. A fixed list, so owners and
/// dashboards can group integrations, and an unknown value is a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum IntegrationType {
    /// An ERP system.
    Erp,
    /// A marketplace.
    Marketplace,
    /// A shipping or logistics provider.
    Shipping,
    /// An accounting system.
    Accounting,
    /// Anything else.
    Custom,
}

impl IntegrationType {
    /// Every type, in documentation order.
    pub const ALL: [IntegrationType; 5] = [
        IntegrationType::Erp,
        IntegrationType::Marketplace,
        IntegrationType::Shipping,
        IntegrationType::Accounting,
        IntegrationType::Custom,
    ];

    /// The wire (and database) name.
    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationType::Erp => "erp",
            IntegrationType::Marketplace => "marketplace",
            IntegrationType::Shipping => "shipping",
            IntegrationType::Accounting => "accounting",
            IntegrationType::Custom => "custom",
        }
    }

    /// Parses a wire name; anything else is `invalid_type` at `path`.
    pub fn parse(text: &str, path: &str) -> Result<Self, FieldError> {
        IntegrationType::ALL
            .into_iter()
            .find(|t| t.as_str() == text)
            .ok_or_else(|| {
                FieldError::new(
                    "invalid_type",
                    path,
                    format!(
                        "unknown integration type {text:?}; use one of {}",
                        IntegrationType::ALL.map(IntegrationType::as_str).join(", ")
                    ),
                )
            })
    }
}

/// A permission a partner's integration may hold. Users and internal services hold all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum Scope {
    /// Submit and cancel bulk-order batches.
    #[serde(rename = "bulk_orders:write")]
    BulkOrdersWrite,
    /// Read batches and their results.
    #[serde(rename = "bulk_orders:read")]
    BulkOrdersRead,
    /// Manage webhooks.
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    /// Read webhooks and deliveries.
    #[serde(rename = "webhooks:read")]
    WebhooksRead,
    /// Read orders.
    #[serde(rename = "orders:read")]
    OrdersRead,
}

impl Scope {
    /// Every scope, in its wire names' order.
    pub const ALL: [Scope; 5] = [
        Scope::BulkOrdersWrite,
        Scope::BulkOrdersRead,
        Scope::WebhooksWrite,
        Scope::WebhooksRead,
        Scope::OrdersRead,
    ];

    /// What a new integration gets when its creator names no scopes: a partner that
    /// submits orders and reads back their results, the common case.
    pub const DEFAULT: [Scope; 3] = [
        Scope::BulkOrdersWrite,
        Scope::BulkOrdersRead,
        Scope::OrdersRead,
    ];

    /// The name used in integration `scopes` lists.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::BulkOrdersWrite => "bulk_orders:write",
            Scope::BulkOrdersRead => "bulk_orders:read",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::WebhooksRead => "webhooks:read",
            Scope::OrdersRead => "orders:read",
        }
    }

    /// True for the read-only scopes.
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Scope::BulkOrdersRead | Scope::WebhooksRead | Scope::OrdersRead
        )
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Parses a requested scope list: every name known, duplicates removed, order
    /// kept. An unknown name is `invalid_scope` at `path/<index>`.
    pub fn parse_list<S: AsRef<str>>(names: &[S], path: &str) -> Result<Vec<Scope>, FieldError> {
        let mut scopes = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let name = name.as_ref();
            let scope = Scope::parse(name).ok_or_else(|| {
                FieldError::new(
                    "invalid_scope",
                    format!("{path}/{i}"),
                    format!(
                        "unknown scope {name:?}; use any of {}",
                        Scope::ALL.map(Scope::as_str).join(", ")
                    ),
                )
            })?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        Ok(scopes)
    }

    /// Parses scopes as stored; names this build does not know (a newer replica wrote
    /// them) are skipped rather than failing authentication.
    pub fn from_stored<S: AsRef<str>>(names: &[S]) -> Vec<Scope> {
        names
            .iter()
            .filter_map(|n| Scope::parse(n.as_ref()))
            .collect()
    }
}

/// Longest integration name.
pub const MAX_NAME_LEN: usize = 200;

/// A name of 1 to 200 characters, not only whitespace, without control characters.
pub fn validate_name(name: &str, path: &str) -> Result<(), FieldError> {
    let chars = name.chars().count();
    if name.trim().is_empty()
        || chars > MAX_NAME_LEN
        || crate::text::has_forbidden_control(name, crate::text::Lines::Single)
    {
        return Err(FieldError::new(
            "invalid_name",
            path,
            format!("name must be 1-{MAX_NAME_LEN} characters without control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Types and scopes round-trip their wire names; unknown ones are refused with
    /// their codes and paths.
    #[test]
    fn types_and_scopes_parse_from_fixed_lists() {
        for t in IntegrationType::ALL {
            assert_eq!(serde_json::json!(t), t.as_str());
            assert_eq!(IntegrationType::parse(t.as_str(), "/type"), Ok(t));
        }
        let err = IntegrationType::parse("crm", "/type").unwrap_err();
        assert_eq!(
            (err.code.as_str(), err.path.as_str()),
            ("invalid_type", "/type")
        );
        for s in Scope::ALL {
            assert_eq!(serde_json::json!(s), s.as_str());
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        let parsed =
            Scope::parse_list(&["orders:read", "orders:read", "webhooks:write"], "/scopes")
                .unwrap();
        assert_eq!(parsed, vec![Scope::OrdersRead, Scope::WebhooksWrite]);
        let err = Scope::parse_list(&["orders:read", "admin"], "/scopes").unwrap_err();
        assert_eq!(
            (err.code.as_str(), err.path.as_str()),
            ("invalid_scope", "/scopes/1")
        );
        assert_eq!(
            Scope::from_stored(&["orders:read", "future:scope"]),
            vec![Scope::OrdersRead]
        );
    }

    /// Names are 1-200 characters and not blank.
    #[test]
    fn name_rules() {
        assert!(validate_name("ERP sync", "/name").is_ok());
        assert!(validate_name(&"é".repeat(200), "/name").is_ok());
        for bad in ["", "   ", &"x".repeat(201)] {
            assert_eq!(
                validate_name(bad, "/name").unwrap_err().code,
                "invalid_name"
            );
        }
    }
}
