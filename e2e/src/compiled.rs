//! A compile-heavy C++ workspace, generated from a seed: what `bazel test //...` costs in a
//! repository that mostly *builds* (the compiled benchmark, `e2e/benches/compiled.rs`).
//!
//! Bazel's built-in `cc_library`/`cc_test` rules and the host's C++ compiler, nothing downloaded:
//!
//! - `//core:core`, a library every target depends on, in a few sources;
//! - one library per package (`//alpha:lib`, ...) depending on `core`;
//! - tests, spread over the packages, each depending on its package's library.
//!
//! What a target costs is CPU work, so that a CPU share confines it: compiling evaluates a
//! `constexpr` loop of a drawn length (the compiler spins, single-threaded), and a test spins
//! for a drawn amount of its own CPU time. Compile and run costs are log-normal with a few
//! drawn several times longer: heavy-tailed, as real tests are. Every source includes
//! `core/stamp.h`; rewriting it ([`CompiledWorkspace::stamp`]) puts every action out of date,
//! locally and in a remote cache, as a commit to a shared header does.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result};

use crate::bench::Rng;

/// The packages, each with its own library and tests.
pub const PACKAGES: [&str; 6] = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"];

/// Roughly what one unit of `constexpr` work costs g++ 12 (1,000 loop iterations), in CPU
/// milliseconds: the drawn costs are converted with it. The benchmark measures what the work
/// really cost; this only sets its scale.
pub const UNIT_MS: f64 = 2.5;

/// One test target.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledTest {
    /// `//package:tNN`.
    pub label: String,
    /// Its package.
    pub package: &'static str,
    /// Nominal CPU milliseconds to compile its source.
    pub compile_ms: u64,
    /// CPU milliseconds it spins when run.
    pub run_ms: u64,
}

/// The drawn workspace.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledWorkspace {
    /// The seed it was drawn from.
    pub seed: u64,
    /// Nominal CPU milliseconds to compile each source of `//core:core`.
    pub core_ms: Vec<u64>,
    /// Per package, nominal CPU milliseconds to compile its library.
    pub lib_ms: BTreeMap<&'static str, u64>,
    /// The tests, in label order.
    pub tests: Vec<CompiledTest>,
}

/// `count` log-normal draws (sigma `sigma`), `outliers` of them multiplied by `factor`, scaled to
/// add up to `total` with none above `cap` (in whole milliseconds, at least `floor`).
fn heavy_tailed(
    rng: &mut Rng,
    count: usize,
    sigma: f64,
    (outliers, factor): (usize, f64),
    total: f64,
    (floor, cap): (u64, u64),
) -> Vec<u64> {
    let mut draws: Vec<f64> = (0..count).map(|_| (sigma * rng.normal()).exp()).collect();
    for _ in 0..outliers {
        let i = (rng.next_u64() % count as u64) as usize;
        draws[i] *= factor;
    }
    // Scaling to the total pushes some past the floor or the cap, clamping changes the total:
    // repeat.
    for _ in 0..50 {
        let sum: f64 = draws.iter().sum();
        for d in &mut draws {
            *d = (*d * total / sum).clamp(floor as f64, cap as f64);
        }
    }
    draws
        .iter()
        .map(|d| (d.round() as u64).clamp(floor, cap))
        .collect()
}

impl CompiledWorkspace {
    /// `tests` tests (spread evenly over [`PACKAGES`]), drawn from `seed`: test sources cost
    /// `test_compile_ms` in all to compile, tests `test_run_ms` in all to run.
    pub fn generate(seed: u64, tests: usize, test_compile_ms: u64, test_run_ms: u64) -> Self {
        let mut rng = Rng(seed.max(1));
        let core_ms = heavy_tailed(&mut rng, 4, 0.3, (0, 1.0), 6_000.0, (500, 3_000));
        let libs = heavy_tailed(
            &mut rng,
            PACKAGES.len(),
            0.5,
            (0, 1.0),
            9_000.0,
            (500, 4_000),
        );
        let lib_ms = PACKAGES.iter().copied().zip(libs).collect();
        let compile = heavy_tailed(
            &mut rng,
            tests,
            0.8,
            (tests / 15, 4.0),
            test_compile_ms as f64,
            (100, 3_000),
        );
        let run = heavy_tailed(
            &mut rng,
            tests,
            1.0,
            (tests / 15, 5.0),
            test_run_ms as f64,
            (50, 5_000),
        );
        let mut all: Vec<CompiledTest> = (0..tests)
            .map(|i| {
                let package = PACKAGES[i % PACKAGES.len()];
                CompiledTest {
                    label: format!("//{package}:t{i:02}"),
                    package,
                    compile_ms: compile[i],
                    run_ms: run[i],
                }
            })
            .collect();
        all.sort_by(|a, b| a.label.cmp(&b.label));
        CompiledWorkspace {
            seed,
            core_ms,
            lib_ms,
            tests: all,
        }
    }

