//! Property tests of every domain parser that reads outside input: orders, API keys
//! and secrets, pagination cursors, webhook URLs and the SSRF guard's address rules.
//!
//! Each property runs a few hundred generated cases from a fixed seed, so a CI run is
//! repeatable; set `PROPTEST_RNG_SEED` (and `PROPTEST_CASES`) to explore further.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::DateTime;
use portico_domain::credentials::{
    API_KEY_PREFIX, CredentialFormatError, SECRET_PREFIX, parse_api_key, parse_secret,
    secret_from_random,
};
use portico_domain::network::{
    Allowlist, Embedding, check_ip, classify, embedded_ipv4, parse_webhook_url,
};
use portico_domain::orders::{self, codes, currency, format_minor, parse_order};
use portico_domain::pagination::{Cursor, PageRequest};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Value, json};
use uuid::Uuid;

/// A fixed seed unless `PROPTEST_RNG_SEED` is set; `cases` unless `PROPTEST_CASES` is
/// set; no regression files written into the source tree.
fn config(cases: u32) -> Config {
    let default = Config::default();
    Config {
        cases: std::env::var_os("PROPTEST_CASES").map_or(cases, |_| default.cases),
        rng_seed: match default.rng_seed {
            RngSeed::Random => RngSeed::Fixed(0x0D0_4A11),
            fixed => fixed,
        },
        failure_persistence: None,
        ..default
    }
}

// ---------------------------------------------------------------------------
// Orders
// ---------------------------------------------------------------------------

/// Any JSON value, a few levels deep, with keys that are often the order format's own.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
        "[0-9]{1,25}(\\.[0-9]{0,6})?".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "clientOrderRef", "currency", "customer", "shippingAddress", "lineItems",
            "metadata", "email", "name", "phone", "line1", "line2", "city", "region",
            "postalCode", "country", "sku", "quantity", "unitPrice",
        ])
        .prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
}

/// Free text the order format accepts: a letter, then letters, digits, spaces and
/// common punctuation, in any script.
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!(
        "\\p{{L}}[\\p{{L}}\\p{{N}} .,'&/()-]{{0,{}}}",
        max - 1
    ))
    .expect("a valid regex")
}

/// One line of a valid order: its JSON and what it must parse into.
#[derive(Debug, Clone)]
struct Line {
    json: Value,
    sku: String,
    quantity: i32,
    unit_price_minor: i64,
}

fn line(exponent: u8) -> impl Strategy<Value = Line> {
    (
        "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}",
        1..=orders::MAX_QUANTITY as i32,
        0i64..1_000_000_000,
        any::<bool>(),
    )
        .prop_map(move |(sku, quantity, minor, as_string)| {
            let price = if as_string {
                json!(format_minor(minor, exponent))
            } else {
                json!(minor)
            };
            Line {
                json: json!({"sku": sku, "quantity": quantity, "unitPrice": price}),
                sku,
                quantity,
                unit_price_minor: minor,
            }
        })
}

/// A valid order: its JSON and the lines it must parse into.
#[derive(Debug, Clone)]
struct ValidOrder {
    json: Value,
    lines: Vec<Line>,
}

