//! `claim_schema`: APISIX's JSON Schema over a request's claims, compiled
//! once per route config into a small tree the filter evaluates.
//!
//! What APISIX 3.14+ checks it against (`apisix/plugins/openid-connect.lua`):
//! on the bearer paths, the verified JWT's payload or the introspection
//! answer, as one flat object; on the session path, the object
//! `{"user": <userinfo>, "access_token": "<the access token>", "id_token":
//! <the ID token's claims>}`. A mismatch is a 401 with
//! `WWW-Authenticate: Bearer ... error="invalid_token"`.
//!
//! Only a subset of JSON Schema is evaluated, the one that claim rules
//! need: `type`, `properties`, `required`, `enum`, `const`, `contains`,
//! `items` (one schema for every item), `minItems`/`maxItems`,
//! `minLength`/`maxLength`, `minimum`/`maximum`, `allOf`/`anyOf`/`oneOf`/
//! `not`, boolean schemas, and `pattern` restricted to literal text with
//! `\`-escapes, `.*`, and the anchors `^` and `$` (so `@example\.com$`
//! checks an e-mail domain without a regex engine in the wasm module). The
//! annotations `title`, `description`, `$comment`, `$schema`, `default`
//! and `examples` are accepted and ignored. Every other keyword is refused
//! by name when the config is parsed, so what the sidecar accepts is what
//! the filter evaluates. Schemas nest at most [`MAX_DEPTH`] levels and
//! have at most [`MAX_NODES`] subschemas; with no `$ref`, each subschema is
//! applied to each claim value at most once, so a check costs at most
//! (schema size × claims size) steps and never recurses deeper than the
//! schema.

use serde_json::{Map, Number, Value};

/// How deeply subschemas may nest.
pub const MAX_DEPTH: usize = 32;
/// How many subschemas one `claim_schema` may have.
pub const MAX_NODES: usize = 1024;

/// Keywords that carry no constraint.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "$comment",
    "$schema",
    "default",
    "examples",
];

/// A compiled `claim_schema`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimSchema {
    root: Node,
}

/// Why claims do not match: the JSON pointer of the value and the keyword
/// that refused it (both from the schema and array indexes, never claim
/// text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub path: String,
    pub keyword: &'static str,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "claim_schema: {} failed at {}", self.keyword, path)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// `true` or `{}`.
    Any,
    /// `false`.
    Never,
    Checks(Vec<Check>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    /// A bit per [`TYPES`] entry.
    Type(u8),
    Properties(Vec<(String, Node)>),
    Required(Vec<String>),
    Enum(Vec<Value>),
    Const(Value),
    Contains(Box<Node>),
    Items(Box<Node>),
    MinItems(u64),
    MaxItems(u64),
    MinLength(u64),
    MaxLength(u64),
    Minimum(Number),
    Maximum(Number),
    Pattern(Pattern),
    AllOf(Vec<Node>),
    AnyOf(Vec<Node>),
    OneOf(Vec<Node>),
    Not(Box<Node>),
}

impl Check {
    fn keyword(&self) -> &'static str {
        match self {
            Check::Type(_) => "type",
            Check::Properties(_) => "properties",
            Check::Required(_) => "required",
            Check::Enum(_) => "enum",
            Check::Const(_) => "const",
            Check::Contains(_) => "contains",
            Check::Items(_) => "items",
            Check::MinItems(_) => "minItems",
            Check::MaxItems(_) => "maxItems",
            Check::MinLength(_) => "minLength",
            Check::MaxLength(_) => "maxLength",
            Check::Minimum(_) => "minimum",
            Check::Maximum(_) => "maximum",
            Check::Pattern(_) => "pattern",
            Check::AllOf(_) => "allOf",
            Check::AnyOf(_) => "anyOf",
            Check::OneOf(_) => "oneOf",
            Check::Not(_) => "not",
        }
    }
}

const TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "string", "integer",
];

