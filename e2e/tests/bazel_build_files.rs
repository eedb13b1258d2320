//! The Bazel build (MODULE.bazel + one BUILD.bazel per Cargo package) must
//! describe the same targets as the Cargo workspace.
//!
//! `cargo metadata` gives the truth: every member, its lib / bin / test /
//! build-script targets and its dependencies on other members. Each member's
//! `BUILD.bazel` is scanned as text (no Bazel needed) for the rules_rust rule
//! calls, and MODULE.bazel for `crate.from_cargo(manifests = [...])`.
//!
//! Checked, per member:
//! - `<member>/BUILD.bazel` exists;
//! - each lib has a `rust_library` (`rust_proc_macro` for a proc-macro) whose
//!   crate name (`crate_name`, else the target name with `-` -> `_`) is the
//!   Cargo lib name, and whose `srcs` hold the lib's root file;
//! - each bin has a `rust_binary(name = "<bin name>")` whose `srcs` hold its
//!   root file;
//! - each lib has a `rust_test(crate = <that rust_library>)`;
//! - each integration test `tests/*.rs` is in the `srcs` of a
//!   `rust_test_suite` (usually `glob(["tests/*.rs"])`) or of a `rust_test`;
//! - a build script has a `cargo_build_script`, which the lib depends on;
//! - every file a source reads at compile time (`include_str!` / `include_bytes!`, whose
//!   argument must be a string literal so that it can be checked) is in the `compile_data` of
//!   each rule whose `srcs` hold that source: Cargo sees the whole package directory, a Bazel
//!   action only its declared inputs, so a missing one breaks only the Bazel build;
//! - each dependency on another member is a label into that member's package:
//!   normal ones in the `rust_library`'s deps, dev ones in the unit test's;
//!
//! and MODULE.bazel's `from_cargo` lists `//:Cargo.toml` and every member's
//! `//<dir>:Cargo.toml`.
//!
//! It needs cargo and the source tree, so it runs under Cargo only: e2e/BUILD.bazel marks its
//! Bazel target incompatible (Bazel says so, naming the reason). Failing to run cargo is a
//! failure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

// ---------------------------------------------------------------------------
// What Cargo says
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct Member {
    /// Cargo package name.
    name: String,
    /// Directory relative to the workspace root, `/`-separated ("" = root).
    dir: String,
    /// Lib targets: (crate name, root file relative to `dir`, is proc-macro).
    libs: Vec<(String, String, bool)>,
    /// Bin targets: (bin name, root file relative to `dir`).
    bins: Vec<(String, String)>,
    /// Integration tests: root files relative to `dir` (e.g. `tests/foo.rs`).
    tests: Vec<String>,
    /// Has a build script.
    build_script: bool,
    /// Files the package's sources read at compile time.
    compile_reads: Vec<CompileRead>,
    /// Directories of the members this one depends on (normal dependencies).
    member_deps: Vec<String>,
    /// Directories of the members this one dev-depends on.
    member_dev_deps: Vec<String>,
}

/// A file a source reads at compile time, or why that cannot be checked.
#[derive(Debug, Clone, PartialEq)]
struct CompileRead {
    /// The reading source, relative to the member's directory.
    source: String,
    /// The file it reads, relative to the member's directory (`Err`: why it is not known).
    read: Result<String, String>,
}

struct Workspace {
    root: PathBuf,
    members: Vec<Member>,
}

fn cargo_metadata(manifest_dir: &Path) -> Result<Workspace, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(manifest_dir)
        .output()
        .map_err(|e| format!("cannot run {cargo:?} metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cargo:?} metadata failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("cargo metadata printed invalid JSON: {e}"))?;
    let mut ws = parse_metadata(&meta)?;
    for m in &mut ws.members {
        m.compile_reads = package_compile_reads(&ws.root.join(&m.dir))?;
    }
    Ok(ws)
}

fn parse_metadata(meta: &serde_json::Value) -> Result<Workspace, String> {
    let str_of = |v: &serde_json::Value, what: &str| -> Result<String, String> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("cargo metadata: `{what}` is not a string"))
    };
    let root = PathBuf::from(str_of(&meta["workspace_root"], "workspace_root")?);
    let member_ids: BTreeSet<String> = meta["workspace_members"]
        .as_array()
        .ok_or("cargo metadata: no workspace_members")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let packages = meta["packages"]
        .as_array()
        .ok_or("cargo metadata: no packages")?;

    // Manifest directory of every member, to resolve path dependencies.
    let mut dirs_by_path = Vec::new();
    let mut members = Vec::new();
    for pkg in packages {
        if !member_ids.contains(pkg["id"].as_str().unwrap_or_default()) {
            continue;
        }
        let manifest = PathBuf::from(str_of(&pkg["manifest_path"], "manifest_path")?);
        let pkg_dir = manifest.parent().unwrap_or(Path::new("")).to_path_buf();
        let dir = rel_slash(&pkg_dir, &root)?;
        dirs_by_path.push((pkg_dir.clone(), dir.clone()));

        let mut m = Member {
            name: str_of(&pkg["name"], "name")?,
            dir,
            ..Member::default()
        };
        for t in pkg["targets"]
            .as_array()
            .ok_or("cargo metadata: no targets")?
        {
            let kinds: Vec<&str> = t["kind"]
                .as_array()
                .map(|k| k.iter().filter_map(|s| s.as_str()).collect())
                .unwrap_or_default();
            let name = str_of(&t["name"], "target name")?;
            let src = rel_slash(Path::new(&str_of(&t["src_path"], "src_path")?), &pkg_dir)?;
            let is_lib = kinds.iter().any(|k| {
                matches!(
                    *k,
                    "lib" | "rlib" | "dylib" | "cdylib" | "staticlib" | "proc-macro"
                )
            });
            if is_lib {
                m.libs
                    .push((name.replace('-', "_"), src, kinds.contains(&"proc-macro")));
            } else if kinds.contains(&"bin") {
                m.bins.push((name, src));
            } else if kinds.contains(&"test") {
                m.tests.push(src);
            } else if kinds.contains(&"custom-build") {
                m.build_script = true;
            }
            // Examples and benches are not built by Bazel.
        }
        members.push((m, pkg["dependencies"].clone()));
    }

    let mut out = Vec::new();
    for (mut m, deps) in members {
        for dep in deps.as_array().into_iter().flatten() {
            let Some(path) = dep["path"].as_str() else {
                continue;
            };
            let Some((_, dir)) = dirs_by_path.iter().find(|(p, _)| p == Path::new(path)) else {
                continue;
            };
            match dep["kind"].as_str() {
                None | Some("normal") => m.member_deps.push(dir.clone()),
                Some("dev") => m.member_dev_deps.push(dir.clone()),
                _ => {}
            }
        }
        out.push(m);
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(Workspace { root, members: out })
}

