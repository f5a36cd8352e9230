//! `portico`: the command-line tool of the Portico API, built on `portico-client`, so a
//! partner or an internal team manages webhooks, publishes events, follows deliveries,
//! submits bulk orders, reads and verifies the audit log and checks signatures without
//! hand-crafting HTTP calls.
//! Documented in `docs/cli.md`.

mod audit;
mod bulk;
mod config;
mod events;
mod exit;
mod integrations;
mod listen;
mod output;
mod progress;
mod tail;
mod verify;
mod webhooks;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use portico_client::{Client, RetryPolicy};

use crate::config::Profile;
use crate::output::{Format, Out};

/// The Portico command-line tool.
#[derive(Debug, Parser)]
#[command(
    name = "portico",
    version,
    about = "Manage Portico webhooks, events, deliveries, bulk orders and integrations, and read the audit log",
    long_about = "Manage Portico webhooks, events, deliveries, bulk orders and integrations, and read the audit log.\n\n\
Settings come from a profile in the config file ($PORTICO_CONFIG, else \
~/.config/portico/config.json), overridden by PORTICO_* variables, overridden by flags.",
    after_help = "Examples:
  portico config set local --server http://127.0.0.1:8080 --service-token dev-token --user-id alice --default
  portico webhooks create --url https://example.com/hooks --event 'order.*'
  portico events publish --type order.created --data '{\"orderId\": \"o-1\"}'
  portico deliveries list <WEBHOOK_ID> --status failed
  portico listen --events 'order.*' --forward-to http://localhost:3000/hooks
  portico bulk submit orders.ndjson
  portico audit list --resource-type webhook --since 2026-12-01T00:00:00Z
  portico audit verify
  portico verify --secret whsec_... -H 'webhook-id: ...' -H 'webhook-timestamp: ...' -H 'webhook-signature: ...' --body-file body.json
  portico completions bash > /etc/bash_completion.d/portico",
    after_long_help = exit::HELP
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Debug, clap::Args)]
struct Global {
    /// Profile of the config file to use.
    #[arg(long, short = 'p', global = true, env = "PORTICO_PROFILE")]
    profile: Option<String>,
    /// Server root, e.g. http://127.0.0.1:8080 (`url` in a profile).
    #[arg(
        id = "server",
        long = "server",
        short = 's',
        global = true,
        env = "PORTICO_URL"
    )]
    url: Option<String>,
    /// A user's JWT.
    #[arg(long, global = true, env = "PORTICO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The service token (internal callers; needs --user-id).
    #[arg(
        long,
        global = true,
        env = "PORTICO_SERVICE_TOKEN",
        hide_env_values = true
    )]
    service_token: Option<String>,
    /// The user a service-token call acts for.
    #[arg(long, global = true, env = "PORTICO_USER_ID")]
    user_id: Option<String>,
    /// A partner integration's API key (with --api-secret).
    #[arg(long, global = true, env = "PORTICO_API_KEY")]
    api_key: Option<String>,
    /// A partner integration's API secret.
    #[arg(
        long,
        global = true,
        env = "PORTICO_API_SECRET",
        hide_env_values = true
    )]
    api_secret: Option<String>,
    /// The operator token (admin commands).
    #[arg(
        long,
        global = true,
        env = "PORTICO_OPERATOR_TOKEN",
        hide_env_values = true
    )]
    operator_token: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', global = true, env = "PORTICO_OUTPUT", value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Retries of 429/503 answers (0 = none).
    #[arg(long, global = true, default_value_t = 3)]
    retries: u32,
    /// Time limit of one request, in seconds.
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Webhook endpoints: list, create, get, update, delete, rotate-secret, test.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCmd),
    /// Deliveries of a webhook: list, get (with attempts), retry, retry-failed, tail.
    #[command(subcommand)]
    Deliveries(webhooks::DeliveriesCmd),
    /// Publish events.
    #[command(subcommand)]
    Events(events::EventsCmd),
    /// Bulk orders: submit a file and follow it, list, get, results, cancel.
    #[command(subcommand)]
    Bulk(bulk::BulkCmd),
    /// Partner integrations: create, list, get, delete, regenerate, usage.
    #[command(subcommand)]
    Integrations(integrations::IntegrationsCmd),
    /// The audit log of the user: list (with filters), verify the hash chain.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Forward deliveries of a temporary endpoint to a local URL (development).
    Listen(listen::ListenArgs),
    /// Check a Standard Webhooks signature offline.
    Verify(verify::VerifyArgs),
    /// Profiles in the config file.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  portico completions bash > ~/.local/share/bash-completion/completions/portico
  portico completions zsh > \"${fpath[1]}/_portico\"
  portico completions fish > ~/.config/fish/completions/portico.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Print where the config file is.
    Path,
    /// Print the effective settings (profile + environment + flags), secrets redacted.
    Show,
    /// Create or change a profile from the --server and credential flags given (and the
    /// PORTICO_* variables set).
    #[command(after_help = "Examples:
  portico config set local --server http://127.0.0.1:8080 --service-token dev-token --user-id alice --default
  portico config set partner --server https://portico.example.com --api-key pk_... --api-secret sk_...")]
    Set {
        /// Profile name.
        name: String,
        /// Make it the default profile.
        #[arg(long)]
        default: bool,
    },
}

