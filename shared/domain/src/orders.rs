//! Orders as partners submit them, parsed (not merely validated) into typed [`Order`]s.
//!
//! [`parse_order`] takes one order's raw JSON text and returns either a typed order
//! whose every field is known to be valid, or every [`FieldError`] at once, each with a
//! JSON pointer relative to the order (`/lineItems/0/quantity`; a batch prefixes
//! `/orders/<i>` where it reports at batch level) and a stable code from [`codes`].
//!
//! It runs once per order on the batch-processor's hot path (50,000 orders a second is
//! the target), so it is hand-written: the order is split into borrowed raw fields in
//! one pass, each field is then read without copying strings that need no unescaping,
//! and paths and messages are only formatted for orders that fail.

mod iso;

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::FieldError;

pub use iso::{Currency, currency, is_country};

/// Longest client order reference.
pub const MAX_CLIENT_ORDER_REF_LEN: usize = 100;
/// Most line items in one order.
pub const MAX_LINE_ITEMS: usize = 500;
/// Largest quantity of one line item.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// Longest SKU, in characters.
pub const MAX_SKU_LEN: usize = 64;
/// Largest `metadata` object, in bytes of JSON text.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest name, address line, city or region, in characters.
pub const MAX_TEXT_LEN: usize = 200;
/// Longest postal code, in characters.
pub const MAX_POSTAL_CODE_LEN: usize = 16;
/// Longest e-mail address (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest phone number, in characters.
pub const MAX_PHONE_LEN: usize = 32;

/// The stable codes of order validation failures; clients switch on these.
pub mod codes {
    /// The order is not a JSON object (or not JSON at all).
    pub const INVALID_JSON: &str = "invalid_json";
    /// A required field is missing or `null`.
    pub const REQUIRED: &str = "required";
    /// A field has the wrong JSON type (e.g. a number where a string belongs).
    pub const INVALID_TYPE: &str = "invalid_type";
    /// A field the order format does not have (often a typo).
    pub const UNKNOWN_FIELD: &str = "unknown_field";
    /// `clientOrderRef` is not 1-100 characters of `A-Z a-z 0-9 . _ : -`.
    pub const INVALID_CLIENT_ORDER_REF: &str = "invalid_client_order_ref";
    /// `currency` is not an ISO 4217 code.
    pub const INVALID_CURRENCY: &str = "invalid_currency";
    /// `unitPrice` is a float, negative, malformed, too precise or too large.
    pub const INVALID_PRICE: &str = "invalid_price";
    /// `quantity` is not an integer from 1 to 1,000,000.
    pub const INVALID_QUANTITY: &str = "invalid_quantity";
    /// `lineItems` is empty.
    pub const EMPTY_LINE_ITEMS: &str = "empty_line_items";
    /// `lineItems` has more than 500 entries.
    pub const TOO_MANY_LINE_ITEMS: &str = "too_many_line_items";
    /// `sku` is empty, longer than 64 characters or has control characters.
    pub const INVALID_SKU: &str = "invalid_sku";
    /// `customer.email` is not a plausible address.
    pub const INVALID_EMAIL: &str = "invalid_email";
    /// `customer.phone` is not a plausible phone number.
    pub const INVALID_PHONE: &str = "invalid_phone";
    /// A name, address line, city or region is empty, too long or has control characters.
    pub const INVALID_TEXT: &str = "invalid_text";
    /// `shippingAddress.postalCode` is not 1-16 letters, digits, spaces or dashes.
    pub const INVALID_POSTAL_CODE: &str = "invalid_postal_code";
    /// `shippingAddress.country` is not an ISO 3166-1 alpha-2 code.
    pub const INVALID_COUNTRY: &str = "invalid_country";
    /// `metadata` is larger than 16 KiB.
    pub const METADATA_TOO_LARGE: &str = "metadata_too_large";
    /// The order total does not fit in 64-bit minor units.
    pub const TOTAL_OVERFLOW: &str = "total_overflow";

    /// Every code, for documentation and tests.
    pub const ALL: [&str; 18] = [
        INVALID_JSON,
        REQUIRED,
        INVALID_TYPE,
        UNKNOWN_FIELD,
        INVALID_CLIENT_ORDER_REF,
        INVALID_CURRENCY,
        INVALID_PRICE,
        INVALID_QUANTITY,
        EMPTY_LINE_ITEMS,
        TOO_MANY_LINE_ITEMS,
        INVALID_SKU,
        INVALID_EMAIL,
        INVALID_PHONE,
        INVALID_TEXT,
        INVALID_POSTAL_CODE,
        INVALID_COUNTRY,
        METADATA_TOO_LARGE,
        TOTAL_OVERFLOW,
    ];
}

/// A valid order. Strings borrow from the submitted text when it needed no unescaping.
#[derive(Debug, Clone)]
pub struct Order<'a> {
    /// The client's reference, unique per owner.
    pub client_order_ref: Cow<'a, str>,
    /// The order's currency.
    pub currency: Currency,
    /// Who ordered.
    pub customer: Customer<'a>,
    /// Where it goes.
    pub shipping_address: Address<'a>,
    /// At least one, at most [`MAX_LINE_ITEMS`].
    pub line_items: Vec<LineItem<'a>>,
    /// The caller's free-form object, as its JSON text.
    pub metadata: Option<&'a RawValue>,
    /// Sum of quantity times unit price, in minor units.
    pub total_minor: i64,
}

