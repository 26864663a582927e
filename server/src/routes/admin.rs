//! The users page (admins): create users, change roles, disable, end sessions, revoke tokens.

use crate::accounts::gate::UserPage;
use crate::accounts::{self, CurrentUser, Role};
use crate::db;
use crate::error::PageForm;
use crate::error::PageResult;
use crate::error::{PageError, PagePath};
use crate::forms::actions::{DisabledForm, NewUserForm, RoleForm};
use crate::routes::render;
use crate::state::AppState;
use askama::Template;
use axum::http::StatusCode;
use axum::response::IntoResponse;

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    me: CurrentUser,
    csrf: String,
    users: Vec<db::users::UserSummary>,
    tokens: Vec<(db::users::TokenRow, String)>,
    roles: [Role; 3],
    message: Option<String>,
    error: Option<String>,
}

/// The page with the outcome of what was just done (an error: 400).
async fn page(
    s: &AppState,
    me: CurrentUser,
    csrf: String,
    outcome: Result<String, String>,
) -> PageResult {
    let users = db::users::list(&s.pool).await?;
    let tokens = db::users::all_tokens(&s.pool)
        .await?
        .into_iter()
        .map(|t| {
            let owner = users
                .iter()
                .find(|u| u.id == t.user_id)
                .map_or_else(String::new, |u| u.name.clone());
            (t, owner)
        })
        .collect();
    let status = if outcome.is_err() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let (message, error) = match outcome {
        Ok(m) if m.is_empty() => (None, None),
        Ok(m) => (Some(m), None),
        Err(e) => (None, Some(e)),
    };
    let body = render(&UsersPage {
        me,
        csrf,
        users,
        tokens,
        roles: Role::ALL,
        message,
        error,
    });
    Ok((status, body).into_response())
}

pub async fn users_page(UserPage { s, user: me, csrf }: UserPage) -> PageResult {
    page(&s, me, csrf.0, Ok(String::new())).await
}

pub async fn create_user(
    UserPage { s, user: me, csrf }: UserPage,
    PageForm(form): PageForm<NewUserForm>,
) -> PageResult {
    let checked = accounts::check_user_name(&form.name).and_then(|name| {
        accounts::check_password(&form.password)?;
        let role = Role::parse(&form.role)
            .ok_or_else(|| format!("role: {:?} is not viewer, editor or admin", form.role))?;
        Ok((name, role))
    });
    let (name, role) = match checked {
        Ok(c) => c,
        Err(e) => return page(&s, me, csrf.0, Err(e)).await,
    };
    let password = form.password.clone();
    let hash = tokio::task::spawn_blocking(move || accounts::hash_password(&password)).await??;
    let outcome = match db::users::create(&s.pool, &name, &hash, role.as_str()).await {
        Ok(_) => {
            tracing::info!("{} created the user {name} ({role})", me.name);
            Ok(format!("Created {name} ({role})."))
        }
        Err(e) if db::users::is_name_taken(&e) => Err(format!("A user named {name} exists.")),
        Err(e) => return Err(e.into()),
    };
    page(&s, me, csrf.0, outcome).await
}

pub async fn set_role(
    UserPage { s, user: me, csrf }: UserPage,
    PagePath(id): PagePath<i64>,
    PageForm(form): PageForm<RoleForm>,
) -> PageResult {
    let Some(role) = Role::parse(&form.role) else {
        let e = format!("role: {:?} is not viewer, editor or admin", form.role);
        return page(&s, me, csrf.0, Err(e)).await;
    };
    let user = target(&s, id).await?;
    let outcome = if role != Role::Admin && last_admin(&s, &user).await? {
        Err(format!(
            "{} is the last enabled admin: make another admin first.",
            user.name
        ))
    } else {
        db::users::set_role(&s.pool, id, role.as_str()).await?;
        tracing::info!("{} made {} {role}", me.name, user.name);
        Ok(format!("{} is now {role}.", user.name))
    };
    page(&s, me, csrf.0, outcome).await
}

pub async fn set_disabled(
    UserPage { s, user: me, csrf }: UserPage,
    PagePath(id): PagePath<i64>,
    PageForm(form): PageForm<DisabledForm>,
) -> PageResult {
    let disable = form.disabled.0;
    let user = target(&s, id).await?;
    let outcome = if disable && last_admin(&s, &user).await? {
        Err(format!(
            "{} is the last enabled admin: make another admin first.",
            user.name
        ))
    } else {
        db::users::set_disabled(&s.pool, id, disable).await?;
        tracing::info!("{} set {} disabled={disable}", me.name, user.name);
        Ok(if disable {
            format!(
                "{} is disabled; their sessions ended and their tokens were revoked.",
                user.name
            )
        } else {
            format!("{} is enabled again.", user.name)
        })
    };
    page(&s, me, csrf.0, outcome).await
}

pub async fn revoke_all(
    UserPage { s, user: me, csrf }: UserPage,
    PagePath(id): PagePath<i64>,
) -> PageResult {
    let user = target(&s, id).await?;
    let (sessions, tokens) = db::users::revoke_all(&s.pool, id).await?;
    tracing::info!("{} ended the sessions and tokens of {}", me.name, user.name);
    let outcome = Ok(format!(
        "Ended {sessions} session(s) and revoked {tokens} token(s) of {}.",
        user.name
    ));
    page(&s, me, csrf.0, outcome).await
}

pub async fn revoke_token(
    UserPage { s, user: me, csrf }: UserPage,
    PagePath(id): PagePath<i64>,
) -> PageResult {
    let outcome = if db::users::revoke_token(&s.pool, id, None).await? {
        tracing::info!("{} revoked API token #{id}", me.name);
        Ok(format!("Token #{id} revoked."))
    } else {
        Err(format!("There is no live token #{id}."))
    };
    page(&s, me, csrf.0, outcome).await
}

async fn target(s: &AppState, id: i64) -> Result<db::users::UserRow, PageError> {
    db::users::by_id(&s.pool, id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("user {id} not found")))
}

/// `user` is the only enabled admin (taking that away would lock everyone out of this page).
async fn last_admin(s: &AppState, user: &db::users::UserRow) -> Result<bool, PageError> {
    if user.role != Role::Admin.as_str() || user.disabled {
        return Ok(false);
    }
    let admins = db::users::list(&s.pool)
        .await?
        .into_iter()
        .filter(|u| u.role == Role::Admin.as_str() && !u.disabled)
        .count();
    Ok(admins <= 1)
}
