//! A borrowed JSON tree for the callback parser ([`J`]), read by serde_json itself.
//!
//! `serde_json::Value` cost the parser most of its time: with the workspace's
//! `preserve_order` every object is an `IndexMap` (SipHash on every key) and every string,
//! key or value, is allocated. [`J`] borrows every string the body holds as written (a string
//! with escapes is unescaped into an owned one) and keeps an object's entries in a `Vec` in the
//! order received. The tokenizer, the recursion limit, the number conversions and every error
//! message are serde_json's own, so a body is accepted or refused exactly as before, with the
//! same text; what serde_json's `Value` visitor does beyond building the tree is done here the
//! same way (see [`JVisitor`]).
//!
//! Duplicate keys: `Value` (an `IndexMap` insert) keeps the key at its FIRST position with the
//! LAST value. [`Obj`] keeps every entry (deduplicating on insert would be quadratic on a
//! hostile object of many keys) and answers the same: [`Obj::get`] searches from the end, and
//! [`Obj::get_ignore_ascii_case`] takes the first key in order, then that key's last value.
//! [`J::to_value`] rebuilds a `Value` by inserting in order, which deduplicates the same way.
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

/// A JSON value whose strings borrow from the text parsed where they can.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum J<'a> {
    Null,
    Bool(bool),
    Num(Number),
    Str(Cow<'a, str>),
    Arr(Vec<J<'a>>),
    Obj(Obj<'a>),
}

/// A JSON object: every entry, duplicates included, in the order received.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Obj<'a> {
    entries: Vec<(Cow<'a, str>, J<'a>)>,
}

impl<'a> Obj<'a> {
    /// The value under `key`; of a key repeated, the last value (as `Value` keeps it).
    pub(crate) fn get(&self, key: &str) -> Option<&J<'a>> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The value under the first key, in order, equal to `key` ignoring ASCII case; of that key
    /// repeated, the last value. This is what iterating a `Value` object answers: its keys stand
    /// at their first positions and hold their last values.
    pub(crate) fn get_ignore_ascii_case(&self, key: &str) -> Option<&J<'a>> {
        let (first, _) = self
            .entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))?;
        self.get(first)
    }

    fn into_owned(self) -> Obj<'static> {
        Obj {
            entries: self
                .entries
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                .collect(),
        }
    }
}

impl J<'_> {
    pub(crate) fn is_null(&self) -> bool {
        matches!(self, J::Null)
    }

    /// The same value as a `serde_json::Value`, exactly as `Value` would have parsed it
    /// (entries inserted in order: a repeated key keeps its first position and last value).
    /// For the rare paths that print a value or keep it as text.
    pub(crate) fn to_value(&self) -> Value {
        match self {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Num(n) => Value::Number(n.clone()),
            J::Str(s) => Value::String(s.as_ref().to_owned()),
            J::Arr(a) => Value::Array(a.iter().map(J::to_value).collect()),
            J::Obj(o) => {
                let mut m = Map::new();
                for (k, v) in &o.entries {
                    m.insert(k.as_ref().to_owned(), v.to_value());
                }
                Value::Object(m)
            }
        }
    }

    /// The same value owning all its strings.
    pub(crate) fn into_owned(self) -> J<'static> {
        match self {
            J::Null => J::Null,
            J::Bool(b) => J::Bool(b),
            J::Num(n) => J::Num(n),
            J::Str(s) => J::Str(Cow::Owned(s.into_owned())),
            J::Arr(a) => J::Arr(a.into_iter().map(J::into_owned).collect()),
            J::Obj(o) => J::Obj(o.into_owned()),
        }
    }
}

/// Compact JSON, character for character what `serde_json::Value`'s `Display` writes.
impl fmt::Display for J<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_value(), f)
    }
}

impl<'de> Deserialize<'de> for J<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JVisitor)
    }
}

