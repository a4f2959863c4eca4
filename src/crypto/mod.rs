//! Secrets: generating tokens and client secrets, digesting them for storage, and hashing
//! passwords. The raw value of a token or secret never leaves the function that returns it to
//! the client; everything else holds a [`Digest`].

pub mod django;

use std::fmt;
use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::PasswordHasher as _;
use argon2::password_hash::phc::PasswordHash;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// Prefix of access tokens, so that secret scanners can recognise leaked ones.
pub const ACCESS_TOKEN_PREFIX: &str = "pcat_";
/// Prefix of refresh tokens.
pub const REFRESH_TOKEN_PREFIX: &str = "pcrt_";
/// Prefix of client secrets.
pub const CLIENT_SECRET_PREFIX: &str = "pccs_";

/// SHA-256 of a token or client secret: the only form in which they are stored or cached.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(secret: &str) -> Digest {
        Digest(Sha256::digest(secret.as_bytes()).into())
    }

    /// Constant-time equality, for comparing a presented secret's digest with a stored one.
    pub fn ct_eq(&self, other: &Digest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// Whether two byte strings are equal, in a time that depends on their length only, never on
/// where they first differ. For the request path, where a connection's remembered token is
/// compared with every request's: `subtle`'s slice comparison puts each byte through an
/// optimization barrier of its own, 655 instructions for an access token under callgrind
/// (2.2% of a request with a token, built without LTO); this compares eight bytes at a time and passes the
/// accumulated difference through one barrier per word, so that the compiler cannot learn
/// its value early and stop at the first difference: 108 instructions for the same check.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, a_rest) = a.as_chunks::<8>();
    let (b_words, b_rest) = b.as_chunks::<8>();
    let mut diff = 0u64;
    for (x, y) in a_words.iter().zip(b_words) {
        diff = std::hint::black_box(diff | (u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y)));
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

impl fmt::Debug for Digest {
    // A digest is not a secret, but it is a lookup key: print a short fingerprint only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// 256 bits from the operating system's CSPRNG, base64url without padding, after `prefix`.
pub fn generate_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    let mut out = String::with_capacity(prefix.len() + 43);
    out.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut out);
    out
}

/// The token pair that replaces a rotated refresh token, derived from the presented refresh
/// token and a per-rotation random salt (HMAC-SHA-256). A client that retries the same refresh
/// within the grace period gets the very same pair back, though only digests are stored: only
/// a holder of the old refresh token (and the stored salt) can compute it again.
pub fn derive_rotated(refresh_token: &str, salt: &[u8; 32]) -> (String, String) {
    use hmac::{Hmac, KeyInit, Mac};
    let derive = |prefix: &str, label: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(refresh_token.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(label);
        mac.update(salt);
        let bytes = mac.finalize().into_bytes();
        let mut out = String::with_capacity(prefix.len() + 43);
        out.push_str(prefix);
        URL_SAFE_NO_PAD.encode_string(bytes, &mut out);
        out
    };
    (
        derive(ACCESS_TOKEN_PREFIX, b"portcullis rotation: access token\0"),
        derive(
            REFRESH_TOKEN_PREFIX,
            b"portcullis rotation: refresh token\0",
        ),
    )
}

/// 256 random bits.
pub fn random_salt() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    bytes
}

/// A public client identifier: 192 random bits, base64url (32 characters).
pub fn generate_client_id() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

type HashJob = Box<dyn FnOnce() + Send>;

/// Hashes and verifies user passwords with argon2id (RustCrypto defaults: m=19 MiB, t=2, p=1)
/// on a pool of `concurrency` dedicated threads in the idle scheduling class, so hashing never
/// stalls the async runtime and cannot take CPU from the proxy path.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    jobs: std::sync::mpsc::Sender<HashJob>,
    /// Verified against when the user does not exist, so that an unknown user and a wrong
    /// password take the same path and the same time.
    dummy_hash: Arc<str>,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("available", &self.permits.available_permits())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the password hashing pool has stopped")]
    Pool,
}

fn hash_blocking(password: &[u8]) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Hash(e.to_string()))
}

thread_local! {
    /// Each hashing thread keeps its argon2 working memory (19 MiB at the default parameters)
    /// from one verification to the next: no mapping, page faults and unmapping per password,
    /// which would otherwise disturb the request-serving threads.
    static ARGON2_MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Verifies `password` against `stored`: Portcullis' own argon2id PHC string, or a hash in
/// one of Django's formats (an imported user or client secret).
fn verify_any(password: &[u8], stored: &str) -> bool {
    if django::is_supported(stored) {
        django::verify(password, stored)
    } else {
        verify_blocking(password, stored)
    }
}

/// Verifies `password` against a PHC string with the parameters the string records, in this
/// thread's reused argon2 memory, comparing outputs in constant time.
fn verify_blocking(password: &[u8], phc: &str) -> bool {
    use argon2::{Algorithm, Params, Version};
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm.as_str()),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    let computed = ARGON2_MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, argon2::Block::default());
        }
        argon2.hash_password_into_with_memory(
            password,
            salt.as_ref(),
            &mut out,
            &mut memory[..blocks],
        )
    });
    computed.is_ok() && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