/// `pattern` in the supported subset: literal pieces separated by `.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    start: bool,
    end: bool,
    pieces: Vec<String>,
}

impl ClaimSchema {
    /// Compiles a schema, or lists every problem (each with the JSON
    /// pointer of the subschema it is in).
    pub fn compile(schema: &Value) -> Result<ClaimSchema, Vec<String>> {
        let mut c = Compiler {
            errors: Vec::new(),
            nodes: 0,
        };
        let root = c.node(schema, "", 0);
        if c.errors.is_empty() {
            Ok(ClaimSchema { root })
        } else {
            Err(c.errors)
        }
    }

    /// Checks `claims` against the schema.
    pub fn check(&self, claims: &Value) -> Result<(), Mismatch> {
        let mut path = String::new();
        check(&self.root, claims, &mut path)
    }

    /// Checks a claims object (a JWT payload, an introspection answer).
    pub fn check_object(&self, claims: &Map<String, Value>) -> Result<(), Mismatch> {
        // Runs once per token verdict (cached verdicts skip it), so the
        // copy is not on the path of every request.
        self.check(&Value::Object(claims.clone()))
    }

    /// The session path's claims, as APISIX builds them.
    pub fn session_claims(
        userinfo: Option<&Value>,
        access_token: &str,
        id_claims: &Map<String, Value>,
    ) -> Value {
        let mut m = Map::new();
        if let Some(u) = userinfo {
            m.insert("user".into(), u.clone());
        }
        m.insert("access_token".into(), Value::String(access_token.into()));
        m.insert("id_token".into(), Value::Object(id_claims.clone()));
        Value::Object(m)
    }
}

struct Compiler {
    errors: Vec<String>,
    nodes: usize,
}

impl Compiler {
    fn error(&mut self, at: &str, msg: String) {
        let at = if at.is_empty() { "/" } else { at };
        self.errors.push(format!("{msg} (at {at})"));
    }

    fn node(&mut self, v: &Value, at: &str, depth: usize) -> Node {
        self.nodes += 1;
        if self.nodes == MAX_NODES + 1 {
            self.error(at, format!("has more than {MAX_NODES} subschemas"));
        }
        if depth > MAX_DEPTH {
            self.error(at, format!("nests deeper than {MAX_DEPTH} levels"));
            return Node::Any;
        }
        let obj = match v {
            Value::Bool(true) => return Node::Any,
            Value::Bool(false) => return Node::Never,
            Value::Object(o) => o,
            _ => {
                self.error(at, "a schema must be an object or a boolean".into());
                return Node::Any;
            }
        };
        let mut checks = Vec::new();
        for (k, arg) in obj {
            let here = format!("{at}/{}", pointer_escape(k));
            if let Some(c) = self.check(k, arg, &here, depth) {
                checks.push(c);
            }
        }
        if checks.is_empty() {
            Node::Any
        } else {
            Node::Checks(checks)
        }
    }

