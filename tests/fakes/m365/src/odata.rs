//! A small OData `$filter` parser/evaluator and Graph's `$search` syntax, shared by users,
//! contacts and the presence subscription resource.

use serde_json::Value;

/// A literal in a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// Quoted string.
    Str(String),
    /// Bare token (GUID, number, true/false/null).
    Bare(String),
}

impl Lit {
    fn text(&self) -> &str {
        match self {
            Lit::Str(s) | Lit::Bare(s) => s,
        }
    }
}

/// Filter AST.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// a or b
    Or(Box<Expr>, Box<Expr>),
    /// a and b
    And(Box<Expr>, Box<Expr>),
    /// not a
    Not(Box<Expr>),
    /// path op literal
    Cmp(String, String, Lit),
    /// path in (..)
    In(String, Vec<Lit>),
    /// startswith(path,'x')
    StartsWith(String, String),
    /// endswith(path,'x')
    EndsWith(String, String),
    /// path/any(v:body)
    Any(String, String, Box<Expr>),
    /// path/$count op n
    Count(String, String, i64),
}

impl Expr {
    /// Does the filter use operators that need `ConsistencyLevel: eventual` on directory objects?
    pub fn is_advanced(&self) -> bool {
        match self {
            Expr::Or(a, b) | Expr::And(a, b) => a.is_advanced() || b.is_advanced(),
            Expr::Not(_) | Expr::EndsWith(..) | Expr::Count(..) => true,
            Expr::Cmp(_, op, _) => op == "ne",
            Expr::Any(_, _, b) => b.is_advanced(),
            _ => false,
        }
    }
    /// Does a `startswith` occur inside an `any()` lambda?
    pub fn startswith_in_any(&self) -> bool {
        fn has_sw(e: &Expr) -> bool {
            match e {
                Expr::StartsWith(..) | Expr::EndsWith(..) => true,
                Expr::Or(a, b) | Expr::And(a, b) => has_sw(a) || has_sw(b),
                Expr::Not(a) => has_sw(a),
                _ => false,
            }
        }
        match self {
            Expr::Or(a, b) | Expr::And(a, b) => a.startswith_in_any() || b.startswith_in_any(),
            Expr::Not(a) => a.startswith_in_any(),
            Expr::Any(_, _, b) => has_sw(b),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    LParen,
    RParen,
    Comma,
    Colon,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = vec![];
    while i < c.len() {
        match c[i] {
            ' ' | '\t' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            ':' => {
                out.push(Tok::Colon);
                i += 1
            }
            '\'' => {
                let mut v = String::new();
                i += 1;
                loop {
                    if i >= c.len() {
                        return Err("unterminated string".into());
                    }
                    if c[i] == '\'' {
                        if i + 1 < c.len() && c[i + 1] == '\'' {
                            v.push('\'');
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    v.push(c[i]);
                    i += 1;
                }
                out.push(Tok::Str(v));
            }
            _ => {
                let mut v = String::new();
                while i < c.len() && !" \t(),:'".contains(c[i]) {
                    v.push(c[i]);
                    i += 1;
                }
                out.push(Tok::Word(v));
            }
        }
    }
    Ok(out)
}

struct P {
    t: Vec<Tok>,
    i: usize,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.t.get(self.i).cloned();
        self.i += 1;
        t
    }
    fn expect(&mut self, t: Tok) -> Result<(), String> {
        if self.next() == Some(t.clone()) {
            Ok(())
        } else {
            Err(format!("expected {t:?}"))
        }
    }
    fn kw(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k))
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut a = self.and()?;
        while self.kw("or") {
            self.i += 1;
            a = Expr::Or(Box::new(a), Box::new(self.and()?));
        }
        Ok(a)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut a = self.unary()?;
        while self.kw("and") {
            self.i += 1;
            a = Expr::And(Box::new(a), Box::new(self.unary()?));
        }
        Ok(a)
    }
    fn unary(&mut self) -> Result<Expr, String> {
        if self.kw("not") {
            self.i += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }
    fn lit(&mut self) -> Result<Lit, String> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Lit::Str(s)),
            Some(Tok::Word(w)) => Ok(Lit::Bare(w)),
            t => Err(format!("expected literal, got {t:?}")),
        }
    }
    fn primary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::LParen) => {
                let e = self.or()?;
                self.expect(Tok::RParen)?;
                Ok(e)
            }
            Some(Tok::Word(w)) => {
                let lw = w.to_ascii_lowercase();
                if (lw == "startswith" || lw == "endswith") && self.peek() == Some(&Tok::LParen) {
                    self.i += 1;
                    let path = match self.next() {
                        Some(Tok::Word(p)) => p,
                        t => return Err(format!("expected property, got {t:?}")),
                    };
                    self.expect(Tok::Comma)?;
                    let v = match self.next() {
                        Some(Tok::Str(s)) => s,
                        t => return Err(format!("expected string, got {t:?}")),
                    };
                    self.expect(Tok::RParen)?;
                    return Ok(if lw == "startswith" {
                        Expr::StartsWith(path, v)
                    } else {
                        Expr::EndsWith(path, v)
                    });
                }
                if let Some(path) = w.strip_suffix("/any").or_else(|| w.strip_suffix("/ANY")) {
                    self.expect(Tok::LParen)?;
                    let var = match self.next() {
                        Some(Tok::Word(v)) => v,
                        t => return Err(format!("expected lambda variable, got {t:?}")),
                    };
                    self.expect(Tok::Colon)?;
                    let body = self.or()?;
                    self.expect(Tok::RParen)?;
                    return Ok(Expr::Any(path.to_string(), var, Box::new(body)));
                }
                if let Some(path) = w.strip_suffix("/$count") {
                    let op = match self.next() {
                        Some(Tok::Word(o)) => o.to_ascii_lowercase(),
                        t => return Err(format!("expected operator, got {t:?}")),
                    };
                    let n = self
                        .lit()?
                        .text()
                        .parse::<i64>()
                        .map_err(|e| e.to_string())?;
                    return Ok(Expr::Count(path.to_string(), op, n));
                }
                let op = match self.next() {
                    Some(Tok::Word(o)) => o.to_ascii_lowercase(),
                    t => return Err(format!("expected operator after {w}, got {t:?}")),
                };
                if op == "in" {
                    self.expect(Tok::LParen)?;
                    let mut items = vec![self.lit()?];
                    while self.peek() == Some(&Tok::Comma) {
                        self.i += 1;
                        items.push(self.lit()?);
                    }
                    self.expect(Tok::RParen)?;
                    return Ok(Expr::In(w, items));
                }
                if !["eq", "ne", "ge", "le", "gt", "lt"].contains(&op.as_str()) {
                    return Err(format!("unknown operator {op}"));
                }
                Ok(Expr::Cmp(w, op, self.lit()?))
            }
            t => Err(format!("unexpected {t:?}")),
        }
    }
}

