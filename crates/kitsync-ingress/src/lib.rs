//! The Kit callback ingress: five `POST {prefix}/produceAPI/v2/…` endpoints (axum).
//!
//! A request goes through, in order:
//! 1. [`Acceptor::admit`] — a slot among `kit.max_concurrent_requests`, or `000005` at once.
//! 2. [`extract::SignedKit`] — checks the headers' shape and the `x-timestamp` window,
//!    reserves the body's share of the in-flight byte budget, reads the body under its size
//!    limit and arrival deadline while computing the raw-form MACs, tries the canonical form
//!    (bounded) only if the raw one did not verify, and only then parses and validates the
//!    verified bytes into a [`kitsync_domain::Command`].
//! 3. [`accept::Acceptor::accept`] — decrypts and seals `clientSecret`, claims the replay key
//!    in this process's memory ([`ReplaySet`]: the verified MAC, kept until the signed
//!    timestamp leaves the window; a replay seen here is refused), publishes the command with
//!    the key's stamp and waits for the durable acknowledgement. No database is asked on
//!    RabbitMQ: the worker records the key in the apply transaction and discards a replay
//!    accepted elsewhere; the embedded queue records it with the queue row.
//! 4. [`reply`] — maps the outcome to a result code (the one exhaustive mapping, [`KitError`])
//!    and signs the body with `Body-Sign`. The HTTP status is always 200. Refusals of
//!    unauthenticated requests carry fixed texts and are logged at a bounded rate.
//!
//! Every answer is counted in [`metrics::IngressMetrics`] (endpoint × result code, and the
//! time to answer), which the binary's `/metrics` renders.
//!
//! Nothing unauthenticated or invalid reaches the queue; `000000` means durably queued.
#![forbid(unsafe_code)]

pub mod accept;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod replay;
pub mod reply;
pub mod settings;

pub use accept::Acceptor;
pub use error::KitError;
pub use metrics::IngressMetrics;
pub use replay::ReplaySet;
pub use settings::KitSettings;

use axum::routing::post;
use axum::Router;
use kitsync_domain::CallbackKind;
use std::sync::Arc;

/// The Kit callback routes, mounted under `settings.prefix`.
pub fn router(acceptor: Arc<Acceptor>) -> Router {
    let prefix = acceptor.settings().normalized_prefix();
    let mut r = Router::new();
    for kind in CallbackKind::ALL {
        let path = format!("{prefix}/produceAPI/v2/{}", kind.path());
        r = r.route(
            &path,
            post(move |state, req| reply::handle(state, kind, req)),
        );
    }
    r.with_state(acceptor)
}
