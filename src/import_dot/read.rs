//! Reading a django-oauth-toolkit database (SQLite file or PostgreSQL) into plain rows: the
//! four tables an import needs, the same columns from either engine (times as Unix seconds,
//! flags as booleans). Read-only: nothing is ever written to the Django database.

use std::path::Path;

/// `auth_user`.
#[derive(Debug, Clone)]
pub struct DotUser {
    pub id: i64,
    pub username: String,
    pub password: String,
    pub is_active: bool,
    pub is_superuser: bool,
    pub date_joined: i64,
}

/// `oauth2_provider_application`.
#[derive(Debug, Clone)]
pub struct DotApp {
    pub id: i64,
    pub client_id: String,
    pub name: String,
    pub client_type: String,
    pub grant_type: String,
    pub client_secret: String,
    pub redirect_uris: String,
    pub skip_authorization: bool,
    pub user_id: Option<i64>,
    pub created: i64,
}

/// `oauth2_provider_accesstoken`.
#[derive(Debug, Clone)]
pub struct DotAccess {
    pub id: i64,
    pub token: String,
    pub expires: i64,
    pub scope: String,
    pub application_id: Option<i64>,
    pub user_id: Option<i64>,
    pub created: i64,
}

/// `oauth2_provider_refreshtoken`.
#[derive(Debug, Clone)]
pub struct DotRefresh {
    pub id: i64,
    pub token: String,
    pub access_token_id: Option<i64>,
    pub application_id: i64,
    pub user_id: i64,
    pub created: i64,
    pub revoked: bool,
}

#[derive(Debug, Clone, Default)]
pub struct DotData {
    pub users: Vec<DotUser>,
    pub apps: Vec<DotApp>,
    pub access: Vec<DotAccess>,
    pub refresh: Vec<DotRefresh>,
}

/// The four queries, with `time(column)` as the engine reads a time column: Django's text on
/// SQLite (parsed here), epoch seconds from PostgreSQL.
fn queries(time: impl Fn(&str) -> String) -> [String; 4] {
    [
        format!(
            "SELECT id, username, password, is_active, is_superuser, {} FROM auth_user ORDER BY id",
            time("date_joined")
        ),
        format!(
            "SELECT id, client_id, name, client_type, authorization_grant_type, client_secret, redirect_uris, skip_authorization, user_id, {} FROM oauth2_provider_application ORDER BY id",
            time("created")
        ),
        format!(
            "SELECT id, token, {}, scope, application_id, user_id, {} FROM oauth2_provider_accesstoken ORDER BY id",
            time("expires"),
            time("created")
        ),
        format!(
            "SELECT id, token, access_token_id, application_id, user_id, {}, revoked IS NOT NULL FROM oauth2_provider_refreshtoken ORDER BY id",
            time("created")
        ),
    ]
}

/// Django's SQLite datetimes (`2036-11-27 11:54:47.674651`, UTC under `USE_TZ = True`).
fn sqlite_time(text: &str) -> rusqlite::Result<i64> {
    let t = humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
}

