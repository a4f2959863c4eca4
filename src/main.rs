//! The `portcullis` binary: parses the command line, sets up logging, loads the config and
//! runs one command. Exit codes: 0 success, 1 failure, 2 invalid config or usage.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use clap::{Args, Parser, Subcommand, ValueEnum};
use portcullis::clock::Clock as _;
use portcullis::clock::SystemClock;
use portcullis::config::{Config, ConfigError};
use portcullis::migrate::Location;
use portcullis::store::GrantType;

mod cli;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "An OAuth2 gateway in front of legacy HTTP APIs"
)]
struct Cli {
    /// The YAML config file.
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_CONFIG",
        default_value = "config/portcullis.yaml"
    )]
    config: PathBuf,
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "PORTCULLIS_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve,
    /// Run the gateway with a sample legacy API, a demo user and client, and print the flow.
    Demo,
    /// Validate the config file and exit.
    Check,
    /// Create the configured store if it does not exist and bring its schema up to date; or,
    /// with --from and --to, copy one store's contents into another.
    Migrate(MigrateArgs),
    /// Manage users (resource owners for the password grant).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage OAuth clients (applications).
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Inspect, revoke and clean up tokens (values are never shown: only their digests).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// What the route table does with a request.
    #[command(subcommand)]
    Routes(RoutesCommand),
    /// Move users, applications and live tokens over from another OAuth server.
    #[command(subcommand)]
    Import(ImportCommand),
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Import a django-oauth-toolkit database (read-only) into the configured store: users
    /// (their Django password hashes keep working), applications (hashed secrets keep
    /// working) and live access and refresh tokens. Says what it cannot carry over and why.
    Dot {
        /// The Django database: `sqlite:FILE` or a postgres:// URL.
        #[arg(long, env = "PORTCULLIS_IMPORT_DATABASE", hide_env_values = true)]
        database: String,
        /// Report what would be imported, and what cannot be; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// The CA certificates (PEM) that verify a PostgreSQL server's TLS certificate.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RoutesCommand {
    /// The canonical path, the route it reaches (or why none), what that route needs and
    /// where it forwards. Exits 1 when the request would be refused.
    Explain {
        /// The method, as sent (methods are case-sensitive: GET, not get).
        method: String,
        /// The request target: a path with an optional query (/api/users/7?x=1).
        path: String,
    },
}

#[derive(Args)]
struct MigrateArgs {
    /// Copy the contents of this store (`sqlite:FILE` or a postgres:// URL): users, clients,
    /// consents and every unexpired token. The config file is not read.
    #[arg(
        long,
        requires = "to",
        env = "PORTCULLIS_MIGRATE_FROM",
        hide_env_values = true
    )]
    from: Option<String>,
    /// ...into this store (created if it is an SQLite file). Records it has already are kept,
    /// so a second run adds only what is new; every record of the source is then checked.
    #[arg(
        long,
        requires = "from",
        env = "PORTCULLIS_MIGRATE_TO",
        hide_env_values = true
    )]
    to: Option<String>,
    /// The CA certificates (PEM) that verify a PostgreSQL server's TLS certificate.
    #[arg(long, requires = "from")]
    ca_file: Option<PathBuf>,
    /// Report what would be copied; write nothing.
    #[arg(long, requires = "from")]
    dry_run: bool,
}

// A client id is base64url, so one in 64 begins with `-`, and a username may begin with one
// (Django's rule): every argument that takes either allows a leading hyphen, or clap would
// read it as an unknown flag.
#[derive(Subcommand)]
enum TokensCommand {
    /// List tokens, newest last.
    List {
        /// Only this user's tokens.
        #[arg(long, conflicts_with = "client", allow_hyphen_values = true)]
        user: Option<String>,
        /// Only this client's tokens.
        #[arg(long, allow_hyphen_values = true)]
        client: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke every live token of a user or a client.
    Revoke {
        #[arg(
            long,
            conflicts_with = "client",
            required_unless_present = "client",
            allow_hyphen_values = true
        )]
        user: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        client: Option<String>,
    },
    /// Delete expired and revoked tokens now (django-oauth-toolkit's cleartokens).
    ClearExpired,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a user; the password is read from standard input.
    Add {
        #[arg(allow_hyphen_values = true)]
        name: String,
        #[command(flatten)]
        password: PasswordStdin,
        /// An administrator: sees and manages every application at /o/applications/.
        #[arg(long)]
        admin: bool,
    },
    /// List users.
    List,
    /// Remove a user and every token issued to them.
    Remove {
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
    /// Set a user's password, read from standard input.
    SetPassword {
        #[arg(allow_hyphen_values = true)]
        name: String,
        #[command(flatten)]
        password: PasswordStdin,
    },
}

