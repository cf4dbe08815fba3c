//! Property tests of the Kit callback parser (`kitsync_domain::parse::parse`) for every
//! `CallbackKind`: arbitrary bytes, arbitrary JSON, and valid bodies of the five callbacks
//! structurally mutated (a field deleted, a value of another JSON type, huge numbers, long
//! strings, deep nesting, a string where an array is expected, a list sent as a malformed
//! JSON string, keys in another case, duplicated keys, …). Every input gets an answer without
//! a panic; an error names a field the parser knows (or none, for the body as a whole) and
//! says what is wrong; an accepted command satisfies the validation it claims (lengths, no
//! control characters), survives the queue format, and parses the same from the canonical
//! form the signature check may use (`signing::canonical_payload`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod props;

use kitsync_domain::CallbackKind;
use props::{check, valid, Answer};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};

/// A path to a node of a JSON tree: object keys and array indexes.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    At(usize),
}

/// Every node's path, root first.
fn paths(v: &Value) -> Vec<Vec<Step>> {
    fn walk(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        out.push(here.clone());
        match v {
            Value::Object(o) => {
                for (k, child) in o {
                    here.push(Step::Key(k.clone()));
                    walk(child, here, out);
                    here.pop();
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    here.push(Step::At(i));
                    walk(child, here, out);
                    here.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn node<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, s| match s {
        Step::Key(k) => v.as_object_mut()?.get_mut(k),
        Step::At(i) => v.as_array_mut()?.get_mut(*i),
    })
}

/// A value of another JSON type, or an awkward one.
fn odd_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        Just(json!(u64::MAX)),
        Just(json!(1e308)),
        Just(json!(-0.0)),
        Just(json!(2.5)),
        Just(json!(3.0)),
        prop::sample::select(
            &[
                "",
                " ",
                "0",
                "1",
                "2",
                "3",
                "4",
                "-1",
                "true",
                "false",
                "TRUE",
                "user",
                "admin",
                "ADMIN",
                "[]",
                "{}",
                "null",
                "20220413093539534",
                "20221313093539534",
                "20220413093539",
                "2022-04-13",
                "\u{0}",
                "a\u{0}b",
                "\t",
                "line\nbreak",
                "\u{7f}",
                "\u{202e}",
                "\u{feff}",
                "é",
                "👩‍💻",
            ][..]
        )
        .prop_map(|s| json!(s)),
        (
            1usize..400,
            prop::sample::select(&["x", "é", "字", " "][..])
        )
            .prop_map(|(n, c)| json!(c.repeat(n))),
        Just(json!("y".repeat(100_000))),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-zA-Z]{1,10}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// What a list may be sent as instead of an array: a string, well-formed or not.
fn list_as_string() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("")),
        Just(json!("[]")),
        Just(json!("[{orgCode:\"1\", orgName:")),
        Just(json!("[{\"orgCode\":\"1\",\"orgName\":\"A\"}]trailing")),
        Just(json!("{\"orgCode\":\"1\"}")),
        Just(json!("[1, 2")),
        Just(json!("[{orgCode:1, orgName:true, parentCode:null}]")),
        Just(json!(
            "[{userName:\"u\", name:\"n\", orgCode:\"o\", role:\"user\", enable:\"true\"}]"
        )),
        Just(json!("[{'orgCode':'1'}]")),
        Just(json!(format!("{}{}", "[".repeat(200), "]".repeat(200)))),
        Just(json!(format!("{}{}", "[".repeat(5_000), "]".repeat(5_000)))),
        ".{0,60}".prop_map(Value::String),
    ]
}

