//! OpenID Connect bearer tokens: JWTs signed by the identity provider, checked against its
//! JSON Web Key Set (RS256, ES256), issuer, audience, expiry and clock skew. Roles and groups
//! are read where Feast reads them (`resource_access.<client_id>.roles`, `roles`, `groups`),
//! so the same tokens work against Feast and Quiver.
//!
//! The keys are given to the verifier ([`OidcVerifier::set_keys`]) by whoever fetches them:
//! the server, from the discovery document's `jwks_uri` (or a file), again when a token names
//! a key it does not know (key rotation).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use quiver_registry::OidcConfig;
use serde_json::Value;

use crate::auth::Principal;
use crate::error::{OpsError, Result};

/// A verification key of the provider.
#[derive(Debug, Clone)]
enum Key {
    /// RSA modulus and exponent (big-endian).
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An uncompressed P-256 point.
    P256(Vec<u8>),
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Signed with a key the verifier does not have (yet): fetch the keys again.
    UnknownKey(String),
    /// Anything else: malformed, bad signature, expired, wrong issuer or audience.
    Invalid(String),
}

/// Verified tokens remembered (by hash) so a client reusing its token costs one lookup, not
/// a signature check; emptied when full and whenever the keys change.
const MAX_VERIFIED: usize = 10_000;

/// Checks the provider's tokens.
#[derive(Debug)]
pub struct OidcVerifier {
    config: OidcConfig,
    /// The issuer tokens must name: the setting, else the discovery document's.
    issuer: RwLock<Option<String>>,
    keys: RwLock<HashMap<String, Key>>,
    /// SHA-256 of a verified token → its principal and expiry (seconds).
    verified: Mutex<HashMap<Vec<u8>, (Principal, i64)>>,
}

fn decode(part: &str, what: &str) -> std::result::Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| TokenError::Invalid(format!("malformed token: its {what} is not base64url")))
}

fn invalid(message: impl Into<String>) -> TokenError {
    TokenError::Invalid(message.into())
}

/// The strings of a claim that is a string or a list of strings.
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

