//! A small path-tracking reader over a parsed YAML document.
//!
//! Every value is read through a [`Node`], which carries its path (`virtual_servers[1].port`).
//! Readers never stop at the first problem: they record a [`FieldError`] and return `None` (or
//! the caller falls back to a default), so one pass reports everything. [`Reader::finish`] puts
//! the errors in document order.

use std::{collections::HashMap, net::IpAddr, ops::RangeInclusive, time::Duration};

use serde_yaml::Value;

use super::FieldError;

/// One value of the document and where it is.
#[derive(Clone, Debug)]
pub(super) struct Node<'a> {
    /// The value.
    pub value: &'a Value,
    /// Its path: `""` for the document, then `key`, `key.sub`, `list[3]`, ...
    pub path: String,
}

impl<'a> Node<'a> {
    /// The whole document.
    pub fn root(value: &'a Value) -> Self {
        Node {
            value,
            path: String::new(),
        }
    }

    /// The value of `key` inside this mapping.
    fn child(&self, key: &str, value: &'a Value) -> Node<'a> {
        Node {
            value,
            path: child_path(&self.path, key),
        }
    }

    /// Item `index` of this list.
    fn item(&self, index: usize, value: &'a Value) -> Node<'a> {
        Node {
            value,
            path: format!("{}[{index}]", self.path),
        }
    }

    /// Whether the key was given without a value (`key:` or `key: ~`).
    pub fn is_null(&self) -> bool {
        self.value.is_null()
    }
}

/// Path of `key` inside the mapping at `parent`.
pub(super) fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// The path one level up (`a.b[2]` → `a.b` → `a` → `""`), `None` for the document itself.
fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = if path.ends_with(']') {
        path.rfind('[')
    } else {
        path.rfind('.')
    };
    Some(&path[..cut.unwrap_or(0)])
}

/// Describes a value for an error message: `the string "abc"`, `the number 5`, `a list`, ...
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "no value".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(t) => format!("a value tagged {} (YAML tags are not supported)", t.tag),
    }
}

/// What a mistyped value probably needs, given what was expected.
#[derive(Clone, Copy)]
enum Hint {
    /// Nothing to add.
    None,
    /// A number was expected: a quoted number needs its quotes removed.
    Number,
    /// A string was expected: a number or boolean needs quotes.
    Text,
    /// A boolean was expected: YAML 1.1 words are strings in YAML 1.2.
    Bool,
}

impl Hint {
    fn text(self, value: &Value) -> &'static str {
        match (self, value) {
            (Hint::Number, Value::String(s)) if s.trim().parse::<f64>().is_ok() => {
                " (remove the quotes)"
            }
            (Hint::Text, Value::Number(_) | Value::Bool(_)) => " (put it in quotes)",
            (Hint::Bool, Value::String(s))
                if ["yes", "no", "on", "off", "y", "n"]
                    .iter()
                    .any(|w| w.eq_ignore_ascii_case(s.trim())) =>
            {
                " (only true and false are booleans)"
            }
            _ => "",
        }
    }
}

/// An opened mapping: its entries in document order, known keys checked.
pub(super) struct Fields<'a> {
    node: Node<'a>,
    entries: Vec<(&'a str, &'a Value)>,
}

