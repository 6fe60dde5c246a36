//! Who a caller is and what it may do: the bearer token of a request, checked against the
//! repository's authenticator (`server.auth` in `quiver.yaml`), and the decision of the
//! project's permissions ([`Authorizer`]) on every action.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use quiver_core::{Action, Definitions, ObjectKind, Permission, Tags};
use quiver_registry::{AuthConfig, TokenEntry};

use crate::error::{OpsError, Result};
use crate::oidc::{OidcVerifier, TokenError};

/// Who asks for an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The repository's own processes (the CLI on the repository, the schedule) and callers
    /// of a server without authentication: every action is allowed (Feast's `no_auth`).
    Trusted,
    /// A verified principal: the project's permissions decide.
    Principal(Principal),
}

impl Caller {
    /// The name the audit log records.
    pub fn name(&self) -> &str {
        match self {
            Self::Trusted => "trusted",
            Self::Principal(p) => &p.name,
        }
    }
}

/// Why an action was allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// The caller is trusted.
    Trusted,
    /// The project has no permission: every authenticated principal may do everything.
    NoPermissions,
    /// This permission grants it.
    Permission(String),
}

/// A project's permissions, compiled for one snapshot: which permissions select each
/// existing object is worked out once, so deciding is a lookup and a check of roles.
#[derive(Debug, Default)]
pub struct Authorizer {
    permissions: Vec<(Permission, Vec<regex::Regex>)>,
    /// kind → name → indexes of the permissions selecting that object.
    selecting: HashMap<ObjectKind, HashMap<String, Vec<usize>>>,
}

impl Authorizer {
    /// The permissions of `defs`, with the objects each selects.
    pub fn new(defs: &Definitions) -> Self {
        let permissions: Vec<(Permission, Vec<regex::Regex>)> = defs
            .permissions
            .values()
            .filter_map(|p| {
                // Validation compiled every pattern; one that does not compile selects
                // nothing.
                let patterns = p
                    .name_patterns
                    .iter()
                    .map(|n| regex::Regex::new(&format!("^(?:{n})$")).ok())
                    .collect::<Option<Vec<_>>>()?;
                Some((p.clone(), patterns))
            })
            .collect();
        let mut authorizer = Self {
            permissions,
            selecting: HashMap::new(),
        };
        let names = |kind: ObjectKind| -> Vec<&String> {
            match kind {
                ObjectKind::Entity => defs.entities.keys().collect(),
                ObjectKind::Source => defs.sources.keys().collect(),
                ObjectKind::FeatureView => defs.feature_views.keys().collect(),
                ObjectKind::FeatureService => defs.feature_services.keys().collect(),
                ObjectKind::Permission => defs.permissions.keys().collect(),
            }
        };
        for kind in ObjectKind::ALL {
            for name in names(kind) {
                let selecting = authorizer.selecting_of(kind, name, defs.tags_of(kind, name));
                if !selecting.is_empty() {
                    authorizer
                        .selecting
                        .entry(kind)
                        .or_default()
                        .insert(name.clone(), selecting);
                }
            }
        }
        authorizer
    }

    /// The permissions selecting an object: its kind covered, its whole name matching a
    /// pattern (if any), every required tag carried with its value.
    fn selecting_of(&self, kind: ObjectKind, name: &str, tags: Option<&Tags>) -> Vec<usize> {
        self.permissions
            .iter()
            .enumerate()
            .filter(|(_, (p, patterns))| {
                (p.types.is_empty() || p.types.contains(&kind))
                    && (patterns.is_empty() || patterns.iter().any(|r| r.is_match(name)))
                    && p.required_tags
                        .iter()
                        .all(|(k, v)| tags.and_then(|t| t.get(k)) == Some(v))
            })
            .map(|(i, _)| i)
            .collect()
    }

    fn grant(&self, principal: &Principal, action: Action, selecting: &[usize]) -> Option<Grant> {
        selecting
            .iter()
            .map(|&i| &self.permissions[i].0)
            .find(|p| {
                p.actions.contains(&action) && p.policy.admits(&principal.roles, &principal.groups)
            })
            .map(|p| Grant::Permission(p.name.clone()))
    }

