//! Differential tests: [`parse`](super::parse) must answer every body exactly as the former
//! parser on `serde_json::Value` ([`reference`](super::reference)) does, for all five
//! callbacks: the same `Command`, or the same `FieldError` (field and text).
//!
//! Bodies are generated as JSON text, so that they can repeat keys, escape what a serializer
//! would not, send numbers as strings and strings as numbers, spell keys in another case,
//! send lists as arrays, as JSON strings and as strings with unquoted keys, and be truncated
//! or otherwise not JSON at all. Hand-written cases and the corpus of `tests/corpus` go
//! through the same comparison.
use super::{parse, reference};
use crate::command::CallbackKind;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

/// Every callback's answer to `body`, new against old.
fn same(body: &[u8]) -> Result<(), TestCaseError> {
    for kind in CallbackKind::ALL {
        let new = parse(kind, body);
        let old = reference::parse(kind, body);
        prop_assert_eq!(
            &new,
            &old,
            "{:?} on {}",
            kind,
            String::from_utf8_lossy(body)
        );
    }
    Ok(())
}

fn assert_same(body: impl AsRef<[u8]>) {
    if let Err(e) = same(body.as_ref()) {
        panic!("{e}");
    }
}

// ---- JSON text ---------------------------------------------------------------------------

/// `s` as a JSON string literal: as serde_json writes it, or with every letter, digit and
/// non-ASCII character written as a `\u` escape (so that the parser has to unescape it).
fn enc(s: &str, escaped: bool) -> String {
    if !escaped {
        return serde_json::to_string(s).unwrap();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_alphanumeric() || !c.is_ascii() || c.is_ascii_control() => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn string_lit(s: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (s, prop::bool::weighted(0.2)).prop_map(|(s, e)| enc(&s, e))
}

/// Strings that stress trimming, lengths, control characters and escapes.
fn nasty_str() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "",
                " ",
                "  t1  ",
                "é字",
                "x\"y",
                "a\\b",
                "line\nbreak",
                "tab\there",
                "\u{0}",
                "a\u{0}b",
                "\u{7f}",
                "\u{202e}",
                "\u{feff}",
                "👩‍💻",
                "\u{1F600}",
                "20220413093539534",
                "[]",
                "{}",
                "null",
                "true",
                "TRUE",
                "1",
                "0",
                " 2 ",
                "-1",
                "1.0",
                "user",
                "ADMIN",
            ][..]
        )
        .prop_map(str::to_owned),
        (
            prop::sample::select(&[31usize, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256][..]),
            prop::sample::select(&["x", "é", "字", " "][..])
        )
            .prop_map(|(n, c)| c.repeat(n)),
        ".{0,12}",
    ]
}

/// An identifier-like value, from a small set so that list entries collide.
fn id_str() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(&["t1", "u1", "u2", "o1", "68cb0e", "开发部"][..])
            .prop_map(str::to_owned),
        2 => nasty_str(),
    ]
}

/// Numbers of every kind serde_json tells apart (u64, i64, f64), and the edges between them.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "0",
                "-0",
                "-0.0",
                "1",
                "2",
                "3",
                "4",
                "5",
                "-1",
                "1.0",
                "2.0",
                "2.5",
                "1e3",
                "1E0",
                "1e-3",
                "0.5",
                "-1.5e-7",
                "18446744073709551615",
                "18446744073709551616",
                "9223372036854775807",
                "9223372036854775808",
                "-9223372036854775808",
                "-9223372036854775809",
                "4294967297",
                "123456789012345678901234567890",
                "2e64",
                "1e308",
                "1.7976931348623157e308",
                "0.1000000000000000055511151231257827",
                "20220413093539534",
                "20220413093539534.0",
                "2.0220413093539534e16",
                "1e400",
            ][..]
        )
        .prop_map(str::to_owned),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|f| serde_json::to_string(&f).unwrap()),
    ]
}

/// A value of any JSON type, awkward ones favoured.
fn odd_leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        number(),
        string_lit(nasty_str()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
    ]
}