impl<'a> Fields<'a> {
    /// The entry for `key` as written, a null value included.
    pub fn raw(&self, key: &str) -> Option<Node<'a>> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(k, v)| self.node.child(k, v))
    }

    /// The value of `key`; `None` when the key is absent or has no value (the default applies).
    pub fn get(&self, key: &str) -> Option<Node<'a>> {
        self.raw(key).filter(|n| !n.is_null())
    }

    /// The value of a key that must be given.
    pub fn required(&self, rd: &mut Reader, key: &str) -> Option<Node<'a>> {
        match self.raw(key) {
            None => {
                rd.error(&self.path_of(key), format!("missing required key `{key}`"));
                None
            }
            Some(n) if n.is_null() => {
                rd.error(&n.path, format!("`{key}` needs a value"));
                None
            }
            Some(n) => Some(n),
        }
    }

    /// The value of `key` or of its keepalived alias; giving both is an error.
    pub fn get_aliased(&self, rd: &mut Reader, key: &str, alias: &str) -> Option<Node<'a>> {
        let (main, other) = (self.raw(key), self.raw(alias));
        if let (Some(_), Some(a)) = (&main, &other) {
            let msg = format!("both `{key}` and its alias `{alias}` are set; keep only one");
            rd.error(&a.path, msg);
        }
        main.or(other).filter(|n| !n.is_null())
    }

    /// A keepalived flag (`alpha`, `omega`, ...): `true` or `false`, default `false`.
    pub fn flag(&self, rd: &mut Reader, key: &str) -> Option<bool> {
        let node = self.raw(key)?;
        if node.is_null() {
            let msg = format!(
                "`{key}` needs true or false (a bare keepalived `{key}` is `{key}: true` here)"
            );
            rd.error(&node.path, msg);
            return None;
        }
        rd.bool(&node)
    }

    /// Which of `keys` are present (null values included), in document order.
    pub fn present(&self, keys: &[&str]) -> Vec<(&'a str, Node<'a>)> {
        self.entries
            .iter()
            .filter(|(k, _)| keys.contains(k))
            .map(|(k, v)| (*k, self.node.child(k, v)))
            .collect()
    }

    /// Path of `key` in this mapping, whether or not it is present.
    pub fn path_of(&self, key: &str) -> String {
        child_path(&self.node.path, key)
    }
}

/// Collects errors while values are read.
#[derive(Default)]
pub(super) struct Reader {
    errors: Vec<FieldError>,
}

impl Reader {
    /// Records an error at `path`.
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// Records a type mismatch: `expected <what>, found <value>`.
    fn expected(&mut self, node: &Node<'_>, what: &str, hint: Hint) {
        let msg = format!(
            "expected {what}, found {}{}",
            describe(node.value),
            hint.text(node.value)
        );
        self.error(&node.path, msg);
    }

    /// The errors, in the order their paths appear in `doc` (stable within one path).
    pub fn finish(self, doc: &Value) -> Vec<FieldError> {
        let order = document_order(doc);
        let rank = |path: &str| {
            let mut p = Some(path);
            while let Some(cur) = p {
                if let Some(i) = order.get(cur) {
                    return *i;
                }
                p = parent_path(cur);
            }
            0
        };
        let mut errors = self.errors;
        errors.sort_by_cached_key(|e| rank(&e.path));
        errors
    }

