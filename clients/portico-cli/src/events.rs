//! `portico events publish`: one event, its data inline or from a file.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use portico_client::Client;
use portico_client::api::events::PublishEventBody;
use serde_json::value::RawValue;

use crate::output::Out;

/// `portico events`.
#[derive(Debug, Subcommand)]
pub enum EventsCmd {
    /// Publish an event to the user's webhooks (service token + user id).
    #[command(after_help = "Examples:
  portico events publish --type order.created --data '{\"orderId\": \"o-1\"}'
  portico events publish --type order.created --file event-data.json --idempotency-key o-1-created
  echo '{\"orderId\": \"o-2\"}' | portico events publish --type order.created --file -")]
    Publish {
        /// Dotted event type, e.g. order.created.
        #[arg(long = "type", short = 't')]
        event_type: String,
        /// The event's data, JSON.
        #[arg(long, conflicts_with = "file")]
        data: Option<String>,
        /// A file holding the data (`-` for stdin).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Publishing again with the same key delivers nothing new.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Events with the same key reach each endpoint in order.
        #[arg(long)]
        ordering_key: Option<String>,
    },
}

/// Runs `portico events ...`.
pub async fn run(cmd: EventsCmd, client: &Client, out: Out) -> anyhow::Result<()> {
    match cmd {
        EventsCmd::Publish {
            event_type,
            data,
            file,
            idempotency_key,
            ordering_key,
        } => {
            let text = match (data, file) {
                (Some(text), _) => text,
                (None, Some(path)) if path.as_os_str() == "-" => {
                    std::io::read_to_string(std::io::stdin()).context("reading stdin")?
                }
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
                (None, None) => bail!("give the event's data with --data or --file"),
            };
            let data =
                RawValue::from_string(text.trim().to_owned()).context("the data is not JSON")?;
            let event = PublishEventBody {
                event_type,
                data,
                idempotency_key,
                ordering_key,
            };
            let accepted = client.publish_event(&event).await?;
            let id = accepted.id;
            let text = if accepted.duplicate {
                format!("event {id} (already published with this idempotency key)")
            } else {
                format!("event {id} published")
            };
            out.message(&text, &accepted)
        }
    }
}
