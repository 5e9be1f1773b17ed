//! Label selectors (`app=web,tier!=db,env in (a,b),!legacy`) and field selectors
//! (`metadata.name=x,status.phase!=Running`) as `?labelSelector=` and `?fieldSelector=` carry them:
//! parsed once, then matched against each object.

use std::collections::BTreeMap;

use crate::validation;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unable to parse requirement: {0}")]
    Label(String),
    #[error("invalid field selector: {0}")]
    Field(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Exists,
    DoesNotExist,
    Equals,
    NotEquals,
    In,
    NotIn,
    GreaterThan,
    LessThan,
}

/// One comma-separated part of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match self.op {
            Operator::Exists => v.is_some(),
            Operator::DoesNotExist => v.is_none(),
            Operator::Equals | Operator::In => v.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => v.is_none_or(|v| !self.values.contains(v)),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(have), Some(bound)) =
                    (v.and_then(|v| v.parse::<i64>().ok()), self.values.first().and_then(|b| b.parse::<i64>().ok()))
                else {
                    return false;
                };
                if self.op == Operator::GreaterThan {
                    have > bound
                } else {
                    have < bound
                }
            }
        }
    }
}

/// A parsed label selector; the empty one matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

/// The selector as `?labelSelector=` writes it (`app=web,tier in (a,b),!canary`), which [`LabelSelector::parse`]
/// reads back.
impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let (key, values) = (&r.key, r.values.join(","));
            match r.op {
                Operator::Exists => write!(f, "{key}")?,
                Operator::DoesNotExist => write!(f, "!{key}")?,
                Operator::Equals => write!(f, "{key}={values}")?,
                Operator::NotEquals => write!(f, "{key}!={values}")?,
                Operator::In => write!(f, "{key} in ({values})")?,
                Operator::NotIn => write!(f, "{key} notin ({values})")?,
                Operator::GreaterThan => write!(f, "{key}>{values}")?,
                Operator::LessThan => write!(f, "{key}<{values}")?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Comma,
    Eq,
    DoubleEq,
    NotEq,
    Bang,
    Open,
    Close,
    Gt,
    Lt,
}

