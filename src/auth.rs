//! Token authentication: HS256 JWTs whose `sub` is the user name.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;

use crate::domain::UserName;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// Checks tokens against the node's secret.
pub struct Auth {
    key: DecodingKey,
    validation: Validation,
}

/// Who a valid token names, and until when.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The `sub` claim.
    pub user: UserName,
    /// The `exp` claim, when present: the connection closes with 1008 then.
    pub expires: Option<SystemTime>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token was given.
    #[error("a token is required")]
    Missing,
    /// Bad signature, expired, not yet valid, or malformed.
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// `sub` is not a valid user name.
    #[error("the token's sub is not a valid user name")]
    Subject,
    /// An admin call without the admin token.
    #[error("the admin token is required")]
    Admin,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    exp: Option<u64>,
}

impl Auth {
    /// Validates tokens signed with `secret`.
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["sub"]);
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// The identity in `token`, if it is valid now.
    pub fn verify(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let claims = decode::<Claims>(token, &self.key, &self.validation)?.claims;
        let user = UserName::parse(&claims.sub).map_err(|_| AuthError::Subject)?;
        Ok(Identity {
            user,
            // An `exp` past what `SystemTime` can hold (e.g. u64::MAX) is a
            // token that never expires in practice: no deadline, not a panic.
            expires: claims.exp.and_then(|exp| {
                UNIX_EPOCH.checked_add(Duration::from_secs(exp.saturating_add(LEEWAY_SECS)))
            }),
        })
    }
}
