//! Repository housekeeping ("tidy") checks, run as ordinary tests so that `cargo test` is the
//! one gate: the wasm-bindgen crate, lock file and CLI agree on one version; demo and test
//! data stay out of the browser bundle; every module starts with a `//!` doc; CI runs exactly
//! the test command the README gives, and that command still lints every target, natively and
//! for wasm32, with `-D warnings`; the TypeScript `FerryErrorCode` union lists exactly the
//! migrator's error codes.
//!
//! Each check reads files from the repository root, so it runs natively only.
#![cfg(not(target_arch = "wasm32"))]

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The README heading whose first fenced block is the command that runs every test.
const TEST_HEADING: &str = "Run every test";
/// The README heading whose first fenced block is the command that runs the demo.
const DEMO_HEADING: &str = "Run the demo";
/// Folders whose `.rs` files must each start with a `//!` module doc.
const SOURCE_DIRS: &[&str] = &[
    "src",
    "ferry-core/src",
    "ferry-sample/src",
    "server/src",
    "tests/corpus/src",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Says something on the terminal even though the test harness captures `println!`.
fn note(message: &str) {
    let _ = writeln!(std::io::stderr(), "housekeeping: {message}");
}

// ---------------------------------------------------------------------------------------------
// wasm-bindgen: one version for the crate, the lock file and the CLI.
// ---------------------------------------------------------------------------------------------

/// Every version of package `name` recorded in a Cargo.lock.
fn lock_versions(lock: &str, name: &str) -> Vec<String> {
    let mut versions = Vec::new();
    let mut current: Option<&str> = None;
    for line in lock.lines().map(str::trim) {
        if line == "[[package]]" {
            current = None;
        } else if let Some(value) = line.strip_prefix("name = ") {
            current = Some(value.trim_matches('"'));
        } else if let Some(value) = line.strip_prefix("version = ")
            && current == Some(name)
        {
            versions.push(value.trim_matches('"').to_owned());
        }
    }
    versions
}

/// The version `dep` is pinned to with `=` in a Cargo.toml (`dep = "=X"` or
/// `dep = { version = "=X", … }`). Every mention must be pinned, and to the same version.
fn manifest_pin(manifest: &str, dep: &str) -> Result<String, String> {
    let mut pins = Vec::new();
    for line in manifest.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix(dep) else {
            continue;
        };
        let Some(value) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        let value = value.trim();
        let requirement = if value.starts_with('{') {
            let after = value
                .split_once("version")
                .and_then(|(_, after)| after.trim_start().strip_prefix('='))
                .ok_or_else(|| format!("`{line}` has no version"))?;
            after
                .trim_start()
                .trim_start_matches('"')
                .split('"')
                .next()
                .unwrap_or_default()
        } else {
            value.trim_matches('"')
        };
        let version = requirement.strip_prefix('=').ok_or_else(|| {
            format!("`{line}` is not pinned with `=`: the CLI must match it exactly")
        })?;
        pins.push(version.trim().to_owned());
    }
    match pins.as_slice() {
        [] => Err(format!("no `{dep} = \"=X\"` line in Cargo.toml")),
        [first, rest @ ..] if rest.iter().all(|p| p == first) => Ok(first.clone()),
        _ => Err(format!("{dep} is pinned to different versions: {pins:?}")),
    }
}

/// `Some(version)` from `<bin> --version` ("<bin> 0.2.130"), `None` when `bin` is not installed.
fn cli_version(bin: &str) -> Option<String> {
    match Command::new(bin).arg("--version").output() {
        Ok(output) => {
            let text = String::from_utf8_lossy(&output.stdout);
            Some(
                text.split_whitespace()
                    .nth(1)
                    .unwrap_or("(unreadable)")
                    .to_owned(),
            )
        }
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => panic!("cannot run `{bin} --version`: {e}"),
    }
}

