//! Writing SQL text: identifiers and literals quoted, timestamps rendered, each rule once.
//!
//! Statements take values as `$n` parameters. Names from the spec (tables, columns, kinds)
//! cannot be parameters, so they are written into the text, quoted by these functions and by
//! no other code. Spec identifiers are checked to be lowercase `a-z0-9_`; quoting still keeps
//! SQL keywords (a column named `order`) and anything unexpected safe.

/// `name` as a quoted SQL identifier: `"name"`, with any `"` doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a quoted SQL string literal: `'text'`, with any `'` doubled.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// SQL turning `timestamptz` column `column` into RFC 3339 text in UTC.
pub fn rfc3339_sql(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("t_1"), "\"t_1\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(quote_literal("tasks"), "'tasks'");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
