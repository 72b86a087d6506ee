//! `ferry-server spec …`: the tools an app team writes its spec with. None needs a database.
//!
//! - `spec schema`: the JSON Schema of the format (for editors; a spec may name it in
//!   `"$schema"`), derived from the types the spec is parsed into.
//! - `spec check SPEC…`: every problem of every file at once, in the words the server uses when
//!   it refuses to start on that spec; exit status 1 if any file has one.
//! - `spec ddl SPEC…`: `CREATE TABLE` statements that pass the server's start-up schema check.

use std::io::Write as _;
use std::path::PathBuf;

use crate::db::ddl;
use crate::operator::cli::CliError;
use crate::startup::read_spec;

/// `ferry-server spec schema`: the format's JSON Schema on stdout.
pub fn schema() -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(&ferry_core::spec::json_schema()).unwrap_or_default();
    print(&text)
}

/// `ferry-server spec check SPEC…`: each file's verdict; refused when any file has problems.
pub fn check(files: &[PathBuf]) -> Result<(), CliError> {
    let mut refused = 0;
    let mut out = String::new();
    for path in files {
        match read_spec(path.clone()) {
            Ok((spec, _)) => out.push_str(&format!(
                "{}: ok (app {:?} version {:?}: {} kind(s), tables {})\n",
                path.display(),
                spec.app,
                spec.version,
                spec.kinds.len(),
                spec.kinds
                    .iter()
                    .map(|k| k.table.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Err(error) => {
                refused += 1;
                out.push_str(&format!("{}: {error}\n", path.display()));
            }
        }
    }
    print(out.trim_end())?;
    if refused > 0 {
        return Err(CliError::SpecsRefused {
            refused,
            checked: files.len(),
        });
    }
    Ok(())
}

/// `ferry-server spec ddl SPEC…`: the tables of each spec; nothing printed if one is refused.
pub fn ddl(files: &[PathBuf]) -> Result<(), CliError> {
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let (spec, _) = read_spec(path.clone())?;
        out.push(ddl::create_tables(&spec));
    }
    print(out.join("\n").trim_end())
}

fn print(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").map_err(CliError::Output)
}