    fn check(&mut self, k: &str, arg: &Value, at: &str, depth: usize) -> Option<Check> {
        let c = match k {
            "type" => Check::Type(self.types(arg, at)?),
            "properties" => {
                let Value::Object(props) = arg else {
                    return self.wrong(at, "must be an object");
                };
                let mut out = Vec::with_capacity(props.len());
                for (name, sub) in props {
                    let here = format!("{at}/{}", pointer_escape(name));
                    out.push((name.clone(), self.node(sub, &here, depth + 1)));
                }
                Check::Properties(out)
            }
            "required" => {
                let names = arg.as_array().and_then(|a| {
                    a.iter()
                        .map(|n| n.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                });
                let Some(names) = names else {
                    return self.wrong(at, "must be an array of strings");
                };
                Check::Required(names)
            }
            "enum" => {
                let Value::Array(values) = arg else {
                    return self.wrong(at, "must be an array");
                };
                Check::Enum(values.clone())
            }
            "const" => Check::Const(arg.clone()),
            "contains" => Check::Contains(Box::new(self.node(arg, at, depth + 1))),
            "items" => {
                if arg.is_array() {
                    return self.wrong(
                        at,
                        "must be one schema (an array of schemas is not supported)",
                    );
                }
                Check::Items(Box::new(self.node(arg, at, depth + 1)))
            }
            "minItems" => Check::MinItems(self.count(arg, at)?),
            "maxItems" => Check::MaxItems(self.count(arg, at)?),
            "minLength" => Check::MinLength(self.count(arg, at)?),
            "maxLength" => Check::MaxLength(self.count(arg, at)?),
            "minimum" | "maximum" => {
                let Value::Number(n) = arg else {
                    return self.wrong(at, "must be a number");
                };
                if k == "minimum" {
                    Check::Minimum(n.clone())
                } else {
                    Check::Maximum(n.clone())
                }
            }
            "pattern" => {
                let Value::String(p) = arg else {
                    return self.wrong(at, "must be a string");
                };
                match Pattern::parse(p) {
                    Ok(p) => Check::Pattern(p),
                    Err(e) => {
                        self.error(at, e);
                        return None;
                    }
                }
            }
            "allOf" | "anyOf" | "oneOf" => {
                let subs = match arg {
                    Value::Array(a) if !a.is_empty() => a,
                    _ => return self.wrong(at, "must be a non-empty array of schemas"),
                };
                let nodes = subs
                    .iter()
                    .enumerate()
                    .map(|(i, s)| self.node(s, &format!("{at}/{i}"), depth + 1))
                    .collect();
                match k {
                    "allOf" => Check::AllOf(nodes),
                    "anyOf" => Check::AnyOf(nodes),
                    _ => Check::OneOf(nodes),
                }
            }
            "not" => Check::Not(Box::new(self.node(arg, at, depth + 1))),
            _ if ANNOTATIONS.contains(&k) => return None,
            _ => {
                self.errors.push(format!(
                    "keyword {k:?} is not supported (at {})",
                    at.rsplit_once('/')
                        .map_or("/", |(p, _)| if p.is_empty() { "/" } else { p })
                ));
                return None;
            }
        };
        Some(c)
    }

    fn wrong<T>(&mut self, at: &str, msg: &str) -> Option<T> {
        self.error(at, msg.into());
        None
    }

    fn types(&mut self, arg: &Value, at: &str) -> Option<u8> {
        let names: Vec<&Value> = match arg {
            Value::Array(a) if !a.is_empty() => a.iter().collect(),
            Value::String(_) => vec![arg],
            _ => return self.wrong(at, "must be a type name or a non-empty array of them"),
        };
        let mut bits = 0u8;
        for n in names {
            match n.as_str().and_then(|s| TYPES.iter().position(|t| *t == s)) {
                Some(i) => bits |= 1 << i,
                None => return self.wrong(at, &format!("names an unknown type {n}")),
            }
        }
        Some(bits)
    }

    fn count(&mut self, arg: &Value, at: &str) -> Option<u64> {
        match arg.as_u64() {
            Some(n) => Some(n),
            None => self.wrong(at, "must be a non-negative integer"),
        }
    }
}

/// RFC 6901: `~` → `~0`, `/` → `~1`.
fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

impl Pattern {
    fn parse(p: &str) -> Result<Pattern, String> {
        let refuse = || {
            format!(
                "pattern {p:?} is not supported: only literal text (\\-escaped \
                 punctuation), \".*\" and the anchors \"^\" and \"$\" are"
            )
        };
        let mut chars = p.chars().peekable();
        let start = chars.next_if_eq(&'^').is_some();
        let mut end = false;
        let mut pieces = vec![String::new()];
        while let Some(c) = chars.next() {
            if end {
                return Err(refuse());
            }
            match c {
                '\\' => match chars.next() {
                    Some(e) if e.is_ascii_punctuation() => {
                        if let Some(last) = pieces.last_mut() {
                            last.push(e);
                        }
                    }
                    _ => return Err(refuse()),
                },
                '.' if chars.next_if_eq(&'*').is_some() => pieces.push(String::new()),
                '$' => end = true,
                '^' | '.' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' => {
                    return Err(refuse())
                }
                _ => {
                    if let Some(last) = pieces.last_mut() {
                        last.push(c);
                    }
                }
            }
        }
        Ok(Pattern { start, end, pieces })
    }