/// `path` relative to `base`, with `/` separators.
fn rel_slash(path: &Path, base: &Path) -> Result<String, String> {
    let rel = path
        .strip_prefix(base)
        .map_err(|_| format!("{} is not under {}", path.display(), base.display()))?;
    Ok(rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/"))
}

// ---------------------------------------------------------------------------
// What Rust sources read at compile time
// ---------------------------------------------------------------------------

/// The compile-time reads of every `.rs` file under `dir` (a package directory), skipping
/// output trees and nested packages.
fn package_compile_reads(dir: &Path) -> Result<Vec<CompileRead>, String> {
    let mut reads = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let abs = dir.join(&rel);
        let entries = std::fs::read_dir(&abs).map_err(|e| format!("cannot read {abs:?}: {e}"))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = rel.join(&name);
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                let nested_package = entry.path().join("Cargo.toml").exists();
                if !(name == "target" || name.starts_with('.') || nested_package) {
                    pending.push(path);
                }
            } else if kind.is_file() && name.ends_with(".rs") {
                let text = std::fs::read_to_string(entry.path())
                    .map_err(|e| format!("cannot read {:?}: {e}", entry.path()))?;
                let source = rel_slash(&path, Path::new(""))?;
                for read in compile_time_reads(&text) {
                    reads.push(CompileRead {
                        read: read.and_then(|lit| resolve_relative(&source, &lit)),
                        source: source.clone(),
                    });
                }
            }
        }
    }
    reads.sort_by(|a, b| a.source.cmp(&b.source));
    Ok(reads)
}

/// The arguments of the `include_str!` / `include_bytes!` calls in Rust source `text`
/// (comments and string literals skipped); `Err` for an argument that is not a string literal.
fn compile_time_reads(text: &str) -> Vec<Result<String, String>> {
    let chars: Vec<char> = text.chars().collect();
    let mut reads = Vec::new();
    let mut i = 0;
    // The literal starting at `i` (a `"` or an `r`/`r#` raw-string prefix): its value and end.
    let literal = |i: usize| -> Option<(String, usize)> {
        let mut j = i;
        let mut hashes = 0;
        let raw = chars.get(j) == Some(&'r');
        if raw {
            j += 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
        }
        if chars.get(j) != Some(&'"') {
            return None;
        }
        j += 1;
        let mut value = String::new();
        while j < chars.len() {
            let c = chars[j];
            if !raw && c == '\\' {
                value.extend(chars.get(j + 1));
                j += 2;
                continue;
            }
            if c == '"'
                && chars[j + 1..]
                    .iter()
                    .take(hashes)
                    .filter(|&&h| h == '#')
                    .count()
                    == hashes
            {
                return Some((value, j + 1 + hashes));
            }
            value.push(c);
            j += 1;
        }
        Some((value, j))
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '\'' {
            // A char literal ('x', '\n') is skipped; a lifetime ('a) is not a literal.
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if let Some((_, end)) = (c == '"' || (c == 'r' && matches!(next, Some('"' | '#'))))
            .then(|| literal(i))
            .flatten()
        {
            i = end;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word != "include_str" && word != "include_bytes" {
                continue;
            }
            let mut j = i;
            let skip_ws = |j: &mut usize| {
                while chars.get(*j).is_some_and(|c| c.is_whitespace()) {
                    *j += 1;
                }
            };
            skip_ws(&mut j);
            if chars.get(j) != Some(&'!') {
                continue;
            }
            j += 1;
            skip_ws(&mut j);
            if !matches!(chars.get(j), Some('(' | '[' | '{')) {
                continue;
            }
            j += 1;
            skip_ws(&mut j);
            match literal(j) {
                Some((value, end)) => {
                    reads.push(Ok(value));
                    i = end;
                }
                None => reads.push(Err(format!(
                    "{word}! with an argument that is not a string literal"
                ))),
            }
        } else {
            i += 1;
        }
    }
    reads
}

/// `lit` (a path relative to the directory of `source`, as `include_str!` resolves it),
/// relative to the package directory; `Err` if it leaves the package.
fn resolve_relative(source: &str, lit: &str) -> Result<String, String> {
    if lit.starts_with('/') {
        return Err(format!("reads the absolute path {lit}"));
    }
    let mut parts: Vec<&str> = source.split('/').collect();
    parts.pop();
    for part in lit.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("reads {lit}, outside its package"));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

// ---------------------------------------------------------------------------
// Scanning Starlark text
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Punct(char),
    Other,
}

