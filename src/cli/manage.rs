//! The management commands of the binary: `users`, `clients` and `tokens`, over the
//! library's `manage` operations and the configured store.

use std::io::BufRead as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use portcullis::clock::Clock as _;
use portcullis::clock::SystemClock;
use portcullis::config::Config;
use portcullis::crypto::PasswordHasher;
use portcullis::manage;
use portcullis::store::{SharedStore, TokenOwner, TokenSummary};
use serde_json::json;

use crate::{ClientsCommand, TokensCommand, UsersCommand};

pub fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!("no password on standard input");
    }
    Ok(password.to_owned())
}

fn owner(user: Option<String>, client: Option<String>) -> TokenOwner {
    match (user, client) {
        (Some(u), _) => TokenOwner::User(u),
        (None, Some(c)) => TokenOwner::Client(c),
        (None, None) => TokenOwner::All,
    }
}

fn timestamp(unix: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

pub async fn tokens(
    cmd: TokensCommand,
    config: &Config,
    store: &SharedStore,
) -> anyhow::Result<()> {
    let now = SystemClock.now();
    match cmd {
        TokensCommand::List { user, client, json } => {
            let list = store.list_tokens(owner(user, client), now).await?;
            // The first 8 bytes of the digest identify a token without revealing it.
            let id = |t: &TokenSummary| {
                t.meta.digest.0[..8]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            };
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|t| {
                        let m = &t.meta;
                        json!({
                            "kind": t.kind.as_str(), "id": id(t), "client_id": m.client_id,
                            "username": m.username, "scope": m.scopes.to_string(),
                            "issued_at": m.issued_at, "expires_at": m.expires_at,
                            "status": t.status.as_str(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!(
                    "KIND     ID                CLIENT                            USER             STATUS   EXPIRES               SCOPE"
                );
                for t in &list {
                    println!(
                        "{:<8} {} {:<33} {:<16} {:<8} {} {}",
                        t.kind.as_str(),
                        id(t),
                        t.meta.client_id,
                        t.meta.username.as_deref().unwrap_or("-"),
                        t.status.as_str(),
                        timestamp(t.meta.expires_at),
                        t.meta.scopes
                    );
                }
            }
        }
        TokensCommand::Revoke { user, client } => {
            let who = owner(user, client);
            let revoked = store.revoke_tokens_of(who.clone(), now).await?;
            println!(
                "revoked {} access and {} refresh tokens of {}; running gateways drop them within cache.revocation_poll_ms",
                revoked.access.len(),
                revoked.refresh,
                match who {
                    TokenOwner::User(u) => format!("user {u}"),
                    TokenOwner::Client(c) => format!("client {c}"),
                    TokenOwner::Grant { user, client } => format!("user {user} at client {client}"),
                    TokenOwner::All => "everyone".into(),
                }
            );
        }
        TokensCommand::ClearExpired => {
            let swept =
                portcullis::lifecycle::sweep_all(store, now, config.cleanup.batch_size, None)
                    .await?;
            println!(
                "deleted {} access and {} refresh tokens",
                swept.access, swept.refresh
            );
        }
    }
    Ok(())
}

/// The config and its store, which must exist: management commands never create one.
pub async fn open(path: &Path) -> anyhow::Result<(Config, SharedStore)> {
    let config = Config::load(path)?;
    let store = portcullis::app::open_existing_store(&config).await?;
    Ok((config, store))
}

pub async fn users(cmd: UsersCommand, store: &SharedStore) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::Add { name, admin, .. } => {
            let password = read_password()?;
            manage::add_user_as(store, &PasswordHasher::new(1)?, &name, &password, admin).await?;
            println!(
                "added {} {name}",
                if admin { "administrator" } else { "user" }
            );
        }
        UsersCommand::SetPassword { name, .. } => {
            let password = read_password()?;
            manage::set_password(store, &PasswordHasher::new(1)?, &name, &password).await?;
            println!("password set for {name}");
        }
        UsersCommand::List => {
            for u in store.users().await? {
                println!("{}", u.username);
            }
        }
        UsersCommand::Remove { name } => {
            manage::remove_user(store, &name).await?;
            println!("removed user {name} and their tokens");
        }
    }
    Ok(())
}

pub async fn clients(
    cmd: ClientsCommand,
    config: &Config,
    store: &SharedStore,
) -> anyhow::Result<()> {
    match cmd {
        ClientsCommand::Add {
            name,
            grants,
            scopes,
            redirect_uris,
            public,
            skip_consent,
            json,
        } => {
            let spec = manage::ClientSpec {
                name,
                grants,
                scopes,
                redirect_uris,
                public,
                skip_consent,
                owner: None,
            };
            let new = manage::add_client(store, &config.oauth, spec).await?;
            if json {
                println!(
                    "{}",
                    json!({"client_id": new.client.client_id, "client_secret": new.secret})
                );
            } else {
                println!("client_id:     {}", new.client.client_id);
                match &new.secret {
                    Some(secret) => {
                        println!("client_secret: {secret}");
                        println!("(the secret is shown only now; store it safely)");
                    }
                    None => println!("(a public client: it has no secret)"),
                }
            }
        }
        ClientsCommand::List { json } => {
            let clients = store.clients().await?;
            if json {
                let list: Vec<_> = clients
                    .iter()
                    .map(|c| {
                        json!({
                            "client_id": c.client_id,
                            "name": c.name,
                            "grants": c.grants.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
                            "scopes": c.scopes.iter().collect::<Vec<_>>(),
                            "public": c.is_public(),
                            "redirect_uris": c.redirect_uris,
                            "skip_consent": c.skip_consent,
                            "owner": c.owner,
                            "created_at": c.created_at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for c in clients {
                    let grants: Vec<&str> = c.grants.iter().map(|g| g.as_str()).collect();
                    println!(
                        "{}  {}  grants={}  scopes={}",
                        c.client_id,
                        c.name,
                        grants.join(","),
                        c.scopes.iter().collect::<Vec<_>>().join(",")
                    );
                }
            }
        }
        ClientsCommand::Remove { client_id } => {
            manage::remove_client(store, &client_id).await?;
            println!("removed client {client_id} and its tokens");
        }
        ClientsCommand::RotateSecret { client_id, json } => {
            let secret = manage::rotate_client_secret(store, &client_id).await?;
            if json {
                println!(
                    "{}",
                    json!({"client_id": client_id, "client_secret": secret})
                );
            } else {
                println!("client_secret: {secret}");
                println!("(the secret is shown only now; the old one no longer works)");
            }
        }
    }
    Ok(())
}
