//! Every test-double item of graph.md section 10 (1..=32) is mapped in tests/fakes/COVERAGE.md
//! to tests that exist in this crate.

use std::path::Path;

fn sources(dir: &Path, out: &mut String) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
}

#[test]
fn coverage_table_maps_every_item_to_existing_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let md = std::fs::read_to_string(root.join("../COVERAGE.md")).unwrap();
    let start = md.find("## Microsoft 365").expect("Microsoft 365 section");
    let section = &md[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut code = String::new();
    sources(&root.join("src"), &mut code);
    sources(&root.join("tests"), &mut code);
    let mut seen = vec![];
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Ok(item) = cells[1].parse::<u32>() else {
            continue;
        };
        let tests: Vec<&str> = cells[3]
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s)
            .collect();
        assert!(!tests.is_empty(), "item {item} has no tests");
        for t in tests {
            let name = t.rsplit("::").next().unwrap();
            assert!(
                code.contains(&format!("fn {name}(")),
                "item {item}: test fn {name} not found"
            );
        }
        seen.push(item);
    }
    seen.sort();
    assert_eq!(
        seen,
        (1..=32).collect::<Vec<_>>(),
        "items 1..=32 each exactly once"
    );
}
