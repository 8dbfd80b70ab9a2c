//! The module graph of obs-runtime, checked: `docs/design/architecture.md` draws it and says why
//! each dependency exists. A `crate::<module>` path in code (not in comments) is a dependency of
//! the module it is written in on that module; `lib` is the crate root (`init`, `is_off`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every dependency allowed, by module; none may close a cycle (a test checks the graph).
const ALLOWED: &[(&str, &[&str])] = &[
    ("__private", &["lib", "metrics", "outcome", "scrub", "trace"]),
    ("client", &["lib", "metrics", "scrub", "trace"]),
    // The settings, and the settings types the modules read (span limits, log format): below
    // the modules that read them.
    ("config", &["scrub"]),
    // The request's or task's bound context (request id, endpoint, baggage): below `trace`,
    // which swaps it in with a span's future, and `logs`, which renders it.
    ("context", &["scrub"]),
    ("db", &["lib", "metrics", "scrub", "trace"]),
    ("http", &["context", "lib", "logs", "metrics", "profile", "scrub", "trace"]),
    ("logs", &["config", "context", "metrics", "scrub", "trace"]),
    // The registry and exposition: below everything that records. It scrubs label values, and
    // reads the thread's span from `context` for exemplars.
    ("metrics", &["context", "scrub"]),
    // What counts as a failed call: below `trace` and the macro seam.
    ("outcome", &[]),
    ("profile", &["config", "metrics"]),
    ("redis", &["lib", "metrics", "trace"]),
    ("scrub", &[]),
    ("task", &["context", "lib", "logs", "metrics", "profile", "trace"]),
    ("testing", &["metrics"]),
    ("trace", &["config", "context", "metrics", "outcome", "profile", "scrub"]),
    // The built-in viewer: on top. The exporter and the log layer hand it copies through taps
    // it sets (they do not know it); it reads the registry and takes profiles, and decodes
    // query keys with scrub's percent decoder.
    ("viewer", &["config", "logs", "metrics", "profile", "scrub", "trace"]),
];

fn module_of(rel: &Path) -> String {
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_owned()
}

fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<&str> = ALLOWED.iter().map(|(m, _)| *m).collect();
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let module = module_of(path.strip_prefix(&root).unwrap());
            if module == "lib" || module == "architecture" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    // `my_crate::legacy` (in a filter directive's text) is not a path of ours.
                    if line[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                        continue;
                    }
                    let name: String =
                        line[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if name.is_empty() {
                        continue;
                    }
                    let to = if modules.contains(name.as_str()) { name } else { "lib".to_owned() };
                    if to != module {
                        found.entry(module.clone()).or_default().insert(to);
                    }
                }
            }
        }
    }
    found
}

#[test]
fn every_module_depends_only_on_what_the_architecture_allows() {
    let allowed: BTreeMap<&str, BTreeSet<&str>> =
        ALLOWED.iter().map(|(m, deps)| (*m, deps.iter().copied().collect())).collect();
    let mut problems = Vec::new();
    for (module, deps) in dependencies() {
        let Some(ok) = allowed.get(module.as_str()) else {
            problems
                .push(format!("module `{module}` is not in the architecture (ALLOWED, docs/design/architecture.md)"));
            continue;
        };
        for d in deps {
            if !ok.contains(d.as_str()) {
                problems.push(format!("`{module}` now depends on `{d}`: not allowed by ALLOWED"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_module_graph_has_no_cycle() {
    // `lib` (init) may use every module and is left out: a module's edge to it is to the crate's
    // switches (`is_off`), not to a module.
    let found = dependencies();
    let reaches = |from: &str, to: &str| {
        let (mut seen, mut stack) = (BTreeSet::new(), vec![from.to_owned()]);
        while let Some(m) = stack.pop() {
            if m == to {
                return true;
            }
            if seen.insert(m.clone()) {
                stack.extend(found.get(&m).into_iter().flatten().cloned());
            }
        }
        false
    };
    let cycles: Vec<String> = found
        .iter()
        .flat_map(|(m, deps)| deps.iter().map(move |d| (m, d)))
        .filter(|(m, d)| reaches(d, m))
        .map(|(m, d)| format!("`{m}` → `{d}` closes a cycle"))
        .collect();
    assert!(cycles.is_empty(), "{}", cycles.join("\n"));
}

#[test]
fn the_registry_is_below_everything_that_records() {
    let found = dependencies();
    assert_eq!(
        found.get("metrics").map(|d| d.iter().map(String::as_str).collect::<Vec<_>>()),
        Some(vec!["context", "scrub"])
    );
    // `context` itself records nothing: it stays below `metrics`.
    assert_eq!(found.get("context").map(|d| d.iter().map(String::as_str).collect::<Vec<_>>()), Some(vec!["scrub"]));
}
