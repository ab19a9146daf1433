//! A route's `vars` (APISIX's lua-resty-expr expression list) and
//! `remote_addrs`, turned into what Envoy's route matchers can express, or
//! refused by name.
//!
//! lua-resty-expr's semantics (`lib/resty/expr/v1.lua`): a rule is a list
//! of expressions (all must hold) or `["OR" | "AND" | "!OR" | "!AND", rule,
//! rule, ...]`, nested freely; an expression is `[var, op, value]`,
//! `[var, "!", op, value]` (negated) or `[var, value]` (`==`). A variable
//! the request does not have is `nil`: `==`, `~~`, `~*`, `in` are false on
//! it, so their negations (`~=`, `!`) are true.
//!
//! Envoy matches a route when *all* its matchers hold, so an expression is
//! brought to a disjunction of conjunctions (negations pushed down to the
//! expressions), and each disjunct becomes one Envoy route, next to each
//! other in the route order; more than [`MAX_DISJUNCTS`] is refused.
//!
//! | variable | Envoy matcher |
//! |---|---|
//! | `arg_<name>` | `query_parameters` (first value, raw as nginx's `$arg_`) |
//! | `http_<name>` | `headers` (`_` → `-`) |
//! | `cookie_<name>` | `cookies` (Envoy parses the `Cookie` header: exact names) |
//! | `remote_addr` | `filter_state` `apisix.remote_addr` (the TCP peer) |
//! | `request_method`, `scheme` | `headers` `:method`, `:scheme` |
//!
//! Operators: `==`, `~=`, `~~` and `~*` (regexes RE2 takes the same way as
//! PCRE), `in`, `ipmatch` (on `remote_addr`), `!`. Refused, naming the
//! expression: numeric comparisons (`>`, `>=`, `<`, `<=`, `==`/`~=` with a
//! number: Envoy compares text), `has`, negated `arg_` tests (Envoy cannot
//! invert a query-parameter matcher), every other variable, and the headers
//! the openid-connect filter removes or replaces.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use regex_syntax::ast::{self, Ast};
use serde_json::Value;

use crate::apisix::route::RouteSpec;

/// Envoy routes one APISIX route (one uri) may become.
pub const MAX_DISJUNCTS: usize = 8;

/// The filter-state key that holds the downstream TCP peer address (set by
/// the listener's `set_filter_state` network filter).
pub const REMOTE_ADDR_KEY: &str = "apisix.remote_addr";

/// RE2's program-size limit in Envoy (`re2.max_program_size.error_level`,
/// default 100): a bigger regex is a NACK of the whole route table.
const RE2_MAX_PROGRAM: u32 = 100;
/// What `.*(?:…).*` costs around a `~~` pattern (measured with RE2: 23 for
/// `.*(?:abc).*`, of which `abc` is 3).
const SEARCH_WRAP_COST: u32 = 24;
/// The same for `.*(?i:…).*` (the marker that the pattern is case-insensitive).
const SEARCH_WRAP_COST_CI: u32 = 25;
/// A regex longer than this is refused before it is parsed.
const MAX_PATTERN_LEN: usize = 512;

/// Headers the openid-connect filter removes or replaces on the request
/// (the client's identity headers; the `Cookie` header without the
/// session's cookies). Envoy 1.40 chooses the route again after the
/// filter's wasm calls change request headers (seen through the real
/// Envoy: a route chosen by the session cookie lost the request to the
/// next route once the filter took the cookie out), so a route matching on
/// them could hand a request checked by one route's config to another
/// route's upstream. The same holds for the session cookies of every
/// route with the plugin: see [`session_cookie_clashes`].
const FILTER_WRITES: &[&str] = &[
    "cookie",
    "x-access-token",
    "x-userinfo",
    "x-id-token",
    "x-raw-id-token",
    "x-refresh-token",
];

/// Where a tested value comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// A query parameter (`arg_<name>`).
    Query(String),
    /// A request header (`http_<name>`), lower case with `-`.
    Header(String),
    /// A cookie (`cookie_<name>`).
    Cookie(String),
    /// The downstream address (`remote_addr`).
    RemoteAddr,
}

/// A test of a value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Test {
    /// The whole value.
    Exact(String),
    /// An RE2 regex the whole value must match (searches are wrapped).
    Regex(String),
    /// The address is in one of these networks.
    Cidrs(Vec<IpNet>),
}

/// One matcher of an Envoy route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// Present and passing the test.
    Is(Test),
    /// Absent, or present and failing the test (lua-resty-expr's negation).
    Not(Test),
    /// Present and failing the test.
    PresentNot(Test),
    /// Absent.
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cond {
    pub source: Source,
    pub check: Check,
}

/// `vars` as Envoy matchers: any one conjunct (a list of conditions that
/// must all hold) selects the route. `[[]]` (one empty conjunct) when the
/// route has no `vars`.
pub type Disjuncts = Vec<Vec<Cond>>;

