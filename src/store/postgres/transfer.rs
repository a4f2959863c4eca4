//! A store's contents out of and into PostgreSQL (`store::transfer`).

use postgres::Row;

use super::tx::{
    ACCESS_COLS, CLIENT_COLS, CONSENT_COLS, OnConflict, PgTx, REFRESH_COLS, USER_COLS, access_row,
    backend, client_row, consent_row, refresh_row, user_row,
};
use crate::store::StoreError;
use crate::store::transfer::{Counts, Snapshot};

/// Reads everything inside the caller's transaction, at one snapshot of the database
/// (`REPEATABLE READ`), so the parts agree with each other.
pub fn export(tx: &mut PgTx<'_, '_>, now: i64) -> Result<Snapshot, StoreError> {
    tx.client
        .batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .map_err(backend)?;
    fn rows<T>(
        tx: &mut PgTx<'_, '_>,
        sql: &str,
        now: Option<i64>,
        map: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = match now {
            Some(now) => tx.client.query(sql, &[&now]),
            None => tx.client.query(sql, &[]),
        }
        .map_err(backend)?;
        rows.iter().map(map).collect()
    }
    Ok(Snapshot {
        users: rows(
            tx,
            &format!("SELECT {USER_COLS} FROM users ORDER BY username"),
            None,
            user_row,
        )?,
        clients: rows(
            tx,
            &format!("SELECT {CLIENT_COLS} FROM clients ORDER BY client_id"),
            None,
            client_row,
        )?,
        consents: rows(
            tx,
            &format!("SELECT {CONSENT_COLS} FROM consents ORDER BY username, client_id"),
            None,
            consent_row,
        )?,
        access: rows(
            tx,
            &format!(
                "SELECT {ACCESS_COLS} FROM access_tokens WHERE expires_at > $1 ORDER BY digest"
            ),
            Some(now),
            access_row,
        )?,
        refresh: rows(
            tx,
            &format!(
                "SELECT {REFRESH_COLS} FROM refresh_tokens WHERE expires_at > $1 ORDER BY digest"
            ),
            Some(now),
            refresh_row,
        )?,
    })
}

/// Inserts what is not here yet, users and clients before what refers to them.
pub fn import(tx: &mut PgTx<'_, '_>, s: &Snapshot) -> Result<Counts, postgres::Error> {
    let keep = OnConflict::Keep;
    let mut added = Counts::default();
    for u in &s.users {
        added.users += tx.put_user(u, keep)?;
    }
    for client in &s.clients {
        added.clients += tx.put_client(client, keep)?;
    }
    for consent in &s.consents {
        added.consents += tx.put_consent(consent, keep)?;
    }
    for r in &s.refresh {
        added.refresh += tx.put_refresh(r, keep)?;
    }
    for a in &s.access {
        added.access += tx.put_access(a, keep)?;
    }
    Ok(added)
}