/// Puts the calling thread in Linux's SCHED_IDLE class: it runs only on CPU time that no
/// request-serving thread wants, and any of them preempts it at once. A flood of password
/// grants then slows password grants, never proxied requests (measured in benches/README.md);
/// on a CPU saturated by API traffic, logins wait for a gap.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: sched_setscheduler reads the sched_param we pass and keeps no pointer to it.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

impl PasswordHasher {
    pub fn new(concurrency: usize) -> Result<Self, HashError> {
        let threads = concurrency.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<HashJob>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("portcullis-hash-{i}"))
                .spawn(move || {
                    lower_thread_priority();
                    loop {
                        let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            // Every PasswordHasher is gone.
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| HashError::Hash(format!("cannot start a hashing thread: {e}")))?;
        }
        let dummy = generate_secret("");
        Ok(PasswordHasher {
            permits: Arc::new(Semaphore::new(threads)),
            jobs,
            dummy_hash: hash_blocking(dummy.as_bytes())?.into(),
        })
    }

    /// Runs `f` on a hashing thread once one is free.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let _permit = self.permits.acquire().await.map_err(|_| HashError::Pool)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| HashError::Pool)?;
        rx.await.map_err(|_| HashError::Pool)
    }

    /// A new argon2id PHC string for `password`.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(move || hash_blocking(password.as_bytes())).await?
    }

    /// Verifies `password` against `stored` (a PHC string, or a Django hash of an imported
    /// user or client: see [`django`]). With `None` (no such user) a dummy hash is verified
    /// instead and the answer is `false`.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let ok = self
            .run(move || verify_any(password.as_bytes(), &phc))
            .await?;
        Ok(ok && known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_256_bit_base64url() {
        let t = generate_secret(ACCESS_TOKEN_PREFIX);
        let body = t.strip_prefix(ACCESS_TOKEN_PREFIX).unwrap();
        assert_eq!(body.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        assert_ne!(generate_secret(""), generate_secret(""));
    }

    #[test]
    fn digest_is_sha256() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        let d = Digest::of("abc");
        assert_eq!(d.0[..4], [0xba, 0x78, 0x16, 0xbf]);
        assert!(d.ct_eq(&Digest::of("abc")));
        assert!(!d.ct_eq(&Digest::of("abd")));
        assert!(!format!("{d:?}").contains("abc"));
    }

    /// `same_bytes` says what `==` says: for every length around the word size and an
    /// access token's, every position of a single differing byte (in a whole word and in the
    /// tail), and lengths that differ.
    #[test]
    fn same_bytes_is_equality() {
        for len in 0..=70usize {
            let a: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            assert!(same_bytes(&a, &a.clone()), "equal, {len} bytes");
            for at in 0..len {
                for flip in [0x01, 0x80, 0xff] {
                    let mut b = a.clone();
                    b[at] ^= flip;
                    assert!(!same_bytes(&a, &b), "{len} bytes, byte {at} ^ {flip:#x}");
                }
            }
            let mut longer = a.clone();
            longer.push(0);
            assert!(!same_bytes(&a, &longer), "{len} against {} bytes", len + 1);
            assert!(!same_bytes(&longer, &a), "{} against {len} bytes", len + 1);
        }
        let token = generate_secret(ACCESS_TOKEN_PREFIX);
        assert!(same_bytes(token.as_bytes(), token.clone().as_bytes()));
        assert!(!same_bytes(
            token.as_bytes(),
            generate_secret(ACCESS_TOKEN_PREFIX).as_bytes()
        ));
    }

    #[test]
    fn rotation_derivation_is_deterministic_per_token_and_salt() {
        let salt = [7u8; 32];
        let (a1, r1) = derive_rotated("pcrt_one", &salt);
        let (a2, r2) = derive_rotated("pcrt_one", &salt);
        assert_eq!((&a1, &r1), (&a2, &r2));
        assert!(a1.starts_with(ACCESS_TOKEN_PREFIX) && a1.len() == 48);
        assert!(r1.starts_with(REFRESH_TOKEN_PREFIX) && r1.len() == 48);
        assert_ne!(a1[5..], r1[5..]);
        assert_ne!(derive_rotated("pcrt_two", &salt).0, a1);
        assert_ne!(derive_rotated("pcrt_one", &[8u8; 32]).0, a1);
    }

    #[tokio::test]
    async fn password_round_trip_and_unknown_user() {
        let hasher = PasswordHasher::new(2).unwrap();
        let phc = hasher.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(
            hasher
                .verify("correct horse".into(), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(!hasher.verify("wrong".into(), Some(phc)).await.unwrap());
        assert!(!hasher.verify("correct horse".into(), None).await.unwrap());
        assert!(
            !hasher
                .verify("x".into(), Some("not a phc string".into()))
                .await
                .unwrap()
        );
    }
}