/// An expression tree in negation normal form.
enum Node {
    Leaf {
        source: Source,
        test: Test,
        negated: bool,
    },
    And(Vec<Node>),
    Or(Vec<Node>),
}

/// Parses a route's `vars`; the error names the expression and why.
pub fn parse_vars(v: &Value) -> Result<Disjuncts, String> {
    let Some(rule) = v.as_array() else {
        return Err("must be an array".into());
    };
    if rule.is_empty() {
        return Ok(vec![Vec::new()]);
    }
    if let Some(first) = rule[0].as_str() {
        if logic_op(first).is_none() {
            return Err("rule should be wrapped inside brackets".into());
        }
    }
    let tree = compile(v, false)?;
    let disjuncts = dnf(&tree)?;
    Ok(disjuncts)
}

#[derive(Clone, Copy)]
enum Logic {
    And,
    Or,
}

/// `OR`, `AND`, `!OR`, `!AND` (any case): (operator, negated).
fn logic_op(s: &str) -> Option<(Logic, bool)> {
    match s.to_ascii_uppercase().as_str() {
        "AND" => Some((Logic::And, false)),
        "OR" => Some((Logic::Or, false)),
        "!AND" => Some((Logic::And, true)),
        "!OR" => Some((Logic::Or, true)),
        _ => None,
    }
}

/// lua-resty-expr's `compile`, with `negated` pushed down (De Morgan).
fn compile(v: &Value, negated: bool) -> Result<Node, String> {
    let Some(rules) = v.as_array() else {
        return Err(format!("{v} is not an expression (an array)"));
    };
    if rules.is_empty() {
        return Err("rule too short".into());
    }
    if rules[0].is_array() {
        let children = rules
            .iter()
            .map(|r| compile(r, negated))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(if negated {
            Node::Or(children)
        } else {
            Node::And(children)
        });
    }
    if let Some((op, not)) = rules[0].as_str().and_then(logic_op) {
        if rules.len() <= 2 {
            return Err(format!("{v}: rule too short"));
        }
        let negated = negated != not;
        let children = rules[1..]
            .iter()
            .map(|r| compile(r, negated))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(match (op, negated) {
            (Logic::And, false) | (Logic::Or, true) => Node::And(children),
            (Logic::Or, false) | (Logic::And, true) => Node::Or(children),
        });
    }
    leaf(v, rules, negated).map_err(|why| format!("expression {v} {why}"))
}

/// One `[var, op, value]`.
fn leaf(whole: &Value, expr: &[Value], negated: bool) -> Result<Node, String> {
    let (var, op, value, not) = match expr {
        [var, bang, op, value] => {
            if bang.as_str() != Some("!") {
                return Err("is a bad 'not' expression".into());
            }
            (var, op, Some(value), true)
        }
        [var, op, value] => (var, op, Some(value), false),
        [var, value] => (var, &Value::Null, Some(value), false),
        _ => return Err("is not an expression".into()),
    };
    let _ = whole;
    let Some(var) = var.as_str() else {
        return Err("must start with a variable name".into());
    };
    let op = if op.is_null() {
        "==".to_string()
    } else {
        match op.as_str() {
            Some(s) => s.to_ascii_lowercase(),
            None => return Err("has an operator that is not a string".into()),
        }
    };
    let value = value.filter(|v| !v.is_null());
    let negated = negated != not;
    let source = source(var)?;
    let (test, op_negated) = test(&source, &op, value)?;
    let negated = negated != op_negated;
    if negated && matches!(source, Source::Query(_)) {
        return Err(format!(
            "negates a test of \"{var}\": Envoy cannot invert a query-parameter matcher"
        ));
    }
    Ok(Node::Leaf {
        source,
        test,
        negated,
    })
}

