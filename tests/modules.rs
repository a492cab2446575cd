//! The shape of the source tree: the library's top-level modules depend on each other
//! without cycles (read from the `crate::module` paths of non-test code), and no
//! hand-written source file is longer than 800 lines (generated tables live in a
//! `generated/` folder and name their generator on their first line).
#![cfg(not(target_arch = "wasm32"))]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

/// The files under `dir` whose extension is one of `extensions`, outside `skip` folders.
fn files(dir: &Path, extensions: &[&str], skip: &[&str], out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if !skip.iter().any(|s| path.ends_with(s)) {
                files(&path, extensions, skip, out);
            }
        } else if path.extension().is_some_and(|e| extensions.iter().any(|x| e == *x)) {
            out.push(path);
        }
    }
}

/// The file's code without comments and without its unit tests (a `#[cfg(test)]` or
/// `#[cfg(all(test, ...))]` line followed by `mod tests`, to the end of the file).
fn code_of(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut code = String::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if t.starts_with("#[cfg(") && t.contains("test") && lines.get(i + 1).is_some_and(|n| n.trim().starts_with("mod tests")) {
            break;
        }
        if !t.starts_with("//") {
            code.push_str(line);
            code.push('\n');
        }
    }
    code
}

/// The top-level modules `code` names: `crate::x`, and each of `crate::{x, y::z}`.
fn crate_modules(code: &str) -> Vec<String> {
    let word = |s: &str| -> String { s.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + 7..];
        match rest.strip_prefix('{') {
            // The group's top-level items: split at the commas outside nested braces.
            Some(group) => {
                let (mut depth, mut start) = (0, 0);
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            names.push(word(&group[start..i]));
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            names.push(word(&group[start..i]));
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
            }
            None => names.push(word(rest)),
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

/// The top-level modules each top-level module's non-test code names (`crate::x`).
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut rust = Vec::new();
    files(&src, &["rs"], &[], &mut rust);
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in rust {
        let rel = path.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        if first == "bin" || first == "lib.rs" || rel.file_name().is_some_and(|f| f == "tests.rs") {
            continue;
        }
        let module = first.trim_end_matches(".rs").to_string();
        let code = code_of(&std::fs::read_to_string(&path).unwrap());
        let entry = deps.entry(module.clone()).or_default();
        for name in crate_modules(&code) {
            if name != module {
                entry.insert(name);
            }
        }
    }
    deps
}

/// A cycle of `deps`, as `a -> b -> a`, if there is one (depth-first: a module met again
/// while still on the path closes one).
fn find_cycle(deps: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    fn visit<'a>(m: &'a str, deps: &'a BTreeMap<String, BTreeSet<String>>, path: &mut Vec<&'a str>, done: &mut BTreeSet<&'a str>) -> Option<String> {
        if let Some(at) = path.iter().position(|p| *p == m) {
            return Some(format!("{} -> {m}", path[at..].join(" -> ")));
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        let found = deps.get(m).into_iter().flatten().find_map(|next| visit(next, deps, path, done));
        path.pop();
        found
    }
    let mut done = BTreeSet::new();
    deps.keys().find_map(|module| visit(module, deps, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_have_no_cycles() {
    let deps = dependencies();
    for (module, uses) in &deps {
        println!("{module} -> {}", uses.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    assert!(deps.contains_key("device") && deps["ops"].contains("device"), "the scan found the modules: {deps:?}");
    if let Some(cycle) = find_cycle(&deps) {
        panic!("a cycle among the top-level modules: {cycle}");
    }
}

#[test]
fn the_check_sees_a_cycle() {
    // The helpers above on made-up code: a use inside unit tests or a comment is not a
    // dependency, one in code is (grouped ones too); and a made-up graph's cycle is found.
    let text = "use crate::ops::x;\n// crate::models in a comment\nfn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::restore::y;\n}\n";
    let code = code_of(text);
    assert!(code.contains("crate::ops") && !code.contains("crate::models") && !code.contains("crate::restore"), "{code}");
    assert_eq!(crate_modules(&code), ["ops"]);
    let grouped = "use crate::{device::{Device, Tensor}, ops, error::Result};\nlet x = crate::sde::f();";
    assert_eq!(crate_modules(grouped), ["device", "ops", "error", "sde"]);
    let graph = |edges: &[(&str, &str)]| {
        let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            deps.entry(a.to_string()).or_default().insert(b.to_string());
        }
        deps
    };
    assert_eq!(find_cycle(&graph(&[("ops", "device"), ("device", "kernels")])), None);
    assert_eq!(find_cycle(&graph(&[("ops", "device"), ("device", "cpu"), ("cpu", "ops")])).as_deref(), Some("cpu -> ops -> device -> cpu"), "the first module in order that reaches the cycle");
}

#[test]
fn no_hand_written_file_is_over_800_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = Vec::new();
    // Built or downloaded folders apart: the wasm-bindgen and single-file builds, npm's, the fixtures.
    let skip = ["www/pkg", "www/dist", "node_modules", "tests/fixtures", "tests/browser-artifacts"];
    for dir in ["src", "tests", "shaders", "www"] {
        files(&root.join(dir), &["rs", "wgsl", "js", "mjs", "ts", "py", "html", "css"], &skip, &mut sources);
    }
    let mut long = Vec::new();
    for path in sources {
        let text = std::fs::read_to_string(&path).unwrap();
        let generated = path.components().any(|c| c.as_os_str() == "generated");
        if generated && !path.ends_with("mod.rs") {
            let first = text.lines().next().unwrap_or("");
            assert!(first.contains("Generated by"), "{}: a file under generated/ names its generator on its first line", path.display());
            continue;
        }
        let lines = text.lines().count();
        if lines > MAX_LINES {
            long.push(format!("{} ({lines} lines)", path.strip_prefix(root).unwrap().display()));
        }
    }
    assert!(long.is_empty(), "hand-written files over {MAX_LINES} lines: {long:?}");
}