/// Parse a `$filter` expression.
pub fn parse_filter(s: &str) -> Result<Expr, String> {
    let mut p = P { t: lex(s)?, i: 0 };
    let e = p.or()?;
    if p.i != p.t.len() {
        return Err("trailing tokens".into());
    }
    Ok(e)
}

fn lookup<'a>(root: &'a Value, var: Option<(&str, &'a Value)>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('/');
    let first = parts.next()?;
    let mut cur = match var {
        Some((v, val)) if v == first => val,
        _ => get_ci(root, first)?,
    };
    for p in parts {
        cur = get_ci(cur, p)?;
    }
    Some(cur)
}

fn get_ci<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(k))
        .map(|(_, v)| v)
}

fn cmp_val(v: &Value, lit: &Lit) -> Option<std::cmp::Ordering> {
    match (v, lit) {
        (Value::Null, Lit::Bare(b)) if b == "null" => Some(std::cmp::Ordering::Equal),
        (Value::Null, _) => None,
        (Value::Bool(x), Lit::Bare(b)) => Some(x.to_string().cmp(&b.to_ascii_lowercase())),
        (Value::Number(n), l) => l
            .text()
            .parse::<f64>()
            .ok()
            .and_then(|x| n.as_f64()?.partial_cmp(&x)),
        (Value::String(s), l) => Some(s.to_lowercase().cmp(&l.text().to_lowercase())),
        _ => None,
    }
}