    /// Opens a mapping and reports keys outside `known` (suggesting the closest known key).
    /// No value at all counts as an empty mapping, so every key takes its default.
    pub fn fields<'a>(&mut self, node: &Node<'a>, known: &[&str]) -> Option<Fields<'a>> {
        let mut fields = Fields {
            node: node.clone(),
            entries: Vec::new(),
        };
        let map = match node.value {
            Value::Null => return Some(fields),
            Value::Mapping(m) => m,
            _ => {
                self.expected(node, "a mapping of `key: value` lines", Hint::None);
                return None;
            }
        };
        for (key, value) in map {
            let Value::String(key) = key else {
                let msg = format!("keys must be strings, found {}", describe(key));
                self.error(&node.path, msg);
                continue;
            };
            if known.contains(&key.as_str()) {
                fields.entries.push((key, value));
                continue;
            }
            let msg = match suggest(key, known) {
                Some(s) => format!("unknown key `{key}`; did you mean `{s}`?"),
                None => format!("unknown key `{key}`; known keys: {}", known.join(", ")),
            };
            self.error(&child_path(&node.path, key), msg);
        }
        Some(fields)
    }

    /// The items of a list; no value is an empty list.
    pub fn list<'a>(&mut self, node: &Node<'a>) -> Vec<Node<'a>> {
        match node.value {
            Value::Null => Vec::new(),
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| node.item(i, v))
                .collect(),
            _ => {
                self.expected(node, "a list (lines starting with `- `)", Hint::None);
                Vec::new()
            }
        }
    }

    /// `true` or `false`.
    pub fn bool(&mut self, node: &Node<'_>) -> Option<bool> {
        match node.value {
            Value::Bool(b) => Some(*b),
            _ => {
                self.expected(node, "true or false", Hint::Bool);
                None
            }
        }
    }

    /// A non-empty string.
    pub fn text(&mut self, node: &Node<'_>) -> Option<String> {
        match node.value {
            Value::String(s) if s.trim().is_empty() => {
                self.error(&node.path, "must not be empty");
                None
            }
            // A C string (a path, a command line) ends at a NUL: the rest would be lost.
            Value::String(s) if s.contains('\0') => {
                let at = s.chars().take_while(|c| *c != '\0').count() + 1;
                self.error(
                    &node.path,
                    format!("must not contain a NUL character (character {at})"),
                );
                None
            }
            Value::String(s) => Some(s.clone()),
            _ => {
                self.expected(node, "a string", Hint::Text);
                None
            }
        }
    }

    /// Any whole number, negative ones included.
    pub fn integer(&mut self, node: &Node<'_>) -> Option<i128> {
        let n = match node.value {
            Value::Number(n) => n.as_u64().map(i128::from).or(n.as_i64().map(i128::from)),
            _ => None,
        };
        if n.is_none() {
            self.expected(node, "a whole number", Hint::Number);
        }
        n
    }

    /// A whole number within `range`.
    pub fn uint(&mut self, node: &Node<'_>, range: RangeInclusive<u64>) -> Option<u64> {
        let n = self.integer(node)?;
        let (lo, hi) = (*range.start(), *range.end());
        let in_range = u64::try_from(n).ok().filter(|n| range.contains(n));
        if in_range.is_none() {
            self.error(
                &node.path,
                format!("must be between {lo} and {hi}, found {n}"),
            );
        }
        in_range
    }

    /// A whole number within `range` that fits a `u32`.
    pub fn u32(&mut self, node: &Node<'_>, range: RangeInclusive<u32>) -> Option<u32> {
        let range = u64::from(*range.start())..=u64::from(*range.end());
        self.uint(node, range).and_then(|n| u32::try_from(n).ok())
    }

    /// A TCP/UDP port, 1..=65535.
    pub fn port(&mut self, node: &Node<'_>) -> Option<u16> {
        self.uint(node, 1..=65_535)
            .and_then(|n| u16::try_from(n).ok())
    }

    /// An IPv4 or IPv6 address.
    pub fn ip(&mut self, node: &Node<'_>) -> Option<IpAddr> {
        let Value::String(s) = node.value else {
            self.expected(node, "an IP address", Hint::None);
            return None;
        };
        match s.trim().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(&node.path, format!("`{s}` is not a valid IP address"));
                None
            }
        }
    }

    /// Whole seconds within `range`.
    pub fn seconds(&mut self, node: &Node<'_>, range: RangeInclusive<u64>) -> Option<Duration> {
        self.uint(node, range).map(Duration::from_secs)
    }

    /// Seconds, fractions allowed (millisecond precision), within `min..=max`.
    pub fn fractional_seconds(
        &mut self,
        node: &Node<'_>,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let secs = match node.value {
            Value::Number(n) => n.as_f64().filter(|s| s.is_finite() && *s >= 0.0),
            _ => None,
        };
        let Some(secs) = secs else {
            self.expected(node, "a number of seconds (like 3 or 0.5)", Hint::Number);
            return None;
        };
        // Bounded by the range check below; the cast saturates for absurd values.
        let d = Duration::from_millis((secs * 1000.0).round() as u64);
        if d < min || d > max {
            let msg = format!(
                "must be between {} and {} seconds, found {secs}",
                min.as_secs_f64(),
                max.as_secs_f64()
            );
            self.error(&node.path, msg);
            return None;
        }
        Some(d)
    }

    /// One of a fixed set of words, compared case-insensitively (`what` names the field).
    pub fn keyword<T: Copy>(
        &mut self,
        node: &Node<'_>,
        what: &str,
        table: &[(&str, T)],
    ) -> Option<T> {
        let Value::String(s) = node.value else {
            self.expected(
                node,
                &format!("a {what} ({})", word_list(table)),
                Hint::None,
            );
            return None;
        };
        let found = table.iter().find(|(w, _)| w.eq_ignore_ascii_case(s.trim()));
        if found.is_none() {
            let msg = format!("unknown {what} `{s}`; use {}", word_list(table));
            self.error(&node.path, msg);
        }
        found.map(|(_, v)| *v)
    }
}

