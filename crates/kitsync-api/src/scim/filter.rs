//! SCIM filters (RFC 7644 §3.4.2.2): the parser, and an evaluator over a resource's JSON.
//!
//! ```text
//! FILTER    = attrExp / logExp / valuePath / *1"not" "(" FILTER ")" / "(" FILTER ")"
//! valuePath = attrPath "[" valFilter "]"
//! attrExp   = (attrPath SP "pr") / (attrPath SP compareOp SP compValue)
//! compValue = false / null / true / number / string
//! attrPath  = [URI ":"] ATTRNAME *1subAttr
//! ```
//! Precedence: `not` binds tighter than `and`, which binds tighter than `or`. Operators and
//! attribute names are case-insensitive.
//!
//! Bounds, so that no filter can exhaust the stack of whatever walks it (the parser, the
//! evaluator, the SQL compilation, the database's own parser): at most [`MAX_FILTER_BYTES`]
//! bytes and [`MAX_DEPTH`] levels of parentheses, `not (…)` and `attr[…]`; a run of `and`s
//! (or of `or`s) becomes a balanced tree, so the 350 terms 4 096 bytes can hold nest 9 deep,
//! not 350.
//! A `compValue` number is a JSON number (no `inf` or `NaN`, none beyond a double), and a
//! string may not hold U+0000, which no stored value holds and PostgreSQL cannot take as a
//! parameter.
//!
//! Users are filtered in SQL (see `scim::users`, which compiles a [`Filter`] to a
//! `kitsync_store::MemberCond`); groups, a handful per tenant, with [`Filter::matches`] over
//! their JSON. The evaluator is also the reference the SQL compilation is tested against.
use serde_json::Value;
use std::cmp::Ordering;

/// Longest filter, in bytes.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Deepest nesting of parentheses, `not (…)` and `attr[…]`.
pub const MAX_DEPTH: usize = 32;

/// A comparison operator: the store's, so that a Users filter compiles to SQL as parsed.
pub use kitsync_store::CmpOp as Op;

/// A comparison's right-hand side.
#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

/// `[URI ":"] ATTRNAME ["." subAttr]`; `uri` is the schema URN when one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    pub uri: Option<String>,
    pub attr: String,
    pub sub: Option<String>,
}

