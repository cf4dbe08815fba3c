//! The project is self-contained: its code, docs and pages cite only files inside the
//! repository, and every `docs/….md §N` they cite exists.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every text file of the project (code, docs, pages, configuration, scripts).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | ".git" | "node_modules" | "fixtures"
            ) {
                files(&path, out);
            }
        } else if ["rs", "md", "html", "toml", "sh", "yaml", "yml", "txt"]
            .iter()
            .any(|ext| name.ends_with(&format!(".{ext}")))
            || name == "run"
        {
            out.push(path);
        }
    }
}

/// The section numbers of a Markdown file: `## 5. Title` → `5`, `### 5.3 Title` → `5.3`.
fn sections(doc: &str) -> Vec<String> {
    doc.lines()
        .filter_map(|l| l.strip_prefix("## ").or_else(|| l.strip_prefix("### ")))
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.trim_end_matches('.').to_owned())
        .filter(|n| n.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect()
}

#[test]
fn nothing_cites_files_outside_the_repository_and_every_cited_section_exists() {
    let root = root();
    let mut all = Vec::new();
    files(&root, &mut all);
    assert!(
        all.len() > 50,
        "found only {} files under {}",
        all.len(),
        root.display()
    );
    // The names of documents that live outside the repository, assembled so that this file
    // does not itself cite them.
    let forbidden_names: Vec<String> = [
        ["product", ".md"],
        ["kit-protocol", ".md"],
        ["shared/", "docs"],
    ]
    .iter()
    .map(|p| p.concat())
    .collect();
    let mut problems = Vec::new();
    for path in &all {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let rel = path.strip_prefix(&root).unwrap().display().to_string();
        for forbidden in &forbidden_names {
            if text.contains(forbidden.as_str()) {
                problems.push(format!(
                    "{rel} cites {forbidden}, which is not in the repository"
                ));
            }
        }
        // A file under the docs folder (or a folder of it, e.g. docs/decisions/), optionally
        // followed by a section sign and a number.
        let mut rest = text.as_str();
        while let Some(at) = rest.find("docs/") {
            rest = &rest[at + 5..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(*c, '-' | '_' | '.' | '/'))
                .collect();
            let name = name.trim_end_matches('.').to_owned();
            if !name.ends_with(".md") {
                continue;
            }
            let doc_path = root.join("docs").join(&name);
            let Ok(doc) = std::fs::read_to_string(&doc_path) else {
                problems.push(format!("{rel} cites docs/{name}, which does not exist"));
                continue;
            };
            let after = &rest[name.len()..];
            if let Some(sec) = after.strip_prefix(" §") {
                let num: String = sec
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.')
                    .collect();
                let num = num.trim_end_matches('.').to_owned();
                if !num.is_empty() && !sections(&doc).contains(&num) {
                    problems.push(format!(
                        "{rel} cites docs/{name} §{num}, which has no such section"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_docs_the_readme_points_to_exist() {
    let root = root();
    for doc in [
        "protocol.md",
        "statistics.md",
        "configuration.md",
        "login.md",
        "operations.md",
    ] {
        let text = std::fs::read_to_string(root.join("docs").join(doc)).unwrap();
        assert!(text.len() > 2000, "docs/{doc} is a stub");
    }
    assert_eq!(
        sections(&std::fs::read_to_string(root.join("docs/protocol.md")).unwrap())
            .iter()
            .filter(|s| !s.contains('.'))
            .count(),
        10,
        "docs/protocol.md keeps its ten numbered sections (the code cites them)"
    );
}
