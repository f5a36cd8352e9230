//! Rendering: `--output json` prints the API's own JSON (one document, or one line per
//! item for streamed lists, so `jq` works on both); `--output table` prints aligned
//! columns for lists and `key: value` lines for one resource.

use std::io::Write;

use clap::ValueEnum;
use serde::Serialize;
use serde_json::Value;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable columns.
    Table,
    /// The API's JSON.
    Json,
}

/// Prints to stdout in the chosen format.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// The format.
    pub format: Format,
}

/// One cell: strings bare, null empty, everything else as compact JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(|v| v.is_string()) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// Aligned columns: a header row of `columns` (JSON field names, dotted for nested
/// fields) and one row per item.
pub fn table(items: &[Value], columns: &[&str]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| columns.iter().map(|c| cell(lookup(item, c))).collect())
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.push('\n');
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect());
    for row in rows {
        line(row);
    }
    out
}

fn lookup<'a>(value: &'a Value, dotted: &str) -> &'a Value {
    dotted
        .split('.')
        .try_fold(value, |v, key| v.get(key))
        .unwrap_or(&Value::Null)
}

/// `key: value` lines of one object, nested objects indented.
pub fn details(value: &Value) -> String {
    fn walk(out: &mut String, value: &Value, indent: usize) {
        let Value::Object(map) = value else {
            out.push_str(&format!("{}{}\n", " ".repeat(indent), cell(value)));
            return;
        };
        let width = map.keys().map(|k| k.len()).max().unwrap_or(0);
        for (k, v) in map {
            match v {
                Value::Object(inner) if !inner.is_empty() => {
                    out.push_str(&format!("{}{k}:\n", " ".repeat(indent)));
                    walk(out, v, indent + 2);
                }
                Value::Array(items) if items.iter().any(Value::is_object) => {
                    out.push_str(&format!("{}{k}:\n", " ".repeat(indent)));
                    for (i, item) in items.iter().enumerate() {
                        out.push_str(&format!("{}- [{i}]\n", " ".repeat(indent + 2)));
                        walk(out, item, indent + 4);
                    }
                }
                _ => out.push_str(&format!("{}{k:width$}  {}\n", " ".repeat(indent), cell(v))),
            }
        }
    }
    let mut out = String::new();
    walk(&mut out, value, 0);
    out
}

impl Out {
    /// One resource.
    pub fn one<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let value = serde_json::to_value(value)?;
        let text = match self.format {
            Format::Json => format!("{}\n", serde_json::to_string_pretty(&value)?),
            Format::Table => details(&value),
        };
        write_stdout(&text)
    }

    /// A list with the columns the table shows.
    pub fn list<T: Serialize>(&self, items: &[T], columns: &[&str]) -> anyhow::Result<()> {
        let values = items
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()?;
        let text = match self.format {
            Format::Json => format!("{}\n", serde_json::to_string_pretty(&values)?),
            Format::Table => table(&values, columns),
        };
        write_stdout(&text)
    }

    /// A line of text in table mode; the value as JSON in JSON mode.
    pub fn message<T: Serialize>(&self, text: &str, value: &T) -> anyhow::Result<()> {
        match self.format {
            Format::Json => write_stdout(&format!("{}\n", serde_json::to_string_pretty(value)?)),
            Format::Table => write_stdout(&format!("{text}\n")),
        }
    }
}

/// Writes to stdout; a closed pipe (`| head`) ends quietly.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Columns align, nested fields are reached by dotted names, lists of strings join.
    #[test]
    fn renders_a_table() {
        let items = vec![
            json!({"id": "a1", "events": ["order.*", "x"], "retryPolicy": {"maxRetries": 5}, "url": null}),
            json!({"id": "bbbb", "events": [], "retryPolicy": {"maxRetries": 12}, "url": "http://h"}),
        ];
        let text = table(&items, &["id", "events", "retryPolicy.maxRetries", "url"]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID    EVENTS     RETRYPOLICY.MAXRETRIES  URL");
        assert_eq!(lines[1], "a1    order.*,x  5                       ");
        assert_eq!(
            lines[2],
            "bbbb             12                      http://h"
        );
    }

    /// One object prints as aligned key/value lines with nested objects indented.
    #[test]
    fn renders_details() {
        let text = details(&json!({"id": "w1", "active": true, "retryPolicy": {"maxRetries": 5}}));
        assert_eq!(
            text,
            "active       true\nid           w1\nretryPolicy:\n  maxRetries  5\n"
        );
    }
}
