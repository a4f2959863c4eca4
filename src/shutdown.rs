//! Stopping and its signals: SIGINT and SIGTERM ask the process to stop ([`requested`]),
//! SIGHUP asks for a reload ([`hangups`]); a `watch` channel carries the stop notification to
//! the long-lived tasks, each of which waits on it with [`stopped`] (an accept loop passes it
//! on to its own connections: `listener::stop`).

use tokio::sync::watch;

/// Resolves once shutdown has been signalled (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn requested() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; draining connections");
}

/// A stream of SIGHUPs.
#[cfg(unix)]
pub type Hangups = tokio::signal::unix::Signal;
#[cfg(not(unix))]
pub type Hangups = ();

/// Starts listening for SIGHUP. Registered when called: a SIGHUP sent from then on is caught
/// (rather than ending the process, as it would with no handler).
pub fn hangups() -> std::io::Result<Hangups> {
    #[cfg(unix)]
    return tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    #[cfg(not(unix))]
    Ok(())
}