/// Tokens of a BUILD / MODULE.bazel file, comments dropped.
fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() || c == '\\' {
            i += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' {
            let start_line = line;
            let triple = i + 2 < chars.len() && chars[i + 1] == c && chars[i + 2] == c;
            let quote_len = if triple { 3 } else { 1 };
            i += quote_len;
            let mut s = String::new();
            loop {
                if i >= chars.len() {
                    return Err(format!("line {start_line}: unterminated string"));
                }
                let d = chars[i];
                if d == '\\' && i + 1 < chars.len() {
                    s.push(chars[i + 1]);
                    if chars[i + 1] == '\n' {
                        line += 1;
                    }
                    i += 2;
                    continue;
                }
                if d == c
                    && (!triple || (i + 2 < chars.len() && chars[i + 1] == c && chars[i + 2] == c))
                {
                    i += quote_len;
                    break;
                }
                if d == '\n' {
                    if !triple {
                        return Err(format!("line {start_line}: unterminated string"));
                    }
                    line += 1;
                }
                s.push(d);
                i += 1;
            }
            // A string prefix (r"...", b"...") was lexed as an identifier.
            if let Some((Tok::Ident(p), _)) = toks.last() {
                if matches!(p.as_str(), "r" | "R" | "b" | "B" | "rb" | "br") {
                    toks.pop();
                }
            }
            toks.push((Tok::Str(s), start_line));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push((Tok::Ident(chars[start..i].iter().collect()), line));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            toks.push((Tok::Other, line));
        } else {
            toks.push((Tok::Punct(c), line));
            i += 1;
        }
    }
    Ok(toks)
}

/// One call `name(args...)`; `name` is dotted for `a.b(...)`.
#[derive(Debug, Clone)]
struct Call {
    name: String,
    line: usize,
    positional: Vec<Vec<Tok>>,
    kwargs: Vec<(String, Vec<Tok>)>,
}

