//! What CI run and job this is, told from the environment CI systems set.
//!
//! The run id is part of the session key: every job of one CI run must compute the same one, and
//! a re-run must compute a new one (or it would join the finished session and get its results).

/// `key` bound to the run secret (`TASK_SHARDING_RUN_SECRET`): `KEY/sealed-HASH`, where HASH is
/// a SHA-256 of the secret and the key. The run id in a key is guessable (CI systems show it to
/// anyone who can see the run), so anyone holding the coordinator's token could join a run's
/// session under it and report forged results. A secret shared only by the run's jobs makes the
/// key unguessable: the coordinator never learns the secret, and a client without it cannot name
/// the session. Without a secret the key is returned as it is.
pub fn sealed_session_key(key: String, secret: Option<&str>) -> String {
    use sha2::{Digest as _, Sha256};
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return key;
    };
    let mut hasher = Sha256::new();
    hasher.update(b"task-sharding run secret v1\0");
    for field in [secret, key.as_str()] {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field.as_bytes());
    }
    let seal = hex::encode(&hasher.finalize()[..16]);
    format!("{key}/sealed-{seal}")
}

/// Where the run id came from, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunId {
    /// The CI system, or `TASK_SHARDING_RUN_ID`.
    pub source: &'static str,
    /// The id itself.
    pub id: String,
}

/// The run id: `TASK_SHARDING_RUN_ID` if set, else the CI system's own identifiers of this run
/// and attempt. `env` looks a variable up (it is `std::env::var` outside tests).
pub fn run_id(env: impl Fn(&str) -> Option<String>) -> Option<RunId> {
    let get = |name: &str| env(name).filter(|v| !v.is_empty());
    let join = |parts: &[&str]| -> Option<String> {
        parts
            .iter()
            .map(|p| get(p))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join("/"))
    };
    if let Some(id) = get("TASK_SHARDING_RUN_ID") {
        return Some(RunId {
            source: "TASK_SHARDING_RUN_ID",
            id,
        });
    }
    let detected = if get("GITHUB_ACTIONS").is_some() {
        // The attempt changes when a workflow is re-run, so a re-run gets a fresh session.
        join(&["GITHUB_REPOSITORY", "GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT"])
            .map(|id| ("GitHub Actions", id))
    } else if get("GITLAB_CI").is_some() {
        join(&["CI_PROJECT_ID", "CI_PIPELINE_ID"]).map(|id| ("GitLab CI", id))
    } else if get("BUILDKITE").is_some() {
        join(&["BUILDKITE_BUILD_ID", "BUILDKITE_STEP_ID"])
            .map(|id| {
                format!(
                    "{id}/{}",
                    get("BUILDKITE_RETRY_COUNT").unwrap_or_else(|| "0".into())
                )
            })
            .map(|id| ("Buildkite", id))
    } else if get("CIRCLECI").is_some() {
        join(&["CIRCLE_WORKFLOW_JOB_ID"]).map(|id| ("CircleCI", id))
    } else if get("JENKINS_URL").is_some() {
        join(&["BUILD_TAG"]).map(|id| ("Jenkins", id))
    } else {
        None
    };
    detected.map(|(source, id)| RunId {
        source,
        id: format!("{}/{id}", source.to_lowercase().replace(' ', "-")),
    })
}

/// This job's name within its run, where the CI system tells it.
pub fn job_name(env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let get = |name: &str| env(name).filter(|v| !v.is_empty());
    let indexed = |name: Option<String>, index: Option<String>| match (name, index) {
        (Some(name), Some(index)) => Some(format!("{name}#{index}")),
        (name, _) => name,
    };
    indexed(get("GITHUB_JOB"), None)
        .or_else(|| indexed(get("CI_JOB_NAME"), None))
        .or_else(|| indexed(get("BUILDKITE_LABEL"), get("BUILDKITE_PARALLEL_JOB")))
        .or_else(|| indexed(get("CIRCLE_JOB"), get("CIRCLE_NODE_INDEX")))
        .or_else(|| get("JOB_NAME"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_explicit_id_wins() {
        let id = run_id(env(&[
            ("TASK_SHARDING_RUN_ID", "x"),
            ("GITHUB_ACTIONS", "true"),
        ]))
        .unwrap();
        assert_eq!(
            id,
            RunId {
                source: "TASK_SHARDING_RUN_ID",
                id: "x".into()
            }
        );
    }

    #[test]
    fn each_ci_system_is_recognised() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    ("GITHUB_ACTIONS", "true"),
                    ("GITHUB_REPOSITORY", "o/r"),
                    ("GITHUB_RUN_ID", "7"),
                    ("GITHUB_RUN_ATTEMPT", "2"),
                ],
                "github-actions/o/r/7/2",
            ),
            (
                &[
                    ("GITLAB_CI", "true"),
                    ("CI_PROJECT_ID", "5"),
                    ("CI_PIPELINE_ID", "9"),
                ],
                "gitlab-ci/5/9",
            ),
            (
                &[
                    ("BUILDKITE", "true"),
                    ("BUILDKITE_BUILD_ID", "b"),
                    ("BUILDKITE_STEP_ID", "s"),
                ],
                "buildkite/b/s/0",
            ),
            (
                &[("CIRCLECI", "true"), ("CIRCLE_WORKFLOW_JOB_ID", "w")],
                "circleci/w",
            ),
            (
                &[("JENKINS_URL", "http://j"), ("BUILD_TAG", "jenkins-x-3")],
                "jenkins/jenkins-x-3",
            ),
        ];
        for (vars, expected) in cases {
            assert_eq!(run_id(env(vars)).unwrap().id, *expected, "{vars:?}");
        }
    }

    #[test]
    fn a_partial_or_absent_ci_gives_nothing() {
        assert_eq!(run_id(env(&[])), None);
        assert_eq!(
            run_id(env(&[("GITHUB_ACTIONS", "true"), ("GITHUB_RUN_ID", "7")])),
            None
        );
        assert_eq!(run_id(env(&[("TASK_SHARDING_RUN_ID", "")])), None);
    }

    /// Regression (issue 14): the session key was made of guessable parts only, so a token
    /// holder could join another run's session and report forged results.
    #[test]
    fn the_run_secret_makes_the_key_unguessable() {
        let key = || "run/github-actions/o/r/7/1/honest".to_string();
        assert_eq!(sealed_session_key(key(), None), key());
        assert_eq!(sealed_session_key(key(), Some("")), key());
        let sealed = sealed_session_key(key(), Some("s3cret"));
        assert!(
            sealed.starts_with(&format!("{}/sealed-", key())),
            "{sealed}"
        );
        assert_eq!(sealed.len(), key().len() + "/sealed-".len() + 32);
        assert!(!sealed.contains("s3cret"));
        // The same secret gives every job the same key; another secret or key another one.
        assert_eq!(sealed, sealed_session_key(key(), Some("s3cret")));
        assert_ne!(sealed, sealed_session_key(key(), Some("s3cret2")));
        assert_ne!(
            sealed,
            sealed_session_key(format!("{}x", key()), Some("s3cret"))
        );
    }

    #[test]
    fn job_names_carry_the_parallel_index() {
        assert_eq!(
            job_name(env(&[("CIRCLE_JOB", "test"), ("CIRCLE_NODE_INDEX", "2")])).unwrap(),
            "test#2"
        );
        assert_eq!(job_name(env(&[("GITHUB_JOB", "test")])).unwrap(), "test");
        assert_eq!(job_name(env(&[])), None);
    }
}
