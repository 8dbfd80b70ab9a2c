//! SQL text as it may leave the process: literals replaced by `?` (a value inlined into the
//! text, however quoted, never reaches a span, a log line or a label), comments dropped (they
//! can carry anything), whitespace runs made one space; placeholders (`$1`, `?`, `?1`, `:name`,
//! `@name`) and identifiers kept. Then the operation and the tables, for the span's name and
//! OpenTelemetry's `db.operation.name`, `db.collection.name` and `db.query.summary`.
//!
//! A small lexer rather than a SQL parser: it only has to know where literals and comments
//! start and end (PostgreSQL's and SQLite's quoting rules), not what the statement means.

/// The parts of a statement its telemetry uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Analyzed {
    /// The text without literals or comments.
    pub(crate) text: String,
    /// The first keyword, upper case (`SELECT`, `INSERT`, `BEGIN`, …); empty for an empty text.
    pub(crate) operation: String,
    /// The tables the statement names, in order, each once (at most [`MAX_TABLES`]).
    pub(crate) tables: Vec<String>,
}

/// Tables named in a summary at most.
const MAX_TABLES: usize = 3;

impl Analyzed {
    /// OpenTelemetry's `db.query.summary`: the operation and its tables, e.g. `SELECT tickets`.
    pub(crate) fn summary(&self) -> String {
        let mut s = self.operation.clone();
        for t in &self.tables {
            s.push(' ');
            s.push_str(t);
        }
        s
    }