/// The variable → where Envoy finds it.
fn source(var: &str) -> Result<Source, String> {
    let bad_name = |name: &str| {
        name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if let Some(name) = var.strip_prefix("arg_") {
        if bad_name(name) {
            return Err(format!("names a bad query parameter {var:?}"));
        }
        return Ok(Source::Query(name.to_string()));
    }
    if let Some(name) = var.strip_prefix("http_") {
        // nginx compares `_` in the name with `-` in the header: a `-` or
        // `.` in the name never matches.
        if bad_name(name) || name.contains(['.', '-']) {
            return Err(format!("names a bad header variable {var:?}"));
        }
        let header = name.to_ascii_lowercase().replace('_', "-");
        if FILTER_WRITES.contains(&header.as_str()) {
            return Err(format!(
                "tests \"{var}\", a header the openid-connect filter removes or replaces (the client's value is not what the upstream gets)"
            ));
        }
        let header = if header == "host" {
            ":authority".to_string()
        } else {
            header
        };
        return Ok(Source::Header(header));
    }
    if let Some(name) = var.strip_prefix("cookie_") {
        if bad_name(name) {
            return Err(format!("names a bad cookie {var:?}"));
        }
        return Ok(Source::Cookie(name.to_string()));
    }
    match var {
        "remote_addr" => return Ok(Source::RemoteAddr),
        // The request line's method; the connection's scheme (Envoy is the
        // edge: a client's X-Forwarded-Proto does not set `:scheme`).
        "request_method" => return Ok(Source::Header(":method".into())),
        "scheme" => return Ok(Source::Header(":scheme".into())),
        _ => {}
    }
    Err(format!(
        "tests the variable {var:?}, which Envoy's route matching cannot read (supported: arg_*, http_*, cookie_*, remote_addr, request_method, scheme)"
    ))
}

/// The operator and its value → a test, and whether the operator negates it.
fn test(source: &Source, op: &str, value: Option<&Value>) -> Result<(Test, bool), String> {
    let Some(value) = value else {
        return Err("has no value (null is not supported)".into());
    };
    let addr = matches!(source, Source::RemoteAddr);
    match op {
        "==" | "~=" => {
            let negated = op == "~=";
            match value {
                Value::String(s) if addr => Ok((Test::Cidrs(vec![cidr(s)?]), negated)),
                Value::String(s) => Ok((Test::Exact(s.clone()), negated)),
                Value::Number(_) => Err(format!(
                    "compares with a number: {op} with a number is a numeric comparison in APISIX, and Envoy compares text (use a string)"
                )),
                _ => Err("has a value that is not a string".into()),
            }
        }
        "~~" | "~*" => {
            if addr {
                return Err("uses a regex on remote_addr (use ipmatch)".into());
            }
            let Some(pattern) = value.as_str() else {
                return Err("has a regex that is not a string".into());
            };
            Ok((Test::Regex(search_regex(pattern, op == "~*")?), false))
        }
        "in" => {
            let Some(items) = value.as_array().filter(|a| !a.is_empty()) else {
                return Err("needs a non-empty array of strings after \"in\"".into());
            };
            let mut texts = Vec::new();
            for i in items {
                match i.as_str() {
                    Some(s) => texts.push(s),
                    None => {
                        return Err(format!(
                            "has {i} in its \"in\" list: a variable is text and never equals a non-string in APISIX"
                        ))
                    }
                }
            }
            if addr {
                let nets = texts
                    .iter()
                    .map(|s| cidr(s))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok((Test::Cidrs(nets), false));
            }
            let alternatives: Vec<String> =
                texts.iter().map(|s| regex_syntax::escape(s)).collect();
            let regex = format!("(?:{})", alternatives.join("|"));
            // RE2 adds ~4 around any program (the match and the implicit group).
            check_size(&regex, 5)?;
            Ok((Test::Regex(regex), false))
        }
        "ipmatch" => {
            if !addr {
                return Err("uses ipmatch on a variable other than remote_addr".into());
            }
            let nets = match value {
                Value::String(s) => vec![cidr(s)?],
                Value::Array(items) if !items.is_empty() => items
                    .iter()
                    .map(|i| match i.as_str() {
                        Some(s) => cidr(s),
                        None => Err(format!("has {i}, not an address, in its ipmatch list")),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => return Err("needs an address or a non-empty array of them".into()),
            };
            Ok((Test::Cidrs(nets), false))
        }
        ">" | ">=" | "<" | "<=" => Err(format!(
            "uses {op:?}: numeric comparisons are not supported (Envoy's route matchers compare text)"
        )),
        "has" => Err("uses \"has\", which tests list values; request variables are text".into()),
        other => Err(format!("uses the unknown operator {other:?}")),
    }
}

/// The cookies `vars` tests.
pub fn cookie_names(d: &Disjuncts) -> impl Iterator<Item = &str> {
    d.iter().flatten().filter_map(|c| match &c.source {
        Source::Cookie(n) => Some(n.as_str()),
        _ => None,
    })
}

/// Whether `vars` tests the `Authorization` header.
fn tests_authorization(d: &Disjuncts) -> bool {
    d.iter()
        .flatten()
        .any(|c| matches!(&c.source, Source::Header(h) if h == "authorization"))
}

/// Whether `vars` tests something some route's openid-connect filter may
/// change (a cookie, `Authorization`): only such routes need the check
/// against the others.
pub fn tests_filter_changes(d: &Disjuncts) -> bool {
    cookie_names(d).next().is_some() || tests_authorization(d)
}

/// The session cookie name of a route's openid-connect config (the one
/// whose cookies the filter removes before forwarding), if it has one.
pub fn session_cookie(spec: &RouteSpec) -> Option<&str> {
    let (_, c) = spec.oidc.as_ref()?;
    c.session.as_ref().map(|s| s.cookie_name.as_str())
}

/// Whether a route's filter may put the access token into `Authorization`
/// (`access_token_in_authorization_header`): a browser request with a
/// session gets one, and so does a bearer request whose token came in
/// `X-Access-Token`.
fn sets_authorization(spec: &RouteSpec) -> bool {
    spec.oidc
        .as_ref()
        .is_some_and(|(_, c)| c.set_access_token_header && c.access_token_in_authorization_header)
}

/// Why `spec` cannot be stored next to `others`: one of them tests, in
/// `vars`, a request header that another's openid-connect filter changes:
/// a cookie it removes (its session cookie `name`, `name_<n>` chunks,
/// `name_flow_*`) or the `Authorization` it sets. Envoy chooses the route
/// again after the filter changed the headers, so the request could land
/// on a route whose checks never ran.
pub fn session_cookie_clashes<'a>(
    spec: &RouteSpec,
    others: impl Iterator<Item = &'a RouteSpec>,
) -> Vec<String> {
    let mut out = clashes(&spec.id, spec, spec);
    for other in others.filter(|o| o.id != spec.id) {
        out.extend(clashes(&spec.id, spec, other));
        out.extend(clashes(&spec.id, other, spec));
    }
    out
}

/// The same, only for what `spec` itself tests (a stored set that did not
/// come through the Admin API: the route that tests is left out).
pub fn tested_session_cookies<'a>(
    spec: &RouteSpec,
    all: impl Iterator<Item = &'a RouteSpec>,
) -> Vec<String> {
    all.flat_map(|owner| clashes(&spec.id, spec, owner))
        .collect()
}

/// What `tester` tests that `owner`'s filter changes, as errors of route
/// `subject`.
fn clashes(subject: &str, tester: &RouteSpec, owner: &RouteSpec) -> Vec<String> {
    let whose = if tester.id == owner.id || owner.id == subject {
        "this route's".to_string()
    } else {
        format!("route [{}]'s", owner.id)
    };
    let what = |var: &str| {
        if tester.id == subject {
            format!("tests \"{var}\"")
        } else {
            format!("route [{}] tests \"{var}\"", tester.id)
        }
    };
    let mut out = Vec::new();
    if sets_authorization(owner) && tests_authorization(&tester.vars) {
        out.push(format!(
            "{}, a header {whose} openid-connect filter sets (access_token_in_authorization_header) before the request goes on: Envoy would choose the route again with it",
            what("http_authorization")
        ));
    }
    let Some(session) = session_cookie(owner) else {
        return out;
    };
    out.extend(
        cookie_names(&tester.vars)
            .filter(|cookie| oidc_core::session::is_ours(session, cookie))
            .map(|cookie| {
                format!(
                    "{}, a cookie {whose} openid-connect filter removes before the request goes on: Envoy would choose the route again without it",
                    what(&format!("cookie_{cookie}"))
                )
            }),
    );
    out
}

/// An IP or CIDR (v4 or v6), host bits cleared.
pub fn cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = IpNet::from_str(s) {
        return Ok(net.trunc());
    }
    match IpAddr::from_str(s) {
        Ok(ip) => Ok(IpNet::from(ip)),
        Err(_) => Err(format!("has {s:?}, which is not an IP address or CIDR")),
    }
}

