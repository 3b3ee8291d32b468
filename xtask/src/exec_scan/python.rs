//! The top-level modules a Python script imports (`import a, b`, `from a.b import c`).

use super::{Exec, Found};

/// Records each imported top-level module of `text` in `found.imports`.
pub fn scan(text: &str, found: &mut Found) {
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        let modules: Vec<&str> = if let Some(rest) = line.strip_prefix("import ") {
            rest.split(',')
                .map(|m| m.split_whitespace().next().unwrap_or(""))
                .collect()
        } else if let Some(rest) = line.strip_prefix("from ") {
            rest.split_whitespace().next().into_iter().collect()
        } else {
            continue;
        };
        for module in modules {
            let top = module.split('.').next().unwrap_or("");
            // Relative imports (`from . import x`) are the script's own files.
            if !top.is_empty() {
                found.imports.push(Exec {
                    program: top.to_owned(),
                    line: n + 1,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_modules_of_every_import_form() {
        let mut found = Found::default();
        scan(
            "import json, sys\nfrom pika.adapters import x\n  import time as t\nfrom . import y\n",
            &mut found,
        );
        let got: Vec<_> = found
            .imports
            .iter()
            .map(|e| (e.program.as_str(), e.line))
            .collect();
        assert_eq!(got, [("json", 1), ("sys", 1), ("pika", 2), ("time", 3)]);
    }
}
