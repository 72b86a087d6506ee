//! Parses the example specs and prints the result (a quick manual check).
fn main() {
    for path in ["specs/taskboard.json", "specs/jotter.json"] {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        match ferry_core::spec::Spec::parse(&text) {
            Ok(s) => println!("{path}: ok, {} kinds", s.kinds.len()),
            Err(e) => println!("{path}: {e}"),
        }
    }
}
