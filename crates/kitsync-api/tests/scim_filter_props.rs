//! The SCIM filter parser (`scim::filter::Filter::parse`) under arbitrary strings and mutated
//! valid filters: it answers without a panic, every refusal says why, and neither length nor
//! nesting can make it recurse deeply (a hostile filter is refused before the stack is at
//! risk: checked on a thread with a small stack). Through the router, on SQLite or
//! PostgreSQL (`KITSYNC_TEST_DATABASE_URL`), a filter on Users (compiled to SQL) or Groups
//! (evaluated in memory) is answered 200, or 400 `invalidFilter` with a detail: never a 5xx.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{runner, runtime, seeded_store, send, token, urlencode};
use kitsync_api::scim::filter::Filter;
use kitsync_domain::Scope;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};

/// Valid filters over Users and Groups, to mutate.
const SEEDS: &[&str] = &[
    r#"userName eq "alice""#,
    r#"emails[type eq "work" and value co "@x"]"#,
    r#"not (title pr) and (active eq true or displayName sw "A")"#,
    r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "d1""#,
    r#"members[value eq "alice"] or displayName ew "s""#,
    r#"meta.lastModified gt "2020-01-01T00:00:00Z""#,
    r#"x gt -1.5e3 and y le 10"#,
    r#"userName eq "a \"q\" \u00e9""#,
    r#"groups eq "app:user" and phoneNumbers.value co "138""#,
    r#"id eq null or externalId ne "x""#,
];

/// Fragments a mutation inserts.
const PIECES: &[&str] = &[
    "(", ")", "[", "]", "\"", "\\", " ", "not", "not(", "and", "or", "pr", "eq", "co", "gt", ".",
    ":", "urn:", "-", "1e999", "-inf", "NaN", "-nan", "infinity", "\\u0000", "\\ud800", "\\uDC00",
    "\\x", "\u{0}", "é", "\u{202e}", "null", "true", "$ref", "0x10", "1.", ".5", "1e", "+1", "--1",
    "emails[", "]]", "\"\"", "\t\n", "a.b.c", "urn:x:", "%00",
];

#[derive(Debug, Clone)]
enum Mutation {
    Insert(Index, &'static str),
    InsertChar(Index, char),
    Delete(Index, usize),
    Repeat(Index, usize, usize),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), prop::sample::select(PIECES))
            .prop_map(|(i, p)| Mutation::Insert(i, p)),
        2 => (any::<Index>(), any::<char>()).prop_map(|(i, c)| Mutation::InsertChar(i, c)),
        2 => (any::<Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<Index>(), 1usize..6, 2usize..300)
            .prop_map(|(i, n, times)| Mutation::Repeat(i, n, times)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(text: String, m: &Mutation) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let at = |i: &Index, len: usize| i.index(len + 1);
    match m {
        Mutation::Insert(i, p) => {
            let at = at(i, chars.len());
            chars.splice(at..at, p.chars());
        }
        Mutation::InsertChar(i, c) => {
            let at = at(i, chars.len());
            chars.insert(at, *c);
        }
        Mutation::Delete(i, n) => {
            let at = at(i, chars.len());
            let end = (at + n).min(chars.len());
            chars.drain(at..end);
        }
        Mutation::Repeat(i, n, times) => {
            let at = at(i, chars.len());
            let end = (at + n).min(chars.len());
            let piece: Vec<char> = chars[at..end].to_vec();
            for _ in 1..*times {
                chars.splice(end..end, piece.iter().copied());
            }
        }
        Mutation::Truncate(i) => chars.truncate(at(i, chars.len())),
    }
    chars.into_iter().collect()
}

/// Arbitrary text, and mutated valid filters.
fn filter_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9 ()\\[\\]\".:$_-]{0,80}",
        (
            prop::sample::select(SEEDS),
            prop::collection::vec(mutation(), 1..6)
        )
            .prop_map(|(seed, ms)| ms.iter().fold(seed.to_owned(), mutate)),
    ]
}

/// The parser's own properties: an answer, never a panic; a refusal with a reason; the
/// length limit; a parsed filter evaluates over any JSON without a panic.
fn parser_properties(text: &str) -> Result<(), TestCaseError> {
    match Filter::parse(text) {
        Err(why) => prop_assert!(!why.trim().is_empty(), "no reason for {:?}", text),
        Ok(f) => {
            prop_assert!(text.len() <= 4096, "accepted {} bytes", text.len());
            for resource in [
                json!({}),
                json!({"userName": "alice", "emails": [{"value": "a@x", "type": "work"}],
                       "members": [{"value": "alice"}], "x": 1, "active": true,
                       "name": {"formatted": "A"}, "meta": {"lastModified": "2021"}}),
                json!({"emails": "not a list", "members": [1, null, "s"], "x": "1"}),
            ] {
                let _ = f.matches(&resource, &|k| k == "username");
            }
        }
    }
    Ok(())
}

#[test]
fn the_parser_answers_every_string_with_a_filter_or_a_reason() {
    let mut runner = runner(4096);
    runner
        .run(&filter_text(), |text| parser_properties(&text))
        .unwrap();
}