    /// Nominal CPU milliseconds of all compiling (links and Bazel's own work not included).
    pub fn compile_ms(&self) -> u64 {
        self.core_ms.iter().sum::<u64>()
            + self.lib_ms.values().sum::<u64>()
            + self.tests.iter().map(|t| t.compile_ms).sum::<u64>()
    }

    /// CPU milliseconds of all testing.
    pub fn run_ms(&self) -> u64 {
        self.tests.iter().map(|t| t.run_ms).sum()
    }

    /// The test labels, in label order.
    pub fn labels(&self) -> Vec<String> {
        self.tests.iter().map(|t| t.label.clone()).collect()
    }

    /// The targets that are not tests (`//core:core` and each package's `:lib`), in label
    /// order: the build tasks of `bazel test //...`, listed `BUILT` in the session summary.
    pub fn built_labels(&self) -> Vec<String> {
        let mut labels: Vec<String> = std::iter::once("//core:core".to_string())
            .chain(self.lib_ms.keys().map(|p| format!("//{p}:lib")))
            .collect();
        labels.sort();
        labels
    }

    /// Writes the workspace into `dir`: `e2e/workspace`'s WORKSPACE, .bazelignore and
    /// third_party (the offline repository overrides), and what [`Self::write_packages`]
    /// writes.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let source = crate::bazel::repo_root().join("e2e/workspace");
        std::fs::create_dir_all(dir)?;
        for file in ["WORKSPACE", ".bazelignore"] {
            std::fs::copy(source.join(file), dir.join(file))
                .with_context(|| format!("cannot copy e2e/workspace/{file}"))?;
        }
        crate::bazel::copy_tree(&source.join("third_party"), &dir.join("third_party"))?;
        self.write_packages(dir)
    }

    /// Writes the generated part of the workspace into `dir`: `//core` and the packages (no
    /// file of the repository is read, so a test can run where the source tree is not, as
    /// under `bazel test`).
    pub fn write_packages(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let write = |path: &str, text: String| {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().expect("a file in a package"))?;
            std::fs::write(&path, text).with_context(|| format!("cannot write {path:?}"))
        };
        let header = format!(
            "// Generated by e2e/src/compiled.rs (seed {}).\n",
            self.seed
        );
        write(
            "core/core.h",
            format!(
                "{header}#pragma once\n#include \"core/stamp.h\"\n\nnamespace core {{\n\n\
                 // Compiling a call with a constant costs the compiler `units` x 1,000 steps.\n\
                 constexpr unsigned long spin(unsigned long units) {{\n  \
                 unsigned long x = kStamp | 1;\n  \
                 for (unsigned long i = 0; i < units; ++i)\n    \
                 for (unsigned long j = 0; j < 1000; ++j) x = x * 6364136223846793005ul + j;\n  \
                 return x;\n}}\n\n\
                 unsigned long mix(unsigned long x);\n\n}}  // namespace core\n"
            ),
        )?;
        let mut srcs = Vec::new();
        for (i, ms) in self.core_ms.iter().enumerate() {
            let name = format!("core_{i}.cc");
            let body = if i == 0 {
                "unsigned long mix(unsigned long x) { return x ^ kWork; }".to_string()
            } else {
                format!("unsigned long part_{i}() {{ return kWork; }}")
            };
            write(
                &format!("core/{name}"),
                format!(
                    "{header}#include \"core/core.h\"\n\nnamespace core {{\n\
                     constexpr unsigned long kWork = spin({});\n{body}\n}}  // namespace core\n",
                    units(*ms)
                ),
            )?;
            srcs.push(format!("\"{name}\""));
        }
        write("core/stamp.h", stamp_header("initial"))?;
        write(
            "core/BUILD",
            format!(
                "# Generated by e2e/src/compiled.rs: the library every target depends on.\n\
                 cc_library(\n    name = \"core\",\n    srcs = [{}],\n    \
                 hdrs = [\"core.h\", \"stamp.h\"],\n    copts = {COPTS},\n    visibility = [\"//visibility:public\"],\n)\n",
                srcs.join(", ")
            ),
        )?;
        for (package, ms) in &self.lib_ms {
            write(
                &format!("{package}/lib.h"),
                format!(
                    "{header}#pragma once\n\nnamespace {package} {{\nunsigned long value();\n}}\n"
                ),
            )?;
            write(
                &format!("{package}/lib.cc"),
                format!(
                    "{header}#include \"{package}/lib.h\"\n#include \"core/core.h\"\n\n\
                     namespace {package} {{\nconstexpr unsigned long kWork = core::spin({});\n\
                     unsigned long value() {{ return core::mix(kWork); }}\n}}\n",
                    units(*ms)
                ),
            )?;
            let mut build = format!(
                "# Generated by e2e/src/compiled.rs.\ncc_library(\n    name = \"lib\",\n    \
                 srcs = [\"lib.cc\"],\n    hdrs = [\"lib.h\"],\n    copts = {COPTS},\n    deps = [\"//core\"],\n)\n"
            );
            for test in self.tests.iter().filter(|t| t.package == *package) {
                let name = test.label.rsplit(':').next().expect("a label has a name");
                write(
                    &format!("{package}/{name}.cc"),
                    format!(
                        "{header}#include <ctime>\n\n#include \"core/core.h\"\n#include \"{package}/lib.h\"\n\n\
                         constexpr unsigned long kWork = core::spin({});\n\n\
                         // Spins for {} ms of this process's CPU time.\n\
                         int main() {{\n  \
                         const std::clock_t end = std::clock() + {} * (CLOCKS_PER_SEC / 1000);\n  \
                         unsigned long x = kWork;\n  \
                         while (std::clock() < end) x = x * 6364136223846793005ul + 1;\n  \
                         return {package}::value() == 0 && x == 0 ? 1 : 0;\n}}\n",
                        units(test.compile_ms),
                        test.run_ms,
                        test.run_ms
                    ),
                )?;
                // Bazel's size from the run cost, as a repository's authors would set it.
                let size = if test.run_ms >= 2_000 {
                    "medium"
                } else {
                    "small"
                };
                build.push_str(&format!(
                    "\ncc_test(\n    name = \"{name}\",\n    size = \"{size}\",\n    \
                     srcs = [\"{name}.cc\"],\n    copts = {COPTS},\n    deps = [\":lib\", \"//core\"],\n)\n"
                ));
            }
            write(&format!("{package}/BUILD"), build)?;
        }
        Ok(())
    }

    /// Rewrites `core/stamp.h` in the workspace at `dir` with `value`: every action is out of
    /// date (locally and in any cache) until it is built again.
    pub fn stamp(dir: &Path, value: &str) -> Result<()> {
        std::fs::write(dir.join("core/stamp.h"), stamp_header(value))
            .context("cannot rewrite core/stamp.h")
    }
}