fn odd_tree() -> impl Strategy<Value = String> {
    odd_leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key_of(&["a", "b", "A", "k\"é"]), inner), 0..4).prop_map(
                |v| format!(
                    "{{{}}}",
                    v.iter()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            ),
        ]
    })
}

fn key_of(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    string_lit(prop::sample::select(names).prop_map(str::to_owned))
}

/// `good` most of the time, otherwise a value of another type or an awkward one.
fn or_odd(good: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    prop_oneof![60 => good, 2 => odd_leaf(), 1 => odd_tree()].boxed()
}

fn choice(values: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(values).prop_map(str::to_owned)
}

/// One of `usual` (values the parser accepts, in their tolerated spellings) most of the
/// time, one of `unusual` (edges and refusals) sometimes, a value of any type rarely.
fn mostly(
    usual: &'static [&'static str],
    unusual: &'static [&'static str],
) -> BoxedStrategy<String> {
    or_odd(prop_oneof![10 => choice(usual), 1 => choice(unusual)])
}

fn id() -> BoxedStrategy<String> {
    or_odd(prop_oneof![
        20 => string_lit(id_str()),
        1 => choice(&["123", "-1", "1.0", "1e3", "18446744073709551615", "true"]),
    ])
}

fn text() -> BoxedStrategy<String> {
    or_odd(prop_oneof![
        12 => string_lit(choice(&["huawei", "N", "x, y: {z}", "https://e.example"])),
        1 => string_lit(nasty_str()),
        1 => number(),
    ])
}

fn flag_v() -> BoxedStrategy<String> {
    mostly(
        &[
            "0", "1", "1", "2", "2", "\"1\"", "\" 2 \"", "1.0", "2e0", "\"0\"",
        ],
        &[
            "3",
            "\"3\"",
            "7",
            "-1",
            "\"x\"",
            "1.5",
            "18446744073709551615",
            "null",
        ],
    )
}

fn test_flag_v() -> BoxedStrategy<String> {
    mostly(
        &["0", "0", "1", "\"1\"", "0.0", "\"0\"", "\" 0 \""],
        &["2", "\"no\"", "-0", "null", "\"\""],
    )
}

fn time_v() -> BoxedStrategy<String> {
    mostly(
        &[
            "\"20220413093539534\"",
            "\"20220413093539534\"",
            "20220413093539534",
            "\"20220413093539\"",
            "\" 20220413093539534 \"",
        ],
        &[
            "2.0220413093539534e16",
            "\"20221313093539534\"",
            "\"2022-04-13\"",
            "\"\"",
            "null",
        ],
    )
}

// ---- objects -----------------------------------------------------------------------------

/// How a key is written: as given, in another case, and (in a JSON-encoded list written
/// with unquoted keys) bare.
fn key_text(name: &'static str, bare: bool) -> BoxedStrategy<String> {
    let variant = prop_oneof![
        12 => Just(name.to_owned()),
        1 => Just(name.to_ascii_uppercase()),
        1 => Just(name.to_ascii_lowercase()),
        1 => Just({
            let mut c = name.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        }),
    ];
    if bare {
        variant.boxed()
    } else {
        string_lit(variant).boxed()
    }
}

