//! `portico verify`: checks a Standard Webhooks signature offline, with the same code
//! the dispatcher signs with (`portico-signing`), and says why it fails: what a
//! partner runs when their own verification refuses a delivery.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use portico_signing::standard_webhooks::{DEFAULT_TOLERANCE_SECS, WebhookSecret, verify};
use serde_json::json;

use crate::exit::{self, Exit};
use crate::output::Out;

/// Arguments of `verify`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  portico verify --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \\
      --header 'webhook-id: msg_p5jXN8AQM9LWM0D4loKWxJek' \\
      --header 'webhook-timestamp: 1614265330' \\
      --header 'webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=' \\
      --body '{\"test\": 2432232314}' --tolerance 0
  portico verify --secret \"$SECRET\" --headers-file headers.txt --body-file body.json

Exit code 0 when the signature matches, 6 when it does not.")]
pub struct VerifyArgs {
    /// The endpoint's signing secret (`whsec_...`).
    #[arg(long, env = "PORTICO_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
    /// A received header, `name: value` (repeatable): webhook-id, webhook-timestamp,
    /// webhook-signature. Other headers are ignored.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A file of received headers, one `name: value` per line (as copied from a log).
    #[arg(long, value_name = "PATH")]
    headers_file: Option<PathBuf>,
    /// The `webhook-id` header (overrides --header).
    #[arg(long = "id")]
    msg_id: Option<String>,
    /// The `webhook-timestamp` header (overrides --header).
    #[arg(long)]
    timestamp: Option<String>,
    /// The `webhook-signature` header (overrides --header).
    #[arg(long)]
    signature: Option<String>,
    /// The raw body, exactly as received.
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// A file holding the raw body (`-` for stdin).
    #[arg(long, value_name = "PATH")]
    body_file: Option<PathBuf>,
    /// Accepted age of the timestamp in seconds; 0 skips the check (old captures).
    #[arg(long, default_value_t = DEFAULT_TOLERANCE_SECS)]
    tolerance: i64,
}

fn header_value(lines: &[String], name: &str) -> Option<String> {
    lines.iter().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// Runs `verify`.
pub fn run(args: VerifyArgs, out: Out) -> anyhow::Result<()> {
    let mut lines = args.headers.clone();
    if let Some(path) = &args.headers_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        lines.extend(text.lines().map(str::to_owned));
    }
    let pick = |given: &Option<String>, name: &str| -> anyhow::Result<String> {
        given
            .clone()
            .or_else(|| header_value(&lines, name))
            .with_context(|| format!("missing {name}: pass --header '{name}: ...'"))
    };
    let msg_id = pick(&args.msg_id, "webhook-id")?;
    let timestamp = pick(&args.timestamp, "webhook-timestamp")?;
    let signature = pick(&args.signature, "webhook-signature")?;
    let body: Vec<u8> = match (&args.body, &args.body_file) {
        (Some(text), _) => text.clone().into_bytes(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            buf
        }
        (None, Some(path)) => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
        }
        (None, None) => bail!("pass the body with --body or --body-file"),
    };
    let secret = WebhookSecret::parse(args.secret.trim())
        .map_err(|e| anyhow::anyhow!("--secret: {e} (expected whsec_<base64>)"))?;
    let now = chrono::Utc::now().timestamp();
    let tolerance = if args.tolerance <= 0 {
        i64::MAX
    } else {
        args.tolerance
    };
    let result = verify(
        &secret, &msg_id, &timestamp, &signature, &body, now, tolerance,
    );
    let age = timestamp.parse::<i64>().ok().map(|t| now - t);
    match result {
        Ok(()) => {
            let text = format!(
                "valid: signature matches (webhook-id {msg_id}, {} bytes{})",
                body.len(),
                age.map(|a| format!(", signed {a}s ago"))
                    .unwrap_or_default()
            );
            out.message(
                &text,
                &json!({"valid": true, "webhookId": msg_id, "ageSeconds": age}),
            )
        }
        Err(e) => {
            let hint = diagnose(&signature, age, tolerance, &body);
            if out.format == crate::output::Format::Json {
                out.message(
                    "",
                    &json!({"valid": false, "webhookId": msg_id, "reason": e.to_string(), "hint": hint}),
                )?;
            }
            Err(Exit::new(
                exit::INVALID_SIGNATURE,
                format!(
                    "invalid: {e}{}",
                    hint.map(|h| format!(" ({h})")).unwrap_or_default()
                ),
            )
            .into())
        }
    }
}

/// The likeliest cause of a mismatch, in words.
fn diagnose(signature: &str, age: Option<i64>, tolerance: i64, body: &[u8]) -> Option<String> {
    if age.is_some_and(|a| a.unsigned_abs() > tolerance.unsigned_abs()) {
        return Some(format!(
            "the timestamp is {}s from now; pass --tolerance 0 to check an old capture",
            age.unwrap_or_default()
        ));
    }
    if !signature.split(' ').any(|e| e.starts_with("v1,")) {
        return Some("the signature header has no v1,<base64> entry".into());
    }
    if body.ends_with(b"\n") {
        return Some(
            "the body ends with a newline: verify the exact bytes received, not a re-formatted copy"
                .into(),
        );
    }
    Some("wrong secret, or the body was re-serialised before verifying (use the raw bytes)".into())
}