fn lex(s: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let t = match c {
            c if c.is_whitespace() => continue,
            ',' => Token::Comma,
            '(' => Token::Open,
            ')' => Token::Close,
            '>' => Token::Gt,
            '<' => Token::Lt,
            '=' if chars.peek() == Some(&'=') => {
                chars.next();
                Token::DoubleEq
            }
            '=' => Token::Eq,
            '!' if chars.peek() == Some(&'=') => {
                chars.next();
                Token::NotEq
            }
            '!' => Token::Bang,
            c => {
                let mut id = c.to_string();
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || ",()<>=!".contains(n) {
                        break;
                    }
                    id.push(n);
                    chars.next();
                }
                Token::Ident(id)
            }
        };
        out.push(t);
    }
    out
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let negated = self.peek() == Some(&Token::Bang);
        if negated {
            self.at += 1;
        }
        let key = match self.next() {
            Some(Token::Ident(k)) => k,
            other => return Err(format!("found {other:?}, expected a label key")),
        };
        if let Some(e) = validation::qualified_name(&key).first() {
            return Err(format!("key: Invalid value: {key:?}: {e}"));
        }
        if negated || matches!(self.peek(), None | Some(Token::Comma)) {
            let op = if negated { Operator::DoesNotExist } else { Operator::Exists };
            return Ok(Requirement { key, op, values: vec![] });
        }
        let (op, values) = match self.next() {
            Some(t @ (Token::Eq | Token::DoubleEq | Token::NotEq)) => {
                let op = if t == Token::NotEq { Operator::NotEquals } else { Operator::Equals };
                // `key=` selects the empty value.
                let v = match self.peek() {
                    Some(Token::Ident(_)) => self.ident()?,
                    _ => String::new(),
                };
                (op, vec![v])
            }
            Some(t @ (Token::Gt | Token::Lt)) => {
                let v = self.ident()?;
                if v.parse::<i64>().is_err() {
                    return Err(format!("for 'Gt', 'Lt' operators, the value must be an integer: {v:?}"));
                }
                (if t == Token::Gt { Operator::GreaterThan } else { Operator::LessThan }, vec![v])
            }
            Some(Token::Ident(w)) if w == "in" || w == "notin" => {
                (if w == "in" { Operator::In } else { Operator::NotIn }, self.set()?)
            }
            other => return Err(format!("found {other:?}, expected one of =, ==, !=, in, notin, >, <")),
        };
        for v in &values {
            if let Some(e) = validation::label_value(v).first() {
                return Err(format!("values[0][{key}]: Invalid value: {v:?}: {e}"));
            }
        }
        Ok(Requirement { key, op, values })
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Ident(v)) => Ok(v),
            other => Err(format!("found {other:?}, expected a value")),
        }
    }

    /// `( v1, v2 )`; values may be empty strings.
    fn set(&mut self) -> Result<Vec<String>, String> {
        if self.next() != Some(Token::Open) {
            return Err("found no '(' after in/notin".to_string());
        }
        let mut values = Vec::new();
        let mut want_value = true;
        loop {
            match self.next() {
                Some(Token::Ident(v)) if want_value => {
                    values.push(v);
                    want_value = false;
                }
                Some(Token::Comma) => {
                    if want_value {
                        values.push(String::new());
                    }
                    want_value = true;
                }
                Some(Token::Close) => {
                    if want_value && !values.is_empty() {
                        values.push(String::new());
                    }
                    break;
                }
                other => return Err(format!("found {other:?} in a set of values, expected a value, ',' or ')'")),
            }
        }
        if values.is_empty() {
            return Err("for 'in', 'notin' operators, values set can't be empty".to_string());
        }
        Ok(values)
    }
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let mut p = Parser { tokens: lex(s), at: 0 };
        let mut requirements = Vec::new();
        while p.peek().is_some() {
            requirements.push(p.requirement().map_err(SelectorError::Label)?);
            match p.next() {
                None => break,
                Some(Token::Comma) if p.peek().is_some() => {}
                other => return Err(SelectorError::Label(format!("found {other:?}, expected ','"))),
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// An API object's `LabelSelector` (matchLabels and matchExpressions, all of which must hold; an empty
    /// one matches everything), or why it is not one (Kubernetes' `LabelSelectorAsSelector`): an unknown
    /// operator, `In`/`NotIn` without values, `Exists`/`DoesNotExist` with some. The one conversion the
    /// scheduler, the controllers and RBAC use; where Kubernetes treats a missing or malformed selector as
    /// selecting nothing, so do they.
    pub fn from_api(
        selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Result<LabelSelector, SelectorError> {
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement { key: k.clone(), op: Operator::Equals, values: vec![v.clone()] })
            .collect();
        for e in selector.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" if !values.is_empty() => Operator::In,
                "NotIn" if !values.is_empty() => Operator::NotIn,
                "In" | "NotIn" => {
                    return Err(SelectorError::Label("for 'in', 'notin' operators, values set can't be empty".into()))
                }
                "Exists" if values.is_empty() => Operator::Exists,
                "DoesNotExist" if values.is_empty() => Operator::DoesNotExist,
                "Exists" | "DoesNotExist" => {
                    return Err(SelectorError::Label("values set must be empty for exists and does not exist".into()))
                }
                other => return Err(SelectorError::Label(format!("{other:?} is not a valid label selector operator"))),
            };
            requirements.push(Requirement { key: e.key.clone(), op, values });
        }
        Ok(LabelSelector { requirements })
    }

    /// Every requirement holds (none: everything matches).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// One `field=value` or `field!=value` of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    pub negated: bool,
    pub value: String,
}

/// A parsed field selector; which fields a resource supports is the API server's to check
/// ([`FieldSelector::fields`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub terms: Vec<FieldTerm>,
}