impl Call {
    fn kwarg(&self, key: &str) -> Option<&[Tok]> {
        self.kwargs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The value of `key` when it is a plain string literal.
    fn str_kwarg(&self, key: &str) -> Option<&str> {
        match self.kwarg(key)? {
            [Tok::Str(s)] => Some(s),
            _ => None,
        }
    }

    fn display_name(&self) -> String {
        match self.str_kwarg("name") {
            Some(n) => format!("{}(name = {n:?}) (line {})", self.name, self.line),
            None => format!("{} (line {})", self.name, self.line),
        }
    }
}

fn is_open(t: &Tok) -> bool {
    matches!(t, Tok::Punct('(' | '[' | '{'))
}

fn is_close(t: &Tok) -> bool {
    matches!(t, Tok::Punct(')' | ']' | '}'))
}

/// Every call in the file, at any nesting depth; `top_level_only` keeps the
/// statements (rule and macro calls) only.
fn calls(text: &str, top_level_only: bool) -> Result<Vec<Call>, String> {
    let toks = tokenize(text)?;
    let mut out = Vec::new();
    let mut depth = 0usize;
    for i in 0..toks.len() {
        let t = &toks[i].0;
        if let (Tok::Ident(name), Some((Tok::Punct('('), _))) = (t, toks.get(i + 1)) {
            if !top_level_only || depth == 0 {
                let mut full = name.clone();
                let mut j = i;
                while j >= 2 {
                    match (&toks[j - 1].0, &toks[j - 2].0) {
                        (Tok::Punct('.'), Tok::Ident(q)) => {
                            full = format!("{q}.{full}");
                            j -= 2;
                        }
                        _ => break,
                    }
                }
                let (call, _) = parse_call(&toks, i + 1, full, toks[i].1)?;
                out.push(call);
            }
        }
        if is_open(t) {
            depth += 1;
        } else if is_close(t) {
            depth = depth
                .checked_sub(1)
                .ok_or_else(|| format!("line {}: unbalanced {t:?}", toks[i].1))?;
        }
    }
    if depth != 0 {
        return Err("unbalanced brackets at end of file".into());
    }
    Ok(out)
}

/// Parses the arguments of the call whose `(` is at `open`; returns the call
/// and the index just past its `)`.
fn parse_call(
    toks: &[(Tok, usize)],
    open: usize,
    name: String,
    line: usize,
) -> Result<(Call, usize), String> {
    let mut args: Vec<Vec<Tok>> = vec![Vec::new()];
    let mut depth = 0usize;
    let mut i = open + 1;
    loop {
        let Some((t, _)) = toks.get(i) else {
            return Err(format!("line {line}: `{name}(` is never closed"));
        };
        if depth == 0 && *t == Tok::Punct(')') {
            break;
        }
        if depth == 0 && *t == Tok::Punct(',') {
            args.push(Vec::new());
        } else {
            if is_open(t) {
                depth += 1;
            } else if is_close(t) {
                depth -= 1;
            }
            args.last_mut().unwrap().push(t.clone());
        }
        i += 1;
    }
    let mut call = Call {
        name,
        line,
        positional: Vec::new(),
        kwargs: Vec::new(),
    };
    for arg in args.into_iter().filter(|a| !a.is_empty()) {
        match arg.as_slice() {
            [Tok::Ident(k), Tok::Punct('='), rest @ ..]
                if !matches!(rest.first(), Some(Tok::Punct('='))) =>
            {
                call.kwargs.push((k.clone(), rest.to_vec()));
            }
            _ => call.positional.push(arg),
        }
    }
    Ok((call, i + 1))
}

/// All string literals of an expression (the labels of a `deps` value, ...).
fn strings(value: &[Tok]) -> Vec<String> {
    value
        .iter()
        .filter_map(|t| match t {
            Tok::Str(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// What a `srcs` expression denotes: literal files and globs, joined by `+`.
#[derive(Debug, Default)]
struct FileSet {
    literals: Vec<String>,
    /// (include patterns, exclude patterns)
    globs: Vec<(Vec<String>, Vec<String>)>,
}

impl FileSet {
    fn of(value: &[Tok]) -> FileSet {
        let mut set = FileSet::default();
        let with_eof: Vec<(Tok, usize)> = value.iter().cloned().map(|t| (t, 0)).collect();
        let mut depth = 0usize;
        let mut i = 0;
        while i < with_eof.len() {
            let t = &with_eof[i].0;
            if depth == 0 {
                if let (Tok::Ident(f), Some((Tok::Punct('('), _))) = (t, with_eof.get(i + 1)) {
                    if let Ok((call, next)) = parse_call(&with_eof, i + 1, f.clone(), 0) {
                        if f == "glob" {
                            let include = call
                                .positional
                                .first()
                                .map(|v| strings(v))
                                .unwrap_or_default();
                            let exclude = call.kwarg("exclude").map(strings).unwrap_or_default();
                            set.globs.push((include, exclude));
                        }
                        i = next;
                        continue;
                    }
                }
                if let Tok::Str(s) = t {
                    set.literals.push(s.clone());
                }
            } else if let Tok::Str(s) = t {
                set.literals.push(s.clone());
            }
            if is_open(t) {
                depth += 1;
            } else if is_close(t) {
                depth = depth.saturating_sub(1);
            }
            i += 1;
        }
        set
    }

    fn contains(&self, path: &str) -> bool {
        self.literals.iter().any(|l| l == path)
            || self.globs.iter().any(|(inc, exc)| {
                inc.iter().any(|p| glob_match(p, path)) && !exc.iter().any(|p| glob_match(p, path))
            })
    }
}

/// Bazel glob semantics: `*` within one path segment, `**` any segments.
fn glob_match(pattern: &str, path: &str) -> bool {
    fn segs(pat: &[&str], path: &[&str]) -> bool {
        match pat.split_first() {
            None => path.is_empty(),
            Some((&"**", rest)) => (0..=path.len()).any(|k| segs(rest, &path[k..])),
            Some((p, rest)) => match path.split_first() {
                Some((s, path_rest)) => seg(p.as_bytes(), s.as_bytes()) && segs(rest, path_rest),
                None => false,
            },
        }
    }
    fn seg(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|k| seg(rest, &s[k..])),
            Some((c, rest)) => s.first() == Some(c) && seg(rest, &s[1..]),
        }
    }
    let pat: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    segs(&pat, &path)
}

// ---------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------

/// The crate name a rules_rust target compiles to.
fn crate_name_of(rule: &Call) -> Option<String> {
    rule.str_kwarg("crate_name")
        .map(str::to_owned)
        .or_else(|| rule.str_kwarg("name").map(|n| n.replace('-', "_")))
}

/// The target name `label` denotes when it points into package `dir`.
fn local_target(label: &str, dir: &str) -> Option<String> {
    if let Some(name) = label.strip_prefix(':') {
        return Some(name.to_owned());
    }
    if !label.starts_with("//") && !label.starts_with('@') {
        return Some(label.to_owned());
    }
    let rest = label.strip_prefix("//")?;
    let (pkg, name) = match rest.split_once(':') {
        Some((pkg, name)) => (pkg, name.to_owned()),
        None => (rest, rest.rsplit('/').next().unwrap_or(rest).to_owned()),
    };
    (pkg == dir).then_some(name)
}

/// Whether `label` is a target of the Bazel package `dir`.
fn is_in_package(label: &str, dir: &str) -> bool {
    let label = label
        .strip_prefix('@')
        .map_or(label, |l| l.trim_start_matches(|c| c != '/'));
    match label.strip_prefix("//") {
        Some(rest) => rest == dir || rest.strip_prefix(dir).is_some_and(|r| r.starts_with(':')),
        None => false,
    }
}

/// Problems of one member's BUILD file against what Cargo says.
fn check_build_file(member: &Member, build: &str) -> Vec<String> {
    let build_path = if member.dir.is_empty() {
        "BUILD.bazel".to_owned()
    } else {
        format!("{}/BUILD.bazel", member.dir)
    };
    let rules = match calls(build, true) {
        Ok(r) => r,
        Err(e) => return vec![format!("{build_path}: cannot be scanned: {e}")],
    };
    let mut problems = Vec::new();
    let mut problem = |msg: String| problems.push(format!("{build_path}: {msg}"));
    fn of_kind<'a>(rules: &'a [Call], kind: &'a str) -> impl Iterator<Item = &'a Call> + 'a {
        rules.iter().filter(move |r| r.name == kind)
    }

    let mut lib_rules: Vec<&Call> = Vec::new();
    for (lib, root, proc_macro) in &member.libs {
        let kind = if *proc_macro {
            "rust_proc_macro"
        } else {
            "rust_library"
        };
        match of_kind(&rules, kind).find(|r| crate_name_of(r).as_deref() == Some(lib.as_str())) {
            None => problem(format!(
                "Cargo lib `{lib}` of package `{}` has no {kind} with crate name `{lib}` \
                 (crate_name = {lib:?}, or a target named so)",
                member.name
            )),
            Some(rule) => {
                if !FileSet::of(rule.kwarg("srcs").unwrap_or_default()).contains(root) {
                    problem(format!(
                        "{}: srcs do not hold the lib's root {root}",
                        rule.display_name()
                    ));
                }
                lib_rules.push(rule);
            }
        }
    }

    for (bin, root) in &member.bins {
        match of_kind(&rules, "rust_binary").find(|r| r.str_kwarg("name") == Some(bin.as_str())) {
            None => problem(format!(
                "Cargo bin `{bin}` of package `{}` has no rust_binary(name = {bin:?})",
                member.name
            )),
            Some(rule) => {
                if !FileSet::of(rule.kwarg("srcs").unwrap_or_default()).contains(root) {
                    problem(format!(
                        "{}: srcs do not hold the bin's root {root}",
                        rule.display_name()
                    ));
                }
            }
        }
    }

    // Unit tests: a rust_test whose `crate` is the lib's rust_library.
    let mut unit_tests: Vec<&Call> = Vec::new();
    for lib in &lib_rules {
        let lib_name = lib.str_kwarg("name").unwrap_or_default();
        let tests: Vec<&Call> = of_kind(&rules, "rust_test")
            .filter(|t| {
                t.str_kwarg("crate")
                    .and_then(|c| local_target(c, &member.dir))
                    .is_some_and(|name| name == lib_name)
            })
            .collect();
        if tests.is_empty() {
            problem(format!(
                "{} has no rust_test(crate = \":{lib_name}\") running its unit tests",
                lib.display_name()
            ));
        }
        unit_tests.extend(tests);
    }

    // Integration tests: in the srcs of a rust_test_suite or a rust_test.
    for test in &member.tests {
        let covered = rules
            .iter()
            .filter(|r| r.name == "rust_test_suite" || r.name == "rust_test")
            .any(|r| FileSet::of(r.kwarg("srcs").unwrap_or_default()).contains(test));
        if !covered {
            problem(format!(
                "integration test {test} is in no rust_test_suite(srcs = glob([\"tests/*.rs\"])) nor rust_test srcs"
            ));
        }
    }

    if member.build_script {
        match of_kind(&rules, "cargo_build_script").next() {
            None => {
                problem("the package has a build script but there is no cargo_build_script".into())
            }
            Some(script) => {
                let name = script.str_kwarg("name").unwrap_or_default();
                for lib in &lib_rules {
                    let deps = strings(lib.kwarg("deps").unwrap_or_default());
                    if !deps
                        .iter()
                        .any(|d| local_target(d, &member.dir).as_deref() == Some(name))
                    {
                        problem(format!(
                            "{}: deps lack the build script's {}",
                            lib.display_name(),
                            script.display_name()
                        ));
                    }
                }
            }
        }
    }

    // Files read at compile time: declared by every rule that compiles the reading source.
    for read in &member.compile_reads {
        let file = match &read.read {
            Ok(file) => file,
            Err(why) => {
                problem(format!(
                    "{}: {why}; Bazel's inputs cannot be checked",
                    read.source
                ));
                continue;
            }
        };
        let compiling = rules.iter().filter(|r| {
            ["srcs", "shared_srcs"]
                .iter()
                .any(|k| FileSet::of(r.kwarg(k).unwrap_or_default()).contains(&read.source))
        });
        for rule in compiling {
            if !FileSet::of(rule.kwarg("compile_data").unwrap_or_default()).contains(file) {
                problem(format!(
                    "{}: compile_data lacks {file}, which {} reads at compile time",
                    rule.display_name(),
                    read.source
                ));
            }
        }
    }

    // Dependencies on other members.
    for dep_dir in &member.member_deps {
        for lib in &lib_rules {
            let deps = strings(lib.kwarg("deps").unwrap_or_default());
            if !deps.iter().any(|d| is_in_package(d, dep_dir)) {
                problem(format!(
                    "{}: deps lack the workspace member //{dep_dir} (a normal dependency in Cargo.toml)",
                    lib.display_name()
                ));
            }
        }
    }
    for dep_dir in &member.member_dev_deps {
        for test in &unit_tests {
            let deps = strings(test.kwarg("deps").unwrap_or_default());
            if !deps.iter().any(|d| is_in_package(d, dep_dir)) {
                problem(format!(
                    "{}: deps lack the workspace member //{dep_dir} (a dev-dependency in Cargo.toml)",
                    test.display_name()
                ));
            }
        }
    }
    problems
}

/// Problems of MODULE.bazel's `from_cargo` against the member list.
fn check_module(module: &str, members: &[Member]) -> Vec<String> {
    let all = match calls(module, false) {
        Ok(c) => c,
        Err(e) => return vec![format!("MODULE.bazel: cannot be scanned: {e}")],
    };
    let from_cargo: Vec<&Call> = all
        .iter()
        .filter(|c| c.name.ends_with(".from_cargo"))
        .collect();
    let [call] = from_cargo.as_slice() else {
        return vec![format!(
            "MODULE.bazel: expected one crate.from_cargo(...) call, found {}",
            from_cargo.len()
        )];
    };
    let listed: BTreeSet<String> = strings(call.kwarg("manifests").unwrap_or_default())
        .into_iter()
        .collect();
    let mut expected = BTreeSet::from(["//:Cargo.toml".to_owned()]);
    expected.extend(members.iter().map(|m| format!("//{}:Cargo.toml", m.dir)));

    let mut problems = Vec::new();
    for label in expected.difference(&listed) {
        problems.push(format!(
            "MODULE.bazel: crate.from_cargo manifests lack {label:?}"
        ));
    }
    for label in listed.difference(&expected) {
        problems.push(format!(
            "MODULE.bazel: crate.from_cargo manifests list {label:?}, which is not a workspace manifest"
        ));
    }
    if call.str_kwarg("cargo_lockfile") != Some("//:Cargo.lock") {
        problems.push(
            "MODULE.bazel: crate.from_cargo should have cargo_lockfile = \"//:Cargo.lock\"".into(),
        );
    }
    problems
}

fn check_workspace(ws: &Workspace) -> Vec<String> {
    let mut problems = Vec::new();
    let read = |rel: &str| std::fs::read_to_string(ws.root.join(rel));
    match read("BUILD.bazel") {
        Ok(_) => {}
        Err(e) => problems.push(format!(
            "BUILD.bazel (root, exporting Cargo.toml / Cargo.lock) cannot be read: {e}"
        )),
    }
    for m in &ws.members {
        let rel = if m.dir.is_empty() {
            "BUILD.bazel".to_owned()
        } else {
            format!("{}/BUILD.bazel", m.dir)
        };
        match read(&rel) {
            Ok(text) => problems.extend(check_build_file(m, &text)),
            Err(e) => problems.push(format!(
                "{rel}: missing for workspace member `{}` ({e})",
                m.name
            )),
        }
    }
    match read("MODULE.bazel") {
        Ok(text) => problems.extend(check_module(&text, &ws.members)),
        Err(e) => problems.push(format!("MODULE.bazel cannot be read: {e}")),
    }
    problems
}

#[test]
fn bazel_build_files_match_cargo_targets() {
    let manifest_dir = PathBuf::from(option_env!("CARGO_MANIFEST_DIR").unwrap_or("."));
    let ws = cargo_metadata(&manifest_dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !ws.members.is_empty(),
        "cargo metadata listed no workspace members"
    );
    let problems = check_workspace(&ws);
    assert!(
        problems.is_empty(),
        "the Bazel files do not match the Cargo workspace at {}:\n  - {}",
        ws.root.display(),
        problems.join("\n  - ")
    );
    println!(
        "checked {} members: {}",
        ws.members.len(),
        ws.members
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

// ---------------------------------------------------------------------------
// The checker itself must catch mismatches
// ---------------------------------------------------------------------------

fn sample_member() -> Member {
    Member {
        name: "svc".into(),
        dir: "svc".into(),
        libs: vec![("svc".into(), "src/lib.rs".into(), false)],
        bins: vec![("svc-cli".into(), "src/main.rs".into())],
        tests: vec!["tests/api.rs".into(), "tests/cli.rs".into()],
        build_script: false,
        compile_reads: vec![CompileRead {
            source: "src/flags.rs".into(),
            read: Ok("src/flags.txt".into()),
        }],
        member_deps: vec!["common".into()],
        member_dev_deps: vec!["other/server".into()],
    }
}

const GOOD_BUILD: &str = r#"
load("@crates//:defs.bzl", "all_crate_deps")
load("@rules_rust//rust:defs.bzl", "rust_binary", "rust_library", "rust_test", "rust_test_suite")

# rust_library(name = "commented_out") must be ignored, and so must "strings )".
rust_library(
    name = "svc_lib",
    srcs = glob(["src/**/*.rs"], exclude = ["src/main.rs"]),
    compile_data = ["src/flags.txt"],
    crate_name = "svc",
    deps = ["//common"] + all_crate_deps(normal = True),
)

rust_binary(
    name = "svc-cli",
    srcs = ["src/main.rs"],
    crate_root = "src/main.rs",
    deps = [":svc_lib"],
)

rust_test(
    name = "svc_lib_unit_test",
    crate = ":svc_lib",
    deps = ["//other/server:server_lib"] + all_crate_deps(normal_dev = True),
)

rust_test_suite(
    name = "integration_tests",
    srcs = glob(
        ["tests/*.rs"],
        allow_empty = True,
    ),
    deps = [":svc_lib"],
)
"#;

#[test]
fn checker_accepts_a_matching_build_file() {
    assert_eq!(
        check_build_file(&sample_member(), GOOD_BUILD),
        Vec::<String>::new()
    );
}

#[test]
fn checker_reports_a_wrong_build_file() {
    // Every rule is subtly wrong: the library's crate name, the binary's name,
    // the unit test's crate, the suite's glob, and the member deps.
    let wrong = r#"
load("@rules_rust//rust:defs.bzl", "rust_binary", "rust_library", "rust_test", "rust_test_suite")

rust_library(
    name = "svc_lib",
    srcs = glob(["src/**/*.rs"]),
    deps = [],
)

rust_binary(
    name = "svc_cli",
    srcs = ["src/main.rs"],
)

rust_test(
    name = "svc_lib_unit_test",
    crate = ":svc",
)

rust_test_suite(
    name = "integration_tests",
    srcs = glob(["tests/*.rs"], exclude = ["tests/cli.rs"]),
)
"#;
    let problems = check_build_file(&sample_member(), wrong);
    let expect = [
        "Cargo lib `svc` of package `svc` has no rust_library with crate name `svc`",
        "Cargo bin `svc-cli` of package `svc` has no rust_binary(name = \"svc-cli\")",
        "integration test tests/cli.rs is in no rust_test_suite",
    ];
    for e in expect {
        assert!(
            problems.iter().any(|p| p.contains(e)),
            "expected a problem containing {e:?}, got {problems:#?}"
        );
    }
    assert!(
        !problems.iter().any(|p| p.contains("tests/api.rs")),
        "tests/api.rs is covered by the glob: {problems:#?}"
    );

    // With the crate name fixed, the unit test and the deps are the problems.
    let wrong = wrong.replace(
        "name = \"svc_lib\",",
        "name = \"svc_lib\",\n    crate_name = \"svc\",",
    );
    let problems = check_build_file(&sample_member(), &wrong);
    for e in [
        "has no rust_test(crate = \":svc_lib\")",
        "deps lack the workspace member //common",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(e)),
            "expected a problem containing {e:?}, got {problems:#?}"
        );
    }

    // A missing rust_test_suite entirely.
    let no_suite = GOOD_BUILD.replace("rust_test_suite(", "filegroup(");
    let problems = check_build_file(&sample_member(), &no_suite);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems
        .iter()
        .all(|p| p.starts_with("svc/BUILD.bazel: integration test tests/")));

    // A missing dev-dependency label in the unit test.
    let no_dev_dep = GOOD_BUILD.replace("\"//other/server:server_lib\"", "\"//other:server_lib\"");
    let problems = check_build_file(&sample_member(), &no_dev_dep);
    assert_eq!(
        problems,
        vec![
            "svc/BUILD.bazel: rust_test(name = \"svc_lib_unit_test\") (line 21): deps lack the \
             workspace member //other/server (a dev-dependency in Cargo.toml)"
                .to_owned()
        ]
    );
}

#[test]
fn checker_reports_missing_module_manifests() {
    let members = [
        Member {
            dir: "svc".into(),
            ..Member::default()
        },
        Member {
            dir: "common".into(),
            ..Member::default()
        },
    ];
    let good = r#"
crate = use_extension("@rules_rust//crate_universe:extensions.bzl", "crate")
crate.from_cargo(
    name = "crates",
    cargo_lockfile = "//:Cargo.lock",
    manifests = [
        "//:Cargo.toml",
        "//common:Cargo.toml",
        "//svc:Cargo.toml",
    ],
)
use_repo(crate, "crates")
"#;
    assert_eq!(check_module(good, &members), Vec::<String>::new());

    let missing = good.replace(
        "        \"//svc:Cargo.toml\",\n",
        "        \"//gone:Cargo.toml\",\n",
    );
    let problems = check_module(&missing, &members);
    assert_eq!(
        problems,
        vec![
            "MODULE.bazel: crate.from_cargo manifests lack \"//svc:Cargo.toml\"".to_owned(),
            "MODULE.bazel: crate.from_cargo manifests list \"//gone:Cargo.toml\", which is not a \
             workspace manifest"
                .to_owned(),
        ]
    );
    assert_eq!(
        check_module("bazel_dep(name = \"rules_rust\")\n", &members).len(),
        1
    );
}

#[test]
fn scanner_handles_globs_labels_and_strings() {
    assert!(glob_match("tests/*.rs", "tests/a.rs"));
    assert!(!glob_match("tests/*.rs", "tests/common/mod.rs"));
    assert!(glob_match("src/**/*.rs", "src/lib.rs"));
    assert!(glob_match("src/**/*.rs", "src/a/b/c.rs"));
    assert!(!glob_match("src/**/*.rs", "tests/a.rs"));

    assert_eq!(local_target(":x", "a/b").as_deref(), Some("x"));
    assert_eq!(local_target("x", "a/b").as_deref(), Some("x"));
    assert_eq!(local_target("//a/b:x", "a/b").as_deref(), Some("x"));
    assert_eq!(local_target("//a/b", "a/b").as_deref(), Some("b"));
    assert_eq!(local_target("//a:x", "a/b"), None);
    assert!(is_in_package("//schemas", "schemas"));
    assert!(is_in_package(
        "//coordinator:coordinator_lib",
        "coordinator"
    ));
    assert!(is_in_package(
        "@task_sharding//coordinator:coordinator_lib",
        "coordinator"
    ));
    assert!(!is_in_package("//coordinator_extra:x", "coordinator"));

    let text = "x = \"\"\"rust_library(\n)\"\"\"\nrust_library(name = 'a)b', srcs = [r\"src/lib.rs\"]) # rust_binary(\n";
    let found = calls(text, true).unwrap();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].str_kwarg("name"), Some("a)b"));
    assert!(FileSet::of(found[0].kwarg("srcs").unwrap()).contains("src/lib.rs"));
    assert!(calls("rust_library(name = \"a\"", true).is_err());
}