impl AttrPath {
    /// Parses `urn:…:User:name.givenName`, `emails.value` or `userName`.
    ///
    /// # Errors
    /// A message naming the bad path.
    pub fn parse(text: &str) -> Result<AttrPath, String> {
        let (uri, rest) = match text.rfind(':') {
            Some(i) if text[..i].to_ascii_lowercase().starts_with("urn:") => {
                (Some(text[..i].to_owned()), &text[i + 1..])
            }
            Some(_) => return Err(format!("`{text}` is not an attribute path")),
            None => (None, text),
        };
        let (attr, sub) = match rest.split_once('.') {
            Some((a, s)) => (a, Some(s)),
            None => (rest, None),
        };
        let valid = |s: &str| {
            let mut chars = s.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '$')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
        };
        if !valid(attr) || sub.is_some_and(|s| !valid(s)) {
            return Err(format!("`{text}` is not an attribute path"));
        }
        Ok(AttrPath {
            uri,
            attr: attr.to_owned(),
            sub: sub.map(str::to_owned),
        })
    }

    /// `attr` or `attr.sub`, lowercased, without the URI.
    #[must_use]
    pub fn key(&self) -> String {
        match &self.sub {
            Some(s) => format!("{}.{}", self.attr, s).to_ascii_lowercase(),
            None => self.attr.to_ascii_lowercase(),
        }
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Present(AttrPath),
    Compare(AttrPath, Op, CompValue),
    /// `attr[filter]`: some value of the multi-valued `attr` satisfies `filter`, whose paths
    /// name its sub-attributes.
    ValuePath(AttrPath, Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(f64),
    Open,
    Close,
    OpenBracket,
    CloseBracket,
}

fn tokenize(text: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' | b')' | b'[' | b']' => {
                out.push(match c {
                    b'(' => Tok::Open,
                    b')' => Tok::Close,
                    b'[' => Tok::OpenBracket,
                    _ => Tok::CloseBracket,
                });
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err("a string is not closed".into()),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                let s: String = serde_json::from_str(&text[start..i])
                    .map_err(|e| format!("bad string {}: {e}", &text[start..i]))?;
                if s.contains('\0') {
                    return Err(format!(
                        "the string {} holds U+0000, which no value can",
                        &text[start..i]
                    ));
                }
                out.push(Tok::Str(s));
            }
            _ => {
                let start = i;
                while i < bytes.len() && !b" \t\r\n()[]\"".contains(&bytes[i]) {
                    i += 1;
                }
                let word = &text[start..i];
                if word.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
                    // JSON's grammar, not Rust's: `-inf`, `NaN` and `1e999` (infinity) are
                    // not numbers a SCIM value can be.
                    let n = serde_json::from_str::<serde_json::Number>(word)
                        .ok()
                        .and_then(|n| n.as_f64())
                        .filter(|n| n.is_finite())
                        .ok_or_else(|| format!("`{word}` is not a number"))?;
                    out.push(Tok::Num(n));
                } else {
                    out.push(Tok::Word(word.to_owned()));
                }
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn or(&mut self, depth: usize) -> Result<Filter, String> {
        self.joined(depth, "or", Parser::and, Filter::Or)
    }

    fn and(&mut self, depth: usize) -> Result<Filter, String> {
        self.joined(depth, "and", Parser::unary, Filter::And)
    }

    /// Terms read by `term`, separated by the keyword `word`, joined by `join` ([`balanced`]).
    fn joined(
        &mut self,
        depth: usize,
        word: &str,
        term: fn(&mut Parser, usize) -> Result<Filter, String>,
        join: fn(Box<Filter>, Box<Filter>) -> Filter,
    ) -> Result<Filter, String> {
        let mut terms = vec![term(self, depth)?];
        while self.keyword(word) {
            self.pos += 1;
            terms.push(term(self, depth)?);
        }
        balanced(terms, join)
    }

    fn unary(&mut self, depth: usize) -> Result<Filter, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "the filter nests too deeply (at most {MAX_DEPTH} levels)"
            ));
        }
        if self.keyword("not") && matches!(self.toks.get(self.pos + 1), Some(Tok::Open)) {
            self.pos += 1;
            return Ok(Filter::Not(Box::new(self.group(depth + 1)?)));
        }
        if matches!(self.peek(), Some(Tok::Open)) {
            return self.group(depth + 1);
        }
        let path = match self.next() {
            Some(Tok::Word(w)) => AttrPath::parse(&w)?,
            Some(other) => return Err(format!("expected an attribute path, found {other:?}")),
            None => return Err("the filter ends where an attribute path was expected".into()),
        };
        if matches!(self.peek(), Some(Tok::OpenBracket)) {
            self.pos += 1;
            let inner = self.or(depth + 1)?;
            if self.next() != Some(Tok::CloseBracket) {
                return Err(format!("`{}[` is not closed by `]`", path.attr));
            }
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        let op = match self.next() {
            Some(Tok::Word(w)) => w.to_ascii_lowercase(),
            _ => {
                return Err(format!(
                    "expected an operator after `{}` (eq, ne, co, sw, ew, gt, ge, lt, le, pr)",
                    path.key()
                ))
            }
        };
        let op = match op.as_str() {
            "pr" => return Ok(Filter::Present(path)),
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "co" => Op::Co,
            "sw" => Op::Sw,
            "ew" => Op::Ew,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            other => {
                return Err(format!(
                    "`{other}` is not an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)"
                ))
            }
        };
        let value = match self.next() {
            Some(Tok::Str(s)) => CompValue::Str(s),
            Some(Tok::Num(n)) => CompValue::Num(n),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => CompValue::Bool(true),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => CompValue::Bool(false),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => CompValue::Null,
            _ => {
                return Err(format!(
                "expected a value (a \"string\", number, true, false or null) after `{} {op:?}`",
                path.key()
            ))
            }
        };
        Ok(Filter::Compare(path, op, value))
    }

    fn group(&mut self, depth: usize) -> Result<Filter, String> {
        if self.next() != Some(Tok::Open) {
            return Err("expected `(`".into());
        }
        let inner = self.or(depth)?;
        if self.next() != Some(Tok::Close) {
            return Err("a `(` is not closed by `)`".into());
        }
        Ok(inner)
    }
}

