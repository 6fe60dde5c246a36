//! Who a caller is: the bearer token of a request, checked against the repository's
//! authenticator (`server.auth` in `quiver.yaml`).

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use quiver_registry::{AuthConfig, TokenEntry};

use crate::error::{OpsError, Result};

/// A caller the server has verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Its name (a token's principal).
    pub name: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// Its groups.
    pub groups: Vec<String>,
}

impl Principal {
    /// The caller of a server without authentication.
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            roles: Vec::new(),
            groups: Vec::new(),
        }
    }
}

/// How requests are authenticated.
#[derive(Debug, Default)]
pub enum Authenticator {
    /// Every caller is [`Principal::anonymous`].
    #[default]
    None,
    /// Bearer tokens, by the hex SHA-256 of the token.
    Tokens(HashMap<String, TokenEntry>),
}

/// The lowercase hex SHA-256 of a token: what a tokens file holds.
pub fn token_hash(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unauthenticated(message: &str) -> OpsError {
    OpsError::Unauthenticated(message.to_owned())
}

impl Authenticator {
    /// The authenticator `config` declares; paths are relative to `repo`.
    pub fn from_config(repo: &Path, config: Option<&AuthConfig>) -> Result<Self> {
        match config {
            None | Some(AuthConfig::None) => Ok(Self::None),
            Some(AuthConfig::Token { tokens_file }) => {
                let tokens = quiver_registry::load_tokens(&repo.join(tokens_file))?;
                Ok(Self::Tokens(
                    tokens
                        .into_iter()
                        .map(|t| (t.sha256.to_ascii_lowercase(), t))
                        .collect(),
                ))
            }
        }
    }

    /// Whether requests must carry credentials.
    pub fn is_required(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// The principal of a request's `authorization` header value at time `now`. The error
    /// says what is wrong with the credentials, never what a valid token would be.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Principal> {
        let tokens = match self {
            Self::None => return Ok(Principal::anonymous()),
            Self::Tokens(tokens) => tokens,
        };
        let header = authorization.ok_or_else(|| {
            unauthenticated("no credentials: send 'authorization: Bearer <token>'")
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthenticated("malformed credentials: expected 'Bearer <token>'"))?;
        let entry = tokens
            .get(&token_hash(token))
            .ok_or_else(|| unauthenticated("invalid token"))?;
        if entry.expires.is_some_and(|at| at <= now) {
            return Err(unauthenticated("the token has expired"));
        }
        Ok(Principal {
            name: entry.principal.clone(),
            roles: entry.roles.clone(),
            groups: entry.groups.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_hash_and_expiry() {
        let entry = |principal: &str, token: &str, expires: Option<&str>| TokenEntry {
            principal: principal.into(),
            sha256: token_hash(token),
            roles: vec!["reader".into()],
            groups: Vec::new(),
            expires: expires.map(|e| e.parse().unwrap()),
        };
        let auth = Authenticator::Tokens(
            [
                entry("alice", "secret-a", None),
                entry("bob", "secret-b", Some("2026-01-01T00:00:00Z")),
            ]
            .into_iter()
            .map(|t| (t.sha256.clone(), t))
            .collect(),
        );
        let now: DateTime<Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
        let alice = auth.authenticate(Some("Bearer secret-a"), now).unwrap();
        assert_eq!((alice.name.as_str(), alice.roles.len()), ("alice", 1));
        for (header, needle) in [
            (None, "no credentials"),
            (Some("secret-a"), "malformed"),
            (Some("Bearer "), "malformed"),
            (Some("Bearer secret-x"), "invalid token"),
            (Some("Bearer secret-b"), "expired"),
        ] {
            let e = auth.authenticate(header, now).unwrap_err();
            assert!(e.to_string().contains(needle), "{header:?}: {e}");
            assert_eq!(
                quiver_core::HasKind::kind(&e),
                quiver_core::ErrorKind::Unauthenticated
            );
        }
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