/// `a, b or c` from the words of a keyword table.
fn word_list<T>(table: &[(&str, T)]) -> String {
    let words: Vec<&str> = table.iter().map(|(w, _)| *w).collect();
    or_list(&words)
}

/// `a, b or c`.
pub(super) fn or_list(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Every path of the document (keys and list items), numbered in document order.
fn document_order(doc: &Value) -> HashMap<String, usize> {
    fn walk(value: &Value, path: String, order: &mut HashMap<String, usize>) {
        let next = order.len();
        order.entry(path.clone()).or_insert(next);
        match value {
            Value::Mapping(m) => {
                for (k, v) in m {
                    if let Value::String(k) = k {
                        walk(v, child_path(&path, k), order);
                    }
                }
            }
            Value::Sequence(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, format!("{path}[{i}]"), order);
                }
            }
            _ => {}
        }
    }
    let mut order = HashMap::new();
    walk(doc, String::new(), &mut order);
    order
}

/// The known key an unknown `key` most likely meant: the same key in another case or with `-`
/// for `_`, else one within two edits, else one that starts with it (or it starts with).
fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let norm = key.to_ascii_lowercase().replace('-', "_");
    let rank = |cand: &str| -> Option<(u8, usize)> {
        let d = edit_distance(&norm, cand);
        if d == 0 {
            Some((0, 0))
        } else if d <= 2 && d < cand.len() {
            Some((1, d))
        } else if norm.len() >= 3 && (cand.starts_with(&norm) || norm.starts_with(cand)) {
            Some((2, d))
        } else {
            None
        }
    };
    known
        .iter()
        .filter_map(|k| rank(k).map(|r| (r, *k)))
        .min_by_key(|(r, _)| *r)
        .map(|(_, k)| k)
}

/// Levenshtein distance (insertions, deletions and substitutions each cost one).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let subst = diag + usize::from(ca != *cb);
            diag = row[j + 1];
            row[j + 1] = subst.min(row[j] + 1).min(diag + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("protocal", "protocol"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn suggestions() {
        let known = ["protocol", "port", "persistence_timeout", "ip", "interface"];
        assert_eq!(suggest("protocal", &known), Some("protocol"));
        assert_eq!(suggest("Interface", &known), Some("interface"));
        assert_eq!(suggest("persistence", &known), Some("persistence_timeout"));
        assert_eq!(suggest("id", &known), Some("ip"));
        assert_eq!(suggest("zz", &known), None);
        assert_eq!(suggest("completely_different", &known), None);
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent_path("a.b[2]"), Some("a.b"));
        assert_eq!(parent_path("a.b"), Some("a"));
        assert_eq!(parent_path("a"), Some(""));
        assert_eq!(parent_path(""), None);
    }

    #[test]
    fn or_lists() {
        assert_eq!(or_list(&["a"]), "a");
        assert_eq!(or_list(&["a", "b", "c"]), "a, b or c");
    }
}