pub fn sqlite(path: &Path) -> Result<DotData, String> {
    use rusqlite::{Connection, OpenFlags};
    let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let [users_sql, apps_sql, access_sql, refresh_sql] = queries(str::to_owned);
    let read = || -> rusqlite::Result<DotData> {
        let tx = db.unchecked_transaction()?;
        let users = tx
            .prepare(&users_sql)?
            .query_map([], |r| {
                Ok(DotUser {
                    id: r.get(0)?,
                    username: r.get(1)?,
                    password: r.get(2)?,
                    is_active: r.get(3)?,
                    is_superuser: r.get(4)?,
                    date_joined: sqlite_time(&r.get::<_, String>(5)?)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let apps = tx
            .prepare(&apps_sql)?
            .query_map([], |r| {
                Ok(DotApp {
                    id: r.get(0)?,
                    client_id: r.get(1)?,
                    name: r.get(2)?,
                    client_type: r.get(3)?,
                    grant_type: r.get(4)?,
                    client_secret: r.get(5)?,
                    redirect_uris: r.get(6)?,
                    skip_authorization: r.get(7)?,
                    user_id: r.get(8)?,
                    created: sqlite_time(&r.get::<_, String>(9)?)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let access = tx
            .prepare(&access_sql)?
            .query_map([], |r| {
                Ok(DotAccess {
                    id: r.get(0)?,
                    token: r.get(1)?,
                    expires: sqlite_time(&r.get::<_, String>(2)?)?,
                    scope: r.get(3)?,
                    application_id: r.get(4)?,
                    user_id: r.get(5)?,
                    created: sqlite_time(&r.get::<_, String>(6)?)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let refresh = tx
            .prepare(&refresh_sql)?
            .query_map([], |r| {
                Ok(DotRefresh {
                    id: r.get(0)?,
                    token: r.get(1)?,
                    access_token_id: r.get(2)?,
                    application_id: r.get(3)?,
                    user_id: r.get(4)?,
                    created: sqlite_time(&r.get::<_, String>(5)?)?,
                    revoked: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(DotData {
            users,
            apps,
            access,
            refresh,
        })
    };
    read().map_err(|e| {
        format!(
            "{} is not a django-oauth-toolkit database this can read: {e}",
            path.display()
        )
    })
}

/// The same queries with PostgreSQL's types: times as epoch seconds, flags as booleans.
pub fn postgres(client: &mut postgres::Client) -> Result<DotData, String> {
    // Whole seconds, cut as SQLite's are (not rounded).
    let [users_sql, apps_sql, access_sql, refresh_sql] =
        queries(|col| format!("FLOOR(EXTRACT(EPOCH FROM {col}))::BIGINT"));
    let fail = |e: postgres::Error| {
        format!("the PostgreSQL database is not a django-oauth-toolkit database this can read: {e}")
    };
    let id = |r: &postgres::Row, i: usize| -> i64 {
        r.try_get::<_, i64>(i)
            .or_else(|_| r.try_get::<_, i32>(i).map(i64::from))
            .unwrap_or_default()
    };
    let opt_id = |r: &postgres::Row, i: usize| -> Option<i64> {
        r.try_get::<_, Option<i64>>(i)
            .or_else(|_| r.try_get::<_, Option<i32>>(i).map(|v| v.map(i64::from)))
            .unwrap_or_default()
    };
    let mut tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()
        .map_err(fail)?;
    let users = tx
        .query(&users_sql, &[])
        .map_err(fail)?
        .iter()
        .map(|r| DotUser {
            id: id(r, 0),
            username: r.get(1),
            password: r.get(2),
            is_active: r.get(3),
            is_superuser: r.get(4),
            date_joined: r.get(5),
        })
        .collect();
    let apps = tx
        .query(&apps_sql, &[])
        .map_err(fail)?
        .iter()
        .map(|r| DotApp {
            id: id(r, 0),
            client_id: r.get(1),
            name: r.get(2),
            client_type: r.get(3),
            grant_type: r.get(4),
            client_secret: r.get(5),
            redirect_uris: r.get(6),
            skip_authorization: r.get(7),
            user_id: opt_id(r, 8),
            created: r.get(9),
        })
        .collect();
    let access = tx
        .query(&access_sql, &[])
        .map_err(fail)?
        .iter()
        .map(|r| DotAccess {
            id: id(r, 0),
            token: r.get(1),
            expires: r.get(2),
            scope: r.get(3),
            application_id: opt_id(r, 4),
            user_id: opt_id(r, 5),
            created: r.get(6),
        })
        .collect();
    let refresh = tx
        .query(&refresh_sql, &[])
        .map_err(fail)?
        .iter()
        .map(|r| DotRefresh {
            id: id(r, 0),
            token: r.get(1),
            access_token_id: opt_id(r, 2),
            application_id: id(r, 3),
            user_id: id(r, 4),
            created: r.get(5),
            revoked: r.get(6),
        })
        .collect();
    tx.commit().map_err(fail)?;
    Ok(DotData {
        users,
        apps,
        access,
        refresh,
    })
}
