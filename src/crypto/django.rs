//! Django's password hash formats, so that users and client secrets imported from a
//! django-oauth-toolkit database keep working as they are (`portcullis import dot`):
//! `pbkdf2_sha256$<iterations>$<salt>$<base64>`, `argon2$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>`
//! and `bcrypt_sha256$$2b$<cost>$…` (bcrypt over the hex SHA-256 of the password). Each is
//! verified in constant time; the caller replaces it with its native form after the first
//! success. Anything else (Django's `md5`, `sha1`, `crypt`, an unusable `!…`) never verifies.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The algorithms this module verifies, by the prefix Django writes.
const SUPPORTED: [&str; 3] = ["pbkdf2_sha256$", "argon2$", "bcrypt_sha256$"];

/// Most PBKDF2 iterations accepted: far above Django's (1,000,000 in 5.2), low enough that a
/// crafted hash cannot hold a hashing thread for minutes.
const MAX_PBKDF2_ITERATIONS: u32 = 20_000_000;

/// Whether `encoded` is in one of Django's formats this module verifies.
pub fn is_supported(encoded: &str) -> bool {
    SUPPORTED.iter().any(|p| encoded.starts_with(p))
}

/// The algorithm of a Django hash, for reports: what precedes its first `$` (`!` for an
/// unusable password).
pub fn algorithm(encoded: &str) -> &str {
    if encoded.starts_with('!') {
        return "!";
    }
    encoded.split('$').next().unwrap_or("")
}

/// Verifies `password` against a Django hash. Blocking and slow by design: run it on the
/// password-hashing threads.
pub fn verify(password: &[u8], encoded: &str) -> bool {
    if let Some(rest) = encoded.strip_prefix("pbkdf2_sha256$") {
        return verify_pbkdf2(password, rest);
    }
    if let Some(phc) = encoded.strip_prefix("argon2") {
        // Django writes the PHC string after its `argon2` prefix: `argon2$argon2id$v=19$…`.
        return phc.starts_with("$argon2") && super::verify_blocking(password, phc);
    }
    if let Some(bcrypt_hash) = encoded.strip_prefix("bcrypt_sha256$") {
        let hex: String = Sha256::digest(password)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        return bcrypt::verify(hex, bcrypt_hash).unwrap_or(false);
    }
    false
}

fn verify_pbkdf2(password: &[u8], rest: &str) -> bool {
    let mut parts = rest.splitn(3, '$');
    let (Some(iterations), Some(salt), Some(expected)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(iterations) = iterations.parse::<u32>() else {
        return false;
    };
    let Ok(expected) = STANDARD.decode(expected) else {
        return false;
    };
    if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS || expected.len() != 32 {
        return false;
    }
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt.as_bytes(), iterations, &mut out);
    bool::from(out.ct_eq(expected.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes made by Django 5.2's own hashers (tests/fixtures/dot/make_dot_fixture.py), each
    /// with the password it was made from.
    const CASES: &[(&str, &str)] = &[
        (
            "alice-dot-password",
            "pbkdf2_sha256$1000000$6eLKgCIVkPwrlq0xOLwsmY$mFJZdI86FJq5UYFRDklH/p+GUI0+3mQGYoxTsIYB6WQ=",
        ),
        (
            "bob-dot-password",
            "argon2$argon2id$v=19$m=102400,t=2,p=8$bkdaYmY3Y0dGMHNqckVnVFNoeEkyZg$Tf1++aIJBnylheLPZzOy9CZ01pmOgb/kSLf5SrdPofc",
        ),
        (
            "carol-dot-password",
            "bcrypt_sha256$$2b$12$CS79ztNr9uCgmxwbFxjL1eJY9H1wHn/UxRff.9Y6TyeesXyz9.shm",
        ),
    ];

    #[test]
    fn djangos_hashes_verify_with_their_password_only() {
        for (password, encoded) in CASES {
            assert!(is_supported(encoded), "{encoded}");
            assert!(verify(password.as_bytes(), encoded), "{encoded}");
            assert!(!verify(b"wrong", encoded), "{encoded}");
        }
        for unsupported in [
            "md5$P2NFYIBdPsFGmSQFhVqcsU$da7f66eb6c5274bbdc2d4ccbde3efd6b",
            "!LIHBJciZh69E3FWZJA4zt6Uam0DXWkydngHz8nCh",
            "pbkdf2_sha256$0$salt$AAAA",
            "pbkdf2_sha256$99999999999$salt$mFJZdI86FJq5UYFRDklH/p+GUI0+3mQGYoxTsIYB6WQ=",
            "pbkdf2_sha256$1000$salt$not base64",
            "argon2$not-phc",
            "",
        ] {
            assert!(!verify(b"anything", unsupported), "{unsupported}");
        }
        assert_eq!(algorithm(CASES[2].1), "bcrypt_sha256");
        assert_eq!(algorithm("!abc"), "!");
    }
}
