//! `quiver permissions check` and `quiver token create`.

use anyhow::{Context, Result};
use quiver_core::{Action, ObjectKind};
use quiver_ops::{Authorizer, Caller, Grant};
use serde_json::json;

use crate::{PrincipalArgs, Repo, print_json};

/// Explains whether `who` may do `action` on `object` (`KIND:NAME`) by the latest registry
/// version's permissions; an error when nothing allows it.
pub fn check(
    repo: &Repo,
    who: &PrincipalArgs,
    action: &str,
    object: &str,
    as_json: bool,
) -> Result<()> {
    let defs = repo
        .registry
        .latest()?
        .map(|v| v.definitions)
        .unwrap_or_default();
    let action = match Action::expand(action).as_deref() {
        Some([one]) => *one,
        _ => anyhow::bail!(
            "--action '{action}': expected one of create, describe, update, delete, read_online, read_offline, write_online, write_offline"
        ),
    };
    let (kind, name) = object
        .split_once(':')
        .and_then(|(k, n)| {
            ObjectKind::ALL
                .into_iter()
                .find(|x| x.key() == k)
                .map(|k| (k, n))
        })
        .with_context(|| {
            format!("--object '{object}': expected KIND:NAME with KIND one of entity, source, feature_view, feature_service, permission")
        })?;
    let grant = Authorizer::new(&defs).decide_new(
        &Caller::Principal(who.principal()),
        action,
        kind,
        name,
        defs.tags_of(kind, name),
    );
    let verdict = match &grant {
        Some(Grant::Permission(p)) => format!("allowed by permission '{p}'"),
        Some(_) => "allowed: the project has no permissions, so every authenticated principal may do everything".to_owned(),
        None => format!(
            "denied: no permission grants {action} on {kind} '{name}' to '{}'",
            who.principal
        ),
    };
    if as_json {
        let permission = match &grant {
            Some(Grant::Permission(p)) => Some(p.clone()),
            _ => None,
        };
        print_json(
            &json!({"allowed": grant.is_some(), "permission": permission, "explanation": verdict}),
        )?;
    } else {
        println!("{verdict}");
    }
    anyhow::ensure!(grant.is_some(), "permission denied");
    Ok(())
}

/// Prints a new token for `who` and the tokens-file entry that accepts it.
pub fn create_token(
    who: &PrincipalArgs,
    expires_in: Option<quiver_core::Period>,
    as_json: bool,
) -> Result<()> {
    let expires = expires_in
        .map(|p| {
            chrono::Duration::from_std(p.0)
                .map(|d| chrono::Utc::now() + d)
                .context("--expires-in is too long")
        })
        .transpose()?;
    let (token, entry) = quiver_ops::auth::new_token(&who.principal(), expires);
    if as_json {
        println!("{}", json!({"token": token, "entry": entry}));
        return Ok(());
    }
    println!("token: {token}\n\nAdd to the tokens file (under `tokens:`):");
    println!(
        "  - principal: {}\n    sha256: {}",
        entry.principal, entry.sha256
    );
    println!(
        "    roles: {:?}\n    groups: {:?}",
        entry.roles, entry.groups
    );
    if let Some(at) = entry.expires {
        println!("    expires: {}", at.to_rfc3339());
    }
    Ok(())
}
