//! `/apisix/admin/ssls`, in process.

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};

use super::*;

/// A self-signed certificate for `name` and its key (PEM), and its
/// `notAfter` (unix seconds).
fn cert(name: &str) -> (String, String, u64) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
    // Around the tests' clock (T0).
    p.not_before = time::OffsetDateTime::from_unix_timestamp(T0 as i64 - 86_400).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(T0 as i64 + 86_400).unwrap();
    let c = p.self_signed(&key).unwrap();
    (c.pem(), key.serialize_pem(), T0 + 86_400)
}

fn stored_ssl(api: &Api, id: &str) -> Option<Value> {
    api.store.inner.data().ssls.get(id).cloned()
}

#[tokio::test]
async fn post_put_patch_get_delete_with_the_key_never_shown() {
    let mut api = Api::new().await;
    let (c, k, _) = cert("app.test");
    let r = api
        .call(
            "POST",
            "/apisix/admin/ssls",
            Some(&json!({"cert": c, "key": k, "snis": ["app.test"]}).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["value"]["key"], REDACTED);
    let id = r.body["value"]["id"].as_str().unwrap().to_string();
    assert_eq!(stored_ssl(&api, &id).unwrap()["key"], k.as_str());
    let (_, set) = api.published_all();
    assert_eq!(set.ssls.len(), 1);
    let enabled: Vec<String> = api
        .rx
        .borrow()
        .enabled_ssls()
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(enabled, [id.as_str()]);

    // GET shows the key redacted; written back, the key is kept.
    let got = api
        .call("GET", &format!("/apisix/admin/ssls/{id}"), None)
        .await;
    assert_eq!(got.body["value"]["key"], REDACTED);
    let mut back = got.body["value"].clone();
    back.as_object_mut().unwrap().remove("create_time");
    back.as_object_mut().unwrap().remove("update_time");
    let r = api.put(&format!("/apisix/admin/ssls/{id}"), &back).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(stored_ssl(&api, &id).unwrap()["key"], k.as_str());
    let list = api.call("GET", "/apisix/admin/ssls", None).await;
    assert!(!list.body.to_string().contains("PRIVATE KEY"));

    let r = api
        .call("DELETE", &format!("/apisix/admin/ssls/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(stored_ssl(&api, &id).is_none());
}

#[tokio::test]
async fn refused_writes_change_nothing() {
    let mut api = Api::new().await;
    let (c, k, _) = cert("app.test");
    let (_, other_key, _) = cert("app.test");
    let before = api.store.inner.data();
    for (body, want) in [
        (
            json!({"cert": c, "key": REDACTED, "snis": ["app.test"]}),
            "property \"key\" is the redaction marker",
        ),
        (
            json!({"cert": c, "key": other_key, "snis": ["app.test"]}),
            "property \"key\" does not match the certificate in \"cert\"",
        ),
        (
            json!({"cert": c, "key": k, "snis": ["app.test"], "type": "client"}),
            "property \"type\" \"client\" is not supported",
        ),
    ] {
        let r = api.put("/apisix/admin/ssls/1", &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        let msg = r.body["error_msg"].as_str().unwrap();
        assert!(msg.contains(want), "{msg}");
        assert!(!msg.contains("PRIVATE KEY"), "{msg}");
        api.assert_unchanged(&before);
    }
}

#[tokio::test]
async fn an_expired_certificate_is_refused_when_new_not_when_kept() {
    let api = Api::new().await;
    let (c, k, not_after) = cert("app.test");
    let r = api
        .put(
            "/apisix/admin/ssls/1",
            &json!({"cert": c, "key": k, "snis": ["app.test"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Later, past its notAfter: its labels can still change...
    api.now.store(not_after + 10, Ordering::SeqCst);
    let r = api
        .call(
            "PATCH",
            "/apisix/admin/ssls/1",
            Some(r#"{"labels": {"team": "a"}}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // ... but it cannot be written as a new ssl.
    let r = api
        .put(
            "/apisix/admin/ssls/2",
            &json!({"cert": c, "key": k, "snis": ["b.test"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.body["error_msg"]
            .as_str()
            .unwrap()
            .contains("property \"cert\" has expired"),
        "{}",
        r.body
    );
}
