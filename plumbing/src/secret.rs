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

/// PBKDF2 rounds of a Mosquitto password hash: the broker runs them at
/// every CONNECT (about 40 ms of one core here), so a reconnecting fleet
/// stays affordable while a stolen file stays expensive to attack.
pub const MOSQUITTO_ITERATIONS: u32 = 100_000;

/// `secret` hashed the way Mosquitto's password file keeps it (`$7$`:
/// PBKDF2-HMAC-SHA512, `$7$<rounds>$<base64 salt>$<base64 hash>`), so the
/// broker checks a station's MQTT password without ever seeing it stored.
pub fn mosquitto_hash(secret: &str) -> String {
    use base64::Engine;
    let mut salt = [0u8; 12];
    rand::rng().fill_bytes(&mut salt);
    let mut out = [0u8; 64];
    let rounds =
        std::num::NonZeroU32::new(MOSQUITTO_ITERATIONS).unwrap_or(std::num::NonZeroU32::MIN);
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        rounds,
        &salt,
        secret.as_bytes(),
        &mut out,
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "$7${}${}${}",
        MOSQUITTO_ITERATIONS,
        b64.encode(salt),
        b64.encode(out)
    )
}

/// Whether `hash` has the form of a Mosquitto `$7$` hash.
pub fn check_mosquitto_hash(hash: &str) -> Result<(), SecretError> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let parts: Vec<&str> = hash.split('$').collect();
    let ok = matches!(parts.as_slice(), ["", "7", rounds, salt, digest]
        if rounds.parse::<u32>().is_ok_and(|r| r > 0)
            && b64.decode(salt).is_ok_and(|s| !s.is_empty())
            && b64.decode(digest).is_ok_and(|d| d.len() == 64));
    if ok {
        Ok(())
    } else {
        Err(SecretError::BadHash(
            "expected a Mosquitto hash $7$<rounds>$<salt>$<hash> (quantrac station-secret makes one)".into(),
        ))
    }
}

/// Whether `secret` is the one the Mosquitto `$7$` `hash` was made from.
pub fn verify_mosquitto(hash: &str, secret: &str) -> bool {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let parts: Vec<&str> = hash.split('$').collect();
    let ["", "7", rounds, salt, digest] = parts.as_slice() else {
        return false;
    };
    let (Some(rounds), Ok(salt), Ok(digest)) = (
        rounds.parse().ok().and_then(std::num::NonZeroU32::new),
        b64.decode(salt),
        b64.decode(digest),
    ) else {
        return false;
    };
    ring::pbkdf2::verify(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        rounds,
        &salt,
        secret.as_bytes(),
        &digest,
    )
    .is_ok()
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

/// Checks secrets against Argon2 hashes in one memory area kept between
/// calls, as [`verify`] does: a verification at [`hash`]'s cost fills 19
/// MiB, and allocating that for each one left the allocator holding freed
/// areas (a fleet proving its secrets at once took ingest past 250 MiB).
/// One per thread that verifies.
#[derive(Default)]
pub struct Verifier {
    blocks: Vec<argon2::Block>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("kib", &self.blocks.len())
            .finish()
    }
}

/// The most memory a hash may ask a [`Verifier`] for (KiB): the registry
/// is the operator's, but a typo must not take the host's memory.
const MAX_VERIFY_KIB: usize = 256 * 1024;

impl Verifier {
    /// Whether `secret` is the one `hash` was made from.
    pub fn verify(&mut self, hash: &str, secret: &str) -> bool {
        self.check(hash, secret).unwrap_or(false)
    }

    fn check(&mut self, hash: &str, secret: &str) -> Option<bool> {
        let h = PasswordHash::new(hash).ok()?;
        let algorithm = argon2::Algorithm::try_from(h.algorithm).ok()?;
        let version = match h.version {
            Some(v) => argon2::Version::try_from(v).ok()?,
            None => argon2::Version::default(),
        };
        let params = argon2::Params::try_from(&h).ok()?;
        let expected = h.hash?;
        let mut salt = [0u8; 64];
        let salt = h.salt?.decode_b64(&mut salt).ok()?;
        let need = params.block_count();
        if need > MAX_VERIFY_KIB {
            return None;
        }
        if self.blocks.len() < need {
            self.blocks.resize(need, argon2::Block::default());
        }
        let mut out = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(
                secret.as_bytes(),
                salt,
                &mut out,
                &mut self.blocks[..need],
            )
            .ok()?;
        // Output's equality is constant-time.
        Some(argon2::password_hash::Output::new(&out).ok()? == expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_keeping_its_memory_agrees_with_verify() {
        let mut v = Verifier::default();
        let s = generate();
        let h = hash(&s).expect("hash");
        // A lighter hash (1 MiB, one pass) after the heavier one: the area
        // is reused, not resized.
        let light = "$argon2id$v=19$m=1024,t=1,p=1$cXVhbnRyYWMtZmF1bHRzIQ$JGMGOh8VVBecI+LC8tjZcIB9jI/pIOnqvqFsr3B2JSY";
        for _ in 0..2 {
            assert!(v.verify(&h, &s));
            assert!(!v.verify(&h, "wrong"));
            assert_eq!(
                v.verify(light, "faults-fleet-secret"),
                verify(light, "faults-fleet-secret")
            );
            assert!(v.verify(light, "faults-fleet-secret"));
            assert!(!v.verify(light, "other"));
        }
        assert!(!v.verify("not a hash", &s));
        assert_eq!(v.blocks.len(), 19 * 1024, "the default cost's area, kept");
        assert!(!v.verify("$argon2id$v=19$m=4194304,t=1,p=1$cXVhbnRyYWMtZmF1bHRzIQ$JGMGOh8VVBecI+LC8tjZcIB9jI/pIOnqvqFsr3B2JSY", "x"), "4 GiB refused");
    }

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

    #[test]
    fn mosquitto_hashes_match_what_mosquitto_passwd_writes() {
        // `mosquitto_passwd -b pw st01 s3cret-station` (Mosquitto 2.0.11).
        let theirs = "$7$101$M1jb/yhzG1VGS3Tl$KhMi64fDfZjsp4n2jDtmQ7qoQ3c6ToFIT8HEo77TQwflNmFA0HHU75s9YwK+Whc4ybqC4dJO8jwsPmlcFtUoQA==";
        check_mosquitto_hash(theirs).expect("their form");
        assert!(verify_mosquitto(theirs, "s3cret-station"));
        assert!(!verify_mosquitto(theirs, "s3cret-statio"));
        let ours = mosquitto_hash("s3cret-station");
        check_mosquitto_hash(&ours).expect("our form");
        assert!(ours.starts_with("$7$100000$"), "{ours}");
        assert!(verify_mosquitto(&ours, "s3cret-station"));
        assert!(!verify_mosquitto(&ours, "other"));
        assert!(check_mosquitto_hash("$argon2id$v=19$m=1,t=1,p=1$AAAA$BBBB").is_err());
    }
}