type Field = (&'static str, BoxedStrategy<String>);

/// An object holding each of `fields` (most of the time), some of them twice, and a few
/// unknown keys, in an order that is sometimes shuffled.
fn object(fields: Vec<Field>, bare: bool) -> BoxedStrategy<String> {
    let entry = |(name, value): &Field, p: f64| {
        prop::option::weighted(p, (key_text(name, bare), value.clone())).boxed()
    };
    let once: Vec<_> = fields.iter().map(|f| entry(f, 0.93)).collect();
    let again: Vec<_> = fields.iter().map(|f| entry(f, 0.04)).collect();
    let junk_key = if bare {
        choice(&["ledger", "x_1", "$k"]).boxed()
    } else {
        key_of(&["ledger", "unknown", "$serde_json::private::RawValue", "é"]).boxed()
    };
    let junk = prop::collection::vec((junk_key, odd_tree()), 0..2);
    (once, again, junk, prop::bool::weighted(0.3))
        .prop_flat_map(|(once, again, junk, shuffle)| {
            let entries: Vec<(String, String)> = once
                .into_iter()
                .chain(again)
                .flatten()
                .chain(junk)
                .collect();
            if shuffle {
                Just(entries).prop_shuffle().boxed()
            } else {
                Just(entries).boxed()
            }
        })
        .prop_map(|entries| {
            let inner: Vec<String> = entries.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("{{{}}}", inner.join(","))
        })
        .boxed()
}

/// `employeeType`, at the top level of a user or inside its extension: mostly valid.
fn employee_type() -> BoxedStrategy<String> {
    mostly(
        &["1", "2", "\"3\"", "4", "\" \"", "\"\"", "null", "2.0"],
        &[
            "5",
            "0",
            "-1",
            "2.5",
            "\"x\"",
            "1e3",
            "9223372036854775807",
            "4294967298",
        ],
    )
}

fn extension() -> BoxedStrategy<String> {
    let obj = |bare| {
        object(
            vec![
                ("employeeType", employee_type()),
                ("workPlace", text()),
                ("entryDate", text()),
                ("ledger", odd_tree().boxed()),
            ],
            bare,
        )
    };
    prop_oneof![
        3 => obj(false),
        3 => obj(false).prop_map(|o| enc(&o, false)),
        1 => obj(true).prop_map(|o| enc(&o, false)),
        1 => obj(false).prop_map(|o| enc(&o, true)),
        1 => choice(&[
            "null", "1.5", "1e3", "-1", "true", "\"plain text\"", "\"a\\u0000b\"", "[1,{\"b\":2}]",
            "{\"k\":\"é\\\"\\n\",\"d\":{\"x\":[1.0,-0.0,1e3,18446744073709551615]},\"k\":null}",
            "\"{\\\"workPlace\\\":\\\"w\\\",\\\"workPlace\\\":\\\"last\\\"}\"",
            "\"{\\\"$serde_json::private::RawValue\\\":\\\"1\\\",\\\"workPlace\\\":\\\"w\\\"}\"",
        ]),
        1 => odd_tree(),
    ]
    .boxed()
}

fn user(bare: bool) -> BoxedStrategy<String> {
    object(
        vec![
            ("userName", id()),
            ("name", text()),
            ("orgCode", id()),
            ("position", text()),
            ("employeeCode", id()),
            ("employeeType", employee_type()),
            (
                "role",
                mostly(
                    &["\"user\"", "\"admin\"", "\"ADMIN\"", "\" User \""],
                    &["\"boss\"", "\"\"", "null", "1"],
                ),
            ),
            (
                "enable",
                mostly(
                    &[
                        "\"true\"",
                        "\"true\"",
                        "true",
                        "1",
                        "0",
                        "\"false\"",
                        "false",
                        "\"TRUE\"",
                        "\" 1 \"",
                    ],
                    &[
                        "\"maybe\"",
                        "null",
                        "2",
                        "1.0",
                        "{\"a\":[1,\"\\\"é\"]}",
                        "\"\"",
                    ],
                ),
            ),
            ("enabled", or_odd(choice(&["true", "\"0\""]))),
            ("mobile", id()),
            ("email", text()),
            ("workPlace", text()),
            ("entryDate", text()),
            ("extension", extension()),
        ],
        bare,
    )
}

fn org_entry(bare: bool) -> BoxedStrategy<String> {
    object(
        vec![
            ("orgCode", id()),
            ("orgName", text()),
            ("OrgName", text()),
            ("name", text()),
            ("parentCode", id()),
        ],
        bare,
    )
}

/// A list as an array, as a JSON string holding one (keys quoted or not), or otherwise.
fn list(item: fn(bool) -> BoxedStrategy<String>) -> BoxedStrategy<String> {
    let array = |bare: bool| {
        prop::collection::vec(item(bare), 0..4).prop_map(|v| format!("[{}]", v.join(",")))
    };
    prop_oneof![
        8 => array(false),
        3 => array(false).prop_map(|a| enc(&a, false)),
        2 => array(true).prop_map(|a| enc(&a, false)),
        1 => (array(false), any::<Index>()).prop_map(|(a, at)| {
            // A string holding a malformed array.
            let cut = at.index(a.len());
            enc(a.get(..cut).unwrap_or(&a), false)
        }),
        2 => choice(&[
            "\"\"", "\"  \"", "null", "{}", "1", "\"[1,2]\"", "\"{\\\"a\\\":1}\"", "[1]",
            "[null]", "\"[{\"", "[[]]", "\"null\"",
        ]),
        1 => odd_tree(),
    ]
    .boxed()
}

fn body_of(kind: CallbackKind) -> BoxedStrategy<String> {
    let common = || -> Vec<Field> {
        vec![
            ("instanceId", id()),
            ("tenantId", id()),
            ("flag", flag_v()),
            ("testFlag", test_flag_v()),
            ("timeStamp", time_v()),
        ]
    };
    let mut fields = common();
    match kind {
        CallbackKind::TenantSync => fields.extend([
            ("orderId", id()),
            ("tenantCode", id()),
            ("name", text()),
            ("domainName", text()),
        ]),
        CallbackKind::ApplicationSync => fields.extend([
            ("appId", id()),
            ("clientId", id()),
            ("clientSecret", text()),
        ]),
        CallbackKind::AuthSync => fields.extend([
            ("appId", id()),
            ("currentSyncTime", time_v()),
            ("userList", list(user)),
        ]),
        CallbackKind::SingleOrgSync => fields.extend([
            ("orgCode", id()),
            ("orgName", text()),
            ("OrgName", text()),
            ("name", text()),
            ("parentCode", id()),
        ]),
        CallbackKind::AllOrgSync => fields.extend([
            ("orgInfoList", list(org_entry)),
            ("orgInfo", list(org_entry)),
        ]),
    }
    object(fields, false)
}

/// The body, most of the time as generated; otherwise made not JSON, or not an object.
fn mutate(body: String, how: u8, at: Index, byte: u8) -> Vec<u8> {
    let mut b = body.into_bytes();
    match how {
        0..=84 => {}
        85..=88 => b.truncate(at.index(b.len() + 1)),
        89..=90 => {
            b.insert(0, b'[');
            b.push(b']');
        }
        91 => b = b"\"a string\"".to_vec(),
        92..=93 => b.extend_from_slice(b" x"),
        94..=95 => b.insert(at.index(b.len() + 1), byte),
        96 => b.splice(0..0, [0xEF, 0xBB, 0xBF]).for_each(drop),
        _ => {
            b.splice(0..0, *b"\n\t ").for_each(drop);
            b.extend_from_slice(b" \r\n");
        }
    }
    b
}

fn any_body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(CallbackKind::ALL.to_vec()).prop_flat_map(body_of),
        0u8..100,
        any::<Index>(),
        any::<u8>(),
    )
        .prop_map(|(body, how, at, byte)| mutate(body, how, at, byte))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn parses_generated_bodies_as_the_former_parser(body in any_body()) {
        same(&body)?;
    }

    #[test]
    fn parses_arbitrary_bytes_as_the_former_parser(
        body in prop::collection::vec(any::<u8>(), 0..64)
    ) {
        same(&body)?;
    }
}