/// The bug this pins: wrapper/src/bazel/args.rs read flags.txt (since removed) with
/// `include_str!`, the `rust_library` had no `compile_data`, and only `bazel build //...` noticed.
#[test]
fn regression_include_str_without_compile_data_is_reported() {
    let no_data = GOOD_BUILD.replace("    compile_data = [\"src/flags.txt\"],\n", "");
    assert_eq!(
        check_build_file(&sample_member(), &no_data),
        vec![
            "svc/BUILD.bazel: rust_library(name = \"svc_lib\") (line 6): compile_data lacks \
             src/flags.txt, which src/flags.rs reads at compile time"
                .to_owned()
        ]
    );
    // A binary whose srcs hold the reading source needs it too.
    let bin_compiles_it = GOOD_BUILD.replace(
        "    srcs = [\"src/main.rs\"],",
        "    srcs = glob([\"src/**/*.rs\"]),",
    );
    let problems = check_build_file(&sample_member(), &bin_compiles_it);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("rust_binary(name = \"svc-cli\")"));
    // An argument the check cannot follow is a problem, not a silent pass.
    let mut opaque = sample_member();
    opaque.compile_reads[0].read =
        Err("include_str! with an argument that is not a string literal".into());
    let problems = check_build_file(&opaque, GOOD_BUILD);
    assert_eq!(problems.len(), 1, "{problems:#?}");
}