/// Runs `f` on a thread with a 256 KiB stack: deep recursion there crashes the test.
fn on_a_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn nesting_and_length_are_bounded_before_the_stack_is_at_risk() {
    let answers = on_a_small_stack(|| {
        let chain = |op: &str| {
            // As many terms as 4 096 bytes hold: the longest and/or chain there can be.
            let mut f = "a pr".to_owned();
            while f.len() + op.len() + 4 <= 4096 {
                f.push_str(op);
                f.push_str("a pr");
            }
            f
        };
        let cases: Vec<(String, &str)> = vec![
            ("(".repeat(100_000), "longer than 4096"),
            ("not(".repeat(100_000), "longer than 4096"),
            (
                format!("{}a pr{}", "(".repeat(2000), ")".repeat(2000)),
                "nests",
            ),
            (
                format!("{}a pr{}", "not (".repeat(600), ")".repeat(600)),
                "nests",
            ),
            (
                format!("{}b pr{}", "a[".repeat(1300), "]".repeat(1300)),
                "nests",
            ),
            (format!("{}a pr", "(".repeat(4000)), "nests"),
            (format!("a eq \"{}\"", "x".repeat(5000)), "longer than 4096"),
            (format!("{}a pr{}", "(".repeat(32), ")".repeat(32)), "ok"),
            (format!("{}a pr{}", "(".repeat(33), ")".repeat(33)), "nests"),
            (chain(" or "), "ok"),
            (chain(" and "), "ok"),
        ];
        cases
            .into_iter()
            .map(|(text, want)| {
                let got = match Filter::parse(&text) {
                    Ok(f) => {
                        // Evaluating the longest chains recurses once per term; fine here.
                        let _ = f.matches(&json!({"a": "x"}), &|_| false);
                        "ok".to_owned()
                    }
                    Err(e) => e,
                };
                (text.chars().take(20).collect::<String>(), want, got)
            })
            .collect::<Vec<_>>()
    });
    for (start, want, got) in answers {
        assert!(got.contains(want), "`{start}…`: expected {want}, got {got}");
    }
}

#[test]
fn filters_through_the_router_are_200_or_invalid_filter_never_5xx() {
    let rt = runtime();
    let (app, token, _db) = rt.block_on(async {
        let (db, store) = seeded_store("t", &["alice", "bob"]).await;
        let scopes = [Scope::DirectoryRead, Scope::DirectoryWrite];
        let token = token(&store, "scim", &scopes, None).await;
        let app = kitsync_api::router(store);
        let create = Request::post("/scim/v2/t/Groups")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/scim+json")
            .body(Body::from(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                       "displayName": "Admins", "members": [{"value": "alice"}]})
                .to_string(),
            ))
            .unwrap();
        assert_eq!(send(&app, create).await.0, StatusCode::CREATED);
        (app, token, db)
    });
    let ask = |resource: &str, text: &str, search: bool| -> (StatusCode, Value) {
        let req = if search {
            Request::post(format!("/scim/v2/t/{resource}/.search"))
                .header("content-type", "application/scim+json")
                .body(Body::from(json!({"filter": text}).to_string()))
        } else {
            Request::get(format!("/scim/v2/t/{resource}?filter={}", urlencode(text)))
                .body(Body::empty())
        };
        let mut req = req.unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        rt.block_on(send(&app, req))
    };
    let answered = |resource: &str, text: &str, search: bool| -> Result<bool, TestCaseError> {
        let (status, body) = ask(resource, text, search);
        if status == StatusCode::OK {
            prop_assert!(body["Resources"].is_array(), "{}", body);
            return Ok(true);
        }
        prop_assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{} filter {:?}: {}",
            resource,
            text,
            body
        );
        prop_assert_eq!(&body["scimType"], "invalidFilter", "{:?}: {}", text, body);
        prop_assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| !d.trim().is_empty()),
            "{}",
            body
        );
        Ok(false)
    };

    // The worst cases by hand: longest chains, deepest nesting, U+0000, numbers JSON lacks.
    let mut worst: Vec<String> = vec![
        format!("{}userName pr{}", "(".repeat(32), ")".repeat(32)),
        format!("{}userName pr{}", "not (".repeat(32), ")".repeat(32)),
        "userName eq \"a\\u0000b\"".into(),
        "members[value eq \"\\u0000\"]".into(),
        "displayName eq \"\\u0000\"".into(),
        "x gt -inf".into(),
        "x gt 1e999".into(),
        "x eq NaN".into(),
    ];
    for leaf in ["userName pr", "title eq \"Engineer\"", "emails co \"x\""] {
        for op in [" or ", " and "] {
            let mut f = leaf.to_owned();
            while f.len() + op.len() + leaf.len() <= 4096 {
                f.push_str(op);
                f.push_str(leaf);
            }
            worst.push(f);
        }
    }
    for text in &worst {
        for resource in ["Users", "Groups"] {
            answered(resource, text, false).unwrap();
        }
    }

    let mut runner = runner(128);
    let ok = std::cell::Cell::new(0);
    runner
        .run(
            &(
                filter_text(),
                prop::sample::select(&["Users", "Groups"][..]),
                any::<bool>(),
            ),
            |(text, resource, search)| {
                if answered(resource, &text, search)? {
                    ok.set(ok.get() + 1);
                }
                Ok(())
            },
        )
        .unwrap();
    assert!(ok.get() > 0, "some generated filters were valid");
}