/// serde_json's `ValueVisitor` (serde_json 1.0.154, `src/value/de.rs`), method for method,
/// building a [`J`]: numbers become the same `Number`s, `visit_str` (a string unescaped into
/// serde_json's scratch buffer) copies while `visit_borrowed_str` borrows, and a map whose
/// first key is serde_json's raw-value token is read as that crate reads it when its
/// `raw_value` feature is on (see [`raw_value_enabled`]). serde_json's `arbitrary_precision`
/// feature (a number token of its own) is on nowhere in the workspace and not mirrored.
struct JVisitor;

impl<'de> Visitor<'de> for JVisitor {
    type Value = J<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<J<'de>, E> {
        Ok(J::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<J<'de>, E> {
        Ok(J::Num(value.into()))
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<J<'de>, E> {
        let de = de::value::I128Deserializer::<E>::new(value);
        Number::deserialize(de).map(J::Num)
    }

    fn visit_u64<E>(self, value: u64) -> Result<J<'de>, E> {
        Ok(J::Num(value.into()))
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<J<'de>, E> {
        let de = de::value::U128Deserializer::<E>::new(value);
        Number::deserialize(de).map(J::Num)
    }

    fn visit_f64<E>(self, value: f64) -> Result<J<'de>, E> {
        Ok(Number::from_f64(value).map_or(J::Null, J::Num))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<J<'de>, E> {
        Ok(J::Str(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<J<'de>, E> {
        Ok(J::Str(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<J<'de>, E> {
        Ok(J::Str(Cow::Owned(value)))
    }

    fn visit_none<E>(self) -> Result<J<'de>, E> {
        Ok(J::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<J<'de>, D::Error> {
        J::deserialize(deserializer)
    }

    fn visit_unit<E>(self) -> Result<J<'de>, E> {
        Ok(J::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(J::Arr(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<J<'de>, A::Error> {
        let Some(first) = map.next_key_seed(Key)? else {
            return Ok(J::Obj(Obj::default()));
        };
        if first == RAW_VALUE_TOKEN && raw_value_enabled() {
            // serde_json's `KeyClass::RawValue`: the value must be a string, read as JSON.
            let text = map.next_value_seed(RawText)?;
            return serde_json::from_str::<J>(&text)
                .map(J::into_owned)
                .map_err(de::Error::custom);
        }
        let value = map.next_value()?;
        rest_of_map(map, Some((first, value))).map(J::Obj)
    }
}

/// The entries of `map` (after `first`, already read), in order.
fn rest_of_map<'de, A: MapAccess<'de>>(
    mut map: A,
    first: Option<(Cow<'de, str>, J<'de>)>,
) -> Result<Obj<'de>, A::Error> {
    let mut entries = Vec::new();
    entries.extend(first);
    while let Some(key) = map.next_key_seed(Key)? {
        let value = map.next_value()?;
        entries.push((key, value));
    }
    Ok(Obj { entries })
}

/// An object key, borrowed when it has no escapes (serde's own `Cow<str>` always copies).
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        // As serde_json's `KeyClassifier` reads a key.
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s))
    }
}

/// `serde_json::raw::TOKEN`: with serde_json's `raw_value` feature, `Value` reads an object
/// whose first key is this as the JSON text held by its (string) value.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Whether the serde_json linked in has its `raw_value` feature on. kitsync-domain does not
/// ask for it, but other crates of the workspace do (axum, sqlx), and Cargo builds one
/// serde_json for a binary: `Value` then reads such an object differently, and so must [`J`]
/// to parse as the old parser did. No `cfg` can see another crate's features, so this asks
/// serde_json once, the first time a body holds that key.
fn raw_value_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        !matches!(
            serde_json::from_str::<Value>(r#"{"$serde_json::private::RawValue":"0"}"#),
            Ok(Value::Object(_))
        )
    })
}

/// serde_json's `raw::BoxedFromString`: the raw value's text, a string (any other value is
/// refused with the same words, "expected raw value").
struct RawText;

impl<'de> DeserializeSeed<'de> for RawText {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for RawText {
    type Value = String;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("raw value")
    }

    fn visit_str<E>(self, s: &str) -> Result<String, E> {
        Ok(s.to_owned())
    }

    fn visit_string<E>(self, s: String) -> Result<String, E> {
        Ok(s)
    }
}