/// The customer of an order; serialised as stored (`{"email","name","phone"?}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Customer<'a> {
    /// A plausible e-mail address.
    pub email: Cow<'a, str>,
    /// The customer's name.
    pub name: Cow<'a, str>,
    /// Optional phone number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<Cow<'a, str>>,
}

/// A shipping address; serialised as stored, with camelCase names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Address<'a> {
    /// First address line.
    pub line1: Cow<'a, str>,
    /// Optional second line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line2: Option<Cow<'a, str>>,
    /// City.
    pub city: Cow<'a, str>,
    /// Optional state, province or county.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<Cow<'a, str>>,
    /// Postal code.
    pub postal_code: Cow<'a, str>,
    /// ISO 3166-1 alpha-2 code.
    pub country: Cow<'a, str>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineItem<'a> {
    /// The product's stock-keeping unit.
    pub sku: Cow<'a, str>,
    /// 1 to [`MAX_QUANTITY`].
    pub quantity: i32,
    /// Price of one unit in the currency's minor unit (cents for EUR).
    pub unit_price_minor: i64,
}

/// What [`parse_order`] found: the reference (for reporting, even when the order is
/// invalid) and the typed order or every reason it is invalid.
#[derive(Debug, Clone)]
pub struct ParsedOrder<'a> {
    /// `clientOrderRef` when it is a string, cut to [`MAX_CLIENT_ORDER_REF_LEN`]
    /// characters, so a failed result can still name the order.
    pub client_order_ref: Option<Cow<'a, str>>,
    /// The order, or its field errors (paths relative to the order).
    pub outcome: Result<Order<'a>, Vec<FieldError>>,
}

/// Parses one order from its JSON text.
pub fn parse_order(raw: &str) -> ParsedOrder<'_> {
    let fields = match serde_json::from_str::<RawObject<'_>>(raw) {
        Ok(fields) => fields,
        Err(_) => {
            let problem = if raw.trim_start().starts_with('{') {
                Problem::new(codes::INVALID_JSON, "the order is not valid JSON")
            } else {
                Problem::new(codes::INVALID_JSON, "the order must be a JSON object")
            };
            return ParsedOrder {
                client_order_ref: None,
                outcome: Err(vec![problem.at("")]),
            };
        }
    };
    let mut errors = Vec::new();
    let mut raw_fields = OrderFields::default();
    for (name, value) in fields.0 {
        let slot = match name.as_ref() {
            "clientOrderRef" => &mut raw_fields.client_order_ref,
            "currency" => &mut raw_fields.currency,
            "customer" => &mut raw_fields.customer,
            "shippingAddress" => &mut raw_fields.shipping_address,
            "lineItems" => &mut raw_fields.line_items,
            "metadata" => &mut raw_fields.metadata,
            other => {
                errors.push(unknown_field("", other));
                continue;
            }
        };
        *slot = present(value);
    }

    let client_order_ref = raw_fields
        .client_order_ref
        .and_then(|v| string(v).ok())
        .map(|s| truncate_chars(s, MAX_CLIENT_ORDER_REF_LEN));
    let reference = check(
        &mut errors,
        || "/clientOrderRef".into(),
        required(raw_fields.client_order_ref).and_then(|v| {
            let s = string(v)?;
            valid_client_order_ref(&s)?;
            Ok(s)
        }),
    );
    let currency = check(
        &mut errors,
        || "/currency".into(),
        required(raw_fields.currency).and_then(|v| {
            let s = string(v)?;
            currency(&s).ok_or_else(|| {
                Problem::new(
                    codes::INVALID_CURRENCY,
                    "currency must be an ISO 4217 code such as EUR or USD",
                )
            })
        }),
    );
    let customer = match required(raw_fields.customer).and_then(object) {
        Ok(fields) => parse_customer(fields, &mut errors),
        Err(p) => {
            errors.push(p.at("/customer"));
            None
        }
    };
    let address = match required(raw_fields.shipping_address).and_then(object) {
        Ok(fields) => parse_address(fields, &mut errors),
        Err(p) => {
            errors.push(p.at("/shippingAddress"));
            None
        }
    };
    let line_items = match required(raw_fields.line_items).and_then(array) {
        Ok(items) => parse_line_items(&items, currency, &mut errors),
        Err(p) => {
            errors.push(p.at("/lineItems"));
            None
        }
    };
    let metadata = raw_fields.metadata.and_then(|v| {
        let checked = if !v.get().starts_with('{') {
            Err(Problem::new(
                codes::INVALID_TYPE,
                "metadata must be a JSON object",
            ))
        } else if v.get().len() > MAX_METADATA_BYTES {
            Err(Problem::new(
                codes::METADATA_TOO_LARGE,
                format!("metadata must be at most {MAX_METADATA_BYTES} bytes of JSON"),
            ))
        } else {
            Ok(v)
        };
        check(&mut errors, || "/metadata".into(), checked)
    });

    let total_minor = line_items.as_ref().and_then(|items| {
        let total = items.iter().try_fold(0i64, |sum, item| {
            i64::from(item.quantity)
                .checked_mul(item.unit_price_minor)
                .and_then(|line| sum.checked_add(line))
        });
        if total.is_none() {
            errors.push(FieldError::new(
                codes::TOTAL_OVERFLOW,
                "/lineItems",
                "the order total is too large",
            ));
        }
        total
    });

    let outcome = match (
        errors.is_empty(),
        reference,
        currency,
        customer,
        address,
        line_items,
        total_minor,
    ) {
        (
            true,
            Some(client_order_ref),
            Some(currency),
            Some(customer),
            Some(shipping_address),
            Some(line_items),
            Some(total_minor),
        ) => Ok(Order {
            client_order_ref,
            currency,
            customer,
            shipping_address,
            line_items,
            metadata,
            total_minor,
        }),
        _ => Err(errors),
    };
    ParsedOrder {
        client_order_ref,
        outcome,
    }
}

