//! `aligndet-server users …` and `aligndet-server tokens create …`: account administration
//! from a shell, against the server's database (the embedded cluster too, running or not).

use super::{Role, check_password, check_user_name, hash_password, new_api_token};
use crate::db;
use anyhow::{Context, bail};
use sqlx::PgPool;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Manage user accounts.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Personal API tokens for scripts.
    #[command(subcommand)]
    Tokens(TokensCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum UsersCommand {
    /// Create a user; the password is asked on the terminal (or read from stdin).
    Add {
        name: String,
        #[arg(long, value_enum)]
        role: Role,
        /// Read the password from the first line of stdin instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users with their role and state.
    List,
    /// Change a user's role.
    SetRole {
        name: String,
        #[arg(long, value_enum)]
        role: Role,
    },
    /// Set a new password (asked on the terminal, or read from stdin).
    SetPassword {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user: their sessions end and their tokens are revoked.
    Disable { name: String },
    /// Enable a disabled user again (they sign in anew; old tokens stay revoked).
    Enable { name: String },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokensCommand {
    /// Create a personal API token for USER, printed once (only its hash is kept).
    Create {
        user: String,
        /// What the token is for (shown in the token lists).
        #[arg(long)]
        name: String,
    },
}

/// Run one command against the database (opened and closed by [`crate::administer`]).
pub async fn run(pool: &PgPool, command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Users(UsersCommand::Add {
            name,
            role,
            password_stdin,
        }) => {
            let name = check_user_name(&name).map_err(anyhow::Error::msg)?;
            let password = read_password(&name, password_stdin)?;
            let hash = hash_password(&password)?;
            match db::users::create(pool, &name, &hash, role.as_str()).await {
                Ok(id) => println!("created user {name} (#{id}, {role})"),
                Err(e) if db::users::is_name_taken(&e) => {
                    bail!("a user named {name:?} exists already")
                }
                Err(e) => return Err(e.into()),
            }
        }
        AdminCommand::Users(UsersCommand::List) => {
            println!(
                "{:<24} {:<8} {:<9} {:>8} {:>7}",
                "NAME", "ROLE", "STATE", "SESSIONS", "TOKENS"
            );
            for u in db::users::list(pool).await? {
                let state = if u.disabled { "disabled" } else { "active" };
                println!(
                    "{:<24} {:<8} {:<9} {:>8} {:>7}",
                    u.name, u.role, state, u.sessions, u.tokens
                );
            }
        }
        AdminCommand::Users(UsersCommand::SetRole { name, role }) => {
            let user = find(pool, &name).await?;
            db::users::set_role(pool, user.id, role.as_str()).await?;
            println!("{name} is now {role}");
        }
        AdminCommand::Users(UsersCommand::SetPassword {
            name,
            password_stdin,
        }) => {
            let user = find(pool, &name).await?;
            let hash = hash_password(&read_password(&name, password_stdin)?)?;
            db::users::set_password(pool, user.id, &hash).await?;
            println!("password of {name} changed");
        }
        AdminCommand::Users(UsersCommand::Disable { name }) => {
            let user = find(pool, &name).await?;
            db::users::set_disabled(pool, user.id, true).await?;
            println!("{name} disabled; their sessions ended and their tokens were revoked");
        }
        AdminCommand::Users(UsersCommand::Enable { name }) => {
            let user = find(pool, &name).await?;
            db::users::set_disabled(pool, user.id, false).await?;
            println!("{name} enabled");
        }
        AdminCommand::Tokens(TokensCommand::Create { user, name }) => {
            let label = check_token_label(&name).map_err(anyhow::Error::msg)?;
            let holder = find(pool, &user).await?;
            if holder.disabled {
                bail!(
                    "{user} is disabled: enable them first (aligndet-server users enable {user})"
                );
            }
            let (token, digest) = new_api_token();
            db::users::create_token(pool, holder.id, &label, &digest).await?;
            // The token alone on stdout, so `TOKEN=$(aligndet-server tokens create …)` works;
            // the note on stderr.
            eprintln!(
                "API token {label:?} for {user} ({}); shown only now, keep it secret:",
                holder.role
            );
            println!("{token}");
        }
    }
    Ok(())
}

async fn find(pool: &PgPool, name: &str) -> anyhow::Result<db::users::UserRow> {
    db::users::by_name(pool, name)
        .await?
        .with_context(|| format!("no user named {name:?} (aligndet-server users list shows them)"))
}

/// A token's label: 1–100 printable characters.
pub fn check_token_label(label: &str) -> Result<String, String> {
    aligndet_common::names::check_display_name(label, "the token name", 100)
}

fn read_password(name: &str, from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let first = rpassword::prompt_password(format!("Password for {name}: ")).context(
            "reading the password from the terminal (no terminal? use --password-stdin)",
        )?;
        let again = rpassword::prompt_password("Again: ")?;
        if first != again {
            bail!("the two passwords differ");
        }
        first
    };
    check_password(&password).map_err(anyhow::Error::msg)?;
    Ok(password)
}