/// `remote_addrs` / `remote_addr`.
pub fn parse_remote_addrs(v: &Value, single: bool) -> Result<Vec<IpNet>, String> {
    if single {
        return match v.as_str() {
            Some(s) => cidr(s).map(|n| vec![n]),
            None => Err("must be a string (an IP or CIDR)".into()),
        };
    }
    match v.as_array() {
        Some(items) if !items.is_empty() => items
            .iter()
            .map(|i| match i.as_str() {
                Some(s) => cidr(s),
                None => Err(format!("has {i}, which is not an IP address or CIDR")),
            })
            .collect(),
        _ => Err("must be a non-empty array of IPs or CIDRs".into()),
    }
}

/// The disjunctive normal form, at most [`MAX_DISJUNCTS`] conjuncts; a
/// negated header test that could match an empty value is split into
/// "absent" and "present and not matching".
fn dnf(n: &Node) -> Result<Disjuncts, String> {
    let too_many = |k: usize| {
        format!(
            "expands to {k} or more alternatives (OR): each is one Envoy route, and at most {MAX_DISJUNCTS} are allowed"
        )
    };
    match n {
        Node::Leaf {
            source,
            test,
            negated,
        } => {
            let cond = |check| Cond {
                source: source.clone(),
                check,
            };
            if !negated {
                return Ok(vec![vec![cond(Check::Is(test.clone()))]]);
            }
            match (source, test) {
                // Envoy's `treat_missing_header_as_empty` + `invert_match`
                // is exact unless the test matches the empty value.
                (Source::Header(_), Test::Exact(s)) if !s.is_empty() => {
                    Ok(vec![vec![cond(Check::Not(test.clone()))]])
                }
                (Source::Header(_), _) => Ok(vec![
                    vec![cond(Check::Absent)],
                    vec![cond(Check::PresentNot(test.clone()))],
                ]),
                _ => Ok(vec![vec![cond(Check::Not(test.clone()))]]),
            }
        }
        Node::Or(children) => {
            let mut out = Vec::new();
            for c in children {
                out.extend(dnf(c)?);
                if out.len() > MAX_DISJUNCTS {
                    return Err(too_many(out.len()));
                }
            }
            Ok(out)
        }
        Node::And(children) => {
            let mut out: Disjuncts = vec![Vec::new()];
            for c in children {
                let d = dnf(c)?;
                if out.len().saturating_mul(d.len()) > MAX_DISJUNCTS {
                    return Err(too_many(out.len().saturating_mul(d.len())));
                }
                let mut next = Vec::new();
                for left in &out {
                    for right in &d {
                        let mut conj = left.clone();
                        conj.extend(right.iter().cloned());
                        next.push(conj);
                    }
                }
                out = next;
            }
            Ok(out)
        }
    }
}