    /// Whether `caller` may do `action` on the existing object `name` of `kind`, and why;
    /// `None` when nothing grants it.
    pub fn decide(
        &self,
        caller: &Caller,
        action: Action,
        kind: ObjectKind,
        name: &str,
    ) -> Option<Grant> {
        let principal = match self.unconditional(caller) {
            Ok(p) => p,
            Err(grant) => return Some(grant),
        };
        let selecting = self.selecting.get(&kind)?.get(name)?;
        self.grant(principal, action, selecting)
    }

    /// The principal whose grants decide, or the grant that needs none (a trusted caller, a
    /// project without permissions).
    fn unconditional<'c>(&self, caller: &'c Caller) -> std::result::Result<&'c Principal, Grant> {
        match caller {
            Caller::Trusted => Err(Grant::Trusted),
            Caller::Principal(_) if self.permissions.is_empty() => Err(Grant::NoPermissions),
            Caller::Principal(p) => Ok(p),
        }
    }

    /// [`Authorizer::decide`] for an object that may not exist yet (one an apply creates),
    /// with the tags it will have.
    pub fn decide_new(
        &self,
        caller: &Caller,
        action: Action,
        kind: ObjectKind,
        name: &str,
        tags: Option<&Tags>,
    ) -> Option<Grant> {
        let principal = match self.unconditional(caller) {
            Ok(p) => p,
            Err(grant) => return Some(grant),
        };
        self.grant(principal, action, &self.selecting_of(kind, name, tags))
    }

    /// Checks `action` on every object; the error names the first the caller may not touch.
    pub fn check(
        &self,
        caller: &Caller,
        action: Action,
        objects: &[(ObjectKind, &str)],
    ) -> Result<()> {
        for &(kind, name) in objects {
            if self.decide(caller, action, kind, name).is_none() {
                return Err(OpsError::PermissionDenied(format!(
                    "'{}' may not {action} {kind} '{name}'",
                    caller.name()
                )));
            }
        }
        Ok(())
    }
}

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
    /// JWTs of an OpenID Connect provider.
    Oidc(Arc<OidcVerifier>),
}

/// A new random token for `principal` (256 bits, `qv_` and hex) and the tokens-file entry
/// that accepts it until `expires`.
pub fn new_token(principal: &Principal, expires: Option<DateTime<Utc>>) -> (String, TokenEntry) {
    use rand::RngCore;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token: String = std::iter::once("qv_".to_owned())
        .chain(secret.iter().map(|b| format!("{b:02x}")))
        .collect();
    let entry = TokenEntry {
        principal: principal.name.clone(),
        sha256: token_hash(&token),
        roles: principal.roles.clone(),
        groups: principal.groups.clone(),
        expires,
    };
    (token, entry)
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

/// The token of an `authorization: Bearer <token>` header.
fn bearer(authorization: Option<&str>) -> Result<&str> {
    let header = authorization
        .ok_or_else(|| unauthenticated("no credentials: send 'authorization: Bearer <token>'"))?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthenticated("malformed credentials: expected 'Bearer <token>'"))
}