impl OidcVerifier {
    /// A verifier for `config`, with no keys yet.
    pub fn new(config: OidcConfig) -> Self {
        Self {
            issuer: RwLock::new(config.issuer.clone()),
            config,
            keys: RwLock::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// The issuer the discovery document names, used when none is configured.
    pub fn set_discovered_issuer(&self, issuer: &str) {
        if let Ok(mut current) = self.issuer.write()
            && self.config.issuer.is_none()
        {
            *current = Some(issuer.to_owned());
        }
    }

    /// Replaces the keys with those of a JWKS document (`{"keys": [...]}`); returns how
    /// many it holds. Keys of other types are skipped.
    pub fn set_keys(&self, jwks: &[u8]) -> Result<usize> {
        let document: Value = serde_json::from_slice(jwks)
            .map_err(|e| OpsError::Internal(format!("the JWKS is not JSON: {e}")))?;
        let mut keys = HashMap::new();
        for jwk in document["keys"].as_array().into_iter().flatten() {
            let field = |name: &str| {
                jwk[name]
                    .as_str()
                    .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok())
            };
            let kid = jwk["kid"].as_str().unwrap_or("").to_owned();
            let key = match (jwk["kty"].as_str(), jwk["crv"].as_str()) {
                (Some("RSA"), _) => match (field("n"), field("e")) {
                    (Some(n), Some(e)) => Key::Rsa { n, e },
                    _ => continue,
                },
                (Some("EC"), Some("P-256")) => match (field("x"), field("y")) {
                    (Some(x), Some(y)) => Key::P256([&[4u8][..], &x, &y].concat()),
                    _ => continue,
                },
                _ => continue,
            };
            keys.insert(kid, key);
        }
        let count = keys.len();
        if let Ok(mut current) = self.keys.write() {
            *current = keys;
        }
        if let Ok(mut verified) = self.verified.lock() {
            verified.clear();
        }
        Ok(count)
    }

    /// The principal a token stands for, at `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: i64) -> std::result::Result<Principal, TokenError> {
        let skew = i64::try_from(self.config.clock_skew.0.as_secs()).unwrap_or(i64::MAX);
        let hash = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .to_vec();
        if let Some((principal, exp)) = self
            .verified
            .lock()
            .ok()
            .and_then(|v| v.get(&hash).cloned())
            && exp.saturating_add(skew) > now
        {
            return Ok(principal);
        }
        let (principal, exp) = self.check(token, now, skew)?;
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
            verified.insert(hash, (principal.clone(), exp));
        }
        Ok(principal)
    }

    /// Checks a token's signature and claims: its principal and expiry.
    fn check(
        &self,
        token: &str,
        now: i64,
        skew: i64,
    ) -> std::result::Result<(Principal, i64), TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("malformed token: not a JWT"));
        };
        let header: Value = serde_json::from_slice(&decode(header, "header")?)
            .map_err(|_| invalid("malformed token: its header is not JSON"))?;
        let signature = decode(signature, "signature")?;
        let kid = header["kid"].as_str().unwrap_or("").to_owned();
        let key = self
            .keys
            .read()
            .ok()
            .and_then(|k| k.get(&kid).cloned())
            .ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
        let signed = &token[..header_and_payload_len(token)];
        let verified = match (header["alg"].as_str(), &key) {
            (Some("RS256"), Key::Rsa { n, e }) => ring::signature::RsaPublicKeyComponents { n, e }
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    signed.as_bytes(),
                    &signature,
                )
                .is_ok(),
            (Some("ES256"), Key::P256(point)) => ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                point,
            )
            .verify(signed.as_bytes(), &signature)
            .is_ok(),
            (alg, _) => {
                return Err(invalid(format!(
                    "token signed with {} by key '{kid}': only RS256 and ES256 are accepted",
                    alg.unwrap_or("no algorithm")
                )));
            }
        };
        if !verified {
            return Err(invalid("bad token signature"));
        }
        let claims: Value = serde_json::from_slice(&decode(payload, "payload")?)
            .map_err(|_| invalid("malformed token: its payload is not JSON"))?;
        let exp = claims["exp"]
            .as_i64()
            .ok_or_else(|| invalid("the token has no expiry ('exp')"))?;
        if exp.saturating_add(skew) <= now {
            return Err(invalid("the token has expired"));
        }
        if claims["nbf"]
            .as_i64()
            .is_some_and(|nbf| nbf.saturating_sub(skew) > now)
        {
            return Err(invalid("the token is not valid yet ('nbf')"));
        }
        let issuer = self.issuer.read().ok().and_then(|i| i.clone());
        if let Some(issuer) = issuer
            && claims["iss"].as_str() != Some(issuer.as_str())
        {
            return Err(invalid(format!("the token's issuer is not '{issuer}'")));
        }
        if let Some(audience) = &self.config.audience
            && !strings(claims.get("aud")).contains(audience)
        {
            return Err(invalid(format!(
                "the token is not for audience '{audience}'"
            )));
        }
        let name = ["preferred_username", "upn", "azp", "appid", "sub"]
            .iter()
            .find_map(|c| claims[*c].as_str())
            .ok_or_else(|| {
                invalid("the token names no user (preferred_username, upn, azp, appid or sub)")
            })?
            .to_owned();
        let mut roles = self
            .config
            .client_id
            .as_ref()
            .map(|client| {
                strings(
                    claims["resource_access"]
                        .get(client)
                        .and_then(|c| c.get("roles")),
                )
            })
            .unwrap_or_default();
        for role in strings(claims.get("roles")) {
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        let principal = Principal {
            name,
            roles,
            groups: strings(claims.get("groups")),
        };
        Ok((principal, exp))
    }
}

/// The length of `header.payload`, the signed part of a JWT.
fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_and_unknown_key_tokens_are_told_apart() {
        let verifier = OidcVerifier::new(OidcConfig::default());
        verifier
            .set_keys(br#"{"keys": [{"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"}]}"#)
            .unwrap();
        assert!(matches!(
            verifier.verify("abc", 0),
            Err(TokenError::Invalid(_))
        ));
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg": "RS256", "kid": "k9"}"#);
        let token = format!("{header}.e30.c2ln");
        assert_eq!(
            verifier.verify(&token, 0),
            Err(TokenError::UnknownKey("k9".into()))
        );
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg": "RS256", "kid": "k1"}"#);
        let token = format!("{header}.e30.c2ln");
        assert_eq!(
            verifier.verify(&token, 0),
            Err(TokenError::Invalid("bad token signature".into()))
        );
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg": "none", "kid": "k1"}"#);
        assert!(matches!(
            verifier.verify(&format!("{header}.e30.c2ln"), 0),
            Err(TokenError::Invalid(m)) if m.contains("only RS256 and ES256")
        ));
    }
}