/// A PCRE search (`ngx.re.find(value, pattern, "jo")`) as an RE2 full
/// match: `.*(?:pattern).*`, refused when RE2 would read it differently
/// or not at all, or when it is too big for Envoy.
pub fn search_regex(pattern: &str, case_insensitive: bool) -> Result<String, String> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!("has a regex longer than {MAX_PATTERN_LEN} bytes"));
    }
    let wrap = if case_insensitive {
        SEARCH_WRAP_COST_CI
    } else {
        SEARCH_WRAP_COST
    };
    check_size(pattern, wrap)?;
    Ok(if case_insensitive {
        format!(".*(?i:{pattern}).*")
    } else {
        format!(".*(?:{pattern}).*")
    })
}

/// Parses `pattern` as PCRE would and checks that RE2 takes it the same
/// way and within Envoy's program size (`extra` is the wrapper's cost).
fn check_size(pattern: &str, extra: u32) -> Result<(), String> {
    let ast = ast::parse::ParserBuilder::new()
        .octal(false)
        .nest_limit(50)
        .build()
        .parse(pattern)
        .map_err(|e| {
            format!(
                "has the regex {pattern:?}, which RE2 cannot take: {}",
                e.kind()
            )
        })?;
    // A `(?i)` also holds in the alternatives after it: any one makes the
    // whole pattern count as case-insensitive (an upper estimate).
    let ci = extra == SEARCH_WRAP_COST_CI || sets_case_insensitive(&ast);
    let cost = re2_cost(&ast, ci).map_err(|why| {
        format!("has the regex {pattern:?}, which RE2 cannot take the same way as PCRE: {why}")
    })?;
    if cost.saturating_add(extra) > RE2_MAX_PROGRAM {
        return Err(format!(
            "has the regex {pattern:?}, too big for Envoy's RE2 (program size limit {RE2_MAX_PROGRAM}; simplify it or split it into several expressions)"
        ));
    }
    Ok(())
}

/// An upper estimate of RE2's program size for `a` (UTF-8 mode), or why RE2
/// and PCRE would not agree on it; `ci`: case-insensitive (a letter is
/// then a class of its cases, `k` also the Kelvin sign).
fn re2_cost(a: &Ast, ci: bool) -> Result<u32, String> {
    Ok(match a {
        Ast::Empty(_) => 0,
        Ast::Flags(f) => {
            check_flags(&f.flags)?;
            0
        }
        Ast::Literal(l) => literal_cost(l, ci)?,
        Ast::Dot(_) => 12,
        Ast::Assertion(x) => match x.kind {
            ast::AssertionKind::StartLine
            | ast::AssertionKind::EndLine
            | ast::AssertionKind::StartText
            | ast::AssertionKind::EndText
            | ast::AssertionKind::WordBoundary
            | ast::AssertionKind::NotWordBoundary => 1,
            _ => return Err("a word-boundary form RE2 does not have (\\<, \\>, \\b{...})".into()),
        },
        Ast::ClassUnicode(_) => return Err("Unicode classes (\\p) are not supported".into()),
        Ast::ClassPerl(p) => perl_cost(p, ci),
        Ast::ClassBracketed(b) => bracketed_cost(b, ci)?,
        Ast::Repetition(r) => {
            // `a**`, `a{2}{3}`; `a*+` is possessive in PCRE.
            if matches!(*r.ast, Ast::Repetition(_)) {
                return Err(
                    "a repetition of a repetition (possessive or stacked quantifiers)".into(),
                );
            }
            let inner = re2_cost(&r.ast, ci)?;
            match &r.op.kind {
                ast::RepetitionKind::ZeroOrOne
                | ast::RepetitionKind::ZeroOrMore
                | ast::RepetitionKind::OneOrMore => inner.saturating_add(2),
                ast::RepetitionKind::Range(range) => {
                    let n = match *range {
                        ast::RepetitionRange::Exactly(n) => n,
                        ast::RepetitionRange::AtLeast(n) => n.saturating_add(1),
                        ast::RepetitionRange::Bounded(_, m) => m,
                    };
                    if n > 1000 {
                        return Err("a repetition count above 1000".into());
                    }
                    inner.saturating_add(2).saturating_mul(n.max(1))
                }
            }
        }
        Ast::Group(g) => {
            let mut ci = ci;
            match &g.kind {
                ast::GroupKind::CaptureIndex(_) => {}
                ast::GroupKind::CaptureName { starts_with_p, .. } => {
                    if !starts_with_p {
                        return Err("write named groups as (?P<name>...)".into());
                    }
                }
                ast::GroupKind::NonCapturing(flags) => {
                    check_flags(flags)?;
                    ci |= flags.flag_state(ast::Flag::CaseInsensitive) == Some(true);
                }
            }
            re2_cost(&g.ast, ci)?.saturating_add(2)
        }
        Ast::Alternation(alt) => {
            let mut sum = 0u32;
            for x in &alt.asts {
                sum = sum.saturating_add(re2_cost(x, ci)?).saturating_add(1);
            }
            sum
        }
        Ast::Concat(c) => {
            // `(?i)` in a sequence holds until the end of its group.
            let mut ci = ci;
            let mut sum = 0u32;
            for x in &c.asts {
                if let Ast::Flags(f) = x {
                    ci |= f.flags.flag_state(ast::Flag::CaseInsensitive) == Some(true);
                }
                sum = sum.saturating_add(re2_cost(x, ci)?);
            }
            sum
        }
    })
}