    /// `db.collection.name`: the table, when the statement names exactly one.
    pub(crate) fn collection(&self) -> Option<&str> {
        match self.tables.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

fn ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// Replaces literals and drops comments; see the module documentation.
///
/// Long on purpose: one pass of one tokenizer over the text, whose cases (quotes, dollar
/// quotes, comments, numbers, identifiers) share the cursor and the output; split into
/// functions, each would take and return both.
pub(crate) fn sanitize(sql: &str) -> String {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    // Whitespace (or a dropped comment) waits here until something follows it.
    let mut space = false;
    let push = |out: &mut String, space: &mut bool, s: &str| {
        if *space && !out.is_empty() {
            out.push(' ');
        }
        *space = false;
        out.push_str(s);
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            space = true;
            i += 1;
        } else if c == '-' && next == Some('-') {
            // A line comment.
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            space = true;
        } else if c == '/' && next == Some('*') {
            // A block comment (PostgreSQL nests them).
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            space = true;
        } else if c == '\'' {
            // A string: `''` is a quote inside it; after an `E` prefix a backslash escapes.
            let escapes = out.ends_with(['E', 'e']) && !out[..out.len() - 1].ends_with(ident_char);
            if out.ends_with(['E', 'e', 'X', 'x', 'B', 'b', 'N', 'n', 'U', 'u'])
                && !out[..out.len() - 1].ends_with(ident_char)
            {
                out.pop(); // the prefix goes with the literal
            }
            i += 1;
            while i < chars.len() {
                if escapes && chars[i] == '\\' {
                    i += 2;
                } else if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        i += 2;
                    } else {
                        i += 1;
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            push(&mut out, &mut space, "?");
        } else if c == '"' || c == '`' || c == '[' {
            // A quoted identifier: kept.
            let close = if c == '[' { ']' } else { c };
            let start = i;
            i += 1;
            while i < chars.len() {
                if chars[i] == close {
                    if close != ']' && chars.get(i + 1) == Some(&close) {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            push(&mut out, &mut space, &s);
        } else if c == '$' && next.is_some_and(|n| n.is_ascii_digit()) {
            // `$1`: a placeholder.
            let start = i;
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            push(&mut out, &mut space, &s);
        } else if c == '$' && (next == Some('$') || next.is_some_and(ident_start)) && dollar_tag(&chars, i).is_some() {
            // `$tag$ … $tag$`: a dollar-quoted string.
            let tag = dollar_tag(&chars, i).unwrap_or_default();
            i += tag.len();
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '$' && chars[i..].starts_with(&tag) {
                    i += tag.len();
                    break;
                }
                i += 1;
            }
            push(&mut out, &mut space, "?");
        } else if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) {
            // A number (or `0x…`): a literal.
            i += 1;
            while i < chars.len() {
                let d = chars[i];
                let exponent_sign = (d == '+' || d == '-') && matches!(chars[i - 1], 'e' | 'E');
                if d.is_ascii_alphanumeric() || d == '.' || d == '_' || exponent_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            push(&mut out, &mut space, "?");
        } else if ident_start(c) {
            let start = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            push(&mut out, &mut space, &s);
        } else if (c == '?' || c == ':' || c == '@') && next.is_some_and(|n| ident_char(n) && n != '$') {
            // `?1`, `:name`, `@name`: placeholders (`::` casts stay as they are).
            let start = i;
            i += 1;
            if c == ':' && chars.get(i) == Some(&':') {
                push(&mut out, &mut space, "::");
                i += 1;
                continue;
            }
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            push(&mut out, &mut space, &s);
        } else {
            let mut buf = [0u8; 4];
            push(&mut out, &mut space, c.encode_utf8(&mut buf));
            i += 1;
        }
    }
    out
}

/// The whole opening tag of a dollar-quoted string at `i` (`$$` or `$name$`).
fn dollar_tag(chars: &[char], i: usize) -> Option<Vec<char>> {
    let mut j = i + 1;
    while j < chars.len() && chars[j] != '$' {
        if !ident_char(chars[j]) {
            return None;
        }
        j += 1;
    }
    (j < chars.len()).then(|| chars[i..=j].to_vec())
}

/// Keywords after which a table name comes.
const TABLE_BEFORE: [&str; 5] = ["FROM", "JOIN", "INTO", "UPDATE", "TABLE"];

/// Sanitizes `sql` and finds its operation and tables.
pub(crate) fn analyze(sql: &str) -> Analyzed {
    let text = sanitize(sql);
    let mut words = text
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',' || c == ';')
        .filter(|w| !w.is_empty());
    let operation = words.next().map(|w| w.to_ascii_uppercase()).unwrap_or_default();
    let mut tables: Vec<String> = Vec::new();
    let mut expect_table = TABLE_BEFORE.contains(&operation.as_str());
    let mut previous = operation.clone();
    for w in words {
        let upper = w.to_ascii_uppercase();
        // `FOR UPDATE [OF t]`, `FOR NO KEY UPDATE`: a lock clause, not a table to come.
        let lock_clause = upper == "UPDATE" && matches!(previous.as_str(), "FOR" | "KEY");
        previous.clone_from(&upper);
        if lock_clause {
            continue;
        }
        if expect_table {
            expect_table = false;
            // `INSERT INTO`, `DELETE FROM`, `CREATE TABLE IF NOT EXISTS t`, `FROM (subquery)`.
            if TABLE_BEFORE.contains(&upper.as_str()) || matches!(upper.as_str(), "IF" | "NOT" | "EXISTS" | "ONLY") {
                expect_table = true;
                continue;
            }
            let name: String = w.chars().filter(|c| !matches!(c, '"' | '`' | '[' | ']')).collect();
            let name = name.as_str();
            if !name.is_empty()
                && name.chars().all(|c| ident_char(c) || c == '.')
                && !name.starts_with('$')
                && !tables.iter().any(|t| t == name)
                && tables.len() < MAX_TABLES
            {
                tables.push(name.to_owned());
            }
        } else if TABLE_BEFORE.contains(&upper.as_str()) {
            expect_table = true;
        }
    }
    Analyzed { text, operation, tables }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_of_every_kind_are_replaced() {
        let cases = [
            ("SELECT * FROM users WHERE email = 'ana@example.org'", "SELECT * FROM users WHERE email = ?"),
            ("select 'it''s', 42, -3.5e+10, .5, 0x1F from t", "select ?, ?, -?, ?, ? from t"),
            (r"SELECT E'a\'b' , X'00ff', N'x'", "SELECT ? , ?, ?"),
            ("SELECT $$ana@example.org$$, $tag$x $ y$tag$ FROM t", "SELECT ?, ? FROM t"),
            (
                "UPDATE t SET a = $1, b = ?, c = ?2, d = :name, e = @v WHERE id = $12",
                "UPDATE t SET a = $1, b = ?, c = ?2, d = :name, e = @v WHERE id = $12",
            ),
            ("SELECT a::text FROM t1 JOIN t2 ON t1.id = t2.id", "SELECT a::text FROM t1 JOIN t2 ON t1.id = t2.id"),
            (
                "SELECT 1 -- secret ana@example.org\nFROM t /* 4111 1111 /* nested */ 1111 */ WHERE x",
                "SELECT ? FROM t WHERE x",
            ),
            ("SELECT \"weird \"\"name\"\"\" FROM `tick ets`", "SELECT \"weird \"\"name\"\"\" FROM `tick ets`"),
            ("  INSERT\n\tINTO   t (a) VALUES ('x')  ", "INSERT INTO t (a) VALUES (?)"),
            ("SELECT 'unterminated", "SELECT ?"),
        ];
        for (sql, want) in cases {
            assert_eq!(sanitize(sql), want, "{sql}");
        }
    }

    #[test]
    fn operation_tables_and_summary() {
        let a =
            analyze("SELECT t.sold FROM tiers t JOIN events e ON e.id = t.event_id WHERE t.id = $1 FOR UPDATE OF t");
        assert_eq!(a.summary(), "SELECT tiers events");
        assert_eq!(analyze("SELECT a FROM t FOR NO KEY UPDATE").summary(), "SELECT t");
        let a = analyze("SELECT id, seats FROM ticket_tiers WHERE event_id = $1 FOR UPDATE");
        assert_eq!(
            (a.operation.as_str(), a.summary().as_str(), a.collection()),
            ("SELECT", "SELECT ticket_tiers", Some("ticket_tiers"))
        );
        let a = analyze("insert into tickets (id, tier) values (?, ?)");
        assert_eq!((a.summary().as_str(), a.collection()), ("INSERT tickets", Some("tickets")));
        let a =
            analyze("SELECT * FROM orders o JOIN customers c ON o.c = c.id JOIN \"public\".\"items\" i ON i.o = o.id");
        assert_eq!((a.summary().as_str(), a.collection()), ("SELECT orders customers public.items", None));
        let a = analyze("CREATE TABLE IF NOT EXISTS events (id INTEGER)");
        assert_eq!(a.summary(), "CREATE events");
        let a = analyze("BEGIN");
        assert_eq!((a.summary().as_str(), a.collection()), ("BEGIN", None));
        let a = analyze("DELETE FROM sessions WHERE expires < $1");
        assert_eq!(a.summary(), "DELETE sessions");
        assert_eq!(analyze("").summary(), "");
    }

    proptest::proptest! {
        /// Whatever well-formed text is around it (identifiers, numbers, punctuation,
        /// placeholders), a value planted in a literal or comment never survives.
        #[test]
        fn a_planted_value_never_survives(
            before in "[ a-zA-Z0-9_=,().;\n]{0,30}( \\$1| \\?| :n| \\?2)?",
            after in "[ a-zA-Z0-9_=,().;\n]{0,30}( \\$1| \\?| :n| \\?2)?",
            quoting in 0usize..5,
        ) {
            let secret = "ana.secret@example.org";
            let literal = match quoting {
                0 => format!("'{secret}'"),
                1 => format!("E'{secret}\\''"),
                2 => format!("$$ {secret} $$"),
                3 => format!("$q${secret}$q$"),
                _ => format!("/* {secret} */"),
            };
            // The literal starts a token, as it does in SQL.
            let sql = format!("{before} {literal} {after}");
            let out = sanitize(&sql);
            proptest::prop_assert!(!out.contains("secret"), "{sql:?} -> {out:?}");
        }
    }
}