impl Authenticator {
    /// The authenticator `config` declares; paths are relative to `repo`.
    pub fn from_config(repo: &Path, config: Option<&AuthConfig>) -> Result<Self> {
        match config {
            None | Some(AuthConfig::None) => Ok(Self::None),
            Some(AuthConfig::Oidc(config)) => {
                let verifier = OidcVerifier::new(config.clone());
                if let Some(file) = &config.jwks_file {
                    let path = repo.join(file);
                    let jwks = std::fs::read(&path).map_err(|e| {
                        OpsError::FailedPrecondition(format!("JWKS file {}: {e}", path.display()))
                    })?;
                    verifier.set_keys(&jwks)?;
                } else if config.auth_discovery_url.is_none() {
                    return Err(OpsError::FailedPrecondition(
                        "server.auth (oidc) needs auth_discovery_url or jwks_file".into(),
                    ));
                }
                Ok(Self::Oidc(Arc::new(verifier)))
            }
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

    /// The OpenID Connect verifier, whose keys someone must fetch.
    pub fn oidc(&self) -> Option<&Arc<OidcVerifier>> {
        match self {
            Self::Oidc(v) => Some(v),
            _ => None,
        }
    }

    /// Whether a request's token is a JWT signed by a key the verifier does not have: the
    /// keys should be fetched again (the provider rotated them).
    pub fn names_unknown_key(&self, authorization: Option<&str>, now: DateTime<Utc>) -> bool {
        match (self, bearer(authorization)) {
            (Self::Oidc(v), Ok(token)) => {
                matches!(
                    v.verify(token, now.timestamp()),
                    Err(TokenError::UnknownKey(_))
                )
            }
            _ => false,
        }
    }

    /// The principal of a request's `authorization` header value at time `now`. The error
    /// says what is wrong with the credentials, never what a valid token would be.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Principal> {
        if matches!(self, Self::None) {
            return Ok(Principal::anonymous());
        }
        let token = bearer(authorization)?;
        let tokens = match self {
            Self::None => return Ok(Principal::anonymous()),
            Self::Oidc(verifier) => {
                return verifier
                    .verify(token, now.timestamp())
                    .map_err(|e| match e {
                        TokenError::UnknownKey(kid) => OpsError::Unauthenticated(format!(
                            "the token is signed by an unknown key '{kid}'"
                        )),
                        TokenError::Invalid(m) => OpsError::Unauthenticated(m),
                    });
            }
            Self::Tokens(tokens) => tokens,
        };
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

    fn principal(roles: &[&str], groups: &[&str]) -> Caller {
        Caller::Principal(Principal {
            name: "p".into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        })
    }

    #[test]
    fn any_matching_grant_allows_and_the_rest_is_denied() {
        let mut defs: Definitions = serde_json::from_value(serde_json::json!({
            "project": "p",
            "feature_views": {},
            "feature_services": {
                "risk_model": {"name": "risk_model", "features": [], "tags": {"team": "risk"}},
                "ads_model": {"name": "ads_model", "features": [], "tags": {"team": "ads"}},
                "driver_ranking": {"name": "driver_ranking", "features": []}
            }
        }))
        .unwrap();
        let allow = |name: &str,
                     patterns: &[&str],
                     tags: &[(&str, &str)],
                     actions: &[Action],
                     policy: Policy| Permission {
            name: name.into(),
            types: vec![ObjectKind::FeatureService],
            name_patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
            required_tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            actions: actions.to_vec(),
            policy,
            tags: Tags::new(),
        };
        use quiver_core::Policy;
        let s = ObjectKind::FeatureService;
        // No permission: every authenticated principal may do everything.
        let none = Authorizer::new(&defs);
        assert_eq!(
            none.decide(&principal(&[], &[]), Action::Delete, s, "risk_model"),
            Some(Grant::NoPermissions)
        );
        defs.permissions.insert(
            "risk_readers".into(),
            allow(
                "risk_readers",
                &[],
                &[("team", "risk")],
                &[Action::ReadOnline],
                Policy::Roles(vec!["reader".into()]),
            ),
        );
        defs.permissions.insert(
            "drivers".into(),
            allow(
                "drivers",
                &["driver_.*"],
                &[],
                &Action::ALL,
                Policy::Groups(vec!["ops".into()]),
            ),
        );
        let auth = Authorizer::new(&defs);
        let reader = principal(&["reader"], &[]);
        assert_eq!(
            auth.decide(&reader, Action::ReadOnline, s, "risk_model"),
            Some(Grant::Permission("risk_readers".into()))
        );
        // Wrong action, untagged object, wrong role: denied.
        assert_eq!(auth.decide(&reader, Action::Update, s, "risk_model"), None);
        assert_eq!(
            auth.decide(&reader, Action::ReadOnline, s, "ads_model"),
            None
        );
        assert_eq!(
            auth.decide(
                &principal(&["writer"], &[]),
                Action::ReadOnline,
                s,
                "risk_model"
            ),
            None
        );
        // Patterns match whole names; groups are a policy of their own.
        let ops = principal(&[], &["ops"]);
        assert!(
            auth.decide(&ops, Action::Delete, s, "driver_ranking")
                .is_some()
        );
        assert!(auth.decide(&ops, Action::Delete, s, "risk_model").is_none());
        // Other kinds are not covered by either: denied, once permissions exist.
        assert!(
            auth.decide(
                &ops,
                Action::Describe,
                ObjectKind::FeatureView,
                "driver_ranking"
            )
            .is_none()
        );
        assert_eq!(
            auth.decide(&Caller::Trusted, Action::Delete, s, "x"),
            Some(Grant::Trusted)
        );
        let e = auth
            .check(
                &reader,
                Action::ReadOnline,
                &[(s, "risk_model"), (s, "ads_model")],
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("may not read_online feature service 'ads_model'"),
            "{e}"
        );
    }

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