#[derive(Default)]
struct OrderFields<'a> {
    client_order_ref: Option<&'a RawValue>,
    currency: Option<&'a RawValue>,
    customer: Option<&'a RawValue>,
    shipping_address: Option<&'a RawValue>,
    line_items: Option<&'a RawValue>,
    metadata: Option<&'a RawValue>,
}

fn parse_customer<'a>(
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
    errors: &mut Vec<FieldError>,
) -> Option<Customer<'a>> {
    let (mut email, mut name, mut phone) = (None, None, None);
    for (key, value) in fields {
        match key.as_ref() {
            "email" => email = present(value),
            "name" => name = present(value),
            "phone" => phone = present(value),
            other => errors.push(unknown_field("/customer", other)),
        }
    }
    let email = check(
        errors,
        || "/customer/email".into(),
        required(email).and_then(|v| {
            let s = string(v)?;
            valid_email(&s)?;
            Ok(s)
        }),
    );
    let name = check(
        errors,
        || "/customer/name".into(),
        required(name).and_then(|v| text(v, MAX_TEXT_LEN)),
    );
    let phone = match phone {
        None => Some(None),
        Some(v) => check(
            errors,
            || "/customer/phone".into(),
            string(v).and_then(|s| {
                valid_phone(&s)?;
                Ok(Some(s))
            }),
        ),
    };
    Some(Customer {
        email: email?,
        name: name?,
        phone: phone?,
    })
}

fn parse_address<'a>(
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
    errors: &mut Vec<FieldError>,
) -> Option<Address<'a>> {
    let mut raw: [Option<&'a RawValue>; 6] = [None; 6];
    const NAMES: [&str; 6] = ["line1", "line2", "city", "region", "postalCode", "country"];
    for (key, value) in fields {
        match NAMES.iter().position(|n| *n == key.as_ref()) {
            Some(i) => raw[i] = present(value),
            None => errors.push(unknown_field("/shippingAddress", &key)),
        }
    }
    let path = |i: usize| format!("/shippingAddress/{}", NAMES[i]);
    let line1 = check(
        errors,
        || path(0),
        required(raw[0]).and_then(|v| text(v, MAX_TEXT_LEN)),
    );
    let line2 = optional(errors, raw[1], || path(1), |v| text(v, MAX_TEXT_LEN));
    let city = check(
        errors,
        || path(2),
        required(raw[2]).and_then(|v| text(v, MAX_TEXT_LEN)),
    );
    let region = optional(errors, raw[3], || path(3), |v| text(v, MAX_TEXT_LEN));
    let postal_code = check(
        errors,
        || path(4),
        required(raw[4]).and_then(|v| {
            let s = string(v)?;
            valid_postal_code(&s)?;
            Ok(s)
        }),
    );
    let country = check(
        errors,
        || path(5),
        required(raw[5]).and_then(|v| {
            let s = string(v)?;
            if is_country(&s) {
                Ok(s)
            } else {
                Err(Problem::new(
                    codes::INVALID_COUNTRY,
                    "country must be an ISO 3166-1 alpha-2 code such as DE or US",
                ))
            }
        }),
    );
    Some(Address {
        line1: line1?,
        line2: line2?,
        city: city?,
        region: region?,
        postal_code: postal_code?,
        country: country?,
    })
}

fn parse_line_items<'a>(
    items: &[&'a RawValue],
    currency: Option<Currency>,
    errors: &mut Vec<FieldError>,
) -> Option<Vec<LineItem<'a>>> {
    if items.is_empty() {
        errors.push(FieldError::new(
            codes::EMPTY_LINE_ITEMS,
            "/lineItems",
            "an order needs at least one line item",
        ));
        return None;
    }
    if items.len() > MAX_LINE_ITEMS {
        errors.push(FieldError::new(
            codes::TOO_MANY_LINE_ITEMS,
            "/lineItems",
            format!("an order has at most {MAX_LINE_ITEMS} line items"),
        ));
        return None;
    }
    let mut parsed = Vec::with_capacity(items.len());
    let mut all_valid = true;
    for (i, item) in items.iter().enumerate() {
        let fields = match object(item) {
            Ok(f) => f,
            Err(p) => {
                errors.push(p.at(&format!("/lineItems/{i}")));
                all_valid = false;
                continue;
            }
        };
        let (mut sku, mut quantity, mut price) = (None, None, None);
        for (key, value) in fields {
            match key.as_ref() {
                "sku" => sku = present(value),
                "quantity" => quantity = present(value),
                "unitPrice" => price = present(value),
                other => errors.push(unknown_field(&format!("/lineItems/{i}"), other)),
            }
        }
        let sku = check(
            errors,
            || format!("/lineItems/{i}/sku"),
            required(sku).and_then(|v| {
                let s = string(v)?;
                valid_sku(&s)?;
                Ok(s)
            }),
        );
        let quantity = check(
            errors,
            || format!("/lineItems/{i}/quantity"),
            required(quantity).and_then(parse_quantity),
        );
        let price = check(
            errors,
            || format!("/lineItems/{i}/unitPrice"),
            required(price).and_then(|v| parse_price(v, currency)),
        );
        match (sku, quantity, price) {
            (Some(sku), Some(quantity), Some(unit_price_minor)) => parsed.push(LineItem {
                sku,
                quantity,
                unit_price_minor,
            }),
            _ => all_valid = false,
        }
    }
    all_valid.then_some(parsed)
}

