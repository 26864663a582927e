//! The runs table's search language, parsed without a database (pure; unit tests below).
//!
//! ```text
//! query   := term ( [AND] term )*
//! term    := WORD                      free word: the run name contains it
//!          | "quoted words"            the same, spaces included
//!          | FIELD ':' value           FIELD: tag, kind, status, dataset
//!          | KEY OP value              KEY: a config path (`optim.lr`, alias `lr`) or, with
//!                                      a `/`, a metric (`eval/AP`: its value at the last step)
//! OP      := = | != | < | <= | > | >=
//! value   := WORD | "quoted"           a number where it reads as one
//! ```
//!
//! [`parse`] gives the terms with their columns; [`resolve`] checks the keys against the
//! config paths and metric names that exist and turns them into a [`resolve::Filter`] that
//! `db::run_search` binds as SQL parameters.

pub mod resolve;

pub use resolve::{ConfigKeys, Filter, Goal, SortKey};

/// A term of a search.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// The run name contains it (case-insensitive).
    Word(String),
    /// `tag:x`, `kind:finetune`, `status:running`, `dataset:name`.
    Field { field: Field, value: String },
    /// `lr > 0.005`, `detector = fcos`, `eval/AP >= 0.3`.
    Compare {
        key: String,
        op: Op,
        value: Value,
        /// 1-based column of the key (for the resolver's messages).
        column: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Tag,
    Kind,
    Status,
    Dataset,
}

impl Field {
    const ALL: [(&'static str, Field); 4] = [
        ("tag", Field::Tag),
        ("kind", Field::Kind),
        ("status", Field::Status),
        ("dataset", Field::Dataset),
    ];

    fn parse(s: &str) -> Option<Field> {
        Field::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|(_, f)| *f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    /// The SQL operator (a fixed string: never user text).
    pub fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }

    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "=" | "==" => Op::Eq,
            "!=" | "<>" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            _ => return None,
        })
    }
}

/// A compared value: a finite number where the text reads as one, else text.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Num(f64),
    Text(String),
}

/// Why a search does not parse, with the 1-based column (in characters) it refers to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("at column {column}: {message}")]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

fn error<T>(column: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        column,
        message: message.into(),
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Op(String),
    Colon,
}

/// The tokens with their 1-based columns.
fn lex(text: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return error(column, "the quote opened here is never closed"),
                    Some('"') => break,
                    Some('\\') if chars.get(i + 1).is_some() => {
                        s.push(chars[i + 1]);
                        i += 2;
                    }
                    Some(&c) => {
                        s.push(c);
                        i += 1;
                    }
                }
            }
            i += 1;
            out.push((Tok::Quoted(s), column));
        } else if matches!(c, '<' | '>' | '=' | '!') {
            let mut op = c.to_string();
            if let Some(&next) = chars.get(i + 1)
                && (next == '=' || (c == '<' && next == '>'))
            {
                op.push(next);
            }
            if Op::parse(&op).is_none() {
                return error(
                    column,
                    format!("`{op}` is not an operator (use = != < <= > >=)"),
                );
            }
            i += op.chars().count();
            out.push((Tok::Op(op), column));
        } else if c == ':' {
            i += 1;
            out.push((Tok::Colon, column));
        } else {
            let start = i;
            while i < chars.len()
                && !chars[i].is_whitespace()
                && !matches!(chars[i], '"' | '<' | '>' | '=' | '!' | ':')
            {
                i += 1;
            }
            out.push((Tok::Word(chars[start..i].iter().collect()), column));
        }
    }
    Ok(out)
}

fn value_of(tok: &Tok) -> Option<Value> {
    match tok {
        Tok::Quoted(s) => Some(Value::Text(s.clone())),
        Tok::Word(w) => Some(match w.parse::<f64>() {
            Ok(x) if x.is_finite() => Value::Num(x),
            _ => Value::Text(w.clone()),
        }),
        _ => None,
    }
}

