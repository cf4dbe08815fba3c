//! `kitsync health`: a probe for container health checks, where no curl is installed. It GETs
//! one URL and exits 0 only on a 2xx answer within the timeout; it reads no configuration, so
//! it works in any container of the image whatever its settings.
use bytes::Bytes;
use clap::Args;
use http_body_util::Empty;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// What to probe: `/healthz` (the process serves) or `/readyz` (its database and queue
    /// answer too), on the listener or on `metrics.addr`.
    #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
    url: String,
    /// Longest wait for the answer, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
}

/// Probes once; `Err` names what failed.
///
/// # Errors
/// A malformed URL, no answer within the timeout, or a status outside 2xx.
pub fn run(args: &HealthArgs) -> anyhow::Result<()> {
    let uri: hyper::Uri = args
        .url
        .parse()
        .map_err(|e| anyhow::anyhow!("--url {:?}: {e}", args.url))?;
    if uri.scheme_str() != Some("http") {
        anyhow::bail!(
            "--url {:?}: only http:// is probed (the listener inside the container)",
            args.url
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = rt.block_on(async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Empty<Bytes>>();
        tokio::time::timeout(Duration::from_millis(args.timeout_ms), client.get(uri))
            .await
            .map_err(|_| anyhow::anyhow!("{}: no answer within {} ms", args.url, args.timeout_ms))?
            .map_err(|e| anyhow::Error::new(e).context(format!("{}: no answer", args.url)))
            .map(|r| r.status())
    })?;
    if !status.is_success() {
        anyhow::bail!("{}: HTTP {status}", args.url);
    }
    println!("{}: HTTP {status}", args.url);
    Ok(())
}
