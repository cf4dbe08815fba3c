//! A corpus of nasty callback bodies (`tests/corpus/<callback>.<case>.json`, plus a 1 MiB
//! string built here rather than committed), each with the answer the parser must give: a
//! refusal naming the field and what is wrong, or a documented acceptance. Every file also
//! goes through the other four callbacks with the properties of `props::check`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod props;

use kitsync_domain::parse::parse;
use kitsync_domain::{CallbackKind, Command};
use props::{check, Answer};
use std::path::Path;

/// What the parser must answer.
enum Expect {
    /// Refused: the field path (`""`: the body as a whole) and words of the problem.
    Refused(&'static str, &'static str),
    /// Accepted, and the command is as described.
    Accepted(fn(&Command) -> bool),
}

use Expect::{Accepted, Refused};

const NOT_JSON: &str = "body is not valid JSON";

/// Every corpus file, by name, with its answer.
fn expectations() -> Vec<(&'static str, Expect)> {
    vec![
        // JSON is UTF-8 without a byte-order mark (RFC 8259 §8.1); the marketplace sends that.
        ("tenantSync.bom.json", Refused("", NOT_JSON)),
        ("tenantSync.utf16le.json", Refused("", NOT_JSON)),
        ("tenantSync.utf16be.json", Refused("", NOT_JSON)),
        // Not JSON numbers.
        ("tenantSync.nan.json", Refused("", NOT_JSON)),
        ("tenantSync.infinity.json", Refused("", NOT_JSON)),
        ("tenantSync.number_1e400.json", Refused("", "out of range")),
        // A JSON number, but no flag.
        (
            "tenantSync.flag_2e64.json",
            Refused("flag", "must be one of 0, 1, 2"),
        ),
        // The last of a repeated key wins (as the documented singleOrgSync example needs).
        (
            "tenantSync.duplicate_keys.json",
            Accepted(|c| c.tenant_id() == "second"),
        ),
        ("tenantSync.lone_surrogate.json", Refused("", NOT_JSON)),
        (
            "tenantSync.escaped_nul.json",
            Refused("name", "control characters"),
        ),
        ("tenantSync.raw_control_char.json", Refused("", NOT_JSON)),
        // Nesting stops at serde_json's recursion limit (128), long before the stack.
        (
            "tenantSync.deep_array_body.json",
            Refused("", "recursion limit"),
        ),
        (
            "authSync.deep_array_field.json",
            Refused("", "recursion limit"),
        ),
        (
            "allOrgSync.deep_array_in_string.json",
            Refused("orgInfoList", "not a JSON array"),
        ),
        (
            "tenantSync.trailing_garbage.json",
            Refused("", "trailing characters"),
        ),
        (
            "tenantSync.not_object.json",
            Refused("", "body must be a JSON object"),
        ),
        ("tenantSync.empty.json", Refused("", NOT_JSON)),
        (
            "tenantSync.timestamp_float.json",
            Refused("timeStamp", "yyyyMMddHHmmssSSS"),
        ),
        // Keys in another case are read (documented tolerance).
        (
            "tenantSync.key_case.json",
            Accepted(|c| c.tenant_id() == "68cb0e"),
        ),
        (
            "authSync.userlist_object.json",
            Refused("userList", "must be an array"),
        ),
        (
            "authSync.extension_nul.json",
            Refused("userList[0].extension", "U+0000"),
        ),
        (
            "authSync.extension_workplace_long.json",
            Refused("userList[0].workPlace", "at most 255"),
        ),
        // A number is read exactly, so the extension keeps its digits.
        (
            "authSync.extension_float.json",
            Accepted(|c| {
                // The file's digits, as serde_json writes this f64 (Rust reads the literal
                // exactly).
                let exact = serde_json::json!({"score": -9.133_268_357_421_598e268}).to_string();
                matches!(c, Command::Auth(a) if a.users[0].extension.as_deref() == Some(&*exact))
            }),
        ),
        (
            "authSync.surrogate_pair.json",
            Accepted(|c| matches!(c, Command::Auth(a) if a.users[0].name.as_deref() == Some("👩‍💻"))),
        ),
        (
            "allOrgSync.malformed_list_string.json",
            Refused("orgInfoList", "is a string but not a JSON array"),
        ),
        // A list as a string with unquoted keys (the documented allOrgSync example).
        (
            "allOrgSync.bare_keys_string.json",
            Accepted(|c| {
                matches!(c, Command::FullOrg(f)
                    if f.orgs.len() == 2 && f.orgs[1].parent_code.as_deref() == Some("1"))
            }),
        ),
        // Numbers where strings are expected are read as their text (documented tolerance).
        (
            "singleOrgSync.number_for_string.json",
            Accepted(|c| matches!(c, Command::Org(o) if o.org_code == "10000")),
        ),
    ]
}

fn kind_of(file: &str) -> CallbackKind {
    let path = file.split('.').next().unwrap();
    CallbackKind::ALL
        .into_iter()
        .find(|k| k.path() == path)
        .unwrap_or_else(|| panic!("{file}: the name starts with a callback"))
}

fn judge(name: &str, kind: CallbackKind, bytes: &[u8], expect: &Expect) {
    let answer = check(kind, bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    match (expect, &answer) {
        (Refused(field, says), Answer::Refused(e)) => {
            assert_eq!(e.field, *field, "{name}: {e}");
            assert!(e.problem.contains(says), "{name}: `{e}` should say {says}");
        }
        (Accepted(ok), Answer::Accepted) => {
            assert!(
                ok(&parse(kind, bytes).unwrap()),
                "{name}: not as documented"
            );
        }
        _ => panic!("{name}: answered {answer:?}"),
    }
    for other in CallbackKind::ALL {
        check(other, bytes).unwrap_or_else(|e| panic!("{name} as {other}: {e}"));
    }
}

#[test]
fn every_corpus_input_gets_its_documented_answer() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let expectations = expectations();
    let mut listed: Vec<&str> = expectations.iter().map(|(f, _)| *f).collect();
    listed.sort_unstable();
    assert_eq!(
        files, listed,
        "every corpus file has its expectation, and only those"
    );
    for (name, expect) in &expectations {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        judge(name, kind_of(name), &bytes, expect);
    }
}

#[test]
fn a_one_mebibyte_string_is_refused_naming_its_field() {
    let body = serde_json::json!({
        "tenantId": "t", "tenantCode": "c", "name": "x".repeat(1 << 20), "domainName": "d",
        "flag": 1, "testFlag": 0, "timeStamp": "20220413093539534",
    })
    .to_string();
    judge(
        "1 MiB name",
        CallbackKind::TenantSync,
        body.as_bytes(),
        &Refused("name", "is 1048576 characters long, at most 255 allowed"),
    );
}