/// Reads a quantity: a JSON integer from 1 to [`MAX_QUANTITY`].
fn parse_quantity(raw: &RawValue) -> Result<i32, Problem> {
    let text = raw.get();
    let bad = || {
        Problem::new(
            codes::INVALID_QUANTITY,
            format!("quantity must be a whole number from 1 to {MAX_QUANTITY}"),
        )
    };
    if !is_number_token(text) {
        return Err(Problem::new(
            codes::INVALID_TYPE,
            "quantity must be a number",
        ));
    }
    if text.contains(['.', 'e', 'E']) {
        return Err(bad());
    }
    match text.parse::<i64>() {
        Ok(n) if (1..=MAX_QUANTITY).contains(&n) => i32::try_from(n).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// Reads a unit price into minor units: a JSON integer (already minor units) or a
/// decimal string in major units with at most the currency's decimals. A JSON number
/// with a fraction or exponent is refused: floats cannot carry money exactly.
fn parse_price(raw: &RawValue, currency: Option<Currency>) -> Result<i64, Problem> {
    let text = raw.get();
    if is_number_token(text) {
        if text.contains(['.', 'e', 'E']) {
            return Err(Problem::new(
                codes::INVALID_PRICE,
                "unitPrice must be an integer in minor units (e.g. 1250) or a decimal string (e.g. \"12.50\"), never a floating-point number",
            ));
        }
        return match text.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(n),
            Ok(_) => Err(Problem::new(
                codes::INVALID_PRICE,
                "unitPrice must not be negative",
            )),
            Err(_) => Err(Problem::new(codes::INVALID_PRICE, "unitPrice is too large")),
        };
    }
    if !text.starts_with('"') {
        return Err(Problem::new(
            codes::INVALID_TYPE,
            "unitPrice must be an integer in minor units or a decimal string",
        ));
    }
    let s = string(raw)?;
    parse_decimal_minor(&s, currency.map(|c| c.exponent))
}

/// Converts a decimal string (`"12.50"`) to minor units. With `exponent` unknown (the
/// currency is invalid, reported separately), only the syntax is checked.
pub fn parse_decimal_minor(s: &str, exponent: Option<u8>) -> Result<i64, Problem> {
    let syntax = || {
        Problem::new(
            codes::INVALID_PRICE,
            "unitPrice must be a non-negative decimal such as \"12.50\" (digits, at most one '.', no sign or exponent)",
        )
    };
    let (whole, fraction) = match s.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (s, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return Err(syntax());
    }
    let fraction = fraction.unwrap_or("");
    let Some(exponent) = exponent else {
        return Ok(0);
    };
    if fraction.len() > usize::from(exponent) {
        return Err(Problem::new(
            codes::INVALID_PRICE,
            format!("unitPrice has more than {exponent} decimals, the currency's minor unit"),
        ));
    }
    let too_large = || Problem::new(codes::INVALID_PRICE, "unitPrice is too large");
    let mut value: i64 = 0;
    for b in whole.bytes().chain(fraction.bytes()) {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(b - b'0')))
            .ok_or_else(too_large)?;
    }
    let pad = u32::from(exponent) - fraction.len() as u32;
    value.checked_mul(10i64.pow(pad)).ok_or_else(too_large)
}

/// Formats minor units as a decimal string in major units (`1250`, 2 → `"12.50"`).
pub fn format_minor(amount: i64, exponent: u8) -> String {
    if exponent == 0 {
        return amount.to_string();
    }
    let scale = 10u64.pow(u32::from(exponent));
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = usize::from(exponent)
    )
}

/// A reason without a location; [`Problem::at`] places it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// One of [`codes`].
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: Cow<'static, str>,
}

impl Problem {
    fn new(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Places the problem at a JSON pointer.
    pub fn at(self, path: &str) -> FieldError {
        FieldError {
            code: self.code.to_owned(),
            path: path.to_owned(),
            message: self.message.into_owned(),
        }
    }
}

/// Records a failed field check; the path is only built when there is an error.
fn check<T>(
    errors: &mut Vec<FieldError>,
    path: impl FnOnce() -> String,
    result: Result<T, Problem>,
) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(p) => {
            errors.push(p.at(&path()));
            None
        }
    }
}

/// An optional field: absent is `Some(None)`, invalid is `None`.
fn optional<'a, T>(
    errors: &mut Vec<FieldError>,
    raw: Option<&'a RawValue>,
    path: impl FnOnce() -> String,
    parse: impl FnOnce(&'a RawValue) -> Result<T, Problem>,
) -> Option<Option<T>> {
    match raw {
        None => Some(None),
        Some(v) => check(errors, path, parse(v).map(Some)),
    }
}

/// `null` counts as absent.
fn present(value: &RawValue) -> Option<&RawValue> {
    (value.get() != "null").then_some(value)
}

