//! `ferry-server spec …`: the tools an app team writes its spec with. None needs a database.
//!
//! - `spec schema`: the JSON Schema of the format (for editors; a spec may name it in
//!   `"$schema"`), derived from the types the spec is parsed into.
//! - `spec check SPEC…`: every problem of every file at once, in the words the server uses when
//!   it refuses to start on that spec; exit status 1 if any file has one.
//! - `spec ddl SPEC…`: `CREATE TABLE` statements that pass the server's start-up schema check.
//! - `spec infer EXPORT`: a draft spec guessed from one user's localStorage
//!   ([`ferry_core::infer`]), notes on stderr.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

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

/// `ferry-server spec infer EXPORT`: the draft spec on stdout, the notes on stderr.
pub fn infer(export: &Path) -> Result<(), CliError> {
    let failed = |reason: String| CliError::Export {
        path: export.to_owned(),
        reason,
    };
    let text = if export == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| failed(e.to_string()))?;
        text
    } else {
        std::fs::read_to_string(export).map_err(|e| failed(e.to_string()))?
    };
    let pairs = ferry_core::infer::read_export(&text).map_err(|e| failed(e.to_string()))?;
    let draft = ferry_core::infer::infer(&pairs);
    let mut stderr = std::io::stderr().lock();
    for note in &draft.notes {
        writeln!(stderr, "note: {note}").map_err(CliError::Output)?;
    }
    print(&serde_json::to_string_pretty(&draft.spec).unwrap_or_default())
}

fn print(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").map_err(CliError::Output)
}
