//! The specs the server serves: one file, several files, or a folder of them (`FERRY_SPEC`).
//!
//! Every file is read and parsed before anything else happens, and every problem of every file
//! is listed at once ([`StartupError::Specs`]); two files naming the same app and version are a
//! problem too. A folder contributes each `*.json` file in it (not `README*`, dotfiles or
//! `*.schema.json`), in file-name order.
//!
//! Which version is the newest: the versions of one app are ordered part by part, split at
//! dots, parts made of digits compared as numbers and other parts as text
//! ([`compare_versions`]): `"2" < "10"`, `"1.2" < "1.10"`, `"2026-01" < "2026-02"`.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use ferry_core::spec::Spec;

use crate::startup::StartupError;

/// One spec file, parsed, with its text as served by `GET /v1/spec`.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    /// The parsed spec.
    pub spec: Spec,
    /// The file's text.
    pub text: String,
    /// Where it was read.
    pub path: PathBuf,
}

/// Orders two versions of one app: split at dots, part by part, digits as numbers, other
/// parts as text; a version that is a prefix of the other is older (`"1" < "1.1"`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let numeric = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
                let order = if numeric(x) && numeric(y) {
                    let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                    x.len().cmp(&y.len()).then_with(|| x.cmp(y))
                } else {
                    x.cmp(y)
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// The spec files named by `paths`: files as given, folders expanded to their `*.json` files.
fn spec_files(paths: &[PathBuf], problems: &mut Vec<StartupError>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(source) => {
                problems.push(StartupError::SpecRead {
                    path: path.clone(),
                    source,
                });
                continue;
            }
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && is_spec_file_name(p))
            .collect();
        if found.is_empty() {
            problems.push(StartupError::SpecRead {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the folder holds no spec (*.json) file",
                ),
            });
        }
        found.sort();
        files.extend(found);
    }
    files
}

fn is_spec_file_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name.ends_with(".json")
        && !name.ends_with(".schema.json")
        && !name.starts_with('.')
        && !name.starts_with("README")
}

/// Reads and checks every spec of `paths`: all of them, or every problem of every file.
/// The result is ordered by app (first seen first), then oldest version to newest.
pub fn read_specs(paths: &[PathBuf]) -> Result<Vec<LoadedSpec>, StartupError> {
    let mut problems = Vec::new();
    let mut loaded: Vec<LoadedSpec> = Vec::new();
    for path in spec_files(paths, &mut problems) {
        match super::read_spec(path.clone()) {
            Ok((spec, text)) => {
                if let Some(other) = loaded
                    .iter()
                    .find(|l| l.spec.app == spec.app && l.spec.version == spec.version)
                {
                    problems.push(StartupError::SpecDuplicate {
                        app: spec.app.clone(),
                        version: spec.version.clone(),
                        first: other.path.clone(),
                        second: path,
                    });
                } else {
                    loaded.push(LoadedSpec { spec, text, path });
                }
            }
            Err(e) => problems.push(e),
        }
    }
    match problems.len() {
        0 => {}
        1 => return Err(problems.remove(0)),
        _ => return Err(StartupError::Specs(problems)),
    }
    let apps: Vec<String> = loaded.iter().fold(Vec::new(), |mut apps, l| {
        if !apps.contains(&l.spec.app) {
            apps.push(l.spec.app.clone());
        }
        apps
    });
    loaded.sort_by(|a, b| {
        let place = |app: &str| apps.iter().position(|x| x == app);
        place(&a.spec.app)
            .cmp(&place(&b.spec.app))
            .then_with(|| compare_versions(&a.spec.version, &b.spec.version))
    });
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numbers_as_numbers_and_the_rest_as_text() {
        use Ordering::*;
        assert_eq!(compare_versions("2", "10"), Less);
        assert_eq!(compare_versions("1.2", "1.10"), Less);
        assert_eq!(compare_versions("1", "1.1"), Less);
        assert_eq!(compare_versions("1.0", "1.0"), Equal);
        assert_eq!(compare_versions("007", "7"), Equal);
        assert_eq!(compare_versions("2026-02", "2026-01"), Greater);
        assert_eq!(compare_versions("beta", "alpha"), Greater);
    }

    #[test]
    fn a_folder_gives_its_json_files_but_not_readmes_schemas_or_dotfiles() {
        for (name, keep) in [
            ("v1.json", true),
            ("README.json", false),
            ("README.md", false),
            (".v2.json", false),
            ("ferry-spec.schema.json", false),
            ("v3.txt", false),
        ] {
            assert_eq!(is_spec_file_name(Path::new(name)), keep, "{name}");
        }
    }
}