#[test]
fn wasm_bindgen_crate_lock_and_cli_agree() {
    let locked = lock_versions(&read("Cargo.lock"), "wasm-bindgen");
    let [locked] = locked.as_slice() else {
        panic!("Cargo.lock should hold exactly one wasm-bindgen, found {locked:?}");
    };
    let pinned =
        manifest_pin(&read("Cargo.toml"), "wasm-bindgen").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        &pinned, locked,
        "Cargo.toml pins wasm-bindgen ={pinned} but Cargo.lock has {locked}"
    );

    for bin in ["wasm-bindgen", "wasm-bindgen-test-runner"] {
        match cli_version(bin) {
            Some(installed) => assert_eq!(
                &installed, locked,
                "`{bin} --version` is {installed}, Cargo.lock has {locked}: run scripts/setup.sh"
            ),
            None if std::env::var_os("CI").is_some() => {
                panic!(
                    "`{bin}` is not on PATH; scripts/setup.sh installs it, and CI runs setup first"
                )
            }
            None => note(&format!(
                "`{bin}` is not on PATH, so its version was not checked (scripts/setup.sh installs it)"
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Demo and test data are not in what every app user downloads.
// ---------------------------------------------------------------------------------------------

/// The names in a Cargo.toml's tables of shipped dependencies: `[dependencies]`,
/// `[target.<cfg>.dependencies]` and `[build-dependencies]`; not dev-dependencies, not the
/// workspace's table.
fn shipped_dependencies(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut shipped = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            let header = line.trim_matches(['[', ']']);
            shipped = header == "dependencies"
                || header == "build-dependencies"
                || (header.starts_with("target.") && header.ends_with(".dependencies"));
        } else if shipped
            && !line.starts_with('#')
            && let Some((name, _)) = line.split_once('=')
        {
            let name = name.trim();
            names.push(name.split('.').next().unwrap_or(name).to_owned());
        }
    }
    names
}

#[test]
fn demo_and_test_data_stay_out_of_the_browser_bundle() {
    // Why: every user of an app downloads pkg/; the sample generator was about 50 KB
    // gzipped of it before it moved to ferry-sample (issue 13).
    let shipped = shipped_dependencies(&read("Cargo.toml"));
    assert!(
        shipped.iter().any(|d| d == "wasm-bindgen"),
        "not the wasm crate's dependencies: {shipped:?}"
    );
    for data in ["ferry-sample", "ferry-corpus"] {
        assert!(
            !shipped.iter().any(|d| d == data),
            "{data} is a dependency of the wasm crate, so it would ship in pkg/; make it a dev-dependency"
        );
    }
}

#[test]
fn shipped_dependencies_skip_dev_and_workspace_tables() {
    let manifest = r#"
[workspace.dependencies]
ferry-sample = { path = "ferry-sample" }

[dependencies]
ferry-core.workspace = true
# a comment = not a dependency
web-sys = { version = "0.3", features = [
  "Window",
] }

[target.'cfg(target_arch = "wasm32")'.dependencies]
js-sys = "0.3"

[target.'cfg(target_arch = "wasm32")'.dev-dependencies]
wasm-bindgen-test = "0.3"

[dev-dependencies]
ferry-corpus.workspace = true
"#;
    assert_eq!(
        shipped_dependencies(manifest),
        ["ferry-core", "web-sys", "js-sys"]
    );
}

// ---------------------------------------------------------------------------------------------
// Every module says what it is for.
// ---------------------------------------------------------------------------------------------

/// Whether a Rust file's first non-blank line is something other than a `//!` doc.
fn lacks_module_doc(source: &str) -> bool {
    let first = source.lines().map(str::trim).find(|line| !line.is_empty());
    !first.is_some_and(|line| line.starts_with("//!"))
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn every_module_starts_with_a_module_doc() {
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(
        !files.is_empty(),
        "found no .rs file under {SOURCE_DIRS:?}: is the root right?"
    );
    let mut offenders: Vec<String> = files
        .iter()
        .filter(|path| lacks_module_doc(&fs::read_to_string(path).unwrap_or_default()))
        .map(|path| {
            path.strip_prefix(root())
                .unwrap_or(path)
                .display()
                .to_string()
        })
        .collect();
    offenders.sort();
    assert!(
        offenders.is_empty(),
        "these files do not start with a `//!` module doc saying what they are for:\n  {}",
        offenders.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// The README's commands are the ones that exist and that CI runs.
// ---------------------------------------------------------------------------------------------

/// The single command in the first fenced block under the Markdown heading `heading`
/// (blank lines and `#` comments in the block are ignored).
fn readme_command(readme: &str, heading: &str) -> Result<String, String> {
    let mut in_fence = false;
    let mut under_heading = false;
    let mut block: Option<Vec<&str>> = None;
    for line in readme.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_fence = !in_fence;
            if under_heading && in_fence {
                block = Some(Vec::new());
            } else if under_heading {
                break;
            }
            continue;
        }
        if in_fence {
            if let Some(lines) = block.as_mut() {
                lines.push(trimmed);
            }
        } else if trimmed.starts_with('#') {
            if under_heading {
                break;
            }
            under_heading = trimmed.trim_start_matches('#').trim() == heading;
        }
    }
    let Some(lines) = block else {
        return Err(format!(
            "README.md has no fenced code block under a heading \"{heading}\""
        ));
    };
    let commands: Vec<&str> = lines
        .into_iter()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    match commands.as_slice() {
        [command] => Ok((*command).to_owned()),
        _ => Err(format!(
            "the block under \"{heading}\" should hold exactly one command, found {commands:?}"
        )),
    }
}

/// Every `scripts/…` word of `command` that is not a file in the repository.
fn missing_scripts(command: &str) -> Vec<String> {
    command
        .split_whitespace()
        .filter(|word| word.starts_with("scripts/") && !root().join(word).is_file())
        .map(str::to_owned)
        .collect()
}

#[test]
fn ci_runs_the_readme_test_command() {
    let command =
        readme_command(&read("README.md"), TEST_HEADING).unwrap_or_else(|e| panic!("{e}"));
    let missing = missing_scripts(&command);
    assert!(
        missing.is_empty(),
        "README's test command `{command}` names missing files: {missing:?}"
    );

    let ci = read(".ci/run");
    let live: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(
        live.contains(&"set -euo pipefail"),
        ".ci/run must `set -euo pipefail`"
    );
    assert!(
        live.contains(&command.as_str()),
        ".ci/run does not run the README's test command `{command}` (as a line of its own); it has:\n{ci}"
    );
}

/// What scripts/test.sh must keep for clippy to stay a gate: it lints while it builds, with
/// clippy-driver as the workspace's rustc wrapper and `-D warnings`, every target of the
/// workspace natively and of `ferry` (with `ferry-core` as its dependency) for wasm32.
const LINTED_BUILDS: &[&str] = &[
    r#"RUSTC_WORKSPACE_WRAPPER="$(rustc --print sysroot)/bin/clippy-driver""#,
    r#"CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__""#,
    r#""${LINT[@]}" cargo test --workspace --all-targets --locked --no-run"#,
    r#""${LINT[@]}" cargo test -p ferry --target wasm32-unknown-unknown --all-targets --locked --no-run"#,
];

/// The `LINTED_BUILDS` pieces missing from the live (uncommented) lines of `script`.
fn missing_lint_pieces(script: &str) -> Vec<&'static str> {
    let live: String = script
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    LINTED_BUILDS
        .iter()
        .copied()
        .filter(|piece| !live.contains(piece))
        .collect()
}

#[test]
fn the_test_command_lints_both_targets_with_deny_warnings() {
    let missing = missing_lint_pieces(&read("scripts/test.sh"));
    assert!(
        missing.is_empty(),
        "scripts/test.sh no longer lints every target while building it; missing: {missing:?}"
    );
}

#[test]
fn lint_check_rejects_a_script_without_the_wrapper() {
    let full = LINTED_BUILDS.join("\n");
    assert!(missing_lint_pieces(&full).is_empty());
    for dropped in LINTED_BUILDS {
        let without = full.replace(dropped, "");
        assert_eq!(missing_lint_pieces(&without), vec![*dropped]);
        let commented = full.replace(dropped, &format!("# {dropped}"));
        assert_eq!(
            missing_lint_pieces(&commented),
            vec![*dropped],
            "a commented-out line does not count"
        );
    }
}

#[test]
fn readme_demo_command_exists() {
    let command =
        readme_command(&read("README.md"), DEMO_HEADING).unwrap_or_else(|e| panic!("{e}"));
    let missing = missing_scripts(&command);
    assert!(
        missing.is_empty(),
        "README's demo command `{command}` names missing files: {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The checks above can fail: their parsers on inputs that must be rejected.
// ---------------------------------------------------------------------------------------------

#[test]
fn readme_command_rejects_bad_readmes() {
    let cases = [
        ("# Ferry\nno heading at all\n", "the heading is missing"),
        (
            "## Run every test\n\nJust prose.\n\n## Next\n```sh\nbash x.sh\n```\n",
            "the block is under another heading",
        ),
        (
            "## Run every test\n```sh\n\n# only a comment\n```\n",
            "the block has no command",
        ),
        (
            "## Run every test\n```sh\nbash a.sh\nbash b.sh\n```\n",
            "two commands are ambiguous",
        ),
        (
            "## Run every tests\n```sh\nbash a.sh\n```\n",
            "the heading text differs",
        ),
    ];
    for (readme, why) in cases {
        assert!(
            readme_command(readme, TEST_HEADING).is_err(),
            "accepted although {why}:\n{readme}"
        );
    }
    let good = "```sh\n# Run every test\n```\n## Run every test\n\n```sh\n# comment\nbash scripts/test.sh\n```\n";
    assert_eq!(
        readme_command(good, TEST_HEADING),
        Ok("bash scripts/test.sh".to_owned())
    );
}

#[test]
fn module_doc_check_rejects_undocumented_files() {
    let cases = [
        ("", "the file is empty"),
        ("// plain comment\n//! doc\n", "a plain comment comes first"),
        (
            "/// item doc\nfn f() {}\n",
            "an item doc is not a module doc",
        ),
        ("use std::fs;\n//! late\n", "code comes first"),
    ];
    for (source, why) in cases {
        assert!(
            lacks_module_doc(source),
            "accepted although {why}: {source:?}"
        );
    }
    assert!(!lacks_module_doc("\n\n//! What this is for.\nfn f() {}\n"));
}

#[test]
fn manifest_pin_rejects_loose_requirements() {
    let cases = [
        ("wasm-bindgen = \"0.2.130\"\n", "the requirement is not `=`"),
        (
            "wasm-bindgen = { version = \"0.2\" }\n",
            "the table form is not `=`",
        ),
        (
            "wasm-bindgen-futures = \"=0.4.80\"\n",
            "only another crate is pinned",
        ),
        (
            "wasm-bindgen = \"=0.2.130\"\nwasm-bindgen = \"=0.2.129\"\n",
            "two pins disagree",
        ),
    ];
    for (manifest, why) in cases {
        assert!(
            manifest_pin(manifest, "wasm-bindgen").is_err(),
            "accepted although {why}: {manifest:?}"
        );
    }
    let table = "wasm-bindgen = { version = \"=0.2.130\", default-features = false }\n";
    assert_eq!(
        manifest_pin(table, "wasm-bindgen"),
        Ok("0.2.130".to_owned())
    );
}

#[test]
fn lock_versions_reads_only_the_named_package() {
    let lock = "[[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.130\"\n\n\
                [[package]]\nname = \"wasm-bindgen-shared\"\nversion = \"0.2.129\"\n";
    assert_eq!(
        lock_versions(lock, "wasm-bindgen"),
        vec!["0.2.130".to_owned()]
    );
}

/// The quoted codes in the body of `fn code` in src/error.rs, in order.
fn error_codes(error_rs: &str) -> Vec<String> {
    let Some(start) = error_rs.find("pub fn code(&self)") else {
        return Vec::new();
    };
    let body = &error_rs[start..];
    let body = &body[..body.find("\n    }\n").unwrap_or(body.len())];
    body.split("=> \"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// The members of the `FerryErrorCode` union in src/facade.rs's TypeScript section.
fn ts_error_codes(facade_rs: &str) -> Vec<String> {
    let Some(start) = facade_rs.find("export type FerryErrorCode =") else {
        return Vec::new();
    };
    let body = &facade_rs[start..];
    let body = &body[..body.find(';').unwrap_or(body.len())];
    body.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn typescript_error_codes_match_the_error_enum() {
    let mut rust = error_codes(&read("src/error.rs"));
    let mut ts = ts_error_codes(&read("src/facade.rs"));
    assert!(
        rust.len() > 10,
        "found only {rust:?} in src/error.rs's fn code"
    );
    rust.sort();
    ts.sort();
    assert_eq!(
        ts, rust,
        "src/facade.rs's FerryErrorCode union must list exactly the codes of src/error.rs's Error::code"
    );
}

#[test]
fn typescript_error_code_check_sees_a_missing_code() {
    let error_rs = "    pub fn code(&self) -> &'static str {\n        match self {\n            Self::A => \"a\",\n            Self::B { .. } => \"b\",\n        }\n    }\n";
    assert_eq!(error_codes(error_rs), ["a", "b"]);
    assert_eq!(
        ts_error_codes("export type FerryErrorCode =\n  | \"a\";\nexport interface X {}"),
        ["a"]
    );
}