/// Joins `terms` (in order) with `join` as a balanced tree: `a or b or c or d` is
/// `(a or b) or (c or d)`, the same filter (`and` and `or` are associative), nested log2(n)
/// deep rather than n.
fn balanced(
    mut terms: Vec<Filter>,
    join: fn(Box<Filter>, Box<Filter>) -> Filter,
) -> Result<Filter, String> {
    while terms.len() > 1 {
        let mut pairs = Vec::with_capacity(terms.len().div_ceil(2));
        let mut it = terms.into_iter();
        while let Some(a) = it.next() {
            pairs.push(match it.next() {
                Some(b) => join(Box::new(a), Box::new(b)),
                None => a,
            });
        }
        terms = pairs;
    }
    terms
        .pop()
        .ok_or_else(|| "an expression is missing".to_owned())
}

impl Filter {
    /// Parses a filter expression.
    ///
    /// # Errors
    /// A message saying what is wrong and where.
    pub fn parse(text: &str) -> Result<Filter, String> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(format!(
                "the filter is longer than {MAX_FILTER_BYTES} bytes"
            ));
        }
        let mut p = Parser {
            toks: tokenize(text)?,
            pos: 0,
        };
        if p.toks.is_empty() {
            return Err("the filter is empty".into());
        }
        let f = p.or(0)?;
        match p.peek() {
            None => Ok(f),
            Some(t) => Err(format!("unexpected {t:?} after a complete filter")),
        }
    }

    /// Whether `resource` (a SCIM resource's full JSON) satisfies the filter; `case_exact`
    /// tells, for a lowercased `attr.sub` key, whether its strings compare exactly.
    #[must_use]
    pub fn matches(&self, resource: &Value, case_exact: &dyn Fn(&str) -> bool) -> bool {
        match self {
            Filter::And(a, b) => a.matches(resource, case_exact) && b.matches(resource, case_exact),
            Filter::Or(a, b) => a.matches(resource, case_exact) || b.matches(resource, case_exact),
            Filter::Not(f) => !f.matches(resource, case_exact),
            Filter::Present(p) => values(resource, p)
                .iter()
                .any(|v| !matches!(v, Value::Null) && v.as_str() != Some("")),
            Filter::Compare(p, op, want) => {
                let found = values(resource, p);
                let exact = case_exact(&p.key());
                if *op == Op::Ne {
                    return !found.iter().any(|v| compare(v, Op::Eq, want, exact));
                }
                if found.is_empty() {
                    return *op == Op::Eq && *want == CompValue::Null;
                }
                found.iter().any(|v| compare(v, *op, want, exact))
            }
            Filter::ValuePath(p, inner) => {
                let Some(list) = field(resource, p) else {
                    return false;
                };
                let items: Vec<&Value> = match list {
                    Value::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                let prefix = p.attr.to_ascii_lowercase();
                let sub_exact = |k: &str| case_exact(&format!("{prefix}.{k}"));
                items.iter().any(|item| inner.matches(item, &sub_exact))
            }
        }
    }
}

