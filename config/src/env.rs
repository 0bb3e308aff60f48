//! `${ENV_VAR}` substitution inside string values, reporting each missing variable with its path.

use crate::ConfigProblem;

pub(crate) fn substitute_table(
    table: &mut toml::Table,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<ConfigProblem>,
) {
    for (key, value) in table.iter_mut() {
        let child = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        substitute_value(value, &child, lookup, problems);
    }
}

fn substitute_value(
    value: &mut toml::Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<ConfigProblem>,
) {
    match value {
        toml::Value::String(text) if text.contains("${") => match substitute(text, lookup) {
            Ok(replaced) => *text = replaced,
            Err(message) => problems.push(ConfigProblem {
                path: path.to_string(),
                message,
            }),
        },
        toml::Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                substitute_value(item, &format!("{path}[{index}]"), lookup, problems);
            }
        }
        toml::Value::Table(table) => substitute_table(table, path, lookup, problems),
        _ => {}
    }
}

/// Replaces every `${NAME}` in `text`; `$${` is a literal `${`.
pub(crate) fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut output = String::with_capacity(text.len());
    let mut rest = text;
    let mut missing = Vec::new();
    while let Some(start) = rest.find('$') {
        output.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(literal) = after.strip_prefix("$${") {
            output.push_str("${");
            rest = literal;
        } else if let Some(reference) = after.strip_prefix("${") {
            let Some(end) = reference.find('}') else {
                return Err("unterminated `${` (write `$${` for a literal)".into());
            };
            let name = &reference[..end];
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!(
                    "`${{{name}}}` is not a valid environment variable reference"
                ));
            }
            match lookup(name) {
                Some(value) => output.push_str(&value),
                None => missing.push(name.to_string()),
            }
            rest = &reference[end + 1..];
        } else {
            output.push('$');
            rest = &after[1..];
        }
    }
    output.push_str(rest);
    if missing.is_empty() {
        Ok(output)
    } else {
        Err(format!(
            "environment variable {} is not set",
            missing.join(", ")
        ))
    }
}
