//! People's access: bearer tokens with a role and an expiry, kept as
//! SHA-256 digests (`access_tokens`). Every gRPC service checks a call's
//! token here and attributes what the call does to the token's identity,
//! never to a name typed into a request. With an `[oidc]` issuer
//! configured, a JWT from the operator's identity provider is accepted too
//! (`quantrac_plumbing::oidc`): its identity claim names the person, its
//! roles map to one of ours.

use chrono::{DateTime, Utc};
use quantrac_plumbing::oidc::Verifier;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::DbError;

/// What a person may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read series, aggregates, compliance, alerts.
    Analyst,
    /// And acknowledge and resolve alerts, and invalidate readings.
    Officer,
    /// And everything else (tokens, registry).
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Analyst => "analyst",
            Role::Officer => "officer",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = AccessError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "analyst" => Ok(Role::Analyst),
            "officer" => Ok(Role::Officer),
            "admin" => Ok(Role::Admin),
            other => Err(AccessError::UnknownRole(other.to_string())),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who made a call, from their token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
    /// The token's public prefix, for the logs.
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("no bearer token")]
    Missing,
    #[error("the token is not one this server issued")]
    Unknown,
    #[error("token {prefix} expired at {at}")]
    Expired { prefix: String, at: DateTime<Utc> },
    #[error("token {prefix} was revoked at {at}")]
    Revoked { prefix: String, at: DateTime<Utc> },
    #[error("{identity} has role {has}; this needs {needs}")]
    Forbidden {
        identity: String,
        has: Role,
        needs: Role,
    },
    #[error("unknown role {0:?}: analyst, officer or admin")]
    UnknownRole(String),
    #[error("identity must not be empty")]
    EmptyIdentity,
    #[error("OIDC token refused: {0}")]
    Oidc(#[from] quantrac_plumbing::oidc::OidcError),
    #[error("{identity}'s token grants none of the configured roles")]
    NoRole { identity: String },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl AccessError {
    /// Who a refusal is about, as far as it is known (never a secret).
    pub fn actor(&self) -> String {
        match self {
            AccessError::Forbidden { identity, .. } | AccessError::NoRole { identity } => {
                identity.clone()
            }
            AccessError::Expired { prefix, .. } | AccessError::Revoked { prefix, .. } => {
                prefix.clone()
            }
            _ => "anonymous".into(),
        }
    }

    /// A short label for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AccessError::Missing => "missing",
            AccessError::Unknown => "unknown",
            AccessError::Expired { .. } => "expired",
            AccessError::Revoked { .. } => "revoked",
            AccessError::Forbidden { .. } | AccessError::NoRole { .. } => "forbidden",
            AccessError::Oidc(e) => e.reason(),
            AccessError::Db(_) => "database",
            AccessError::UnknownRole(_) | AccessError::EmptyIdentity => "invalid",
        }
    }
}