fn valid_order() -> impl Strategy<Value = ValidOrder> {
    let currencies = prop::sample::select(vec!["EUR", "USD", "JPY", "KWD", "CLF", "GBP"]);
    let countries = prop::sample::select(vec!["DE", "US", "FR", "JP", "GB", "BR", "NZ"]);
    (currencies, countries).prop_flat_map(|(code, country)| {
        let exponent = currency(code).expect("a known currency").exponent;
        let customer = (
            "[a-z0-9][a-z0-9.+_-]{0,19}@[a-z0-9]{1,10}(\\.[a-z0-9]{1,8}){0,2}\\.[a-z]{2,6}",
            text(60),
            proptest::option::of("\\+?[0-9]{3,12}( [0-9]{1,4}){0,2}"),
        )
            .prop_map(|(email, name, phone)| {
                let mut customer = json!({"email": email, "name": name});
                if let Some(phone) = phone {
                    customer["phone"] = json!(phone);
                }
                customer
            });
        let address = (
            text(80),
            proptest::option::of(text(80)),
            text(40),
            proptest::option::of(text(40)),
            "[A-Za-z0-9][A-Za-z0-9 -]{0,15}",
        )
            .prop_map(move |(line1, line2, city, region, postal)| {
                let mut address = json!({"line1": line1, "city": city,
                                         "postalCode": postal, "country": country});
                if let Some(line2) = line2 {
                    address["line2"] = json!(line2);
                }
                if let Some(region) = region {
                    address["region"] = json!(region);
                }
                address
            });
        (
            "[A-Za-z0-9._:-]{1,100}",
            customer,
            address,
            prop::collection::vec(line(exponent), 1..6),
            proptest::option::of(
                any_json()
                    .prop_map(|v| json!({"data": v}))
                    .prop_filter("PostgreSQL stores no NUL", |v| {
                        !v.to_string().contains("\\u0000")
                    }),
            ),
        )
            .prop_map(move |(reference, customer, address, lines, metadata)| {
                let mut order = json!({
                    "clientOrderRef": reference,
                    "currency": code,
                    "customer": customer,
                    "shippingAddress": address,
                    "lineItems": lines.iter().map(|l| l.json.clone()).collect::<Vec<_>>(),
                });
                if let Some(metadata) = metadata {
                    order["metadata"] = metadata;
                }
                ValidOrder { json: order, lines }
            })
    })
}