/// Evaluate a filter against a JSON object (string comparisons case-insensitive, like Entra).
pub fn eval(e: &Expr, root: &Value) -> bool {
    eval_in(e, root, None)
}

fn eval_in(e: &Expr, root: &Value, var: Option<(&str, &Value)>) -> bool {
    use std::cmp::Ordering::*;
    match e {
        Expr::Or(a, b) => eval_in(a, root, var) || eval_in(b, root, var),
        Expr::And(a, b) => eval_in(a, root, var) && eval_in(b, root, var),
        Expr::Not(a) => !eval_in(a, root, var),
        Expr::Cmp(p, op, lit) => {
            let v = lookup(root, var, p).cloned().unwrap_or(Value::Null);
            let o = cmp_val(&v, lit);
            match op.as_str() {
                "eq" => o == Some(Equal),
                "ne" => o != Some(Equal),
                "ge" => matches!(o, Some(Greater | Equal)),
                "le" => matches!(o, Some(Less | Equal)),
                "gt" => o == Some(Greater),
                "lt" => o == Some(Less),
                _ => false,
            }
        }
        Expr::In(p, items) => {
            let v = lookup(root, var, p).cloned().unwrap_or(Value::Null);
            items.iter().any(|l| cmp_val(&v, l) == Some(Equal))
        }
        Expr::StartsWith(p, s) => lookup(root, var, p)
            .and_then(Value::as_str)
            .is_some_and(|v| v.to_lowercase().starts_with(&s.to_lowercase())),
        Expr::EndsWith(p, s) => lookup(root, var, p)
            .and_then(Value::as_str)
            .is_some_and(|v| v.to_lowercase().ends_with(&s.to_lowercase())),
        Expr::Any(p, v, body) => {
            lookup(root, var, p)
                .and_then(Value::as_array)
                .is_some_and(|arr| {
                    arr.iter()
                        .any(|el| eval_in(body, root, Some((v.as_str(), el))))
                })
        }
        Expr::Count(p, op, n) => {
            let c = lookup(root, var, p)
                .and_then(Value::as_array)
                .map_or(0, |a| a.len() as i64);
            match op.as_str() {
                "eq" => c == *n,
                "ne" => c != *n,
                _ => false,
            }
        }
    }
}

/// One `"property:term"` clause of `$search`.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchClause {
    /// Property (None = all searchable).
    pub prop: Option<String>,
    /// Term.
    pub term: String,
}

/// Parsed `$search`: clauses joined by OR (`any`) or AND (`all`).
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// Clauses.
    pub clauses: Vec<SearchClause>,
    /// Joined with AND.
    pub all: bool,
}