/// `text` as an object, exactly when `serde_json::from_str::<Map<String, Value>>(text)`
/// succeeds, with the same entries. `Map`'s own visitor, unlike `Value`'s, does not look at the
/// first key for serde_json's tokens (the values inside are read as `Value`s, which do).
pub(crate) fn parse_object(text: &str) -> Option<Obj<'_>> {
    serde_json::from_str::<TopObj>(text).ok().map(|t| t.0)
}

struct TopObj<'a>(Obj<'a>);

impl<'de> Deserialize<'de> for TopObj<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TopObjVisitor)
    }
}

/// `serde_json::Map`'s visitor.
struct TopObjVisitor;

impl<'de> Visitor<'de> for TopObjVisitor {
    type Value = TopObj<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a map")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(TopObj(Obj::default()))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        rest_of_map(map, None).map(TopObj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: &str) -> J<'_> {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn borrows_plain_strings_and_keys_and_owns_escaped_ones() {
        let J::Obj(o) = j(r#"{"a":"plain","b\u00e9":"esc\"aped"}"#) else {
            panic!()
        };
        assert!(matches!(&o.entries[0].0, Cow::Borrowed("a")));
        assert!(matches!(&o.entries[0].1, J::Str(Cow::Borrowed("plain"))));
        assert!(matches!(&o.entries[1].0, Cow::Owned(k) if k == "bé"));
        assert!(matches!(&o.entries[1].1, J::Str(Cow::Owned(s)) if s == "esc\"aped"));
    }

    #[test]
    fn duplicate_keys_answer_as_value_does() {
        let text = r#"{"K":1,"k":2,"K":3,"x":{"b":1,"a":2,"b":3}}"#;
        let J::Obj(o) = j(text) else { panic!() };
        assert_eq!(o.get("K"), Some(&J::Num(3.into())));
        assert_eq!(o.get("k"), Some(&J::Num(2.into())));
        // First key in order ignoring case is "K", holding its last value.
        assert_eq!(o.get_ignore_ascii_case("k"), Some(&J::Num(3.into())));
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(j(text).to_value(), value);
        assert_eq!(j(text).to_string(), value.to_string());
        assert_eq!(j(text).to_string(), r#"{"K":3,"k":2,"x":{"b":3,"a":2}}"#);
    }

    #[test]
    fn numbers_and_display_match_value() {
        for text in [
            "0",
            "-0",
            "-1",
            "1.0",
            "1e3",
            "-1.5e-7",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "0.1000000000000000055511151231257827",
            "1.7976931348623157e308",
            r#""\u0000\u001f\"\\/\b\f\n\r\t é 👩‍💻 \ud83d\ude00""#,
            r#"[null,true,false,{},[],"",{"a":[1,{"b":null}]}]"#,
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(j(text).to_value(), value, "{text}");
            assert_eq!(j(text).to_string(), value.to_string(), "{text}");
            assert_eq!(format!("{:#}", j(text)), format!("{value:#}"), "{text}");
        }
    }

    #[test]
    fn errors_are_serde_json_s() {
        for text in [
            "",
            "{",
            "{nope",
            "[1,]",
            r#"{"a":1,}"#,
            "1e400",
            "NaN",
            r#""\ud800""#,
            "\"\u{1}\"",
            "{} x",
            &"[".repeat(200),
        ] {
            let old = serde_json::from_str::<Value>(text).unwrap_err().to_string();
            let new = serde_json::from_str::<J>(text).unwrap_err().to_string();
            assert_eq!(new, old, "{text}");
        }
    }

    #[test]
    fn parse_object_is_map_s_answer() {
        for text in [
            r#"{"a":1,"a":2}"#,
            "{}",
            "null",
            "[]",
            "1",
            r#""{}""#,
            "{",
            r#"{"$serde_json::private::RawValue":"1","b":2}"#,
        ] {
            let old = serde_json::from_str::<Map<String, Value>>(text).ok();
            let new = parse_object(text).map(|o| J::Obj(o).to_value());
            assert_eq!(new, old.map(Value::Object), "{text}");
        }
    }
}
