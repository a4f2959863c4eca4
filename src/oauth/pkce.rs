//! PKCE (RFC 7636) with the S256 method only, as RFC 9700 §2.1.1 asks: the challenge a client
//! sends to `/o/authorize/` and the verifier it later proves it holds at `/o/token/`. Pure.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Why a PKCE parameter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    #[error("code_challenge is required (PKCE, S256)")]
    MissingChallenge,
    #[error("code_challenge_method must be S256")]
    UnsupportedMethod,
    #[error("code_challenge is malformed")]
    MalformedChallenge,
    #[error("code_verifier is malformed")]
    MalformedVerifier,
}

/// RFC 7636 §4.1: 43 to 128 characters of `[A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"`.
fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Checks an authorization request's challenge: present, S256 (an absent method means
/// `plain`, refused), and the base64url form of a SHA-256 digest (43 characters).
pub fn check_challenge(challenge: Option<&str>, method: Option<&str>) -> Result<String, PkceError> {
    let challenge = challenge.ok_or(PkceError::MissingChallenge)?;
    if method != Some("S256") {
        return Err(PkceError::UnsupportedMethod);
    }
    let decoded = URL_SAFE_NO_PAD
        .decode(challenge)
        .map_err(|_| PkceError::MalformedChallenge)?;
    if decoded.len() != 32 || challenge.len() != 43 {
        return Err(PkceError::MalformedChallenge);
    }
    Ok(challenge.to_owned())
}

/// True when `verifier` hashes to `challenge` (S256), compared in constant time.
pub fn verify(verifier: &str, challenge: &str) -> Result<bool, PkceError> {
    if !valid_verifier(verifier) {
        return Err(PkceError::MalformedVerifier);
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Ok(computed.as_bytes().ct_eq(challenge.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed independently (Python: urlsafe_b64encode(sha256(verifier)) without padding).
    const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "ngF5GsXcbwljx6u133FFr3Xht9xooA_DuaX_3QwODtc";

    #[test]
    fn a_verifier_matches_its_challenge_only() {
        assert_eq!(
            check_challenge(Some(CHALLENGE), Some("S256")),
            Ok(CHALLENGE.into())
        );
        assert_eq!(verify(VERIFIER, CHALLENGE), Ok(true));
        let other = "dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXX";
        assert_eq!(verify(other, CHALLENGE), Ok(false));
    }

    #[test]
    fn refused_parameters() {
        use PkceError::*;
        let cases: &[(Option<&str>, Option<&str>, PkceError)] = &[
            (None, Some("S256"), MissingChallenge),
            (None, None, MissingChallenge),
            (Some(CHALLENGE), None, UnsupportedMethod),
            (Some(CHALLENGE), Some("plain"), UnsupportedMethod),
            (Some(CHALLENGE), Some("s256"), UnsupportedMethod),
            (Some("short"), Some("S256"), MalformedChallenge),
            (
                Some("ngF5GsXcbwljx6u133FFr3Xht9xooA_DuaX_3QwODt="),
                Some("S256"),
                MalformedChallenge,
            ),
            (
                Some("ngF5GsXcbwljx6u133FFr3Xht9xooA_DuaX_3QwODt+"),
                Some("S256"),
                MalformedChallenge,
            ),
        ];
        for (challenge, method, want) in cases {
            assert_eq!(
                check_challenge(*challenge, *method),
                Err(*want),
                "{challenge:?} {method:?}"
            );
        }
        for verifier in [
            "",
            "short",
            &"a".repeat(129),
            &format!("{}+", &VERIFIER[..42]),
        ] {
            assert_eq!(
                verify(verifier, CHALLENGE),
                Err(MalformedVerifier),
                "{verifier}"
            );
        }
    }
}