fn required(value: Option<&RawValue>) -> Result<&RawValue, Problem> {
    value.ok_or_else(|| Problem::new(codes::REQUIRED, "this field is required"))
}

fn unknown_field(parent: &str, name: &str) -> FieldError {
    FieldError::new(
        codes::UNKNOWN_FIELD,
        format!("{parent}/{}", escape_pointer(name)),
        format!("unknown field {name:?}"),
    )
}

/// Escapes a key for a JSON pointer (RFC 6901: `~` → `~0`, `/` → `~1`).
pub fn escape_pointer(key: &str) -> Cow<'_, str> {
    if key.contains(['~', '/']) {
        Cow::Owned(key.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(key)
    }
}

fn is_number_token(text: &str) -> bool {
    text.starts_with(|c: char| c == '-' || c.is_ascii_digit())
}

fn string(raw: &RawValue) -> Result<Cow<'_, str>, Problem> {
    if !raw.get().starts_with('"') {
        return Err(Problem::new(codes::INVALID_TYPE, "must be a string"));
    }
    serde_json::from_str::<Str<'_>>(raw.get())
        .map(|s| s.0)
        .map_err(|_| Problem::new(codes::INVALID_TYPE, "must be a string"))
}

fn object(raw: &RawValue) -> Result<Vec<(Cow<'_, str>, &RawValue)>, Problem> {
    if !raw.get().starts_with('{') {
        return Err(Problem::new(codes::INVALID_TYPE, "must be an object"));
    }
    serde_json::from_str::<RawObject<'_>>(raw.get())
        .map(|o| o.0)
        .map_err(|_| Problem::new(codes::INVALID_TYPE, "must be an object"))
}

fn array(raw: &RawValue) -> Result<Vec<&RawValue>, Problem> {
    if !raw.get().starts_with('[') {
        return Err(Problem::new(codes::INVALID_TYPE, "must be an array"));
    }
    serde_json::from_str::<Vec<&RawValue>>(raw.get())
        .map_err(|_| Problem::new(codes::INVALID_TYPE, "must be an array"))
}

/// Free text: not blank, at most `max` characters, no control characters.
fn text(raw: &RawValue, max: usize) -> Result<Cow<'_, str>, Problem> {
    let s = string(raw)?;
    if s.trim().is_empty() {
        return Err(Problem::new(codes::INVALID_TEXT, "must not be empty"));
    }
    if s.len() > max && s.chars().count() > max {
        return Err(Problem::new(
            codes::INVALID_TEXT,
            format!("must be at most {max} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(Problem::new(
            codes::INVALID_TEXT,
            "must not contain control characters",
        ));
    }
    Ok(s)
}

/// Checks a client order reference: 1-100 characters of `A-Z a-z 0-9 . _ : -`.
pub fn valid_client_order_ref(s: &str) -> Result<(), Problem> {
    let ok = !s.is_empty()
        && s.len() <= MAX_CLIENT_ORDER_REF_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Problem::new(
            codes::INVALID_CLIENT_ORDER_REF,
            format!(
                "clientOrderRef must be 1-{MAX_CLIENT_ORDER_REF_LEN} characters of letters, digits, '.', '_', ':' or '-'"
            ),
        ))
    }
}

fn valid_sku(s: &str) -> Result<(), Problem> {
    let ok = !s.trim().is_empty()
        && (s.len() <= MAX_SKU_LEN || s.chars().count() <= MAX_SKU_LEN)
        && !s.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(Problem::new(
            codes::INVALID_SKU,
            format!("sku must be 1-{MAX_SKU_LEN} characters without control characters"),
        ))
    }
}

/// A deliberately basic e-mail check: `local@domain.tld`, no spaces or control
/// characters, lengths within RFC 5321. Deliverability is the platform's concern.
fn valid_email(s: &str) -> Result<(), Problem> {
    let bad = || {
        Problem::new(
            codes::INVALID_EMAIL,
            "email must look like name@example.com",
        )
    };
    if s.len() > MAX_EMAIL_LEN {
        return Err(bad());
    }
    let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '@');
    let labels_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    });
    let tld_ok = domain
        .rsplit_once('.')
        .is_some_and(|(_, tld)| tld.chars().count() >= 2);
    if local_ok && labels_ok && tld_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

fn valid_phone(s: &str) -> Result<(), Problem> {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    let ok = s.len() <= MAX_PHONE_LEN
        && digits >= 3
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b' ' | b'+' | b'-' | b'(' | b')' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Problem::new(
            codes::INVALID_PHONE,
            format!(
                "phone must be at most {MAX_PHONE_LEN} characters of digits, spaces and + - ( ) ."
            ),
        ))
    }
}

fn valid_postal_code(s: &str) -> Result<(), Problem> {
    let ok = !s.trim().is_empty()
        && s.len() <= MAX_POSTAL_CODE_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Problem::new(
            codes::INVALID_POSTAL_CODE,
            format!("postalCode must be 1-{MAX_POSTAL_CODE_LEN} letters, digits, spaces or dashes"),
        ))
    }
}

fn truncate_chars(s: Cow<'_, str>, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => s,
        Some((cut, _)) => match s {
            Cow::Borrowed(b) => Cow::Borrowed(&b[..cut]),
            Cow::Owned(mut o) => {
                o.truncate(cut);
                Cow::Owned(o)
            }
        },
    }
}