/// Whether a `(?i)` or `(?i:...)` appears anywhere in `a`.
fn sets_case_insensitive(a: &Ast) -> bool {
    let on = |f: &ast::Flags| f.flag_state(ast::Flag::CaseInsensitive) == Some(true);
    match a {
        Ast::Flags(f) => on(&f.flags),
        Ast::Group(g) => {
            matches!(&g.kind, ast::GroupKind::NonCapturing(f) if on(f))
                || sets_case_insensitive(&g.ast)
        }
        Ast::Repetition(r) => sets_case_insensitive(&r.ast),
        Ast::Alternation(x) => x.asts.iter().any(sets_case_insensitive),
        Ast::Concat(x) => x.asts.iter().any(sets_case_insensitive),
        _ => false,
    }
}

fn check_flags(f: &ast::Flags) -> Result<(), String> {
    for item in &f.items {
        if let ast::FlagsItemKind::Flag(flag) = item.kind {
            match flag {
                ast::Flag::CaseInsensitive
                | ast::Flag::MultiLine
                | ast::Flag::DotMatchesNewLine
                | ast::Flag::SwapGreed => {}
                _ => return Err("flags other than i, m, s and U".into()),
            }
        }
    }
    Ok(())
}

fn literal_cost(l: &ast::Literal, ci: bool) -> Result<u32, String> {
    match l.kind {
        ast::LiteralKind::HexFixed(ast::HexLiteralKind::X)
        | ast::LiteralKind::HexBrace(ast::HexLiteralKind::X)
        | ast::LiteralKind::Verbatim
        | ast::LiteralKind::Meta
        | ast::LiteralKind::Superfluous => {}
        ast::LiteralKind::Special(ast::SpecialLiteralKind::Space) => {
            return Err("an escaped space".into())
        }
        ast::LiteralKind::Special(_) => {}
        _ => return Err("\\u escapes (write \\x{...})".into()),
    }
    let n = u32::try_from(l.c.len_utf8()).unwrap_or(4);
    Ok(if ci && l.c.is_alphabetic() {
        n.max(4)
    } else {
        n
    })
}

fn perl_cost(p: &ast::ClassPerl, ci: bool) -> u32 {
    match (p.negated, ci) {
        // `\W` under (?i) also leaves out the Kelvin and long-s signs.
        (true, true) => 28,
        (true, false) => 16,
        (false, _) => 8,
    }
}

fn bracketed_cost(b: &ast::ClassBracketed, ci: bool) -> Result<u32, String> {
    let items = match &b.kind {
        ast::ClassSet::BinaryOp(_) => {
            return Err("class operations (&&, --, ~~) are literal text in PCRE".into())
        }
        ast::ClassSet::Item(item) => set_item_cost(item, ci)?,
    };
    Ok(if b.negated { 26 + items } else { items })
}

