//! Station secrets: generated at random, kept only as Argon2id hashes (PHC
//! strings, in the station registry), checked in constant time by the
//! hash library. A verification costs tens of milliseconds of CPU on
//! purpose; callers cache what they verified and bound how many run.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("not an Argon2 hash in PHC form ($argon2id$v=19$...): {0}")]
    BadHash(String),
    #[error("hashing failed: {0}")]
    Hashing(String),
}

/// A new secret: 24 random bytes as 48 hex digits (what a station's
/// logger is configured with).
pub fn generate() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Argon2id hash of `secret`, with a random salt.
pub fn hash(secret: &str) -> Result<String, SecretError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| SecretError::Hashing(e.to_string()))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SecretError::Hashing(e.to_string()))
}

/// Whether `hash` is a hash this module can check.
pub fn check_hash(hash: &str) -> Result<(), SecretError> {
    let parsed = PasswordHash::new(hash).map_err(|e| SecretError::BadHash(e.to_string()))?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(SecretError::BadHash(format!(
            "algorithm {}",
            parsed.algorithm
        )));
    }
    Ok(())
}

/// Whether `secret` is the one `hash` was made from.
pub fn verify(hash: &str, secret: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_secret_only() {
        let s = generate();
        assert_eq!(s.len(), 48);
        let h = hash(&s).expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains(&s));
        check_hash(&h).expect("valid hash");
        assert!(verify(&h, &s));
        assert!(!verify(&h, "wrong"));
        assert!(!verify("not a hash", &s));
        assert!(check_hash("plaintext").is_err());
        assert_ne!(hash(&s).expect("hash"), h, "salted");
    }
}
