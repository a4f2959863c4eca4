//! Revocations pushed to every replica: the transaction that logs a revocation also sends
//! `NOTIFY portcullis_revocations` (delivered by PostgreSQL only once it commits), and each
//! replica keeps one connection that `LISTEN`s and hands the digests to its cache. The
//! revocation log stays the record: a replica replays it after (re)connecting, and polls it
//! as a backstop.

use std::fmt::Write as _;

use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use crate::config::PostgresConfig;
use crate::crypto::Digest;

pub const CHANNEL: &str = "portcullis_revocations";

/// Digests per notification: 100 × 65 bytes stays well under PostgreSQL's 8000-byte payload.
const PER_NOTICE: usize = 100;

/// Revoked access tokens, as one notification carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// When the revoking replica sent it (Unix microseconds, its wall clock): the start of
    /// the propagation the receiver measures.
    pub sent_at_micros: i64,
    pub digests: Vec<Digest>,
}

/// The payloads announcing `digests`: `SENT_MICROS HEX,HEX,…`, split to fit.
pub fn payloads(digests: &[Digest], sent_at_micros: i64) -> Vec<String> {
    digests
        .chunks(PER_NOTICE)
        .map(|chunk| {
            let mut p = String::with_capacity(24 + chunk.len() * 65);
            let _ = write!(p, "{sent_at_micros} ");
            for (i, d) in chunk.iter().enumerate() {
                if i > 0 {
                    p.push(',');
                }
                for b in d.0 {
                    let _ = write!(p, "{b:02x}");
                }
            }
            p
        })
        .collect()
}

/// A payload back; `None` for anything that is not one of ours, whole.
pub fn parse(payload: &str) -> Option<Notice> {
    let (sent, list) = payload.split_once(' ')?;
    let digests = list
        .split(',')
        .map(|hex| {
            if hex.len() != 64 || !hex.is_ascii() {
                return None;
            }
            let mut d = [0u8; 32];
            for (i, byte) in d.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
            }
            Some(Digest(d))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Notice {
        sent_at_micros: sent.parse().ok()?,
        digests,
    })
}

/// One listening connection. [`Listener::next`] yields notices until the connection ends.
pub struct Listener {
    notices: mpsc::UnboundedReceiver<String>,
    /// Kept so that the session (and its `LISTEN`) lasts as long as the listener.
    _client: tokio_postgres::Client,
}

impl Listener {
    /// Connects and starts listening; errors name no part of the URL.
    pub async fn connect(config: &PostgresConfig) -> Result<Listener, String> {
        let (pg, tls) = super::tls::connection(config)?;
        let (client, mut connection) = pg.connect(tls).await.map_err(|e| {
            format!(
                "cannot connect to PostgreSQL: {}",
                super::pool::describe(&e)
            )
        })?;
        let (tx, notices) = mpsc::unbounded_channel();
        // The connection's driver: forwards notifications; ends (closing the channel) when
        // the connection does.
        tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if tx.send(n.payload().to_owned()).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "the revocation feed's connection failed");
                        return;
                    }
                    None => return,
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| format!("LISTEN failed: {e}"))?;
        Ok(Listener {
            notices,
            _client: client,
        })
    }

    /// The next notice, skipping payloads that are not ours; `None` once the connection is
    /// gone.
    pub async fn next(&mut self) -> Option<Notice> {
        loop {
            let payload = self.notices.recv().await?;
            match parse(&payload) {
                Some(n) => return Some(n),
                None => tracing::warn!("ignored a malformed revocation notification"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_fit() {
        let digests: Vec<Digest> = (0..250).map(|i| Digest::of(&i.to_string())).collect();
        let ps = payloads(&digests, 1_700_000_000_123_456);
        assert_eq!(ps.len(), 3, "100 + 100 + 50");
        assert!(ps.iter().all(|p| p.len() < 8000));
        let back: Vec<Digest> = ps
            .iter()
            .flat_map(|p| {
                let n = parse(p).unwrap();
                assert_eq!(n.sent_at_micros, 1_700_000_000_123_456);
                n.digests
            })
            .collect();
        assert_eq!(back, digests);
    }

    #[test]
    fn anything_else_is_refused_whole() {
        let good = &payloads(&[Digest::of("a")], 5)[0];
        for bad in [
            "",
            "5",
            "x ",
            "5 zz",
            &good[..good.len() - 1],
            &format!("{good},"),
            &format!("{good},{}", "é".repeat(32)),
            &good.replacen("5 ", "five ", 1),
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert!(parse(good).is_some());
    }
}