/// Every error of a refused order has a documented code and a JSON pointer.
fn errors_are_well_formed(text: &str) -> Result<(), TestCaseError> {
    let parsed = parse_order(text);
    if let Some(reference) = &parsed.client_order_ref {
        prop_assert!(reference.chars().count() <= orders::MAX_CLIENT_ORDER_REF_LEN);
    }
    if let Err(errors) = parsed.outcome {
        prop_assert!(!errors.is_empty());
        for e in errors {
            prop_assert!(codes::ALL.contains(&e.code.as_str()), "{:?}", e);
            prop_assert!(e.path.is_empty() || e.path.starts_with('/'), "{:?}", e);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// Any text at all, JSON or not, is parsed without panicking.
    #[test]
    fn orders_never_panic_on_any_text(text in ".{0,200}") {
        errors_are_well_formed(&text)?;
    }

    /// Any JSON value is parsed without panicking.
    #[test]
    fn orders_never_panic_on_any_json(value in any_json()) {
        errors_are_well_formed(&value.to_string())?;
    }

    /// A valid order with one field replaced by anything is parsed without panicking.
    #[test]
    fn orders_never_panic_on_a_damaged_order(
        order in valid_order(),
        at in prop::sample::select(vec![
            "/clientOrderRef", "/currency", "/customer", "/customer/email",
            "/customer/name", "/shippingAddress", "/shippingAddress/postalCode",
            "/shippingAddress/country", "/lineItems", "/lineItems/0",
            "/lineItems/0/quantity", "/lineItems/0/unitPrice", "/lineItems/0/sku",
        ]),
        replacement in any_json(),
    ) {
        let mut damaged = order.json;
        if let Some(slot) = damaged.pointer_mut(at) {
            *slot = replacement;
        }
        errors_are_well_formed(&damaged.to_string())?;
    }

    /// A valid order is accepted, and its typed form holds exactly what was sent:
    /// customer and address serialise back to the submitted objects, prices in
    /// either notation become the same minor units, the total is their sum.
    #[test]
    fn accepted_orders_round_trip(order in valid_order()) {
        let text = order.json.to_string();
        let parsed = parse_order(&text);
        let typed = match parsed.outcome {
            Ok(typed) => typed,
            Err(errors) => return Err(TestCaseError::fail(format!("{errors:?} for {text}"))),
        };
        prop_assert_eq!(parsed.client_order_ref.as_deref(), order.json["clientOrderRef"].as_str());
        prop_assert_eq!(typed.client_order_ref.as_ref(), order.json["clientOrderRef"].as_str().unwrap_or_default());
        prop_assert_eq!(typed.currency.code, order.json["currency"].as_str().unwrap_or_default());
        prop_assert_eq!(serde_json::to_value(&typed.customer).ok(), Some(order.json["customer"].clone()));
        prop_assert_eq!(
            serde_json::to_value(&typed.shipping_address).ok(),
            Some(order.json["shippingAddress"].clone())
        );
        prop_assert_eq!(typed.line_items.len(), order.lines.len());
        for (got, sent) in typed.line_items.iter().zip(&order.lines) {
            prop_assert_eq!(got.sku.as_ref(), sent.sku.as_str());
            prop_assert_eq!(got.quantity, sent.quantity);
            prop_assert_eq!(got.unit_price_minor, sent.unit_price_minor);
        }
        let total: i64 = order.lines.iter().map(|l| i64::from(l.quantity) * l.unit_price_minor).sum();
        prop_assert_eq!(typed.total_minor, total);
        // Metadata is kept as the exact text sent.
        prop_assert_eq!(
            typed.metadata.map(|m| m.get().to_owned()),
            order.json.get("metadata").map(Value::to_string)
        );
    }

    /// Decimal prices: formatting minor units and parsing them back is the identity.
    #[test]
    fn decimal_prices_round_trip(minor in 0i64..i64::MAX, exponent in 0u8..=4) {
        let text = format_minor(minor, exponent);
        prop_assert_eq!(orders::parse_decimal_minor(&text, Some(exponent)), Ok(minor));
    }
}

// ---------------------------------------------------------------------------
// API keys and secrets
// ---------------------------------------------------------------------------

const BASE62: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

proptest! {
    #![proptest_config(config(256))]

    /// Any text is judged without panicking; an API key is accepted exactly when it
    /// is `ptk_` and 24 letters or digits.
    #[test]
    fn api_keys_are_accepted_exactly_in_their_format(
        text in prop_oneof![".{0,40}", "ptk_[A-Za-z0-9]{20,28}", "ptk_[A-Za-z0-9!é_ -]{24}"],
    ) {
        let expected = text.strip_prefix(API_KEY_PREFIX).is_some_and(|rest| {
            rest.len() == 24 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        });
        prop_assert_eq!(parse_api_key(&text).is_ok(), expected);
        let _ = parse_secret(&text);
    }

    /// A secret built from any random part parses; changing any one character of its
    /// random part or checksum to another letter or digit is a bad checksum; cutting
    /// or extending it is malformed.
    #[test]
    fn secrets_parse_and_any_one_character_change_is_caught(
        random in "[A-Za-z0-9]{32}",
        position in 0usize..38,
        replacement in prop::sample::select(BASE62.chars().collect::<Vec<_>>()),
        cut in 1usize..42,
    ) {
        let secret = secret_from_random(&random);
        prop_assert_eq!(parse_secret(&secret), Ok(secret.as_str()));
        let at = SECRET_PREFIX.len() + position;
        let mut changed: Vec<char> = secret.chars().collect();
        prop_assume!(changed[at] != replacement);
        changed[at] = replacement;
        let changed: String = changed.into_iter().collect();
        prop_assert_eq!(parse_secret(&changed), Err(CredentialFormatError::BadChecksum));
        prop_assert_eq!(
            parse_secret(&secret[..cut]),
            Err(CredentialFormatError::MalformedSecret)
        );
        let extended = format!("{secret}{replacement}");
        prop_assert_eq!(
            parse_secret(&extended),
            Err(CredentialFormatError::MalformedSecret)
        );
    }

    /// Arbitrary text that looks like a secret never panics and is never accepted
    /// unless its checksum matches.
    #[test]
    fn secret_lookalikes_are_refused(rest in "[A-Za-z0-9]{38}|.{0,45}") {
        let text = format!("{SECRET_PREFIX}{rest}");
        if parse_secret(&text).is_ok() {
            prop_assert_eq!(secret_from_random(&rest[..32]), text);
        }
    }
}

// ---------------------------------------------------------------------------
// Pagination cursors
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    /// Every cursor the API issues decodes to itself.
    #[test]
    fn cursors_round_trip(
        micros in DateTime::<chrono::Utc>::MIN_UTC.timestamp_micros()..=DateTime::<chrono::Utc>::MAX_UTC.timestamp_micros(),
        id in any::<u128>(),
    ) {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_micros(micros).expect("in range"),
            id: Uuid::from_u128(id),
        };
        prop_assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
    }

    /// Any text, and any base64 of text shaped like a cursor, decodes or is refused
    /// with invalid_cursor, never a panic; a page request with any limit and cursor
    /// is judged without panicking.
    #[test]
    fn garbage_cursors_are_refused(
        text in ".{0,60}",
        micros in any::<i64>(),
        id in ".{0,40}",
        limit in proptest::option::of(any::<u32>()),
    ) {
        use base64::Engine;
        let shaped = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{micros}|{id}"));
        for candidate in [text.as_str(), shaped.as_str()] {
            if let Err(e) = Cursor::decode(candidate) {
                prop_assert_eq!(e.code, "invalid_cursor");
            }
            if let Ok(page) = PageRequest::parse(limit, Some(candidate)) {
                prop_assert!((1..=portico_domain::pagination::MAX_LIMIT).contains(&page.limit));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Webhook URLs and the SSRF guard's rules
// ---------------------------------------------------------------------------

/// An IPv4 address in a range webhooks may never reach.
fn forbidden_v4() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        any::<[u8; 3]>().prop_map(|[b, c, d]| Ipv4Addr::new(127, b, c, d)),
        any::<[u8; 3]>().prop_map(|[b, c, d]| Ipv4Addr::new(10, b, c, d)),
        (16u8..32, any::<[u8; 2]>()).prop_map(|(b, [c, d])| Ipv4Addr::new(172, b, c, d)),
        any::<[u8; 2]>().prop_map(|[c, d]| Ipv4Addr::new(192, 168, c, d)),
        any::<[u8; 2]>().prop_map(|[c, d]| Ipv4Addr::new(169, 254, c, d)),
        (64u8..128, any::<[u8; 2]>()).prop_map(|(b, [c, d])| Ipv4Addr::new(100, b, c, d)),
        any::<[u8; 3]>().prop_map(|[b, c, d]| Ipv4Addr::new(0, b, c, d)),
        (224u8..=255, any::<[u8; 3]>()).prop_map(|(a, [b, c, d])| Ipv4Addr::new(a, b, c, d)),
    ]
}

/// Every IPv6 form that carries `v4`, with `bits` filling the free fields.
fn carriers(v4: Ipv4Addr, bits: u64) -> Vec<(Ipv6Addr, Embedding)> {
    let [a, b, c, d] = v4.octets();
    let (hi, lo) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
    let p = bits.to_be_bytes().map(u16::from);
    vec![
        (v4.to_ipv6_mapped(), Embedding::Mapped),
        (
            Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, hi, lo),
            Embedding::Translated,
        ),
        (v4.to_ipv6_compatible(), Embedding::Compatible),
        (
            Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
            Embedding::Nat64,
        ),
        (
            Ipv6Addr::new(0x2002, hi, lo, p[0], p[1], p[2], p[3], p[4]),
            Embedding::SixToFour,
        ),
        (
            Ipv6Addr::new(0x2001, 0, p[0], p[1], p[2], p[3], !hi, !lo),
            Embedding::Teredo,
        ),
        (
            Ipv6Addr::new(0x2606, p[0], p[1], p[2], 0x0200, 0x5efe, hi, lo),
            Embedding::Isatap,
        ),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// Any text is judged as a webhook URL without panicking; what is accepted is an
    /// absolute http(s) URL with a host and no credentials.
    #[test]
    fn webhook_urls_never_panic(
        text in prop_oneof![
            ".{0,80}",
            "(https?|ftp)://[^/?#]{0,30}(/.{0,30})?",
            "https?://\\[[0-9a-fA-F:.]{0,45}\\](:[0-9]{0,6})?/",
        ],
    ) {
        if let Ok(url) = parse_webhook_url(&text, "/url") {
            prop_assert!(matches!(url.scheme(), "http" | "https"));
            prop_assert!(url.host_str().is_some_and(|h| !h.is_empty()));
            prop_assert!(url.username().is_empty() && url.password().is_none());
        }
    }

    /// A URL whose host is a forbidden literal, in any IPv6 form that carries it, is
    /// refused: translations as their IPv4 address, tunnels always.
    #[test]
    fn a_private_literal_is_always_refused(
        v4 in forbidden_v4(),
        bits in any::<u64>(),
        port in proptest::option::of(any::<u16>()),
    ) {
        let none = Allowlist::default();
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let mut hosts = vec![(IpAddr::V4(v4), v4.to_string())];
        for (v6, how) in carriers(v4, bits) {
            match embedded_ipv4(v6) {
                Some((embedded, form)) => {
                    prop_assert_eq!(form, how, "{}", v6);
                    prop_assert_eq!(embedded, v4, "{}", v6);
                }
                // `::` and `::1` are themselves, not IPv4-compatible addresses.
                None => prop_assert!(v6.is_unspecified() || v6.is_loopback(), "{}", v6),
            }
            hosts.push((IpAddr::V6(v6), format!("[{v6}]")));
        }
        for (ip, host) in hosts {
            let url = parse_webhook_url(&format!("http://{host}{port}/hook"), "/url")
                .expect("a valid URL");
            let literal: IpAddr = match url.host() {
                Some(url::Host::Ipv4(a)) => a.into(),
                Some(url::Host::Ipv6(a)) => a.into(),
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            };
            prop_assert_eq!(literal, ip);
            prop_assert!(check_ip(literal, &none).is_err(), "{} allowed", host);
        }
    }

    /// For any IPv4 address, a translation is judged exactly like it, a tunnel is
    /// always refused, and an IPv4 allowlist opens translations only.
    #[test]
    fn embedded_addresses_follow_the_ipv4_rules(v4 in any::<u32>().prop_map(Ipv4Addr::from), bits in any::<u64>()) {
        let allow = Allowlist::parse(&format!("{v4}/32")).expect("a CIDR");
        for (v6, how) in carriers(v4, bits) {
            match how {
                Embedding::Mapped | Embedding::Translated | Embedding::Nat64 => {
                    prop_assert_eq!(classify(v6.into()), classify(v4.into()), "{}", v6);
                    prop_assert!(check_ip(v6.into(), &allow).is_ok(), "{}", v6);
                }
                Embedding::Compatible => {
                    // `::` and `::1` keep their IPv6 meaning, refused either way.
                    prop_assert_eq!(classify(v6.into()).is_some(), classify(v4.into()).is_some(), "{}", v6);
                }
                Embedding::SixToFour | Embedding::Teredo => {
                    prop_assert!(classify(v6.into()).is_some(), "{}", v6);
                    prop_assert!(check_ip(v6.into(), &allow).is_err(), "{}", v6);
                }
                Embedding::Isatap => {
                    if classify(v4.into()).is_some() {
                        prop_assert!(check_ip(v6.into(), &allow).is_err(), "{}", v6);
                    }
                }
            }
        }
    }

    /// Any address at all is classified without panicking, and never allowed when its
    /// IPv4 translation is forbidden.
    #[test]
    fn any_address_is_classified(n in any::<u128>()) {
        let v6 = Ipv6Addr::from(n);
        let verdict = classify(v6.into());
        if let Some((v4, how)) = embedded_ipv4(v6)
            && how != Embedding::Compatible
            && classify(v4.into()).is_some()
        {
            prop_assert!(verdict.is_some(), "{} allowed", v6);
        }
    }
}