/// A JSON string that borrows from the input when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON object split into its keys and the raw text of each value, in one pass and
/// without copying. A repeated key keeps its last value, as PostgreSQL's JSONB does.
struct RawObject<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields: Vec<(Cow<'de, str>, &'de RawValue)> =
                    Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    match fields.iter_mut().find(|(k, _)| *k == key.0) {
                        Some(existing) => existing.1 = value,
                        None => fields.push((key.0, value)),
                    }
                }
                Ok(RawObject(fields))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn valid() -> Value {
        json!({
            "clientOrderRef": "PO-1001",
            "currency": "EUR",
            "customer": {"email": "ada@example.com", "name": "Ada Lovelace", "phone": "+44 20 7946 0958"},
            "shippingAddress": {"line1": "1 Main St", "line2": "Flat 2", "city": "Berlin",
                                "region": "BE", "postalCode": "10115", "country": "DE"},
            "lineItems": [
                {"sku": "SKU-1", "quantity": 2, "unitPrice": "12.50"},
                {"sku": "SKU-2", "quantity": 1, "unitPrice": 399}
            ],
            "metadata": {"channel": "erp"}
        })
    }

    fn errors_of(order: &Value) -> Vec<(String, String)> {
        let text = order.to_string();
        match parse_order(&text).outcome {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| (e.code, e.path)).collect(),
        }
    }

    fn single_error(order: &Value) -> (String, String) {
        let errors = errors_of(order);
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].clone()
    }

    fn with(mut order: Value, pointer: &str, value: Value) -> Value {
        *order.pointer_mut(pointer).expect("pointer exists") = value;
        order
    }

    fn without(mut order: Value, parent: &str, key: &str) -> Value {
        order
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .expect("parent object")
            .remove(key);
        order
    }

    /// A complete, valid order parses into typed fields with its total in minor units.
    #[test]
    fn a_valid_order_parses_into_typed_fields() {
        let text = valid().to_string();
        let parsed = parse_order(&text);
        assert_eq!(parsed.client_order_ref.as_deref(), Some("PO-1001"));
        let order = parsed.outcome.expect("valid");
        assert_eq!(order.currency.code, "EUR");
        assert_eq!(order.line_items[0].unit_price_minor, 1250);
        assert_eq!(order.line_items[1].unit_price_minor, 399);
        assert_eq!(order.total_minor, 2 * 1250 + 399);
        assert_eq!(order.customer.phone.as_deref(), Some("+44 20 7946 0958"));
        assert_eq!(order.shipping_address.country, "DE");
        assert_eq!(
            order.metadata.map(RawValue::get),
            Some(r#"{"channel":"erp"}"#)
        );
        let stored = serde_json::to_value(&order.shipping_address).unwrap();
        assert_eq!(stored["postalCode"], "10115");
    }

    /// Optional fields may be absent or null; strings with escapes are unescaped.
    #[test]
    fn optional_fields_may_be_absent_or_null() {
        let order = without(valid(), "/customer", "phone");
        let order = without(order, "/shippingAddress", "line2");
        let order = with(order, "/shippingAddress/region", Value::Null);
        let order = with(order, "/metadata", Value::Null);
        let order = with(order, "/customer/name", json!("Ada \"The Countess\""));
        let text = order.to_string();
        let parsed = parse_order(&text).outcome.expect("valid");
        assert!(parsed.customer.phone.is_none() && parsed.metadata.is_none());
        assert!(parsed.shipping_address.region.is_none());
        assert_eq!(parsed.customer.name, "Ada \"The Countess\"");
    }

    /// Not an object, or not JSON at all: invalid_json at the order's root.
    #[test]
    fn code_invalid_json() {
        for text in ["[1]", "42", "{\"a\":", "nope"] {
            let errors = parse_order(text).outcome.unwrap_err();
            assert_eq!(errors[0].code, codes::INVALID_JSON);
            assert_eq!(errors[0].path, "");
        }
    }

    /// Every required field, missing or null, is reported at its own path, all at once.
    #[test]
    fn code_required() {
        let errors = errors_of(&json!({}));
        let paths: Vec<&str> = errors.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/clientOrderRef",
                "/currency",
                "/customer",
                "/shippingAddress",
                "/lineItems"
            ]
        );
        assert!(errors.iter().all(|(c, _)| c == codes::REQUIRED));
        assert_eq!(
            single_error(&with(valid(), "/customer/email", Value::Null)),
            (codes::REQUIRED.into(), "/customer/email".into())
        );
        assert_eq!(
            single_error(&without(valid(), "/lineItems/1", "quantity")),
            (codes::REQUIRED.into(), "/lineItems/1/quantity".into())
        );
        assert_eq!(
            single_error(&without(valid(), "/shippingAddress", "postalCode")),
            (codes::REQUIRED.into(), "/shippingAddress/postalCode".into())
        );
    }

    /// Wrong JSON types are invalid_type at the field.
    #[test]
    fn code_invalid_type() {
        for (pointer, value) in [
            ("/clientOrderRef", json!(7)),
            ("/customer", json!("ada")),
            ("/shippingAddress", json!([])),
            ("/lineItems", json!({})),
            ("/lineItems/0", json!("SKU-1")),
            ("/lineItems/0/quantity", json!("2")),
            ("/lineItems/0/unitPrice", json!(true)),
            ("/metadata", json!([1, 2])),
            ("/customer/name", json!(false)),
        ] {
            assert_eq!(
                single_error(&with(valid(), pointer, value)),
                (codes::INVALID_TYPE.into(), pointer.into()),
                "{pointer}"
            );
        }
    }

    /// Fields the format does not have are reported (typos do not pass silently).
    #[test]
    fn code_unknown_field() {
        let mut order = valid();
        order["lineitems"] = json!([]);
        order["customer"]["e/mail"] = json!("x");
        order["lineItems"][1]["price"] = json!(1);
        let errors = errors_of(&order);
        assert_eq!(
            errors,
            vec![
                (codes::UNKNOWN_FIELD.into(), "/lineitems".into()),
                (codes::UNKNOWN_FIELD.into(), "/customer/e~1mail".into()),
                (codes::UNKNOWN_FIELD.into(), "/lineItems/1/price".into()),
            ]
        );
    }

    /// clientOrderRef: 1-100 characters of letters, digits, `.`, `_`, `:` or `-`.
    #[test]
    fn code_invalid_client_order_ref() {
        for ok in ["a", "PO-1.2_3:4", &"x".repeat(100)] {
            assert!(errors_of(&with(valid(), "/clientOrderRef", json!(ok))).is_empty());
        }
        for bad in ["", "has space", "ümlaut", "a/b", &"x".repeat(101)] {
            assert_eq!(
                single_error(&with(valid(), "/clientOrderRef", json!(bad))),
                (
                    codes::INVALID_CLIENT_ORDER_REF.into(),
                    "/clientOrderRef".into()
                )
            );
        }
        // An invalid reference is still reported (cut to 100 characters) for the result.
        let text = with(valid(), "/clientOrderRef", json!("é".repeat(150))).to_string();
        let parsed = parse_order(&text);
        assert_eq!(
            parsed.client_order_ref.map(|r| r.chars().count()),
            Some(100)
        );
    }

    /// currency must be in the ISO 4217 table, exact and upper case.
    #[test]
    fn code_invalid_currency() {
        for bad in ["eur", "EURO", "XXX", ""] {
            assert_eq!(
                single_error(&with(valid(), "/currency", json!(bad))),
                (codes::INVALID_CURRENCY.into(), "/currency".into())
            );
        }
        let jpy = with(valid(), "/currency", json!("JPY"));
        let jpy = with(jpy, "/lineItems/0/unitPrice", json!("1250"));
        assert!(errors_of(&jpy).is_empty());
    }

    /// unitPrice: an integer of minor units or a decimal string within the currency's
    /// decimals; floats, negatives, bad syntax and overflow are invalid_price.
    #[test]
    fn code_invalid_price() {
        let price = |v: Value| with(valid(), "/lineItems/0/unitPrice", v);
        for ok in [
            json!(0),
            json!("0"),
            json!("12"),
            json!("12.5"),
            json!("0.01"),
        ] {
            assert!(errors_of(&price(ok.clone())).is_empty(), "{ok}");
        }
        for bad in [
            json!(12.5),
            json!(1e3),
            json!(-1),
            json!("12.505"),
            json!("-1.00"),
            json!("1,00"),
            json!(".5"),
            json!("5."),
            json!("1e3"),
            json!(" 1"),
            json!(""),
            json!("99999999999999999999"),
            json!(u64::MAX),
        ] {
            assert_eq!(
                single_error(&price(bad.clone())),
                (codes::INVALID_PRICE.into(), "/lineItems/0/unitPrice".into()),
                "{bad}"
            );
        }
        // JPY has no minor unit: a decimal point is too precise.
        let jpy = with(price(json!("12.0")), "/currency", json!("JPY"));
        assert_eq!(single_error(&jpy).0, codes::INVALID_PRICE);
        // KWD has three decimals.
        let kwd = with(price(json!("1.125")), "/currency", json!("KWD"));
        let text = kwd.to_string();
        let order = parse_order(&text).outcome.expect("valid");
        assert_eq!(order.line_items[0].unit_price_minor, 1125);
    }

    /// quantity: a whole number from 1 to 1,000,000.
    #[test]
    fn code_invalid_quantity() {
        let qty = |v: Value| with(valid(), "/lineItems/1/quantity", v);
        assert!(errors_of(&qty(json!(1_000_000))).is_empty());
        for bad in [
            json!(0),
            json!(-3),
            json!(1_000_001),
            json!(2.5),
            json!(2.0),
            json!(1e2),
        ] {
            assert_eq!(
                single_error(&qty(bad.clone())),
                (
                    codes::INVALID_QUANTITY.into(),
                    "/lineItems/1/quantity".into()
                ),
                "{bad}"
            );
        }
    }

    /// lineItems must hold 1 to 500 entries.
    #[test]
    fn codes_empty_and_too_many_line_items() {
        assert_eq!(
            single_error(&with(valid(), "/lineItems", json!([]))),
            (codes::EMPTY_LINE_ITEMS.into(), "/lineItems".into())
        );
        let item = json!({"sku": "S", "quantity": 1, "unitPrice": 1});
        let max = with(valid(), "/lineItems", Value::Array(vec![item.clone(); 500]));
        assert!(errors_of(&max).is_empty());
        assert_eq!(
            single_error(&with(valid(), "/lineItems", Value::Array(vec![item; 501]))),
            (codes::TOO_MANY_LINE_ITEMS.into(), "/lineItems".into())
        );
    }

    /// sku: 1-64 characters, not blank, no control characters.
    #[test]
    fn code_invalid_sku() {
        assert!(errors_of(&with(valid(), "/lineItems/0/sku", json!("é".repeat(64)))).is_empty());
        for bad in [json!(""), json!("  "), json!("x".repeat(65)), json!("a\tb")] {
            assert_eq!(
                single_error(&with(valid(), "/lineItems/0/sku", bad)),
                (codes::INVALID_SKU.into(), "/lineItems/0/sku".into())
            );
        }
    }

    /// email: a basic local@domain.tld shape.
    #[test]
    fn code_invalid_email() {
        for ok in [
            "a@b.co",
            "first.last+tag@sub.example.org",
            "jörg@exämple.de",
        ] {
            assert!(
                errors_of(&with(valid(), "/customer/email", json!(ok))).is_empty(),
                "{ok}"
            );
        }
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@example",
            "a b@example.com",
            "a@exa mple.com",
            "a@.example.com",
            "a@example..com",
            "a@example.c",
            "a@-example.com",
        ] {
            assert_eq!(
                single_error(&with(valid(), "/customer/email", json!(bad))),
                (codes::INVALID_EMAIL.into(), "/customer/email".into()),
                "{bad}"
            );
        }
    }

    /// phone: optional; digits, spaces and `+ - ( ) .`, at least three digits.
    #[test]
    fn code_invalid_phone() {
        for bad in ["call me", "12", &"1".repeat(33)] {
            assert_eq!(
                single_error(&with(valid(), "/customer/phone", json!(bad))),
                (codes::INVALID_PHONE.into(), "/customer/phone".into())
            );
        }
    }

    /// Names, address lines, city and region: not blank, bounded, no control characters.
    #[test]
    fn code_invalid_text() {
        for (pointer, bad) in [
            ("/customer/name", json!(" ")),
            ("/shippingAddress/line1", json!("x".repeat(201))),
            ("/shippingAddress/line2", json!("")),
            ("/shippingAddress/city", json!("Ber\nlin")),
            ("/shippingAddress/region", json!("\u{7f}")),
        ] {
            assert_eq!(
                single_error(&with(valid(), pointer, bad)),
                (codes::INVALID_TEXT.into(), pointer.into())
            );
        }
    }

    /// postalCode: 1-16 letters, digits, spaces or dashes.
    #[test]
    fn code_invalid_postal_code() {
        assert!(
            errors_of(&with(
                valid(),
                "/shippingAddress/postalCode",
                json!("SW1A 1AA")
            ))
            .is_empty()
        );
        for bad in ["", "1011#5", &"1".repeat(17)] {
            assert_eq!(
                single_error(&with(valid(), "/shippingAddress/postalCode", json!(bad))),
                (
                    codes::INVALID_POSTAL_CODE.into(),
                    "/shippingAddress/postalCode".into()
                )
            );
        }
    }

    /// country: ISO 3166-1 alpha-2, upper case.
    #[test]
    fn code_invalid_country() {
        for bad in ["de", "DEU", "UK", "XX"] {
            assert_eq!(
                single_error(&with(valid(), "/shippingAddress/country", json!(bad))),
                (
                    codes::INVALID_COUNTRY.into(),
                    "/shippingAddress/country".into()
                )
            );
        }
    }

    /// metadata: at most 16 KiB of JSON.
    #[test]
    fn code_metadata_too_large() {
        let big = json!({"blob": "x".repeat(MAX_METADATA_BYTES)});
        assert_eq!(
            single_error(&with(valid(), "/metadata", big)),
            (codes::METADATA_TOO_LARGE.into(), "/metadata".into())
        );
    }

    /// A total beyond 64-bit minor units is refused instead of wrapping.
    #[test]
    fn code_total_overflow() {
        let order = with(valid(), "/lineItems/0/unitPrice", json!(i64::MAX / 2));
        let order = with(order, "/lineItems/0/quantity", json!(3));
        assert_eq!(
            single_error(&order),
            (codes::TOTAL_OVERFLOW.into(), "/lineItems".into())
        );
    }

    /// Every failure in an order is reported in one pass, not just the first.
    #[test]
    fn all_errors_are_reported_together() {
        let order = with(valid(), "/currency", json!("EURO"));
        let order = with(order, "/lineItems/0/quantity", json!(0));
        let order = with(order, "/shippingAddress/country", json!("ZZ"));
        let codes_found: Vec<String> = errors_of(&order).into_iter().map(|(c, _)| c).collect();
        assert_eq!(
            codes_found,
            [
                codes::INVALID_CURRENCY,
                codes::INVALID_COUNTRY,
                codes::INVALID_QUANTITY
            ]
        );
    }

    /// Money formats back into major units with the currency's decimals.
    #[test]
    fn minor_units_format_as_decimals() {
        assert_eq!(format_minor(1250, 2), "12.50");
        assert_eq!(format_minor(5, 3), "0.005");
        assert_eq!(format_minor(-1, 2), "-0.01");
        assert_eq!(format_minor(1250, 0), "1250");
        assert_eq!(parse_decimal_minor("12.5", Some(2)), Ok(1250));
        assert_eq!(parse_decimal_minor("7", Some(4)), Ok(70_000));
    }

    /// Every documented code is distinct.
    #[test]
    fn codes_are_distinct() {
        let mut all: Vec<&str> = codes::ALL.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), codes::ALL.len());
    }
}
