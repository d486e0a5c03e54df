//! What a test crate pulls in when it depends on mkh: the library without the `mkh` command's
//! crates, and a Kubernetes version that stays the test crate's choice.

use mkh_tests::{cargo, workspace};

/// The crates of the `mkh` command (argument parsing, completions, its log output and its
/// progress view) that no test binary needs.
const COMMAND_CRATES: [&str; 4] = ["clap", "clap_complete", "tracing-subscriber", "indicatif"];

#[test]
fn the_library_links_none_of_the_command_s_crates() {
    for features in ["", "kube"] {
        let (ok, tree) = cargo(
            &[
                "tree",
                "--offline",
                "-p",
                "mkh",
                "-e",
                "normal",
                "--prefix",
                "none",
                "--features",
                features,
            ],
            &workspace(),
            &[],
        );
        assert!(ok, "{tree}");
        let crates: Vec<&str> = tree
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(crates.contains(&"virt"), "not mkh's tree?\n{tree}");
        for name in COMMAND_CRATES {
            assert!(
                !crates.contains(&name),
                "mkh (features {features:?}) depends on {name}:\n{tree}"
            );
        }
    }
    // The command has them: the check above looks at the right names.
    let (ok, tree) = cargo(
        &[
            "tree",
            "--offline",
            "-p",
            "mkh-cli",
            "-e",
            "normal",
            "--prefix",
            "none",
        ],
        &workspace(),
        &[],
    );
    assert!(ok, "{tree}");
    for name in COMMAND_CRATES {
        assert!(
            tree.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} not in mkh-cli's tree"
        );
    }
}

/// A Kubernetes version other than the `mkh` command's (`v1_33`).
const USERS_VERSION: &str = "v1_34";

#[test]
fn a_test_crate_with_its_own_kubernetes_version_builds_and_passes() {
    // mkh with its default features, the fixtures' `kube` fixture, and the user's version.
    let dependencies = format!(
        r#"mkh = {{ path = "{{root}}/harness" }}
mkh-fixtures = {{ path = "{{root}}/fixtures", features = ["kube"] }}
kube = "5"
k8s-openapi = {{ version = "0.29", features = ["{USERS_VERSION}"] }}
rstest = "0.26"
tokio = {{ version = "1", features = ["macros", "rt"] }}
"#
    );
    let test = r#"
use mkh_fixtures::With;

// Takes the `kube` fixture: compiled, not run (it would boot a minikube cluster).
#[allow(dead_code)]
async fn lists_namespaces(kube: With<kube::Client>) {
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all((*kube).clone());
    api.list(&Default::default()).await.unwrap();
}

#[tokio::test]
async fn an_environment_without_an_api_server_says_so() {
    // libvirt's test driver: networks only, no daemon, no VM.
    let env = mkh::Env::builder()
        .libvirt_uri("test:///default")
        .up()
        .await
        .unwrap();
    let Err(err) = env.kube_client().await else {
        panic!("a kube client for networks alone");
    };
    let err = err.to_string();
    assert!(err.contains("no Kubernetes API server"), "{err}");
    env.teardown().await.unwrap();
}
"#;
    let (passed, text) = mkh_tests::test_outside_crate(
        &dependencies,
        &[("kube_user.rs".to_owned(), test.to_owned())],
        &[],
    );
    assert!(passed, "{text}");
    assert!(text.contains("1 passed"), "{text}");
}