#[test]
fn checker_reports_a_build_script_the_lib_does_not_use() {
    let mut member = sample_member();
    member.build_script = true;
    let problems = check_build_file(&member, GOOD_BUILD);
    assert_eq!(
        problems,
        vec![
            "svc/BUILD.bazel: the package has a build script but there is no cargo_build_script"
                .to_owned()
        ]
    );
    let with_script = format!(
        "{GOOD_BUILD}\ncargo_build_script(\n    name = \"build_script\",\n    srcs = [\"build.rs\"],\n)\n"
    );
    let problems = check_build_file(&member, &with_script);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("deps lack the build script's cargo_build_script"));
    let used = with_script.replace(
        "deps = [\"//common\"]",
        "deps = [\"//common\", \":build_script\"]",
    );
    assert_eq!(check_build_file(&member, &used), Vec::<String>::new());
}

#[test]
fn scanner_finds_compile_time_reads() {
    let text = concat!(
        "// include_str!(\"commented.txt\")\n",
        "/* include_bytes!(\"block.bin\") /* nested */ */\n",
        "const A: &str = include_str!(\"a.txt\");\n",
        "const B: &[u8] = include_bytes! ( r#\"../data/b.bin\"# );\n",
        "const S: &str = \"include_str!(\\\"in_a_string.txt\\\")\";\n",
        "fn f<'a>(x: &'a str) -> char { let _ = x; '\"' }\n",
        "const C: &str = include_str!(concat!(env!(\"OUT_DIR\"), \"/c.txt\"));\n",
    );
    let reads = compile_time_reads(text);
    assert_eq!(reads.len(), 3, "{reads:#?}");
    assert_eq!(reads[0], Ok("a.txt".to_owned()));
    assert_eq!(reads[1], Ok("../data/b.bin".to_owned()));
    assert!(reads[2].is_err());
    assert_eq!(
        resolve_relative("src/bazel/plan.rs", "testdata/plan-4.2.3.json").as_deref(),
        Ok("src/bazel/testdata/plan-4.2.3.json")
    );
    assert_eq!(
        resolve_relative("src/schema.rs", "../examples/a.yaml").as_deref(),
        Ok("examples/a.yaml")
    );
    assert!(resolve_relative("src/lib.rs", "../../x").is_err());
    assert!(resolve_relative("src/lib.rs", "/etc/passwd").is_err());
}
