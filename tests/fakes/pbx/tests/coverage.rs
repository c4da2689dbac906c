//! Every test-double item 1..=20 of innovaphone.md (and 21, the PbxAdminApi objects of
//! issue #9) is mapped in `tests/fakes/COVERAGE.md` to
//! tests that exist in this crate.

use std::path::Path;

fn sources(dir: &Path, out: &mut String) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
}

#[test]
fn coverage_table_maps_items_1_to_21_to_existing_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let md = std::fs::read_to_string(root.join("../COVERAGE.md")).unwrap();
    let section = md
        .split("## innovaphone PBX")
        .nth(1)
        .expect("innovaphone PBX section");
    let section = section.split("\n## ").next().unwrap();
    let mut src = String::new();
    sources(&root.join("src"), &mut src);
    sources(&root.join("tests"), &mut src);
    let mut seen = vec![];
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cols: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let Ok(item) = cols[0].parse::<u32>() else {
            continue;
        };
        assert_eq!(cols.len(), 3, "item {item}: expected 3 columns");
        assert!(!cols[1].is_empty(), "item {item}: no behaviour");
        let tests: Vec<&str> = cols[2]
            .split(',')
            .map(|t| t.trim().trim_matches('`'))
            .filter(|t| !t.is_empty())
            .collect();
        assert!(!tests.is_empty(), "item {item} is unmapped");
        for t in tests {
            let name = t.rsplit("::").next().unwrap();
            let needle = format!("fn {name}(");
            assert!(
                src.contains(&needle),
                "item {item}: test fn {name} not found"
            );
        }
        seen.push(item);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen, (1..=21).collect::<Vec<_>>());
}