/// One structural change.
#[derive(Debug, Clone)]
enum Mutation {
    Delete(Index),
    Replace(Index, Value),
    /// A list (or anything) as a string: the node's own JSON text, or a given string.
    Stringify(Index),
    ListString(Value),
    Nest(Index, usize),
    /// The key of a node in upper or lower case.
    Recase(Index, bool),
    /// An unknown key.
    Extra(Index, Value),
    /// A V1 attribute inside a user's `extension`, sent as an object or as JSON text.
    Extension(Index, &'static str, Value, bool),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => any::<Index>().prop_map(Mutation::Delete),
        6 => (any::<Index>(), odd_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        1 => any::<Index>().prop_map(Mutation::Stringify),
        2 => list_as_string().prop_map(Mutation::ListString),
        1 => (any::<Index>(), 1usize..120).prop_map(|(i, d)| Mutation::Nest(i, d)),
        1 => (any::<Index>(), any::<bool>()).prop_map(|(i, up)| Mutation::Recase(i, up)),
        1 => (any::<Index>(), odd_value()).prop_map(|(i, v)| Mutation::Extra(i, v)),
        2 => (
            any::<Index>(),
            prop::sample::select(&["employeeType", "workPlace", "entryDate"][..]),
            odd_value(),
            any::<bool>(),
        )
            .prop_map(|(i, k, v, text)| Mutation::Extension(i, k, v, text)),
    ]
}

/// Applies `m` to `body`, choosing its target among the current nodes (never the root).
fn mutate(mut body: Value, m: &Mutation) -> Value {
    let all: Vec<Vec<Step>> = paths(&body).into_iter().skip(1).collect();
    if all.is_empty() {
        return body;
    }
    let pick = |i: &Index| all[i.index(all.len())].clone();
    match m {
        Mutation::Delete(i) => {
            let path = pick(i);
            let (last, parent) = path.split_last().unwrap();
            match (node(&mut body, parent), last) {
                (Some(Value::Object(o)), Step::Key(k)) => {
                    o.shift_remove(k);
                }
                (Some(Value::Array(a)), Step::At(n)) => {
                    a.remove(*n);
                }
                _ => {}
            }
        }
        Mutation::Replace(i, v) => {
            if let Some(n) = node(&mut body, &pick(i)) {
                *n = v.clone();
            }
        }
        Mutation::Stringify(i) => {
            if let Some(n) = node(&mut body, &pick(i)) {
                *n = Value::String(n.to_string());
            }
        }
        Mutation::ListString(v) => {
            // The list of whichever callback this is.
            for key in ["userList", "orgInfoList"] {
                if let Some(n) = body.get_mut(key) {
                    *n = v.clone();
                }
            }
        }
        Mutation::Nest(i, depth) => {
            if let Some(n) = node(&mut body, &pick(i)) {
                for _ in 0..*depth {
                    *n = json!([n.take()]);
                }
            }
        }
        Mutation::Recase(i, up) => {
            let path = pick(i);
            let (last, parent) = path.split_last().unwrap();
            if let (Some(Value::Object(o)), Step::Key(k)) = (node(&mut body, parent), last) {
                let renamed = if *up {
                    k.to_ascii_uppercase()
                } else {
                    k.to_ascii_lowercase()
                };
                if let Some(v) = o.shift_remove(k) {
                    o.insert(renamed, v);
                }
            }
        }
        Mutation::Extra(i, v) => {
            if let Some(Value::Object(o)) = node(&mut body, &pick(i)) {
                o.insert("unknownField".into(), v.clone());
            }
        }
        Mutation::Extension(i, key, v, text) => {
            if let Some(Value::Array(users)) = body.get_mut("userList") {
                if !users.is_empty() {
                    let n = users.len();
                    if let Some(u) = users[i.index(n)].as_object_mut() {
                        // The V1 fields live only in the extension then.
                        u.shift_remove(*key);
                        let ext = json!({ *key: v });
                        let ext = if *text {
                            Value::String(ext.to_string())
                        } else {
                            ext
                        };
                        u.insert("extension".into(), ext);
                    }
                }
            }
        }
    }
    body
}

/// Text-level changes on top: none, a duplicated key (the first field again, with another
/// value, at the end), a byte-order mark, truncation, trailing garbage.
fn text(body: &Value, how: u8, at: Index, dup: &Value) -> Vec<u8> {
    let s = body.to_string();
    match how {
        1 => match body.as_object().and_then(|o| o.keys().next()) {
            Some(k) if s.ends_with('}') => format!(
                "{},{}:{}}}",
                &s[..s.len() - 1],
                serde_json::to_string(k).unwrap(),
                dup
            )
            .into_bytes(),
            _ => s.into_bytes(),
        },
        2 => [&b"\xEF\xBB\xBF"[..], s.as_bytes()].concat(),
        3 => s.as_bytes()[..at.index(s.len() + 1)].to_vec(),
        4 => format!("{s}x").into_bytes(),
        _ => s.into_bytes(),
    }
}

fn kind() -> impl Strategy<Value = CallbackKind> {
    prop::sample::select(&CallbackKind::ALL[..])
}

proptest! {
    // Each case is a few microseconds to a millisecond: thousands keep a debug run of the
    // whole file near a few seconds.
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_get_an_answer(kind in kind(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check(kind, &bytes)?;
    }

    #[test]
    fn arbitrary_json_gets_an_answer(kind in kind(), v in odd_value()) {
        check(kind, v.to_string().as_bytes())?;
        check(kind, json!({"tenantId": v}).to_string().as_bytes())?;
    }

    #[test]
    fn mutated_valid_bodies_get_an_answer_naming_a_known_field(
        kind in kind(),
        mutations in prop::collection::vec(mutation(), 1..5),
        how in 0u8..8,
        at in any::<Index>(),
        dup in odd_value(),
    ) {
        let body = mutations.iter().fold(valid(kind), mutate);
        check(kind, &text(&body, how, at, &dup))?;
    }

    #[test]
    fn bodies_of_one_callback_sent_to_another_get_an_answer(
        from in kind(),
        to in kind(),
        mutations in prop::collection::vec(mutation(), 0..2),
    ) {
        let body = mutations.iter().fold(valid(from), mutate);
        check(to, body.to_string().as_bytes())?;
    }
}

#[test]
fn the_valid_bodies_are_valid() {
    for kind in CallbackKind::ALL {
        let answer = check(kind, valid(kind).to_string().as_bytes()).unwrap();
        assert!(matches!(answer, Answer::Accepted), "{kind}: {answer:?}");
    }
}
