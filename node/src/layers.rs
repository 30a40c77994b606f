//! The crate's layering, checked: no module imports one above it.

/// Top-level modules from the top (may use everything below) to the bottom
/// (uses nothing of the crate). Modules of equal rank may not use each other.
const LAYERS: &[(&str, u32)] = &[
    ("app", 0),
    ("web", 1),
    ("notify", 1),
    ("grpc", 2),
    ("pide", 2),
    ("submit", 3),
    ("relay", 4),
    ("consume", 5),
    ("evidence", 5),
    ("lifecycle", 6),
    ("telemetry", 7),
    ("store", 8),
    ("trust", 9),
    ("audit", 9),
    ("kafka", 9),
    ("verification", 10),
    ("error", 10),
    ("ids", 11),
    ("config", 12),
    ("retry", 12),
    ("clients", 13),
    ("outcall", 13),
    ("malloc", 13),
];

fn rank(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

/// Every `crate::<module>` a source text names.
fn uses(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        found.push(name);
    }
    found
}

fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_imports_one_above_it() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        // The crate root, this test, and the binary's CLI are not layers.
        if ["lib", "main", "layers", "cli"].contains(&top.as_str()) {
            continue;
        }
        let mine = rank(&top).unwrap_or_else(|| panic!("{top} is not in LAYERS"));
        let text = std::fs::read_to_string(file).unwrap();
        for used in uses(&text) {
            if used == top {
                continue;
            }
            match rank(&used) {
                Some(theirs) if theirs > mine => {}
                Some(_) => wrong.push(format!("{} uses crate::{used}", relative.display())),
                None => wrong.push(format!("{} uses unknown crate::{used}", relative.display())),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_a_wrong_import() {
    assert_eq!(
        uses("use crate::app::Node; crate::store::x"),
        ["app", "store"]
    );
    assert!(rank("store").unwrap() > rank("consume").unwrap());
}