#[derive(Args)]
struct PasswordStdin {
    /// Read the password from the first line of standard input (never from the command line).
    #[arg(long, required = true)]
    password_stdin: bool,
}

#[derive(Subcommand)]
enum ClientsCommand {
    /// Register a client; prints its id and secret once.
    Add {
        #[arg(long)]
        name: String,
        /// A grant type the client may use (repeat for several).
        #[arg(long = "grant", required = true, value_parser = parse_grant)]
        grants: Vec<GrantType>,
        /// A scope the client may obtain (repeat for several; default: the config's default_scopes).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Where /o/authorize/ may send users back (repeat for several; required with
        /// authorization_code): absolute, no fragment, https or http on a loopback host.
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// A public client (a browser or native app): no secret, identified by client_id.
        #[arg(long)]
        public: bool,
        /// Never ask users for consent (a first-party application).
        #[arg(long)]
        skip_consent: bool,
        /// Print a JSON object with client_id and client_secret.
        #[arg(long)]
        json: bool,
    },
    /// List clients (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a client and every token issued to it.
    Remove {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Give a client a new secret; the old one stops working at once.
    RotateSecret {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
        #[arg(long)]
        json: bool,
    },
}

fn parse_grant(s: &str) -> Result<GrantType, String> {
    s.parse().map_err(|_| {
        let all: Vec<&str> = GrantType::ALL.iter().map(|g| g.as_str()).collect();
        format!("unknown grant {s:?} (one of: {})", all.join(", "))
    })
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// jemalloc: less memory per cached token than the system allocator (see Cargo.toml); its
/// run-time options are built in from `.cargo/config.toml`.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for the whole process, chosen explicitly (ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(config_error) = e.downcast_ref::<ConfigError>() {
                eprint!("error: {config_error}");
                return ExitCode::from(2);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo => portcullis::demo::run(&cli.config).await,
        Command::Check => {
            let config = Config::load(&cli.config)?;
            let warnings = portcullis::route_tools::warnings(&config);
            for (line, warning) in &warnings {
                println!("{}:{line}: warning: {warning}", cli.config.display());
            }
            println!(
                "{}: OK ({} routes, {} upstreams, {} scopes; {} warnings)",
                cli.config.display(),
                config.routes.len(),
                config.upstreams.len(),
                config.oauth.scopes.len(),
                warnings.len()
            );
            Ok(())
        }
        Command::Import(ImportCommand::Dot {
            database,
            dry_run,
            ca_file,
        }) => {
            let location: Location = database
                .parse()
                .map_err(|e| anyhow::anyhow!("--database: {e}"))?;
            let config = Config::load(&cli.config)?;
            let store = if dry_run {
                portcullis::app::open_existing_store(&config).await
            } else {
                portcullis::app::open_store(&config).await
            }?;
            let report = portcullis::import_dot::run(
                &store,
                &config.oauth,
                location,
                ca_file,
                SystemClock.now(),
                dry_run,
            )
            .await?;
            let [users, apps, access, refresh] = report.found;
            println!(
                "django-oauth-toolkit database: {users} users, {apps} applications, {access} access tokens, {refresh} refresh tokens"
            );
            println!("carried over: {}", report.planned);
            for note in &report.notes {
                println!("  - {note}");
            }
            match report.added {
                Some(added) => println!("imported (new to this store): {added}"),
                None => println!("dry run: nothing written"),
            }
            Ok(())
        }
        Command::Routes(RoutesCommand::Explain { method, path }) => {
            let config = Config::load(&cli.config)?;
            let method = match http::Method::from_bytes(method.as_bytes()) {
                Ok(m) if method.bytes().all(|b| b.is_ascii_uppercase()) => m,
                _ => bail!(
                    "{method:?} is not an HTTP method as a client sends it (methods are case-sensitive: GET, not get)"
                ),
            };
            let explained = portcullis::route_tools::explain(&config, &method, &path);
            for line in &explained.lines {
                println!("{line}");
            }
            if !explained.reaches {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Migrate(MigrateArgs {
            from: Some(from),
            to: Some(to),
            ca_file,
            dry_run,
        }) => cli::migrate::move_store(from, to, ca_file, dry_run).await,
        Command::Migrate(_) => {
            let config = Config::load(&cli.config)?;
            portcullis::app::open_store(&config).await?;
            println!("{}: the store is ready", cli.config.display());
            Ok(())
        }
        Command::Serve => {
            let config = Config::load(&cli.config)?;
            let store = portcullis::app::open_store(&config).await?;
            let running = portcullis::app::start(config, store, Arc::new(SystemClock)).await?;
            portcullis::shutdown::requested().await;
            running.shutdown().await;
            Ok(())
        }
        Command::Users(cmd) => {
            let (_, store) = cli::manage::open(&cli.config).await?;
            cli::manage::users(cmd, &store).await
        }
        Command::Clients(cmd) => {
            let (config, store) = cli::manage::open(&cli.config).await?;
            cli::manage::clients(cmd, &config, &store).await
        }
        Command::Tokens(cmd) => {
            let (config, store) = cli::manage::open(&cli.config).await?;
            cli::manage::tokens(cmd, &config, &store).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument that takes a client id or a username takes one beginning with `-`, and
    /// the flags after it are still read as flags: each command line, the values its id and
    /// name arguments must hold (for `tokens`: `--user`, then `--client`) and whether its flag
    /// (`--json`, `--admin`) was read.
    #[test]
    fn ids_and_usernames_may_begin_with_a_hyphen() {
        const ID: &str = "-Yq3bX0b7tq9Cz1Vw4oWUGzDfUu8aX2k";
        const USER: &str = "-bob";
        type Case<'a> = (&'a [&'a str], &'a [Option<&'a str>], bool);
        let cases: &[Case] = &[
            (
                &["tokens", "list", "--client", ID, "--json"],
                &[None, Some(ID)],
                true,
            ),
            (
                &["tokens", "revoke", "--client", ID],
                &[None, Some(ID)],
                false,
            ),
            (
                &["tokens", "list", "--user", USER],
                &[Some(USER), None],
                false,
            ),
            (
                &["tokens", "revoke", "--user", USER],
                &[Some(USER), None],
                false,
            ),
            (
                &["users", "add", USER, "--password-stdin", "--admin"],
                &[Some(USER)],
                true,
            ),
            (&["users", "remove", USER], &[Some(USER)], false),
            (
                &["users", "set-password", USER, "--password-stdin"],
                &[Some(USER)],
                false,
            ),
            (&["clients", "remove", ID], &[Some(ID)], false),
            (
                &["clients", "rotate-secret", ID, "--json"],
                &[Some(ID)],
                true,
            ),
        ];
        for (args, want, flag) in cases {
            let argv = std::iter::once("portcullis").chain(args.iter().copied());
            let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let (values, read) = match cli.command {
                Command::Tokens(TokensCommand::List { user, client, json }) => {
                    (vec![user, client], json)
                }
                Command::Tokens(TokensCommand::Revoke { user, client }) => {
                    (vec![user, client], false)
                }
                Command::Users(UsersCommand::Add { name, admin, .. }) => (vec![Some(name)], admin),
                Command::Users(UsersCommand::Remove { name })
                | Command::Users(UsersCommand::SetPassword { name, .. })
                | Command::Clients(ClientsCommand::Remove { client_id: name }) => {
                    (vec![Some(name)], false)
                }
                Command::Clients(ClientsCommand::RotateSecret { client_id, json }) => {
                    (vec![Some(client_id)], json)
                }
                _ => panic!("{args:?}: another command"),
            };
            let values: Vec<Option<&str>> = values.iter().map(Option::as_deref).collect();
            assert_eq!((&values[..], read), (*want, *flag), "{args:?}");
        }
    }
}