/// Splits at unescaped `sep` (a backslash escapes the next character; escapes are kept for [`unescape`]).
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=' | '!')) => out.push(e),
                Some(e) => return Err(format!("invalid escape sequence '\\{e}' in {s:?}")),
                None => return Err(format!("trailing backslash in {s:?}")),
            },
            '=' | ',' => return Err(format!("invalid selector {s:?}: unescaped {c:?} in a value")),
            c => out.push(c),
        }
    }
    Ok(out)
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector { terms });
        }
        for part in split_unescaped(s, ',') {
            // The first unescaped operator splits the term: `!=`, then `==`, then `=`.
            let bytes = part.as_bytes();
            let mut found = None;
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' => i += 1,
                    b'!' if bytes.get(i + 1) == Some(&b'=') => {
                        found = Some((i, 2, true));
                        break;
                    }
                    b'=' => {
                        let len = if bytes.get(i + 1) == Some(&b'=') { 2 } else { 1 };
                        found = Some((i, len, false));
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
            let Some((at, len, negated)) = found else {
                return Err(SelectorError::Field(format!("{part:?}: expected field=value or field!=value")));
            };
            let field = part[..at].trim().to_string();
            if field.is_empty() {
                return Err(SelectorError::Field(format!("{part:?}: no field name")));
            }
            let value = unescape(part[at + len..].trim()).map_err(SelectorError::Field)?;
            terms.push(FieldTerm { field, negated, value });
        }
        Ok(FieldSelector { terms })
    }

    /// The fields it names, for the API server to check against the resource's supported ones.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.field.as_str())
    }

    /// Every term holds; `get` returns a field's value (a supported field that is unset is "").
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.terms.iter().all(|t| {
            let v = get(&t.field).unwrap_or_default();
            (v == t.value) != t.negated
        })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_label_selectors_match_as_kubernetes_matches_them() {
        let s: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}, {"key": "old", "operator": "DoesNotExist"}],
        }))
        .unwrap();
        let s = LabelSelector::from_api(&s).unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "b")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a"), ("old", "")])));
        assert!(LabelSelector::from_api(&Default::default()).unwrap().matches(&labels(&[])));
        let odd =
            serde_json::from_value(serde_json::json!({"matchExpressions": [{"key": "k", "operator": "Gt"}]})).unwrap();
        assert!(LabelSelector::from_api(&odd).is_err());
        let odd = serde_json::from_value(
            serde_json::json!({"matchExpressions": [{"key": "k", "operator": "Exists", "values": ["v"]}]}),
        )
        .unwrap();
        assert!(LabelSelector::from_api(&odd).is_err());
        // As a query, and back.
        let query = s.to_string();
        assert_eq!(query, "app=web,tier in (a,b),!old");
        assert_eq!(LabelSelector::parse(&query).unwrap(), s);
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn every_operator_matches_as_kubernetes_does() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5"), ("empty", "")]);
        let none = labels(&[]);
        let cases: &[(&str, bool, bool)] = &[
            // selector, matches l, matches no labels
            ("", true, true),
            ("app", true, false),
            ("!app", false, true),
            ("app=web", true, false),
            ("app==web", true, false),
            ("app=db", false, false),
            ("app!=db", true, true),
            ("app!=web", false, true),
            ("app in (web, db)", true, false),
            ("app in (db)", false, false),
            ("app notin (db)", true, true),
            ("app notin (web,db)", false, true),
            ("app=web,tier=front", true, false),
            ("app=web, tier=back", false, false),
            ("n>4", true, false),
            ("n>5", false, false),
            ("n<6", true, false),
            ("empty=", true, false),
            ("empty in (,x)", true, false),
            ("example.com/role!=x", true, true),
        ];
        for &(s, want_l, want_none) in cases {
            assert_eq!(sel(s).matches(&l), want_l, "{s:?} on {l:?}");
            assert_eq!(sel(s).matches(&none), want_none, "{s:?} on no labels");
        }
    }

    #[test]
    fn bad_label_selectors_are_refused_with_a_reason() {
        for bad in [
            "a b",
            "app in web",
            "app in ()",
            "app in (web",
            "=web",
            "app=web,",
            ",app",
            "app=web=x",
            "bad key=1",
            "app=bad value!",
            "n>x",
            "!app=web",
            "-app",
        ] {
            let e = LabelSelector::parse(bad).expect_err(bad);
            assert!(e.to_string().starts_with("unable to parse requirement: "), "{bad:?}: {e}");
        }
    }

    #[test]
    fn field_selectors_parse_escapes_and_match() {
        let f = FieldSelector::parse("metadata.name=web-1,status.phase!=Running,spec.nodeName==").unwrap();
        assert_eq!(f.fields().collect::<Vec<_>>(), ["metadata.name", "status.phase", "spec.nodeName"]);
        let get = |phase: &'static str| {
            move |field: &str| match field {
                "metadata.name" => Some("web-1".to_string()),
                "status.phase" => Some(phase.to_string()),
                _ => None,
            }
        };
        assert!(f.matches(get("Pending")));
        assert!(!f.matches(get("Running")));

        let e = FieldSelector::parse(r"metadata.name=a\,b\=c").unwrap();
        assert_eq!(e.terms[0].value, "a,b=c");
        assert!(FieldSelector::parse("").unwrap().is_empty());
        for bad in ["metadata.name", "=x", r"a=b\", r"a=b\q", "a=b=c"] {
            assert!(FieldSelector::parse(bad).is_err(), "{bad:?}");
        }
    }
}