/// Bazel's built-in toolchain compiles C++11 (`-std=c++0x`); `constexpr` loops need C++14.
const COPTS: &str = r#"["-std=c++17"]"#;

/// The loop length that costs about `ms` CPU milliseconds to compile.
fn units(ms: u64) -> u64 {
    ((ms as f64 / UNIT_MS).round() as u64).max(1)
}

fn stamp_header(value: &str) -> String {
    // A number derived from the value, so that the constant changes with it.
    let hash = value.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!(
        "// Rewritten before each benchmark run ({value}): every action depends on it.\n\
         #pragma once\nnamespace core {{\nconstexpr unsigned long kStamp = {hash}ul;\n}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_is_seeded_and_heavy_tailed() {
        let a = CompiledWorkspace::generate(7, 60, 24_000, 20_000);
        assert_eq!(a, CompiledWorkspace::generate(7, 60, 24_000, 20_000));
        assert_ne!(a, CompiledWorkspace::generate(8, 60, 24_000, 20_000));
        assert_eq!(a.tests.len(), 60);
        let total: u64 = a.run_ms();
        assert!((19_900..=20_100).contains(&total), "run total {total}");
        let mut runs: Vec<u64> = a.tests.iter().map(|t| t.run_ms).collect();
        runs.sort_unstable();
        let (median, longest) = (runs[30], runs[59]);
        assert!(
            longest >= 5 * median,
            "heavy-tailed: longest {longest} ms, median {median} ms"
        );
        for package in PACKAGES {
            assert_eq!(a.tests.iter().filter(|t| t.package == package).count(), 10);
        }
    }

    #[test]
    fn every_source_includes_the_stamp_and_every_test_is_declared() {
        let ws = CompiledWorkspace::generate(7, 12, 2_000, 2_000);
        let dir = tempfile::tempdir().unwrap();
        ws.write_packages(dir.path()).unwrap();
        let builds: String = PACKAGES
            .iter()
            .map(|p| std::fs::read_to_string(dir.path().join(p).join("BUILD")).unwrap())
            .collect();
        for test in &ws.tests {
            let name = test.label.rsplit(':').next().unwrap();
            assert!(builds.contains(&format!("name = \"{name}\"")), "{name}");
            let source =
                std::fs::read_to_string(dir.path().join(test.package).join(format!("{name}.cc")))
                    .unwrap();
            assert!(source.contains("#include \"core/core.h\""));
        }
        let before = std::fs::read_to_string(dir.path().join("core/stamp.h")).unwrap();
        CompiledWorkspace::stamp(dir.path(), "run 2").unwrap();
        let after = std::fs::read_to_string(dir.path().join("core/stamp.h")).unwrap();
        assert_ne!(before, after);
        assert!(std::fs::read_to_string(dir.path().join("core/core.h"))
            .unwrap()
            .contains("#include \"core/stamp.h\""));
    }
}
