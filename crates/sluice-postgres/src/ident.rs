//! Quoting for identifiers and the few literals that DDL cannot bind as parameters.

use sluice_core::TableId;

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled; only for DDL (enum labels), never for row values.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `"schema"."table"`.
pub fn qualified(id: &TableId) -> String {
    format!("{}.{}", quote_ident(&id.schema), quote_ident(&id.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_embedded_quotes() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(qualified(&TableId::new("Sales", "order items")), r#""Sales"."order items""#);
    }
}