/// Parse Graph's directory `$search` (`"displayName:wa" OR "mail:wa"`). Every clause must be
/// double-quoted, and (for directory objects) name a property.
pub fn parse_search(s: &str, require_prop: bool) -> Result<Search, String> {
    let s = s.trim();
    let mut clauses = vec![];
    let mut all = false;
    let mut rest = s;
    loop {
        let r = rest.trim_start();
        if r.is_empty() {
            break;
        }
        let Some(inner) = r.strip_prefix('"') else {
            return Err("Syntax error: $search values must be enclosed in double quotes.".into());
        };
        let Some(end) = inner.find('"') else {
            return Err("Syntax error: unterminated quote in $search.".into());
        };
        let clause = &inner[..end];
        let (prop, term) = match clause.split_once(':') {
            Some((p, t)) => (Some(p.trim().to_string()), t.trim().to_string()),
            None if require_prop => {
                return Err(
                    "Syntax error: $search clause must be of the form \"property:term\".".into(),
                );
            }
            None => (None, clause.trim().to_string()),
        };
        clauses.push(SearchClause { prop, term });
        rest = inner[end + 1..].trim_start();
        if rest.is_empty() {
            break;
        }
        if let Some(r2) = rest.strip_prefix("OR ") {
            rest = r2;
        } else if let Some(r2) = rest.strip_prefix("AND ") {
            all = true;
            rest = r2;
        } else {
            return Err("Syntax error: expected OR/AND between $search clauses.".into());
        }
    }
    if clauses.is_empty() {
        return Err("Syntax error: empty $search.".into());
    }
    Ok(Search { clauses, all })
}

fn tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Tokenized prefix match: every token of `term` prefixes some token of `value`.
pub fn token_prefix_match(value: &str, term: &str) -> bool {
    let vt = tokens(value);
    let tt = tokens(term);
    !tt.is_empty()
        && tt
            .iter()
            .all(|t| vt.iter().any(|v| v.starts_with(t.as_str())))
}

impl Search {
    /// Does `obj` match? `default_props` are searched for clauses without a property.
    pub fn matches(&self, obj: &Value, default_props: &[&str]) -> bool {
        let one = |c: &SearchClause| -> bool {
            let props: Vec<&str> = match &c.prop {
                Some(p) => vec![p.as_str()],
                None => default_props.to_vec(),
            };
            props.iter().any(|p| {
                let v = get_ci(obj, p);
                match v {
                    Some(Value::String(s)) => token_prefix_match(s, &c.term),
                    Some(Value::Array(a)) => a.iter().any(|x| {
                        x.as_str().is_some_and(|s| token_prefix_match(s, &c.term))
                            || get_ci(x, "address")
                                .and_then(Value::as_str)
                                .is_some_and(|s| token_prefix_match(s, &c.term))
                    }),
                    _ => false,
                }
            })
        };
        if self.all {
            self.clauses.iter().all(one)
        } else {
            self.clauses.iter().any(one)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_parse_and_evaluate() {
        let u = json!({"displayName": "Adele Vance", "mail": "AdeleV@contoso.com", "accountEnabled": true,
                       "assignedPlans": [{"servicePlanId": "57ff2da0-773e-42df-b2af-ffb7a2317929", "capabilityStatus": "Enabled"}]});
        assert!(eval(
            &parse_filter("startswith(displayName,'ad')").unwrap(),
            &u
        ));
        assert!(eval(
            &parse_filter("accountEnabled eq true and mail eq 'adelev@contoso.com'").unwrap(),
            &u
        ));
        assert!(eval(
            &parse_filter(
                "assignedPlans/any(p:p/servicePlanId eq 57ff2da0-773e-42df-b2af-ffb7a2317929)"
            )
            .unwrap(),
            &u
        ));
        let e = parse_filter("id in ('a','b')").unwrap();
        assert_eq!(
            e,
            Expr::In(
                "id".into(),
                vec![Lit::Str("a".into()), Lit::Str("b".into())]
            )
        );
        assert!(
            parse_filter("endswith(mail,'contoso.com')")
                .unwrap()
                .is_advanced()
        );
        assert!(
            parse_filter("emailAddresses/any(a:startswith(a/address,'g'))")
                .unwrap()
                .startswith_in_any()
        );
    }

    #[test]
    fn search_is_quoted_tokenized_prefix() {
        let s = parse_search("\"displayName:wa\" OR \"mail:wa\"", true).unwrap();
        assert!(s.matches(&json!({"displayName": "Megan Walsh", "mail": null}), &[]));
        assert!(!s.matches(&json!({"displayName": "Edwards", "mail": null}), &[]));
        assert!(parse_search("displayName:wa", true).is_err());
    }
}