    /// Unanchored search, as ECMA-262 `pattern` (and APISIX's PCRE): `.`
    /// matches no line terminator, so with a `.*` the whole match lies on
    /// one line (the first when `^`, the last when `$`: neither is
    /// multiline); within a line, each `.*` matches any text.
    fn matches(&self, s: &str) -> bool {
        if self.pieces.len() == 1 {
            return self.matches_within(s);
        }
        let lines: Vec<&str> = s.split(['\n', '\r', '\u{2028}', '\u{2029}']).collect();
        let last = lines.len() - 1;
        lines.iter().enumerate().any(|(i, line)| {
            (!self.start || i == 0) && (!self.end || i == last) && self.matches_within(line)
        })
    }

    /// [`Pattern::matches`] on text where `.*` may match anything: pieces
    /// are found leftmost in order, the first at the start when `^`, the
    /// last at the end when `$`.
    fn matches_within(&self, s: &str) -> bool {
        let n = self.pieces.len();
        let mut rest = s;
        for (i, piece) in self.pieces.iter().enumerate() {
            let first = i == 0;
            let last = i + 1 == n;
            if last && self.end {
                // The last piece must end the text, after what came before.
                return if first && self.start {
                    rest == piece
                } else {
                    rest.ends_with(piece.as_str())
                };
            }
            if first && self.start {
                match rest.strip_prefix(piece.as_str()) {
                    Some(r) => rest = r,
                    None => return false,
                }
            } else {
                match rest.find(piece.as_str()) {
                    Some(at) => rest = &rest[at + piece.len()..],
                    None => return false,
                }
            }
        }
        true
    }
}

fn check(node: &Node, v: &Value, path: &mut String) -> Result<(), Mismatch> {
    let checks = match node {
        Node::Any => return Ok(()),
        Node::Never => {
            return Err(Mismatch {
                path: path.clone(),
                keyword: "false",
            })
        }
        Node::Checks(c) => c,
    };
    for c in checks {
        check_one(c, v, path)?;
    }
    Ok(())
}

fn check_one(c: &Check, v: &Value, path: &mut String) -> Result<(), Mismatch> {
    let fail = |path: &String| Mismatch {
        path: path.clone(),
        keyword: c.keyword(),
    };
    let ok = match (c, v) {
        (Check::Type(bits), _) => bits & type_bits(v) != 0,
        (Check::Properties(props), Value::Object(o)) => {
            for (name, sub) in props {
                if let Some(x) = o.get(name) {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&pointer_escape(name));
                    let r = check(sub, x, path);
                    path.truncate(len);
                    r?;
                }
            }
            true
        }
        (Check::Required(names), Value::Object(o)) => names.iter().all(|n| o.contains_key(n)),
        (Check::Enum(values), _) => values.iter().any(|e| json_eq(e, v)),
        (Check::Const(e), _) => json_eq(e, v),
        (Check::Contains(sub), Value::Array(a)) => {
            a.iter().any(|x| check(sub, x, &mut path.clone()).is_ok())
        }
        (Check::Items(sub), Value::Array(a)) => {
            for (i, x) in a.iter().enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                let r = check(sub, x, path);
                path.truncate(len);
                r?;
            }
            true
        }
        (Check::MinItems(n), Value::Array(a)) => a.len() as u64 >= *n,
        (Check::MaxItems(n), Value::Array(a)) => a.len() as u64 <= *n,
        (Check::MinLength(n), Value::String(s)) => s.chars().count() as u64 >= *n,
        (Check::MaxLength(n), Value::String(s)) => s.chars().count() as u64 <= *n,
        (Check::Minimum(m), Value::Number(x)) => num_cmp(x, m) != Some(std::cmp::Ordering::Less),
        (Check::Maximum(m), Value::Number(x)) => num_cmp(x, m) != Some(std::cmp::Ordering::Greater),
        (Check::Pattern(p), Value::String(s)) => p.matches(s),
        (Check::AllOf(subs), _) => {
            for s in subs {
                check(s, v, path)?;
            }
            true
        }
        (Check::AnyOf(subs), _) => subs.iter().any(|s| check(s, v, &mut path.clone()).is_ok()),
        (Check::OneOf(subs), _) => {
            subs.iter()
                .filter(|s| check(s, v, &mut path.clone()).is_ok())
                .take(2)
                .count()
                == 1
        }
        (Check::Not(sub), _) => check(sub, v, &mut path.clone()).is_err(),
        // A keyword about another type than the value's does not apply.
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(fail(path))
    }
}

