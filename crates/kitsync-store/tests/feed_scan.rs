//! A feed page reads at most `feed::MAX_SCAN_ROWS` journal rows, matching its filter or not:
//! a rare match past that many rows takes more than one page, each page's cursor is a row it
//! read (so polling skips nothing), and no page's cursor moves further than the limit. On
//! SQLite, or PostgreSQL with `KITSYNC_TEST_DATABASE_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use kitsync_store::feed::{FeedFilter, FeedPage, MAX_SCAN_ROWS};
use kitsync_store::Store;

/// Appends `n` journal rows; row `i` is `(tenant, entity, action)` of `row(i)`. Written
/// directly: a feed test needs many rows, not the directory changes behind them.
async fn append(store: &Store, n: usize, row: impl Fn(usize) -> (&'static str, &'static str)) {
    migrations::testing::append_journal(store.db(), n, |i| {
        let (entity, action) = row(i);
        let tenant = if entity == "group" { "t2" } else { "t1" };
        (tenant, entity, action)
    })
    .await
    .unwrap();
}

/// The id of every journal row, in order.
async fn ids(store: &Store) -> Vec<i64> {
    migrations::testing::journal_ids(store.db()).await.unwrap()
}

fn types(t: &str) -> FeedFilter {
    FeedFilter {
        types: Some(vec![t.to_owned()]),
        ..FeedFilter::default()
    }
}

fn event_ids(page: &FeedPage) -> Vec<i64> {
    page.events.iter().map(|e| e.journal_id).collect()
}

#[tokio::test]
async fn a_rare_match_past_the_scan_limit_is_reached_by_polling() {
    let (db, store) = common::store().await;
    let cap = usize::try_from(MAX_SCAN_ROWS).unwrap();
    let n = cap + 500;
    append(&store, n, |i| {
        if i == n - 1 {
            ("group", "deleted")
        } else {
            ("department", "updated")
        }
    })
    .await;
    let ids = ids(&store).await;
    assert_eq!(ids.len(), n);
    let (at_cap, last) = (ids[cap - 1], ids[n - 1]);
    let head = store.journal_head().await.unwrap();
    assert_eq!(head, last);

    let rare = [
        types("group.deleted"),
        types("group"),
        FeedFilter {
            tenant_id: Some("t2".into()),
            ..FeedFilter::default()
        },
    ];
    for filter in &rare {
        for until in [None, Some(head)] {
            // The first page stops at the limit with nothing found, on a row it read.
            let first = store.feed_page(0, until, filter, 100).await.unwrap();
            assert_eq!(event_ids(&first), [] as [i64; 0], "{filter:?}");
            assert_eq!(first.next_cursor, at_cap, "{filter:?} until {until:?}");
            // Polling on reaches the match, then stays caught up.
            let second = store
                .feed_page(first.next_cursor, until, filter, 100)
                .await
                .unwrap();
            assert_eq!(event_ids(&second), [last], "{filter:?}");
            assert_eq!(second.next_cursor, last);
            let third = store.feed_page(last, until, filter, 100).await.unwrap();
            assert!(third.events.is_empty());
            assert_eq!(third.next_cursor, last);
        }
    }

    // A filter that excludes nothing reads `limit` rows and needs no bound.
    let all = FeedFilter {
        include_test: true,
        ..FeedFilter::default()
    };
    let page = store.feed_page(0, None, &all, 100).await.unwrap();
    assert_eq!(event_ids(&page), ids[..100]);
    assert_eq!(page.next_cursor, ids[99]);
    // A page of matches fills up before the limit: the cursor is its last event.
    let page = store
        .feed_page(0, None, &types("department"), 1000)
        .await
        .unwrap();
    assert_eq!(event_ids(&page), ids[..1000]);
    assert_eq!(page.next_cursor, ids[999]);
    db.cleanup().await;
}

#[tokio::test]
async fn polling_a_sparse_filter_sees_every_match_once_and_no_page_reads_past_the_limit() {
    let (db, store) = common::store().await;
    let cap = usize::try_from(MAX_SCAN_ROWS).unwrap();
    let n = 2 * cap + 1_700;
    // Matches in clumps and alone: some pages fill up, some stop at the limit empty-handed.
    let matching = |i: usize| i % 2_999 == 5 || (cap - 2..cap + 3).contains(&i);
    append(&store, n, |i| {
        if matching(i) {
            ("group", "updated")
        } else {
            ("member", "modified")
        }
    })
    .await;
    let ids = ids(&store).await;
    let position = |id: i64| ids.iter().position(|x| *x == id).map_or(0, |p| p + 1);
    let expected: Vec<i64> = (0..n).filter(|i| matching(*i)).map(|i| ids[i]).collect();
    assert!(expected.len() > 10);

    let filter = types("group.updated");
    let mut seen = Vec::new();
    let mut cursor = 0;
    let mut pages = 0;
    loop {
        let page = store.feed_page(cursor, None, &filter, 3).await.unwrap();
        pages += 1;
        assert!(pages < 100, "polling ends");
        let read = position(page.next_cursor) - position(cursor);
        assert!(
            read <= cap,
            "a page read {read} rows (after {cursor}, cursor {})",
            page.next_cursor
        );
        assert!(page.events.iter().all(|e| e.journal_id > cursor
            && e.journal_id <= page.next_cursor
            && e.kind == "group.updated"));
        if page.events.is_empty() && page.next_cursor == cursor {
            break;
        }
        seen.extend(event_ids(&page));
        cursor = page.next_cursor;
    }
    assert_eq!(seen, expected, "every match once, in order");
    // Within the last `MAX_SCAN_ROWS` rows no bound is needed: the cursor rests on the last
    // row the filter's query returned.
    assert_eq!(Some(&cursor), expected.last());
    db.cleanup().await;
}
