//! `airlock serve`: wires config, store, alerting and the HTTP API together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::alerts::Alerter;
use crate::api::{router, AppState};
use crate::auth::login::Login;
use crate::auth::oidc::{load_keys, spawn_refresh, OidcVerifier};
use crate::auth::{Approvers, FilterKey, KeyError};
use crate::config::ServiceConfig;
use crate::config_error::ConfigError;
use crate::slack_bot::{sweep_expired, SlackBot};
use crate::store::{Backend, Store, StoreError};
use crate::waiters::Waiters;

/// Everything `serve` needs, already read from flags and environment.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub database: String,
    pub config: Option<PathBuf>,
    /// The filter key itself (read from the key file or the environment by the caller).
    pub filter_key: String,
    pub public_url: Option<String>,
    pub poll_interval_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Oidc(String),
    #[error("cannot build the HTTP client for alerts: {0}")]
    Client(String),
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Default re-read interval of long polls on PostgreSQL, where another replica may take
/// the decision and no in-process wake-up arrives.
const PG_POLL: Duration = Duration::from_millis(500);

pub async fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    let filter_key = FilterKey::new(&opts.filter_key)?;
    let config = match &opts.config {
        Some(p) => ServiceConfig::load(p)?,
        None => ServiceConfig::default(),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| ServeError::Client(e.without_url().to_string()))?;
    let mut approvers = Approvers::from_config(&config.approvers);
    let mut login_verifier = None;
    if let Some(oidc) = &config.oidc {
        let keys = match load_keys(oidc, &client).await {
            Ok(k) => k,
            // A local file is under the operator's control: a bad one is a config error.
            Err(e) if oidc.jwks_file.is_some() => return Err(ServeError::Oidc(e)),
            // An IdP that is down at start must not keep the filter API down: approver
            // JWTs are refused until a refresh succeeds.
            Err(e) => {
                tracing::error!(error = %e, "JWKS not loaded; approver JWTs are refused until a refresh succeeds");
                airlock_filter::jwt::KeySet::empty()
            }
        };
        let verifier = Arc::new(OidcVerifier::new(oidc.clone(), keys)?);
        spawn_refresh(Arc::clone(&verifier), client.clone());
        login_verifier = oidc.login.as_ref().map(|l| (l.clone(), Arc::clone(&verifier)));
        approvers = approvers.with_oidc(verifier);
    }
    if approvers.is_empty() && config.oidc.is_none() {
        tracing::warn!("no approvers configured (--config): nobody can approve, list sessions or verify over HTTP");
    }
    let store = Store::open(&opts.database).await?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServeError::Bind { addr: opts.listen, source })?;
    let local = listener.local_addr().map_err(|source| ServeError::Bind { addr: opts.listen, source })?;
    let public_url = opts
        .public_url
        .or(config.public_url.clone())
        .unwrap_or_else(|| format!("http://{local}"))
        .trim_end_matches('/')
        .to_string();
    let poll_interval = match (opts.poll_interval_ms, store.backend()) {
        (Some(0), _) => None,
        (Some(ms), _) => Some(Duration::from_millis(ms)),
        (None, Backend::Postgres) => Some(PG_POLL),
        (None, Backend::Sqlite) => None,
    };
    let sinks = config.alerts.sinks.len();
    let published_keys = config.signing_keys.len();
    let (jwks, secrets) = (config.jwks.clone(), config.secret_store.clone());
    let slack_signing_secret = config.slack.as_ref().map(|s| s.signing_secret.clone());
    let slack_bot = config.slack.as_ref().and_then(|s| SlackBot::from_config(s, client.clone()));
    let login = login_verifier.map(|(l, v)| Arc::new(Login::new(v, &l, client.clone(), &public_url)));
    let replay = match config.replay {
        Some(r) => Some((r, crate::replay::http_client().map_err(ServeError::Client)?)),
        None => None,
    };
    let alerter = Alerter::start(config.alerts, client.clone());
    let state = Arc::new(AppState {
        store,
        filter_key,
        approvers,
        alerter,
        waiters: Waiters::default(),
        public_url,
        poll_interval,
        jwks,
        secrets,
        slack_signing_secret,
        slack_bot,
        http: client,
        login,
        replay,
    });
    tokio::spawn(sweep_expired(Arc::clone(&state)));
    tracing::info!(
        backend = ?state.store.backend(),
        approvers = state.approvers.len(),
        alert_sinks = sinks,
        published_keys,
        "airlock control service ready"
    );
    // A plain line on stderr that scripts and tests can wait for.
    eprintln!("airlock: listening on http://{local}");
    let app = router(Arc::clone(&state));
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.map_err(ServeError::Serve)?;
    state.store.close().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
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
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