fn set_item_cost(i: &ast::ClassSetItem, ci: bool) -> Result<u32, String> {
    Ok(match i {
        ast::ClassSetItem::Empty(_) => 0,
        ast::ClassSetItem::Literal(l) => literal_cost(l, ci)?,
        ast::ClassSetItem::Range(r) => {
            literal_cost(&r.start, false)?;
            literal_cost(&r.end, false)?;
            // Case folding and ranges across UTF-8 lengths compile to several.
            if ci || r.end.c.len_utf8() > 1 {
                8
            } else {
                1
            }
        }
        ast::ClassSetItem::Ascii(a) => {
            if a.negated {
                16
            } else {
                8
            }
        }
        ast::ClassSetItem::Unicode(_) => {
            return Err("Unicode classes (\\p) are not supported".into())
        }
        ast::ClassSetItem::Perl(p) => perl_cost(p, ci),
        ast::ClassSetItem::Bracketed(_) => {
            return Err("a '[' inside a class is literal in PCRE (escape it: \\[)".into())
        }
        ast::ClassSetItem::Union(u) => {
            let mut sum = 0u32;
            for x in &u.items {
                sum = sum.saturating_add(set_item_cost(x, ci)?);
            }
            sum
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Disjuncts, String> {
        parse_vars(&v)
    }

    fn is(source: Source, test: Test) -> Cond {
        Cond {
            source,
            check: Check::Is(test),
        }
    }

    #[test]
    fn plain_expressions() {
        assert_eq!(parse(json!([])).unwrap(), vec![Vec::<Cond>::new()]);
        let d = parse(json!([
            ["arg_name", "==", "json"],
            ["http_X_Api_Version", "~~", "^v[0-9]+$"],
            ["cookie_team", "a"]
        ]))
        .unwrap();
        assert_eq!(
            d,
            vec![vec![
                is(Source::Query("name".into()), Test::Exact("json".into())),
                is(
                    Source::Header("x-api-version".into()),
                    Test::Regex(".*(?:^v[0-9]+$).*".into())
                ),
                is(Source::Cookie("team".into()), Test::Exact("a".into())),
            ]]
        );
        let d = parse(json!([["request_method", "in", ["GET", "HEAD"]]])).unwrap();
        assert_eq!(d[0][0].source, Source::Header(":method".into()));
        let d = parse(json!([["http_host", "~*", "EXAMPLE"]])).unwrap();
        assert_eq!(
            d[0][0],
            is(
                Source::Header(":authority".into()),
                Test::Regex(".*(?i:EXAMPLE).*".into())
            )
        );
    }

    #[test]
    fn in_escapes_and_ipmatch() {
        let d = parse(json!([["http_x", "in", ["a.b", "c|d", "(e)"]]])).unwrap();
        assert_eq!(
            d[0][0],
            is(
                Source::Header("x".into()),
                Test::Regex(r"(?:a\.b|c\|d|\(e\))".into())
            )
        );
        let d = parse(json!([["remote_addr", "ipmatch", ["10.0.0.1/8", "::1"]]])).unwrap();
        assert_eq!(
            d[0][0],
            is(
                Source::RemoteAddr,
                Test::Cidrs(vec![
                    "10.0.0.0/8".parse().unwrap(),
                    "::1/128".parse().unwrap()
                ])
            )
        );
    }

    #[test]
    fn negations_follow_lua_nil_semantics() {
        // `~=` on a header: absent counts as "not equal".
        let d = parse(json!([["http_x", "~=", "v"]])).unwrap();
        assert_eq!(
            d,
            vec![vec![Cond {
                source: Source::Header("x".into()),
                check: Check::Not(Test::Exact("v".into()))
            }]]
        );
        // A negated regex on a header: absent, or present and not matching.
        let d = parse(json!([["http_x", "!", "~~", "a"]])).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0][0].check, Check::Absent);
        // !OR → AND of negations; cookies invert natively.
        let d = parse(json!([
            "!OR",
            ["cookie_a", "==", "1"],
            ["cookie_b", "==", "2"]
        ]))
        .unwrap();
        assert_eq!(d.len(), 1);
        assert!(d[0].iter().all(|c| matches!(c.check, Check::Not(_))));
        // `!` twice is no negation.
        let d = parse(json!(["!AND", ["cookie_a", "!", "==", "1"]])).unwrap_err();
        assert!(d.contains("rule too short"), "{d}");
        let d = parse(json!([
            "!AND",
            ["cookie_a", "!", "==", "1"],
            ["cookie_b", "==", "2"]
        ]))
        .unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0][0].check, Check::Is(Test::Exact("1".into())));
    }

    #[test]
    fn or_becomes_routes_and_is_bounded() {
        let d = parse(json!([
            "OR",
            ["arg_a", "==", "1"],
            ["AND", ["arg_b", "==", "2"], ["http_c", "==", "3"]]
        ]))
        .unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].len(), 2);
        let or4 = json!([
            "OR",
            ["arg_a", "==", "1"],
            ["arg_a", "==", "2"],
            ["arg_a", "==", "3"]
        ]);
        let e = parse(json!([or4.clone(), or4.clone()])).unwrap_err();
        assert!(e.contains("at most 8"), "{e}");
    }

    #[test]
    fn refusals_name_the_expression() {
        for (v, want) in [
            (
                json!([["uri", "==", "/a"]]),
                "\"uri\", which Envoy's route matching cannot read",
            ),
            (json!([["upstream_addr", "==", "x"]]), "\"upstream_addr\""),
            (json!([["server_port", "==", "80"]]), "\"server_port\""),
            (json!([["arg_a", ">", 1]]), "numeric comparisons"),
            (json!([["arg_a", "==", 1]]), "with a number"),
            (
                json!([["arg_a", "~=", "1"]]),
                "cannot invert a query-parameter",
            ),
            (json!([["arg_a", "has", "1"]]), "\"has\""),
            (json!([["arg_a", "like", "1"]]), "unknown operator \"like\""),
            (json!([["http_a", "~~", "(a)\\1"]]), "RE2 cannot take"),
            (json!([["http_a", "~~", "a(?=b)"]]), "RE2 cannot take"),
            (json!([["http_a", "~~", "[a&&b]"]]), "literal text in PCRE"),
            (json!([["http_a", "~~", "\\pL"]]), "Unicode classes"),
            (json!([["http_a", "~~", "a{2000}"]]), "above 1000"),
            (json!([["http_a", "~~", "(?x)a"]]), "flags other"),
            (json!([["http_a", "~~", "\\<a"]]), "word-boundary"),
            (json!([["http_a", "~~", "a{90}"]]), "too big"),
            (json!([["http_a", "~~", "(?<n>a)"]]), "(?P<name>"),
            // RE2 refuses stacked quantifiers; PCRE reads `*+` as possessive.
            (
                json!([["http_a", "~~", "a**"]]),
                "repetition of a repetition",
            ),
            (
                json!([["http_a", "~~", "\\W*+"]]),
                "repetition of a repetition",
            ),
            (
                json!([["http_a", "~~", "a{2}{3}"]]),
                "repetition of a repetition",
            ),
            // Measured with RE2 (wrapped): 103 and 108, over Envoy's 100.
            (json!([["http_a", "~*", "(?:\\W){1,3}"]]), "too big"),
            (
                json!([[
                    "http_a",
                    "~~",
                    "((?i)k|(é0k[A-Za-z_-][^a-z]|-[0-9a-f]^$-|[a-z]{2,5}))"
                ]]),
                "too big",
            ),
            (
                json!([["http_cookie", "~~", "a"]]),
                "filter removes or replaces",
            ),
            (
                json!([["http_x_userinfo", "==", "a"]]),
                "filter removes or replaces",
            ),
            (json!([["remote_addr", "~~", "10"]]), "use ipmatch"),
            (json!([["http_x-k", "==", "1"]]), "bad header variable"),
            (json!([["remote_addr", "==", "10.0.0.300"]]), "not an IP"),
            (json!([["http_a", "in", []]]), "non-empty"),
            (json!([["http_a", "in", ["a", 1]]]), "never equals"),
            (json!([["http_a", "==", null]]), "null"),
            (json!(["arg_a", "==", "1"]), "wrapped inside brackets"),
            (json!([["arg_a", "?", "==", "1"]]), "bad 'not'"),
        ] {
            let e = parse(v.clone()).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn remote_addrs() {
        assert_eq!(
            parse_remote_addrs(
                &json!(["192.168.1.0/24", "2001:db8::/32", "127.0.0.1"]),
                false
            )
            .unwrap()
            .len(),
            3
        );
        assert!(parse_remote_addrs(&json!([]), false).is_err());
        assert!(parse_remote_addrs(&json!("10.0.0.0/33"), true).is_err());
        assert_eq!(
            parse_remote_addrs(&json!("10.1.2.3/8"), true).unwrap(),
            vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]
        );
    }

    /// RE2 program sizes measured with RE2 itself (google-re2): the
    /// estimate must not be below them, or Envoy would NACK.
    #[test]
    fn size_estimate_is_not_below_re2() {
        for (pattern, re2) in [
            ("abc", 7u32),
            (
                "^(GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS|CONNECT|TRACE|PURGE)$",
                52,
            ),
            (".", 12),
            ("..", 20),
            ("[^a-z]", 12),
            ("a{0,10}", 24),
            ("a{2,5}", 12),
            ("(?i)[a-z]", 10),
            ("\\S", 14),
            ("\\W", 15),
            ("(?i)k", 8),
            ("(?i)kkkk", 20),
            ("(?i)[^a-z]", 29),
            ("(?i)[a-z0-9]", 11),
            ("(?i)[[:alpha:]]", 10),
            ("[[:^alpha:]]", 13),
            ("(?i)\\w", 12),
            ("(?:ab){3,}", 11),
            ("(?:ab){0,3}", 13),
            ("(?P<n>a)", 7),
        ] {
            let ast = ast::parse::Parser::new().parse(pattern).unwrap();
            // RE2 counts ~4 for the match and the implicit capture.
            let est = re2_cost(&ast, false).unwrap() + 4;
            assert!(est >= re2, "{pattern}: estimate {est} < RE2's {re2}");
        }
    }
}