/// Parse a search into its terms (all must hold). Blank text is no terms.
pub fn parse(text: &str) -> Result<Vec<Term>, ParseError> {
    let toks = lex(text)?;
    let mut terms = Vec::new();
    let mut i = 0;
    let mut after_and: Option<usize> = None;
    while i < toks.len() {
        let (tok, column) = &toks[i];
        let next = toks.get(i + 1);
        match (tok, next) {
            (Tok::Word(w), _) if w.eq_ignore_ascii_case("and") => {
                if terms.is_empty() || after_and.is_some() {
                    return error(*column, "`AND` needs a search term on each side");
                }
                after_and = Some(*column);
                i += 1;
                continue;
            }
            (Tok::Word(w), Some((Tok::Colon, colon))) => {
                let Some(field) = Field::parse(w) else {
                    return error(
                        *column,
                        format!("unknown field `{w}:`; use tag:, kind:, status: or dataset:"),
                    );
                };
                let value = match toks.get(i + 2) {
                    Some((t @ (Tok::Word(_) | Tok::Quoted(_)), _)) => match t {
                        Tok::Word(v) | Tok::Quoted(v) => v.clone(),
                        _ => unreachable!("matched above"),
                    },
                    _ => {
                        return error(
                            *colon,
                            format!("expected a value after `{}:`", w.to_lowercase()),
                        );
                    }
                };
                terms.push(Term::Field { field, value });
                i += 3;
            }
            (Tok::Word(key), Some((Tok::Op(op), op_column))) => {
                let op = Op::parse(op).unwrap_or(Op::Eq);
                let value = match toks.get(i + 2) {
                    Some((t, _)) => value_of(t),
                    None => None,
                };
                let Some(value) = value else {
                    return error(
                        *op_column,
                        format!("expected a value after `{}`", op.text()),
                    );
                };
                terms.push(Term::Compare {
                    key: key.clone(),
                    op,
                    value,
                    column: *column,
                });
                i += 3;
            }
            (Tok::Word(w) | Tok::Quoted(w), _) => {
                terms.push(Term::Word(w.clone()));
                i += 1;
            }
            (Tok::Op(op), _) => {
                return error(
                    *column,
                    format!("`{op}` needs a key before it (e.g. `lr > 0.005`)"),
                );
            }
            (Tok::Colon, _) => {
                return error(*column, "`:` needs a field before it (e.g. `tag:baseline`)");
            }
        }
        after_and = None;
    }
    if let Some(column) = after_and {
        return error(column, "`AND` needs a search term on each side");
    }
    Ok(terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(key: &str, op: Op, value: Value, column: usize) -> Term {
        Term::Compare {
            key: key.into(),
            op,
            value,
            column,
        }
    }

    #[test]
    fn words_fields_and_comparisons() {
        let terms = parse(r#"fcos tag:baseline AND lr > 0.005 detector=fcos eval/AP >= 0.3 "a b""#)
            .unwrap();
        assert_eq!(
            terms,
            vec![
                Term::Word("fcos".into()),
                Term::Field {
                    field: Field::Tag,
                    value: "baseline".into()
                },
                cmp("lr", Op::Gt, Value::Num(0.005), 23),
                cmp("detector", Op::Eq, Value::Text("fcos".into()), 34),
                cmp("eval/AP", Op::Ge, Value::Num(0.3), 48),
                Term::Word("a b".into()),
            ]
        );
        assert_eq!(parse("  ").unwrap(), vec![]);
        assert_eq!(
            parse("kind:finetune status : running dataset:\"my set\"").unwrap(),
            vec![
                Term::Field {
                    field: Field::Kind,
                    value: "finetune".into()
                },
                Term::Field {
                    field: Field::Status,
                    value: "running".into()
                },
                Term::Field {
                    field: Field::Dataset,
                    value: "my set".into()
                },
            ]
        );
        assert_eq!(
            parse("seed != 3 name = \"x y\"").unwrap(),
            vec![
                cmp("seed", Op::Ne, Value::Num(3.0), 1),
                cmp("name", Op::Eq, Value::Text("x y".into()), 11),
            ]
        );
    }

    #[test]
    fn errors_name_the_column() {
        let e = parse("steps >").unwrap_err();
        assert_eq!(e.to_string(), "at column 7: expected a value after `>`");
        let e = parse("lr > 0.1 AND").unwrap_err();
        assert_eq!(e.column, 10);
        assert!(e.message.contains("AND"), "{e}");
        let e = parse("> 3").unwrap_err();
        assert_eq!(e.column, 1);
        assert!(e.message.contains("needs a key"), "{e}");
        let e = parse("colour:red").unwrap_err();
        assert_eq!(e.column, 1);
        assert!(e.message.contains("unknown field `colour:`"), "{e}");
        let e = parse("tag:").unwrap_err();
        assert_eq!(e.to_string(), "at column 4: expected a value after `tag:`");
        let e = parse("x \"open").unwrap_err();
        assert_eq!(e.column, 3);
        let e = parse("lr ! 3").unwrap_err();
        assert_eq!(e.column, 4);
        assert!(e.message.contains("not an operator"), "{e}");
        let e = parse("lr > > 3").unwrap_err();
        assert_eq!(e.to_string(), "at column 4: expected a value after `>`");
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let e = parse("é ≥ x >").unwrap_err();
        assert_eq!(e.column, 7);
    }
}
