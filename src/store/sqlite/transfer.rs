//! A store's contents out of and into SQLite (`store::transfer`).

use rusqlite::{Connection, Row};

use super::tx::{
    ACCESS_COLS, CLIENT_COLS, CONSENT_COLS, OnConflict, REFRESH_COLS, USER_COLS, access_row,
    client_row, consent_row, put_access, put_client, put_consent, put_refresh, put_user,
    refresh_row, user_row,
};
use crate::store::transfer::{Counts, Snapshot};

/// Reads everything in one read transaction, so the parts agree with each other.
pub fn export(c: &Connection, now: i64) -> rusqlite::Result<Snapshot> {
    let tx = c.unchecked_transaction()?;
    fn rows<T>(
        c: &Connection,
        sql: &str,
        now: Option<i64>,
        map: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<Vec<T>> {
        let mut st = c.prepare(sql)?;
        match now {
            Some(now) => st.query_map([now], map)?.collect(),
            None => st.query_map([], map)?.collect(),
        }
    }
    let snapshot = Snapshot {
        users: rows(
            &tx,
            &format!("SELECT {USER_COLS} FROM users ORDER BY username"),
            None,
            user_row,
        )?,
        clients: rows(
            &tx,
            &format!("SELECT {CLIENT_COLS} FROM clients ORDER BY client_id"),
            None,
            client_row,
        )?,
        consents: rows(
            &tx,
            &format!("SELECT {CONSENT_COLS} FROM consents ORDER BY username, client_id"),
            None,
            consent_row,
        )?,
        access: rows(
            &tx,
            &format!(
                "SELECT {ACCESS_COLS} FROM access_tokens WHERE expires_at > ?1 ORDER BY digest"
            ),
            Some(now),
            access_row,
        )?,
        refresh: rows(
            &tx,
            &format!(
                "SELECT {REFRESH_COLS} FROM refresh_tokens WHERE expires_at > ?1 ORDER BY digest"
            ),
            Some(now),
            refresh_row,
        )?,
    };
    tx.finish()?;
    Ok(snapshot)
}

/// Inserts what is not here yet, users and clients before what refers to them, on the
/// writer's connection (inside its transaction).
pub fn import(c: &Connection, s: &Snapshot) -> rusqlite::Result<Counts> {
    let keep = OnConflict::Keep;
    let mut added = Counts::default();
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    for u in &s.users {
        added.users += count(put_user(c, u, keep)?);
    }
    for client in &s.clients {
        added.clients += count(put_client(c, client, keep)?);
    }
    for consent in &s.consents {
        added.consents += count(put_consent(c, consent, keep)?);
    }
    for r in &s.refresh {
        added.refresh += count(put_refresh(c, r, keep)?);
    }
    for a in &s.access {
        added.access += count(put_access(c, a, keep)?);
    }
    Ok(added)
}