/// The attribute (without sub-attribute) of `resource` that `p` names.
fn field<'a>(resource: &'a Value, p: &AttrPath) -> Option<&'a Value> {
    let obj = resource.as_object()?;
    let scope = match &p.uri {
        // An extension's attributes live under its URN; the core schemas' at the top.
        Some(uri) if !uri.to_ascii_lowercase().contains(":core:") => obj
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(uri))
            .map(|(_, v)| v)?
            .as_object()?,
        _ => obj,
    };
    scope
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(&p.attr))
        .map(|(_, v)| v)
}

/// Every value `p` reaches: a multi-valued attribute yields each element's `sub` (or, without
/// one, each element's `value`, or the element itself).
fn values<'a>(resource: &'a Value, p: &AttrPath) -> Vec<&'a Value> {
    let Some(v) = field(resource, p) else {
        return Vec::new();
    };
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let pick = |item: &'a Value, key: &str| -> Option<&'a Value> {
        item.as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    };
    items
        .into_iter()
        .filter_map(|item| match (&p.sub, item) {
            (Some(sub), _) => pick(item, sub),
            (None, Value::Object(_)) => pick(item, "value"),
            (None, other) => Some(other),
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn compare(found: &Value, op: Op, want: &CompValue, exact: bool) -> bool {
    match (found, want) {
        (Value::String(s), CompValue::Str(w)) => {
            let (s, w) = if exact {
                (s.clone(), w.clone())
            } else {
                (s.to_lowercase(), w.to_lowercase())
            };
            match op {
                Op::Eq => s == w,
                Op::Ne => s != w,
                Op::Co => s.contains(&w),
                Op::Sw => s.starts_with(&w),
                Op::Ew => s.ends_with(&w),
                Op::Gt => s > w,
                Op::Ge => s >= w,
                Op::Lt => s < w,
                Op::Le => s <= w,
            }
        }
        (Value::Bool(b), CompValue::Bool(w)) => match op {
            Op::Eq => b == w,
            Op::Ne => b != w,
            _ => false,
        },
        (Value::Number(n), CompValue::Num(w)) => {
            let Some(n) = n.as_f64() else { return false };
            let ord = n.partial_cmp(w);
            match op {
                Op::Eq => ord == Some(Ordering::Equal),
                Op::Ne => ord != Some(Ordering::Equal),
                Op::Gt => ord == Some(Ordering::Greater),
                Op::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
                Op::Lt => ord == Some(Ordering::Less),
                Op::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
                Op::Co | Op::Sw | Op::Ew => false,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> AttrPath {
        AttrPath::parse(s).unwrap()
    }

    #[test]
    fn parses_precedence_and_groups() {
        let f = Filter::parse(r#"a eq "1" or b eq "2" and not (c pr)"#).unwrap();
        assert_eq!(
            f,
            Filter::Or(
                Box::new(Filter::Compare(p("a"), Op::Eq, CompValue::Str("1".into()))),
                Box::new(Filter::And(
                    Box::new(Filter::Compare(p("b"), Op::Eq, CompValue::Str("2".into()))),
                    Box::new(Filter::Not(Box::new(Filter::Present(p("c"))))),
                )),
            )
        );
        let g = Filter::parse(r#"(a EQ "1" OR b eq "2") And c Pr"#).unwrap();
        assert!(matches!(g, Filter::And(..)));
    }

    #[test]
    fn parses_uris_value_paths_and_literals() {
        let f = Filter::parse(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "7""#,
        )
        .unwrap();
        let Filter::Compare(path, Op::Eq, _) = f else {
            panic!("{f:?}")
        };
        assert_eq!(
            path.uri.as_deref(),
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        );
        assert_eq!(path.attr, "employeeNumber");
        let v = Filter::parse(r#"emails[type eq "work" and value co "@x"]"#).unwrap();
        assert!(matches!(v, Filter::ValuePath(ref a, _) if a.attr == "emails"));
        assert_eq!(
            Filter::parse("active eq true").unwrap(),
            Filter::Compare(p("active"), Op::Eq, CompValue::Bool(true))
        );
        assert_eq!(
            Filter::parse(r#"userName eq "a \"q\" \u00e9""#).unwrap(),
            Filter::Compare(p("userName"), Op::Eq, CompValue::Str("a \"q\" é".into()))
        );
        assert_eq!(
            Filter::parse("x gt -1.5").unwrap(),
            Filter::Compare(p("x"), Op::Gt, CompValue::Num(-1.5))
        );
    }

    #[test]
    fn refuses_malformed_filters_with_a_reason() {
        for (bad, says) in [
            ("", "empty"),
            ("userName", "operator"),
            ("userName eq", "value"),
            ("userName xx \"a\"", "not an operator"),
            ("userName eq \"a", "not closed"),
            ("(userName pr", "not closed"),
            ("userName pr and", "attribute path"),
            ("userName pr userName", "unexpected"),
            ("emails[value pr", "not closed"),
            ("1abc eq \"x\"", "not a number"),
            ("a.b.c pr", "not an attribute path"),
            ("x gt -inf", "not a number"),
            ("x gt -NaN", "not a number"),
            ("x lt 1e999", "not a number"),
            ("x lt 01", "not a number"),
            ("a eq \"x\\u0000\"", "U+0000"),
        ] {
            let err = Filter::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?} → {err}");
        }
    }

    #[test]
    fn runs_of_and_and_or_nest_logarithmically_and_keep_their_meaning() {
        fn depth(f: &Filter) -> usize {
            match f {
                Filter::And(a, b) | Filter::Or(a, b) => 1 + depth(a).max(depth(b)),
                Filter::Not(a) | Filter::ValuePath(_, a) => 1 + depth(a),
                Filter::Present(_) | Filter::Compare(..) => 0,
            }
        }
        // As many as 4 096 bytes hold.
        let terms: Vec<String> = (0..350).map(|i| format!("a{i} pr")).collect();
        let any = Filter::parse(&terms.join(" or ")).unwrap();
        let all = Filter::parse(&terms.join(" and ")).unwrap();
        assert_eq!(depth(&any), 9, "⌈log2 350⌉");
        assert_eq!(depth(&all), 9);
        let exact = |_: &str| false;
        assert!(any.matches(&json!({"a349": 1}), &exact));
        assert!(!any.matches(&json!({"b": 1}), &exact));
        let every: serde_json::Map<String, Value> =
            (0..350).map(|i| (format!("a{i}"), json!(1))).collect();
        assert!(all.matches(&Value::Object(every.clone()), &exact));
        let mut one_short = every;
        one_short.remove("a250");
        assert!(!all.matches(&Value::Object(one_short), &exact));
    }

    #[test]
    fn evaluates_over_json_like_rfc_7644() {
        let user = json!({
            "userName": "Alice",
            "active": true,
            "emails": [{"value": "a@x.org", "type": "work"}],
            "name": {"formatted": "Alice A"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "d1"},
        });
        let exact = |k: &str| k == "username";
        let yes = |f: &str| Filter::parse(f).unwrap().matches(&user, &exact);
        assert!(yes(r#"userName eq "Alice""#));
        assert!(!yes(r#"userName eq "alice""#));
        assert!(yes(r#"USERNAME sw "Al""#));
        assert!(yes(r#"name.formatted co "ice a""#));
        assert!(yes(r#"emails co "@X.org""#));
        assert!(yes(r#"emails[type eq "work" and value ew ".org"]"#));
        assert!(!yes(r#"emails[type eq "home"]"#));
        assert!(yes("active eq true and not (title pr)"));
        assert!(yes(r#"title ne "boss""#));
        assert!(!yes(r#"title eq "boss""#));
        assert!(yes(r#"title eq null"#));
        assert!(yes(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "d1""#
        ));
        assert!(yes(
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName pr"#
        ));
    }
}
