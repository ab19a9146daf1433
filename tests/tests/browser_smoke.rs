//! The browser harness against the test provider alone: its login page,
//! a wrong password, the right one, the redirect with a code; and no
//! chromedriver or Chromium process left behind.

use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::browser::Browser;
use integration_tests::provider::{CLIENT_ID, PASSWORD, USER};
use integration_tests::{pid_alive, Httpbin, Provider, ProviderOptions, TestDir};

/// PIDs that `pgrep -f PATTERN` lists (a regex: the profile path has no
/// metacharacters other than `.`, harmless here).
fn pgrep(pattern: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .expect("pgrep runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn login_through_provider_page() {
    let dir = TestDir::for_current_test();
    // The provider sends codes only to registered redirect URIs (a
    // loopback one on any port).
    let options = ProviderOptions {
        env: vec![(
            "REDIRECT_URIS".into(),
            "http://127.0.0.1/anything/cb".into(),
        )],
        ..ProviderOptions::default()
    };
    let provider = Provider::start(dir.path(), options);
    let httpbin = Httpbin::start(dir.path());

    let browser = Browser::start(dir.path());
    eprintln!("browser session started in {:?}", browser.startup);
    let driver_pid = browser.driver().pid().expect("chromedriver runs");
    let profile = browser.profile().to_string_lossy().into_owned();
    assert!(
        !pgrep(&profile).is_empty(),
        "chromium runs with profile {profile}"
    );

    let redirect = httpbin.url("/anything/cb");
    let auth = format!(
        "{}/protocol/openid-connect/auth?response_type=code&client_id={CLIENT_ID}\
         &scope=openid&redirect_uri={redirect}&state=s1&nonce=n1",
        provider.issuer()
    );
    let t0 = Instant::now();
    browser.goto(&auth);
    browser.wait_for_element("#kc-form-login", Duration::from_secs(10));
    assert!(browser.has_element("#username"));
    assert!(!browser.has_element("#input-error"));

    // Wrong password: the form again, with an error.
    browser.login(USER, "not-the-password");
    browser.wait_for_element("#input-error", Duration::from_secs(10));
    assert!(
        browser.has_element("#kc-form-login"),
        "form shown again: {}",
        browser.page_source()
    );
    assert!(!browser.current_url().contains("/anything/cb"));
    eprintln!("error shown: {:?}", browser.text_of("#input-error"));

    // The right one: back at the client's redirect URI with a code.
    let t1 = Instant::now();
    browser.login(USER, PASSWORD);
    let url = browser.wait_for_url(Duration::from_secs(15), |u| u.starts_with(&redirect));
    eprintln!(
        "login (right password → callback) took {:?}; whole flow {:?}",
        t1.elapsed(),
        t0.elapsed()
    );
    assert!(url.contains("code="), "{url}");
    assert!(url.contains("state=s1"), "{url}");
    let text = browser.page_text();
    assert!(text.contains("\"code\""), "httpbin echoes the code: {text}");
    assert!(text.contains("\"s1\""), "httpbin echoes the state: {text}");
    assert!(text.contains("/anything/cb"), "{text}");

    // The provider's session cookie sits on its own origin.
    browser.goto(&provider.url("/"));
    let cookies = browser.cookies();
    eprintln!("provider cookies: {cookies:?}");

    // Tabs.
    assert_eq!(browser.tab_count(), 1);
    assert_eq!(browser.new_tab(), 1);
    browser.goto(&httpbin.url("/anything/tab2"));
    assert!(browser.page_text().contains("/anything/tab2"));
    browser.switch_to_tab(0);
    assert!(browser.current_url().starts_with(&provider.url("/")));

    let t2 = Instant::now();
    drop(browser);
    eprintln!("browser closed in {:?}", t2.elapsed());
    assert!(
        !pid_alive(driver_pid),
        "chromedriver {driver_pid} still runs"
    );
    let left = pgrep(&profile);
    assert!(left.is_empty(), "chromium processes left: {left:?}");
    let drivers = pgrep(&format!("^{}", integration_tests::browser::CHROMEDRIVER));
    assert!(
        !drivers.contains(&driver_pid.to_string()),
        "chromedriver left: {drivers:?}"
    );
}