impl Global {
    fn overrides(&self) -> Profile {
        Profile {
            url: self.url.clone(),
            token: self.token.clone(),
            service_token: self.service_token.clone(),
            user_id: self.user_id.clone(),
            api_key: self.api_key.clone(),
            api_secret: self.api_secret.clone(),
            operator_token: self.operator_token.clone(),
        }
    }

    fn profile(&self) -> anyhow::Result<Profile> {
        let file = match config::path() {
            Some(path) => config::load(&path)?,
            None => config::ConfigFile::default(),
        };
        Ok(config::select(&file, self.profile.as_deref())?.overlay(self.overrides()))
    }

    fn client(&self) -> anyhow::Result<Client> {
        let profile = self.profile()?;
        let url = profile.url.clone().context(
            "no server URL: pass --server, set PORTICO_URL, or add url to a profile (portico config set)",
        )?;
        let retry = RetryPolicy {
            max_retries: self.retries,
            ..RetryPolicy::default()
        };
        Ok(Client::builder(url)
            .auth(profile.auth()?)
            .retry(retry)
            .timeout(Duration::from_secs(self.timeout.max(1)))
            .user_agent(concat!("portico-cli/", env!("CARGO_PKG_VERSION")))
            .build()?)
    }

    fn out(&self) -> Out {
        Out {
            format: self.output,
        }
    }
}

fn redact(value: &Option<String>) -> Option<String> {
    value.as_ref().map(|v| {
        let shown: String = v.chars().take(4).collect();
        format!("{shown}…")
    })
}

fn run_config(cmd: ConfigCmd, global: &Global) -> anyhow::Result<()> {
    let path = config::path().context("no config path: set PORTICO_CONFIG or HOME")?;
    match cmd {
        ConfigCmd::Path => output::write_stdout(&format!("{}\n", path.display())),
        ConfigCmd::Show => {
            let p = global.profile()?;
            let shown = Profile {
                url: p.url.clone(),
                user_id: p.user_id.clone(),
                api_key: p.api_key.clone(),
                token: redact(&p.token),
                service_token: redact(&p.service_token),
                api_secret: redact(&p.api_secret),
                operator_token: redact(&p.operator_token),
            };
            global.out().one(&shown)
        }
        ConfigCmd::Set { name, default } => {
            let mut file = config::load(&path)?;
            let current = file.profiles.remove(&name).unwrap_or_default();
            file.profiles
                .insert(name.clone(), current.overlay(global.overrides()));
            if default {
                file.default_profile = Some(name.clone());
            }
            config::save(&path, &file)?;
            output::write_stdout(&format!("profile {name} saved in {}\n", path.display()))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = cli.global.out();
    match cli.command {
        Command::Webhooks(cmd) => webhooks::run_webhooks(cmd, &cli.global.client()?, out).await,
        Command::Deliveries(cmd) => webhooks::run_deliveries(cmd, &cli.global.client()?, out).await,
        Command::Events(cmd) => events::run(cmd, &cli.global.client()?, out).await,
        Command::Bulk(cmd) => bulk::run(cmd, &cli.global.client()?, out).await,
        Command::Integrations(cmd) => integrations::run(cmd, &cli.global.client()?, out).await,
        Command::Audit(cmd) => audit::run(cmd, &cli.global.client()?, out).await,
        Command::Listen(args) => listen::run(args, &cli.global.client()?, out).await,
        Command::Verify(args) => verify::run(args, out),
        Command::Config(cmd) => run_config(cmd, &cli.global),
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "portico", &mut std::io::stdout());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => exit::report(&err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line definition is consistent (clap's own checks).
    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