/// The token of an `authorization` header's value `Bearer <token>`.
pub fn bearer_token(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl From<tokio_postgres::Error> for AccessError {
    fn from(e: tokio_postgres::Error) -> Self {
        AccessError::Db(DbError::Postgres(e))
    }
}

const TOKEN_PREFIX: &str = "qtk_";
/// Characters of a token shown in listings: "qtk_" and 8 hex digits.
const SHOWN: usize = TOKEN_PREFIX.len() + 8;

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A token issued: `secret` is shown once and never stored.
#[derive(Debug)]
pub struct Issued {
    pub secret: String,
    pub prefix: String,
    pub expires_at: DateTime<Utc>,
}

/// Issues a token for `identity` with `role`, valid until `expires_at`.
pub async fn issue(
    client: &Client,
    identity: &str,
    role: Role,
    expires_at: DateTime<Utc>,
) -> Result<Issued, AccessError> {
    let identity = identity.trim();
    if identity.is_empty() {
        return Err(AccessError::EmptyIdentity);
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let secret = format!("{TOKEN_PREFIX}{hex}");
    let prefix = secret[..SHOWN].to_string();
    client
        .execute(
            "INSERT INTO access_tokens (prefix, digest, identity, role, expires_at) VALUES ($1, $2, $3, $4, $5)",
            &[&prefix, &digest(&secret), &identity, &role.as_str(), &expires_at],
        )
        .await?;
    Ok(Issued {
        secret,
        prefix,
        expires_at,
    })
}

/// Revokes the token named by its prefix; returns whether one was revoked.
pub async fn revoke(client: &Client, prefix: &str) -> Result<bool, AccessError> {
    let n = client
        .execute(
            "UPDATE access_tokens SET revoked_at = now() WHERE prefix = $1 AND revoked_at IS NULL",
            &[&prefix],
        )
        .await?;
    Ok(n == 1)
}

/// A token as listed (never its secret).
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub prefix: String,
    pub identity: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn list(client: &Client) -> Result<Vec<TokenInfo>, AccessError> {
    let rows = client
        .query(
            "SELECT prefix, identity, role, created_at, expires_at, revoked_at FROM access_tokens ORDER BY created_at",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TokenInfo {
            prefix: r.get(0),
            identity: r.get(1),
            role: r.get(2),
            created_at: r.get(3),
            expires_at: r.get(4),
            revoked_at: r.get(5),
        })
        .collect())
}

/// The identity a token stands for, if it is known, unexpired and not
/// revoked, and its role includes `needs`.
pub async fn authorize(
    client: &Client,
    token: Option<&str>,
    needs: Role,
    now: DateTime<Utc>,
) -> Result<Identity, AccessError> {
    authorize_with(client, None, token, needs, now).await
}

/// As [`authorize`], and a JWT is checked against `oidc`'s issuer when one
/// is configured. A JWT's person is named `oidc:<identity claim>` in the
/// audit log, so that it can never pass for a quantrac token's identity.
pub async fn authorize_with(
    client: &Client,
    oidc: Option<&Verifier>,
    token: Option<&str>,
    needs: Role,
    now: DateTime<Utc>,
) -> Result<Identity, AccessError> {
    let token = token.map(str::trim).filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(AccessError::Missing);
    };
    if let Some(oidc) = oidc
        && Verifier::looks_like_jwt(token)
    {
        let verified = oidc.verify(token, now).await?;
        let name = format!("oidc:{}", verified.subject);
        let roles = &oidc.config().roles;
        let role = verified
            .roles
            .iter()
            .filter_map(|r| roles.get(r)?.parse::<Role>().ok())
            .max()
            .ok_or_else(|| AccessError::NoRole {
                identity: name.clone(),
            })?;
        if role < needs {
            return Err(AccessError::Forbidden {
                identity: name,
                has: role,
                needs,
            });
        }
        return Ok(Identity {
            name,
            role,
            token: "jwt".into(),
        });
    }
    let row = client
        .query_opt(
            "SELECT prefix, identity, role, expires_at, revoked_at FROM access_tokens WHERE digest = $1",
            &[&digest(token)],
        )
        .await?;
    let Some(row) = row else {
        return Err(AccessError::Unknown);
    };
    let prefix: String = row.get(0);
    let expires_at: DateTime<Utc> = row.get(3);
    if let Some(at) = row.get::<_, Option<DateTime<Utc>>>(4) {
        return Err(AccessError::Revoked { prefix, at });
    }
    if expires_at <= now {
        return Err(AccessError::Expired {
            prefix,
            at: expires_at,
        });
    }
    let name: String = row.get(1);
    let role: Role = row.get::<_, String>(2).parse()?;
    if role < needs {
        return Err(AccessError::Forbidden {
            identity: name,
            has: role,
            needs,
        });
    }
    Ok(Identity {
        name,
        role,
        token: prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_below() {
        assert!(Role::Admin > Role::Officer && Role::Officer > Role::Analyst);
        for r in [Role::Analyst, Role::Officer, Role::Admin] {
            assert_eq!(r.as_str().parse::<Role>().ok(), Some(r));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer_token(None), None);
        assert_eq!(bearer_token(Some("Bearer qtk_abc")), Some("qtk_abc"));
        assert_eq!(bearer_token(Some("bearer  qtk_abc ")), Some("qtk_abc"));
        assert_eq!(bearer_token(Some("Basic qtk_abc")), None);
        assert_eq!(bearer_token(Some("qtk_abc")), None);
    }

    #[test]
    fn digest_differs_per_token() {
        assert_ne!(digest("qtk_a"), digest("qtk_b"));
        assert_eq!(digest("qtk_a").len(), 32);
    }
}
