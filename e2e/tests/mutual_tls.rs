//! Mutual TLS (`coordinator --client-ca`): with real processes on loopback, a client whose
//! certificate comes from the client CA completes a session; one without a certificate, or with
//! one from another CA, is refused in words, and the coordinator keeps serving.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use e2e::{summary, write_schema, Coordinator, Job};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

const LIMIT: Duration = Duration::from_secs(90);

/// A client certificate and its key, as PEM files.
struct ClientPem {
    cert: PathBuf,
    key: PathBuf,
}

/// A CA written to `dir/<name>-ca.pem`, with one client certificate it issued.
fn ca_with_client(dir: &Path, name: &str) -> (PathBuf, ClientPem) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} client CA"));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec![format!("{name}-job")]).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} CI job"));
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();

    let ca_path = dir.join(format!("{name}-ca.pem"));
    let client = ClientPem {
        cert: dir.join(format!("{name}-client.pem")),
        key: dir.join(format!("{name}-client.key")),
    };
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&client.cert, client_cert.pem()).unwrap();
    std::fs::write(&client.key, client_key.serialize_pem()).unwrap();
    (ca_path, client)
}

trait Present {
    /// Sets `TASK_SHARDING_CLIENT_CERT` / `_KEY` to `client`.
    fn presenting(&mut self, client: &ClientPem) -> &mut Self;
}

impl Present for Command {
    fn presenting(&mut self, client: &ClientPem) -> &mut Self {
        self.env("TASK_SHARDING_CLIENT_CERT", &client.cert)
            .env("TASK_SHARDING_CLIENT_KEY", &client.key)
    }
}

/// A `task-sharding run` of one task named `name`, in run `run_id`.
fn one_task(coordinator: &Coordinator, dir: &Path, run_id: &str, name: &str) -> Command {
    let schema = write_schema(dir, name, &[format!("{name}-task")]).unwrap();
    coordinator.run_command(run_id, name, &schema, &["true"])
}

fn run(name: &str, command: Command) -> Output {
    Job::spawn(name, command).unwrap().wait(LIMIT).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_completed(output: &Output) {
    assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(summary(&stdout).contains("1 passed"), "{stdout}");
}

/// The client exits 3 ("the coordinator could not be used") with `words` on stderr.
fn assert_refused(output: &Output, words: &str) {
    let stderr = stderr(output);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(words), "{stderr}");
}

#[test]
fn only_clients_with_a_certificate_from_the_client_ca_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (client_ca, good) = ca_with_client(dir.path(), "ours");
    let (_, foreign) = ca_with_client(dir.path(), "theirs");
    let mut coordinator =
        Coordinator::start(&["--client-ca", client_ca.to_str().unwrap()]).unwrap();
    assert!(
        coordinator.log().contains("client certificates required"),
        "{}",
        coordinator.log()
    );

    let mut with_cert = one_task(&coordinator, dir.path(), "run-1", "good");
    with_cert.presenting(&good);
    assert_completed(&run("good", with_cert));

    let without_cert = one_task(&coordinator, dir.path(), "run-2", "anonymous");
    let refused = run("anonymous", without_cert);
    assert_refused(
        &refused,
        "this client presented no certificate, and the coordinator requires one: set \
         TASK_SHARDING_CLIENT_CERT and TASK_SHARDING_CLIENT_KEY",
    );

    let mut other_ca = one_task(&coordinator, dir.path(), "run-3", "foreign");
    other_ca.presenting(&foreign);
    let refused = run("foreign", other_ca);
    assert_refused(
        &refused,
        "this client's certificate (TASK_SHARDING_CLIENT_CERT) was rejected",
    );

    // The refusals cost the coordinator nothing: it still serves a good client.
    assert!(coordinator.is_running());
    let mut again = one_task(&coordinator, dir.path(), "run-4", "good-again");
    again.presenting(&good);
    assert_completed(&run("good-again", again));
}

#[test]
fn without_client_ca_a_client_certificate_is_not_needed_and_does_no_harm() {
    let dir = tempfile::tempdir().unwrap();
    let (_, client) = ca_with_client(dir.path(), "ours");
    let coordinator = Coordinator::start(&[]).unwrap();
    assert_completed(&run(
        "plain",
        one_task(&coordinator, dir.path(), "run-1", "plain"),
    ));
    let mut with_cert = one_task(&coordinator, dir.path(), "run-2", "with-cert");
    with_cert.presenting(&client);
    assert_completed(&run("with-cert", with_cert));
}

#[test]
fn the_token_is_still_checked_on_top_of_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (client_ca, good) = ca_with_client(dir.path(), "ours");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "open-sesame\n").unwrap();
    let coordinator = Coordinator::start(&[
        "--client-ca",
        client_ca.to_str().unwrap(),
        "--token-file",
        token_file.to_str().unwrap(),
    ])
    .unwrap();

    let mut no_token = one_task(&coordinator, dir.path(), "run-1", "no-token");
    no_token.presenting(&good);
    assert_refused(&run("no-token", no_token), "requires a token");

    let mut both = one_task(&coordinator, dir.path(), "run-2", "both");
    both.presenting(&good)
        .env("TASK_SHARDING_TOKEN", "open-sesame");
    assert_completed(&run("both", both));
}

#[test]
fn half_a_client_identity_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, client) = ca_with_client(dir.path(), "ours");
    let coordinator = Coordinator::start(&[]).unwrap();
    let mut only_cert = one_task(&coordinator, dir.path(), "run-1", "half");
    only_cert.env("TASK_SHARDING_CLIENT_CERT", &client.cert);
    let output = run("half", only_cert);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "TASK_SHARDING_CLIENT_CERT (--client-cert) is set but TASK_SHARDING_CLIENT_KEY \
             (--client-key) is not"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_unusable_client_ca_stops_the_coordinator_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-pem.txt");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for (ca, expected) in [
        (
            dir.path().join("missing.pem"),
            "--client-ca: cannot read the client CA bundle",
        ),
        (not_pem, "holds no PEM certificate"),
    ] {
        let output = Command::new(e2e::binary("coordinator"))
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(dir.path().join("state"))
            .arg("--client-ca")
            .arg(&ca)
            .output()
            .unwrap();
        let stderr = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(stderr.contains(&ca.display().to_string()), "{stderr}");
    }
}
