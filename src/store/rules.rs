//! The store's rules, written once for every backend over [`TokenTx`]: which tokens a
//! revocation reaches (and in which order it looks), that a rotation is check-and-mark in one
//! step, that every access-token revocation is logged for the other gateways' caches before
//! anything is deleted, and what the sweeper may delete. A backend runs each function inside
//! one transaction of its own.

use super::{
    AccessTokenRecord, BackendError, CodeRedemption, CodeState, RefreshExchange,
    RefreshTokenRecord, Revoked, Swept, TokenFilter, TokenKind, TokenOwner, TokenTx,
};
use crate::crypto::Digest;

/// How long revocation-log entries are kept: far longer than any gateway's poll interval.
pub const REVOCATION_LOG_RETENTION_SECONDS: i64 = 3600;

/// Revokes the live access tokens `filter` selects and logs them, in that order, so that no
/// revocation escapes the log the other gateways follow.
fn revoke_access_logged(
    tx: &mut impl TokenTx,
    filter: TokenFilter<'_>,
    now: i64,
) -> Result<Vec<Digest>, BackendError> {
    let revoked = tx.revoke_access(filter, now)?;
    tx.log_revocations(&revoked, now)?;
    Ok(revoked)
}

/// Stores a freshly issued access token and, when present, its refresh token.
pub fn insert_tokens(
    tx: &mut impl TokenTx,
    access: &AccessTokenRecord,
    refresh: Option<&RefreshTokenRecord>,
) -> Result<(), BackendError> {
    if let Some(r) = refresh {
        tx.insert_refresh(r)?;
    }
    tx.insert_access(access)
}

/// RFC 7009: revokes the token with this digest if `client_id` owns it. A refresh token takes
/// the access tokens issued from it along; an access token goes alone. The hint only orders
/// the lookups; the first kind that knows the digest decides, and another client's token is
/// left untouched (and nothing else searched).
pub fn revoke_token(
    tx: &mut impl TokenTx,
    digest: &Digest,
    client_id: &str,
    now: i64,
    refresh_first: bool,
) -> Result<Revoked, BackendError> {
    let order = if refresh_first {
        [TokenKind::Refresh, TokenKind::Access]
    } else {
        [TokenKind::Access, TokenKind::Refresh]
    };
    let mut out = Revoked::default();
    for kind in order {
        let Some(owner) = tx.owner_of(kind, digest)? else {
            continue;
        };
        if owner == client_id {
            match kind {
                TokenKind::Refresh => {
                    out.refresh += tx.revoke_refresh(TokenFilter::Digest(digest), now)?;
                    out.access = revoke_access_logged(tx, TokenFilter::IssuedFrom(digest), now)?;
                }
                TokenKind::Access => {
                    out.access = revoke_access_logged(tx, TokenFilter::Digest(digest), now)?;
                }
            }
        }
        break;
    }
    Ok(out)
}

/// A refresh: check that `old` is still usable and, when rotating (`rotation_salt`), mark it
/// rotated and revoke the access tokens issued from it — one step, so that of concurrent
/// exchanges of one token exactly one succeeds — then store the new tokens.
pub fn exchange_refresh_token(
    tx: &mut impl TokenTx,
    old: &Digest,
    now: i64,
    rotation_salt: Option<&[u8; 32]>,
    access: &AccessTokenRecord,
    refresh: Option<&RefreshTokenRecord>,
) -> Result<RefreshExchange, BackendError> {
    if !tx.take_refresh(old, now, rotation_salt)? {
        return Ok(RefreshExchange::Stale);
    }
    let revoked_access = match rotation_salt {
        Some(_) => revoke_access_logged(tx, TokenFilter::IssuedFrom(old), now)?,
        None => Vec::new(),
    };
    insert_tokens(tx, access, refresh)?;
    Ok(RefreshExchange::Exchanged { revoked_access })
}

/// Revokes every live token `filter` selects (a family after reuse, a user's, a client's).
pub fn revoke_all(
    tx: &mut impl TokenTx,
    filter: TokenFilter<'_>,
    now: i64,
) -> Result<Revoked, BackendError> {
    let refresh = tx.revoke_refresh(filter, now)?;
    let access = revoke_access_logged(tx, filter, now)?;
    Ok(Revoked { access, refresh })
}

/// Deletes a user or a client; its live access tokens are logged first, since the cascade
/// that deletes them leaves nothing to log afterwards.
pub fn remove_owner(
    tx: &mut impl TokenTx,
    owner: &TokenOwner,
    now: i64,
) -> Result<bool, BackendError> {
    let live = tx.live_access(owner.into(), now)?;
    tx.log_revocations(&live, now)?;
    tx.delete_owner(owner)
}

/// One bounded sweep step: at most `batch` dead tokens of each kind, expired codes and
/// sessions, and revocation-log entries past their retention.
pub fn sweep(tx: &mut impl TokenTx, now: i64, batch: usize) -> Result<Swept, BackendError> {
    let access = tx.delete_dead(TokenKind::Access, now, batch)?;
    let refresh = tx.delete_dead(TokenKind::Refresh, now, batch)?;
    tx.delete_expired_grants(now, batch)?;
    tx.trim_revocation_log(now - REVOCATION_LOG_RETENTION_SECONDS, batch)?;
    Ok(Swept { access, refresh })
}

/// Revokes what `owner` holds; revoking one user's grant to one client also forgets the
/// consent behind it, so that the next authorization asks again.
pub fn revoke_owner(
    tx: &mut impl TokenTx,
    owner: &TokenOwner,
    now: i64,
) -> Result<Revoked, BackendError> {
    let revoked = revoke_all(tx, owner.into(), now)?;
    if let TokenOwner::Grant { user, client } = owner {
        tx.forget_consent(user, client)?;
    }
    Ok(revoked)
}

/// An authorization code's exchange (RFC 6749 §4.1.2): used once, in the same step as the
/// tokens issued for it are stored; presented again, every token issued from it (its family)
/// is revoked.
pub fn redeem_code(
    tx: &mut impl TokenTx,
    code: &Digest,
    now: i64,
    access: &AccessTokenRecord,
    refresh: Option<&RefreshTokenRecord>,
) -> Result<CodeRedemption, BackendError> {
    Ok(match tx.take_code(code, now)? {
        CodeState::Taken => {
            insert_tokens(tx, access, refresh)?;
            CodeRedemption::Redeemed
        }
        CodeState::Used => {
            CodeRedemption::Replayed(revoke_all(tx, TokenFilter::Family(code), now)?)
        }
        CodeState::Unusable => CodeRedemption::Stale,
    })
}