// ---- hand-written cases ------------------------------------------------------------------

const TENANT: &str = r#""tenantId":"t","tenantCode":"c","name":"n","domainName":"d","flag":1,"testFlag":0,"timeStamp":"20220413093539534""#;
const AUTH: &str =
    r#""appId":"a","currentSyncTime":"20220420114117642","flag":1,"tenantId":"t","testFlag":0"#;
const ORGS: &str = r#""tenantId":"t","testFlag":0,"flag":1,"timeStamp":"20220413093539534""#;

fn tenant_with(extra: &str) -> String {
    format!("{{{TENANT},{extra}}}")
}

fn auth_with(users: &str) -> String {
    format!("{{{AUTH},\"userList\":{users}}}")
}

fn user_with(extra: &str) -> String {
    auth_with(&format!(
        r#"[{{"userName":"u","name":"n","orgCode":"o","role":"user","enable":"true",{extra}}}]"#
    ))
}

fn orgs_with(list: &str) -> String {
    format!("{{{ORGS},\"orgInfoList\":{list}}}")
}

#[test]
fn numbers_as_strings_and_strings_as_numbers() {
    for extra in [
        r#""flag":"2""#,
        r#""flag":" 1 ""#,
        r#""flag":1.0"#,
        r#""flag":1e0"#,
        r#""flag":"1.0""#,
        r#""testFlag":"1""#,
        r#""testFlag":0.0"#,
        r#""timeStamp":20220413093539534"#,
        r#""timeStamp":2.0220413093539534e16"#,
        r#""tenantId":123"#,
        r#""tenantId":-1"#,
        r#""tenantId":1.5"#,
        r#""tenantId":true"#,
        r#""name":18446744073709551615"#,
        r#""name":1e3"#,
    ] {
        assert_same(tenant_with(extra));
    }
    for extra in [
        r#""employeeType":"2""#,
        r#""employeeType":2.0"#,
        r#""employeeType":2.5"#,
        r#""employeeType":" ""#,
        r#""enable":1"#,
        r#""enable":1.0"#,
        r#""enable":"TRUE""#,
        r#""mobile":13800000000"#,
    ] {
        assert_same(user_with(extra));
    }
}