fn type_bits(v: &Value) -> u8 {
    let bit = |name: &str| 1u8 << TYPES.iter().position(|t| *t == name).unwrap_or(0);
    match v {
        Value::Null => bit("null"),
        Value::Bool(_) => bit("boolean"),
        Value::Object(_) => bit("object"),
        Value::Array(_) => bit("array"),
        Value::String(_) => bit("string"),
        Value::Number(n) => {
            let integral = n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0);
            bit("number") | if integral { bit("integer") } else { 0 }
        }
    }
}

/// JSON equality, with numbers equal by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Some(std::cmp::Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| json_eq(a, b)))
        }
        _ => a == b,
    }
}

fn num_cmp(x: &Number, y: &Number) -> Option<std::cmp::Ordering> {
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        return Some(a.cmp(&b));
    }
    if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        return Some(a.cmp(&b));
    }
    x.as_f64()?.partial_cmp(&y.as_f64()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> ClaimSchema {
        ClaimSchema::compile(&v).unwrap()
    }

    fn ok(s: &ClaimSchema, v: Value) -> bool {
        s.check(&v).is_ok()
    }

    #[test]
    fn realm_role_recipe() {
        let s = schema(json!({
            "type": "object",
            "required": ["realm_access"],
            "properties": {"realm_access": {
                "type": "object",
                "required": ["roles"],
                "properties": {"roles": {"type": "array", "contains": {"const": "admin"}}}
            }}
        }));
        assert!(ok(
            &s,
            json!({"realm_access": {"roles": ["user", "admin"]}})
        ));
        let e = s
            .check(&json!({"realm_access": {"roles": ["user"]}}))
            .unwrap_err();
        assert_eq!(e.path, "/realm_access/roles");
        assert_eq!(e.keyword, "contains");
        assert_eq!(
            e.to_string(),
            "claim_schema: contains failed at /realm_access/roles"
        );
        assert!(!ok(&s, json!({"realm_access": {"roles": []}})));
        assert!(!ok(&s, json!({"realm_access": {}})));
        assert!(!ok(&s, json!({})));
        assert!(!ok(&s, json!({"realm_access": {"roles": "admin"}})));
        assert!(!ok(&s, json!([])));
    }

    #[test]
    fn each_keyword() {
        let cases: Vec<(Value, Vec<Value>, Vec<Value>)> = vec![
            (
                json!({"type": "integer"}),
                vec![json!(1), json!(2.0)],
                vec![json!(1.5), json!("1")],
            ),
            (
                json!({"type": ["string", "null"]}),
                vec![json!("a"), json!(null)],
                vec![json!(1)],
            ),
            (
                json!({"type": "number"}),
                vec![json!(1), json!(1.5)],
                vec![json!(true)],
            ),
            (
                json!({"type": "boolean"}),
                vec![json!(false)],
                vec![json!(0)],
            ),
            (
                json!({"enum": ["a", 1]}),
                vec![json!("a"), json!(1.0)],
                vec![json!("b"), json!([1])],
            ),
            (
                json!({"const": {"a": [1]}}),
                vec![json!({"a": [1.0]})],
                vec![json!({"a": [1], "b": 2})],
            ),
            (
                json!({"items": {"type": "string"}}),
                vec![json!([]), json!(["a"]), json!(3)],
                vec![json!(["a", 1])],
            ),
            (
                json!({"minItems": 2}),
                vec![json!([1, 2]), json!("x")],
                vec![json!([1])],
            ),
            (
                json!({"maxItems": 1}),
                vec![json!([1])],
                vec![json!([1, 2])],
            ),
            (
                json!({"minLength": 2}),
                vec![json!("éé"), json!(5)],
                vec![json!("é")],
            ),
            (
                json!({"maxLength": 2}),
                vec![json!("éé")],
                vec![json!("abc")],
            ),
            (
                json!({"minimum": 18}),
                vec![json!(18), json!(18.5), json!("x")],
                vec![json!(17.9)],
            ),
            (
                json!({"maximum": 1.5}),
                vec![json!(1), json!(1.5)],
                vec![json!(2)],
            ),
            (
                json!({"allOf": [{"minimum": 1}, {"maximum": 3}]}),
                vec![json!(2)],
                vec![json!(4), json!(0)],
            ),
            (
                json!({"anyOf": [{"const": 1}, {"const": 2}]}),
                vec![json!(2)],
                vec![json!(3)],
            ),
            (
                json!({"oneOf": [{"minimum": 1}, {"maximum": 3}]}),
                vec![json!(0), json!(4)],
                vec![json!(2)],
            ),
            (
                json!({"not": {"const": "guest"}}),
                vec![json!("admin")],
                vec![json!("guest")],
            ),
            (
                json!({"contains": {"enum": ["a", "b"]}}),
                vec![json!(["x", "b"]), json!({})],
                vec![json!(["x"])],
            ),
            (
                json!({"required": ["a"]}),
                vec![json!({"a": null}), json!([])],
                vec![json!({"b": 1})],
            ),
            (
                json!({"properties": {"a/b": {"const": 1}}}),
                vec![json!({"a/b": 1}), json!({})],
                vec![json!({"a/b": 2})],
            ),
            (json!(true), vec![json!(null)], vec![]),
            (json!(false), vec![], vec![json!(null)]),
            (
                json!({"description": "annotations only", "title": "t"}),
                vec![json!(1)],
                vec![],
            ),
        ];
        for (sch, pass, fail) in cases {
            let s = schema(sch.clone());
            for v in pass {
                assert!(ok(&s, v.clone()), "{sch} should accept {v}");
            }
            for v in fail {
                assert!(!ok(&s, v.clone()), "{sch} should refuse {v}");
            }
        }
    }

    #[test]
    fn patterns_are_literal_text_with_wildcards_and_anchors() {
        let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
            (
                "@example\\.com$",
                vec!["a@example.com", "@example.com"],
                vec!["a@example.com.evil", "a@exampleXcom", "a@example.co"],
            ),
            ("^admin", vec!["admin", "admins"], vec!["xadmin"]),
            ("^a.*b$", vec!["ab", "axxb"], vec!["abx", "ba"]),
            ("^abc$", vec!["abc"], vec!["abcc", "aabc"]),
            ("x.*y", vec!["xy", "1x2y3"], vec!["yx"]),
            ("", vec!["", "a"], vec![]),
            ("^ab.*ab$", vec!["abab", "abxab"], vec!["ab"]),
            // `.` matches no line terminator (ECMA-262, PCRE): a `.*` match
            // stays on one line; `^` and `$` are not multiline.
            (
                "^a.*b$",
                vec!["a b"],
                vec!["a\nb", "a\r\nb", "a\u{2028}b", "a\nab", "ab\nab"],
            ),
            ("a.*b", vec!["x\na b", "a\nab"], vec!["a\nb"]),
            ("admin", vec!["x\nadmin"], vec![]),
        ];
        for (p, pass, fail) in cases {
            let s = schema(json!({"pattern": p}));
            for v in pass {
                assert!(ok(&s, json!(v)), "{p} should match {v}");
            }
            for v in fail {
                assert!(!ok(&s, json!(v)), "{p} should not match {v}");
            }
        }
        for p in [
            "a+", "[a-z]", "a|b", "a.b", "(a)", "a?", "\\d", "a$b", "a{2}", "a^",
        ] {
            let e = ClaimSchema::compile(&json!({"pattern": p})).unwrap_err();
            assert!(e[0].contains("is not supported"), "{p}: {e:?}");
        }
    }

    #[test]
    fn other_keywords_are_refused_by_name_with_every_problem() {
        let e = ClaimSchema::compile(&json!({
            "properties": {"a": {"$ref": "#"}, "b": {"minItems": -1}},
            "patternProperties": {},
            "type": "float"
        }))
        .unwrap_err();
        assert_eq!(
            e,
            vec![
                "keyword \"patternProperties\" is not supported (at /)",
                "keyword \"$ref\" is not supported (at /properties/a)",
                "must be a non-negative integer (at /properties/b/minItems)",
                "names an unknown type \"float\" (at /type)",
            ]
        );
        for bad in [
            json!(1),
            json!("x"),
            json!({"items": [{}]}),
            json!({"anyOf": []}),
            json!({"required": [1]}),
            json!({"enum": "a"}),
            json!({"minimum": "1"}),
            json!({"additionalProperties": false}),
            json!({"format": "email"}),
        ] {
            assert!(ClaimSchema::compile(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn depth_and_size_are_bounded() {
        let mut deep = json!({"const": 1});
        for _ in 0..MAX_DEPTH {
            deep = json!({"not": deep});
        }
        assert!(ClaimSchema::compile(&deep).is_ok());
        let deeper = json!({"not": deep});
        let e = ClaimSchema::compile(&deeper).unwrap_err();
        assert!(e[0].contains("nests deeper"), "{e:?}");

        // Far deeper than the stack would allow to evaluate: refused at
        // compile time without recursing through all of it.
        let mut hostile = json!({});
        for _ in 0..100 {
            hostile = json!({"allOf": [hostile]});
        }
        assert!(ClaimSchema::compile(&hostile).is_err());

        let wide: Map<String, Value> = (0..MAX_NODES + 1)
            .map(|i| (format!("p{i}"), json!({})))
            .collect();
        let e = ClaimSchema::compile(&json!({"properties": wide})).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("more than"), "{e:?}");
    }

    #[test]
    fn hostile_claims_are_evaluated_in_bounded_work() {
        let s = schema(json!({
            "properties": {"r": {"items": {"contains": {"anyOf": [{"const": "x"}, {"pattern": "^a.*a.*a.*b$"}]}}}}
        }));
        let row: Vec<String> = (0..200).map(|_| "a".repeat(200)).collect();
        let big = json!({"r": vec![row; 50]});
        assert!(!ok(&s, big));
        // Deeply nested claims: the schema, not the data, bounds recursion.
        let mut v = json!(1);
        for _ in 0..1_000 {
            v = json!([v]);
        }
        let s = schema(json!({"items": {"items": {"type": "array"}}}));
        assert!(ok(&s, v));
    }

    #[test]
    fn session_claims_are_apisix_shape() {
        let mut id = Map::new();
        id.insert("sub".into(), json!("alice"));
        let v = ClaimSchema::session_claims(Some(&json!({"email": "a@x"})), "tok", &id);
        assert_eq!(
            v,
            json!({"user": {"email": "a@x"}, "access_token": "tok", "id_token": {"sub": "alice"}})
        );
        let v = ClaimSchema::session_claims(None, "tok", &id);
        assert!(v.get("user").is_none());
    }
}
