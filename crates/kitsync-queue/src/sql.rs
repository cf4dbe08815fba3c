//! Helpers shared by the embedded queue, the dead-letter store and the replay ledger; their
//! statements are built with the `kitsync-sql` crate's `Sql`, as the store's are.

/// A group commit's batch: `first`, then whatever else is already waiting in `rx`, up to
/// `max`, dropping requests whose caller stopped waiting (it has answered already).
pub(crate) fn gather<T>(
    first: T,
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    max: usize,
    abandoned: impl Fn(&T) -> bool,
) -> Vec<T> {
    let mut batch = vec![first];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
    batch.retain(|r| !abandoned(r));
    batch
}

/// Milliseconds as the BIGINT the tables use (saturating; settings are never that large).
pub(crate) fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Attempt counters are `INTEGER` columns.
pub(crate) fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