#[test]
fn key_case_variants() {
    assert_same(
        r#"{"TENANTID":"t","tenantCode":"c","name":"n","domainName":"d","flag":1,"testFlag":0,"timeStamp":"20220413093539534"}"#,
    );
    assert_same(
        r#"{"tenantid":"a","TenantId":"b","TENANTID":"c","tenantCode":"c","NAME":"n","domainname":"d","FLAG":1,"testflag":0,"TimeStamp":"20220413093539534"}"#,
    );
    assert_same(orgs_with("[]").replace("orgInfoList", "ORGINFOLIST"));
    assert_same(user_with(r#""EXTENSION":{"WORKPLACE":"w"},"Enabled":true"#));
}

#[test]
fn duplicate_keys() {
    // The last value wins, at the first key's position; the case-insensitive fallback takes
    // the first key in order, with that key's last value.
    assert_same(tenant_with(r#""tenantId":"second""#));
    assert_same(
        r#"{"TENANTID":"a","TenantId":"b","TENANTID":"c","tenantCode":"c","name":"n","domainName":"d","flag":1,"testFlag":0,"timeStamp":"20220413093539534"}"#,
    );
    assert_same(
        r#"{"TenantId":"b","TENANTID":"a","TenantId":null,"tenantCode":"c","name":"n","domainName":"d","flag":1,"testFlag":0,"timeStamp":"20220413093539534"}"#,
    );
    assert_same(tenant_with(r#""flag":"x","flag":0"#));
    assert_same(tenant_with(r#""flag":{"b":1,"a":2,"b":3}"#));
    assert_same(user_with(
        r#""extension":{"b":1,"a":[1,2],"b":{"x":1,"x":2}}"#,
    ));
    assert_same(user_with(
        r#""extension":{"WORKPLACE":"a","workplace":"b","WORKPLACE":"c"}"#,
    ));
    assert_same(user_with(
        r#""extension":"{\"WORKPLACE\":\"a\",\"workplace\":\"b\",\"WORKPLACE\":\"c\"}""#,
    ));
    assert_same(auth_with(
        r#"[{"userName":"u","userName":"v","name":"n","orgCode":"o","role":"user","enable":"true"},{"userName":"v","name":"m","orgCode":"o","role":"admin","enable":"false"}]"#,
    ));
    assert_same(format!(
        "{{{ORGS},\"orgInfoList\":[],\"orgInfoList\":[{{\"orgCode\":\"1\",\"name\":\"a\"}}]}}"
    ));
}

#[test]
fn lists_as_arrays_strings_and_bare_keys() {
    for list in [
        r#"[{"orgCode":"1","orgName":"A"},{"orgCode":"1","OrgName":"B"}]"#,
        r#""[{\"orgCode\":\"1\",\"orgName\":\"A\"}]""#,
        r#""[{orgCode:\"00000001\", orgName:\"产品部\", parentCode:\"265789314\" }, {orgCode:\"2\", OrgName:\"x, y: {z}\"}]""#,
        r#""[{orgCode:1, orgName:\"A\"}""#,
        r#""{\"orgCode\":\"1\"}""#,
        r#""  ""#,
        r#""""#,
        r#""null""#,
        "[1]",
        "{}",
        "7",
        "null",
    ] {
        assert_same(orgs_with(list));
        assert_same(auth_with(list));
    }
    assert_same(format!(
        "{{{ORGS},\"orgInfo\":\"[{{\\\"orgCode\\\":\\\"1\\\",\\\"name\\\":\\\"A\\\"}}]\"}}"
    ));
    assert_same(auth_with(
        r#""[{userName:\"u1\",enable:false},{userName:\"u1\"}]""#,
    ));
}

#[test]
fn extensions() {
    for ext in [
        r#"{"employeeType":"2","workPlace":"Xi'an","entryDate":"2020-1-2","ledger":"A"}"#,
        r#"{"k":"é\"\n\u0001","d":{"x":[1.0,-0.0,1e3,18446744073709551615,-1]}}"#,
        r#""{\"employeeType\":3,\"workPlace\":\" w \"}""#,
        r#""{employeeType:3}""#,
        r#""not json""#,
        r#""a\u0000b""#,
        r#""""#,
        "1.5",
        "1e3",
        "18446744073709551615",
        "-1",
        "true",
        "null",
        "[1,{\"b\":2}]",
        r#"{"employeeType":9}"#,
        r#"{"workPlace":"é"}"#,
    ] {
        assert_same(user_with(&format!(r#""extension":{ext}"#)));
        assert_same(user_with(&format!(
            r#""extension":{ext},"employeeType":null,"workPlace":" ""#
        )));
    }
    let long = "é".repeat(256);
    assert_same(user_with(&format!(
        r#""extension":{{"workPlace":"{long}"}}"#
    )));
}

#[test]
fn escapes_in_strings_and_keys() {
    assert_same(tenant_with(r#""name":"a\"b\u00e9\nc""#).replace(r#""name":"n","#, ""));
    assert_same(
        r#"{"\u0074enantId":"t\u00e9","tenantCode":"c\/d","name":"\ud83d\ude00","domainName":"d\\","flag":1,"testFlag":0,"timeStamp":"20220413093539534"}"#,
    );
    assert_same(tenant_with(r#""name":"\u0000""#));
    assert_same(user_with(r#""enable":"\"é\n""#));
    assert_same(user_with(
        r#""enable":{"\u00e9":"\"\\\/\b\f\n\r\t\u0001\u007f"}"#,
    ));
    assert_same(r#"{"tenantId":"\ud800"}"#);
}

#[test]
fn nulls_missing_fields_and_long_values() {
    assert_same(tenant_with(r#""tenantId":null"#).replace(r#""tenantId":"t","#, ""));
    assert_same(tenant_with(r#""flag":null"#).replace(r#""flag":1,"#, ""));
    assert_same(tenant_with(r#""testFlag":null"#).replace(r#""testFlag":0,"#, ""));
    assert_same(tenant_with(r#""instanceId":null,"orderId":"""#));
    for field in [
        "tenantId",
        "tenantCode",
        "name",
        "flag",
        "testFlag",
        "timeStamp",
    ] {
        let body: serde_json::Value = serde_json::from_str(&tenant_with("\"x\":1")).unwrap();
        let mut o = body.as_object().unwrap().clone();
        o.shift_remove(field);
        assert_same(serde_json::Value::Object(o).to_string());
    }
    assert_same(format!("{{{AUTH}}}"));
    assert_same(auth_with("[{}]"));
    assert_same(auth_with("[{\"userName\":\"u\"}]").replace("\"flag\":1", "\"flag\":0"));
    for n in [64, 65, 255, 256] {
        assert_same(tenant_with(&format!(r#""tenantId":"{}""#, "x".repeat(n))));
        assert_same(tenant_with(&format!(r#""name":"{}""#, "字".repeat(n))));
    }
    assert_same(user_with(&format!(r#""email":"{}""#, "e".repeat(129))));
}

#[test]
fn not_json_and_not_objects() {
    for body in [
        "",
        " ",
        "{",
        "{nope",
        "[1]",
        "null",
        "1",
        "\"s\"",
        "{} x",
        "{\"a\":1,}",
        "{\"tenantId\":1e400}",
        "{\"tenantId\":NaN}",
        "\u{feff}{}",
        "{\"a\":\"\u{1}\"}",
    ] {
        assert_same(body);
    }
    assert_same(b"{\"tenantId\":\"\xff\"}");
    assert_same("[".repeat(127) + &"]".repeat(127));
    assert_same("[".repeat(128) + &"]".repeat(128));
    assert_same(tenant_with(&format!(
        r#""x":{}1{}"#,
        "[".repeat(126),
        "]".repeat(126)
    )));
    let deep = "[".repeat(130) + &"]".repeat(130);
    assert_same(orgs_with(&enc(&deep, false)));
}

#[test]
fn big_negative_and_float_numbers() {
    for n in [
        "1.0",
        "1e3",
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "-0",
        "-9223372036854775809",
        "0.1000000000000000055511151231257827",
        "1.7976931348623157e308",
    ] {
        assert_same(tenant_with(&format!(r#""flag":{n}"#)));
        assert_same(tenant_with(&format!(r#""testFlag":{n}"#)));
        assert_same(tenant_with(&format!(r#""name":{n}"#)));
        assert_same(user_with(&format!(r#""employeeType":{n}"#)));
        assert_same(user_with(&format!(r#""enable":{n}"#)));
        assert_same(user_with(&format!(r#""extension":{{"v":{n}}}"#)));
        assert_same(user_with(&format!(r#""extension":{n}"#)));
    }
}

/// serde_json's raw-value token as a key: with its `raw_value` feature (on in the workspace's
/// binaries, through axum and sqlx) `Value` reads such an object as the JSON text it holds;
/// without it (this crate alone), as an object. Either way the answers must agree.
#[test]
fn raw_value_token_as_key() {
    let inner = enc(&tenant_with("\"x\":1"), false);
    for body in [
        format!(r#"{{"$serde_json::private::RawValue":{inner}}}"#),
        format!(r#"{{"$serde_json::private::RawValue":{inner},"tenantId":"t"}}"#),
        format!(r#"{{"\u0024serde_json::private::RawValue":{inner}}}"#),
        r#"{"$serde_json::private::RawValue":1}"#.to_owned(),
        r#"{"$serde_json::private::RawValue":"{"}"#.to_owned(),
        format!(r#"{{"tenantId":"t","$serde_json::private::RawValue":{inner}}}"#),
        tenant_with(r#""flag":{"$serde_json::private::RawValue":"2"}"#),
        tenant_with(r#""flag":{"$serde_json::private::RawValue":"\"0\""}"#),
        user_with(r#""extension":{"$serde_json::private::RawValue":"{\"workPlace\":\"w\"}"}"#),
        user_with(
            r#""extension":"{\"$serde_json::private::RawValue\":\"1\",\"workPlace\":\"w\"}""#,
        ),
        user_with(
            r#""extension":"{\"workPlace\":{\"$serde_json::private::RawValue\":\"\\\"w\\\"\"}}""#,
        ),
        orgs_with(
            r#""[{\"$serde_json::private::RawValue\":\"{\\\"orgCode\\\":\\\"1\\\",\\\"name\\\":\\\"a\\\"}\"}]""#,
        ),
    ] {
        assert_same(body);
    }
}

#[test]
fn the_corpus_parses_as_before() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        assert_same(std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 20, "{n} corpus files");
    // As tests/parse_corpus.rs builds it: a one-mebibyte string.
    assert_same(tenant_with(&format!(r#""name":"{}""#, "x".repeat(1 << 20))));
}

/// A hostile object of many keys (every lookup misses, so each scans them all, ignoring
/// case) parses in linear time, as before.
#[test]
fn many_keys_stay_linear() {
    let mut body = String::from("{");
    for i in 0..200_000 {
        body.push_str(&format!("\"k{i}\":{i},"));
    }
    body.push_str("\"k\":0}");
    let t = std::time::Instant::now();
    for kind in CallbackKind::ALL {
        assert_eq!(
            parse(kind, body.as_bytes()).unwrap_err(),
            reference::parse(kind, body.as_bytes()).unwrap_err()
        );
    }
    assert!(t.elapsed() < std::time::Duration::from_secs(60));
}

/// The body of the benchmark: an authSync of five users, 1.4 KiB.
fn bench_body() -> String {
    let users: Vec<String> = (0..5)
        .map(|i| {
            format!(
                r#"{{"userName":"user-1-{i}","name":"Bench User 1 {i}","orgCode":"org-{i}","position":"Engineer","employeeCode":"E00000010{i}","employeeType":1,"role":"admin","enable":"true","mobile":"1380000000{i}","email":"user1.{i}@example.com","workPlace":"Shenzhen Bantian Base F3"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"instanceId":"bench-instance","tenantId":"bench-tenant","appId":"bench-app","userList":[{}],"currentSyncTime":"20261204120000000","flag":1,"testFlag":0,"timeStamp":"20261204120000000"}}"#,
        users.join(",")
    )
}

/// Times 100 000 parses of [`bench_body`] by each parser, in alternating batches of 1 000,
/// and prints the median batch's time per parse. Run it in release mode:
/// `cargo test --release -p kitsync-domain -- --ignored --nocapture parse_speed`.
#[test]
#[ignore = "a measurement, not a test: run it in release mode"]
fn parse_speed() {
    use std::hint::black_box;
    use std::time::{Duration, Instant};
    type Parser = fn(CallbackKind, &[u8]) -> Result<crate::Command, crate::FieldError>;
    let body = bench_body();
    let body = body.as_bytes();
    assert_eq!(
        parse(CallbackKind::AuthSync, body),
        reference::parse(CallbackKind::AuthSync, body)
    );
    let parsers: [(&str, Parser); 2] = [("old (Value)", reference::parse), ("new (J)", parse)];
    const BATCH: u32 = 1_000;
    let mut batches: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for (_, p) in &parsers {
        for _ in 0..BATCH {
            black_box(p(CallbackKind::AuthSync, black_box(body)).unwrap());
        }
    }
    for _ in 0..100 {
        for (i, (_, p)) in parsers.iter().enumerate() {
            let t = Instant::now();
            for _ in 0..BATCH {
                black_box(p(CallbackKind::AuthSync, black_box(body)).unwrap());
            }
            batches[i].push(t.elapsed() / BATCH);
        }
    }
    println!(
        "authSync, 5 users, {} bytes; 100 000 parses each",
        body.len()
    );
    for ((name, _), mut b) in parsers.iter().zip(batches) {
        b.sort();
        println!(
            "{name:>12}: median {:?}/parse (fastest batch {:?}, slowest {:?})",
            b[b.len() / 2],
            b[0],
            b[b.len() - 1]
        );
    }
}
