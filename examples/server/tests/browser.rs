//! The settings page in a real browser: headless Chromium driven through ChromeDriver
//! (WebDriver), against the example server, as a user would click through it.
//!
//! `scripts/test` installs Debian's `chromium` and `chromium-driver` when they are absent;
//! `CHROMEDRIVER` names another driver.

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{servers::ports::free_port, Server, ADMIN_TOKEN, WEATHER};
use fantoccini::{elements::Element, Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// ChromeDriver on a port of its own, stopped when dropped.
struct Driver(Child, String);

impl Driver {
    fn start() -> Self {
        let program = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
        let port = free_port();
        let child = Command::new(&program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} (scripts/test installs chromium-driver): {e}"));
        Self(child, format!("http://127.0.0.1:{port}"))
    }

    async fn browser(&self) -> Client {
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let started = Instant::now();
        loop {
            let mut builder = ClientBuilder::new(connector.clone());
            builder.capabilities(capabilities.as_object().unwrap().clone());
            match builder.connect(&self.1).await {
                Ok(client) => return client,
                Err(error) if started.elapsed() < Duration::from_secs(20) => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("no browser: {error}"),
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The browser's console since the last call (ChromeDriver's log endpoint).
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

struct Page<'a> {
    browser: &'a Client,
    /// How many console entries were read already (ChromeDriver answers all of them).
    console_read: std::cell::Cell<usize>,
}

impl Page<'_> {
    async fn js(&self, script: &str) -> Value {
        self.browser.execute(script, vec![]).await.unwrap()
    }

    async fn css(&self, selector: &str) -> Element {
        self.browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("{selector}: {e}"))
    }

    /// Waits until `script` (an expression) is true.
    async fn until(&self, what: &str, script: &str) {
        let started = Instant::now();
        while self.js(&format!("return Boolean({script});")).await != json!(true) {
            assert!(started.elapsed() < Duration::from_secs(10), "never: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The row of the key named `name`.
    async fn row(&self, name: &str) -> Element {
        let xpath = format!("//tbody/tr[th[normalize-space()='{name}']]");
        self.browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("row {name}: {e}"))
    }

    async fn cell(&self, name: &str, label: &str) -> String {
        let row = self.row(name).await;
        let cell = row
            .find(Locator::Css(&format!("td[data-label='{label}']")))
            .await
            .unwrap();
        cell.text().await.unwrap()
    }

    async fn click(&self, selector: &str) {
        self.css(selector).await.click().await.unwrap();
    }

    async fn row_action(&self, name: &str, action: &str) {
        let row = self.row(name).await;
        row.find(Locator::Css(&format!("[data-action='{action}']")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Reads the new key from the open dialog, and closes it.
    async fn take_new_key(&self) -> String {
        self.until(
            "the new key's dialog is open",
            "document.getElementById('show-key').open",
        )
        .await;
        assert_eq!(
            self.js("return document.activeElement.id").await,
            "copy",
            "focus on Copy"
        );
        let key = self
            .js("return document.getElementById('secret').value")
            .await;
        let key = key.as_str().unwrap().to_owned();
        assert!(key.starts_with("nvl_"), "{key}");
        self.click("#close-key").await;
        self.until(
            "the dialog is closed",
            "!document.getElementById('show-key').open",
        )
        .await;
        let left = self.js(&format!(
            "return document.documentElement.outerHTML.includes('{key}') || document.getElementById('secret').value !== '' || location.href.includes('{key}')"
        )).await;
        assert_eq!(left, json!(false), "the key stayed on the page");
        key
    }

    /// Errors and CSP violations in the console since the last call.
    async fn console_problems(&self) -> Vec<String> {
        let entries = self.browser.issue_cmd(BrowserLog).await.unwrap();
        let entries = entries.as_array().cloned().unwrap_or_default();
        let new = entries
            .get(self.console_read.get()..)
            .unwrap_or_default()
            .to_vec();
        self.console_read.set(entries.len());
        new.iter()
            .filter(|e| {
                e["level"] == "SEVERE"
                    || e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("Content Security Policy"))
            })
            .map(|e| format!("{} {}", e["timestamp"], e["message"]))
            .collect()
    }
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .map(|b| b["code"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_manages_keys_on_the_settings_page_in_chromium() {
    let server = Server::start(&[]);
    let driver = Driver::start();
    let browser = driver.browser().await;
    let page = Page {
        browser: &browser,
        console_read: std::cell::Cell::new(0),
    };
    let base = format!("http://{}", server.address);

    // Not signed in: a page that says to sign in.
    browser
        .goto(&format!("{base}/settings/api-keys"))
        .await
        .unwrap();
    assert!(browser
        .source()
        .await
        .unwrap()
        .contains("Sign in to manage your API keys"));
    let problems = page.console_problems().await;
    assert!(
        problems.len() == 1 && problems[0].contains("401"),
        "console: {problems:?}"
    );

    // The printed link signs in and lands on the page, the demo key listed with its fields.
    browser.goto(&server.sign_in).await.unwrap();
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        "/settings/api-keys"
    );
    assert_eq!(
        page.cell("Demo key", "Key").await,
        format!("{}…", &server.demo_key[..8])
    );
    assert_eq!(page.cell("Demo key", "Status").await, "Active");
    assert_eq!(page.cell("Demo key", "Last used").await, "Never used");
    let permissions = page.cell("Demo key", "Permissions").await;
    for permission in [
        "generate",
        "projects:read",
        "publish",
        "analytics:read",
        "copilot:chat",
    ] {
        assert!(permissions.contains(permission), "{permissions}");
    }
    assert!(!page.cell("Demo key", "Created").await.is_empty());
    assert!(!page.cell("Demo key", "Expires").await.is_empty());
    assert_eq!(
        page.js("return document.getElementById('plan-notice').hidden")
            .await,
        json!(true)
    );

    // Every control has a name a screen reader says; every button is reachable by Tab.
    let unnamed = page
        .js("return [...document.querySelectorAll('input, select, button')].filter((c) => c.labels?.length === 0 && !c.getAttribute('aria-label') && !c.textContent.trim()).map((c) => c.outerHTML)")
        .await;
    assert_eq!(unnamed, json!([]), "controls without a name");
    let untabbable = page
        .js("return [...document.querySelectorAll('main button, main input, main select')].filter((c) => c.tabIndex < 0).length")
        .await;
    assert_eq!(untabbable, json!(0));

    // Create a key with two permissions and 30 days; read it once; use it.
    page.css("#name")
        .await
        .send_keys("Browser key")
        .await
        .unwrap();
    page.click("input[value='generate']").await;
    page.click("input[value='projects:read']").await;
    page.css("#expiration")
        .await
        .select_by_value("30d")
        .await
        .unwrap();
    page.css("#environment")
        .await
        .send_keys("staging")
        .await
        .unwrap();
    page.click("#create-button").await;
    let key = page.take_new_key().await;
    assert_eq!(
        page.js("return document.activeElement.textContent").await,
        "Browser key",
        "focus on the new row"
    );
    let (status, body) = server.with_key("POST", "/api/v1/generate", &key);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""environment":"staging""#), "{body}");
    let (status, body) = server.with_key("GET", "/api/v1/analytics", &key);
    assert_eq!(
        (status, code(&body)),
        (403, "missing_permission".to_owned())
    );
    assert_eq!(page.cell("Browser key", "Environment").await, "staging");
    assert!(!page
        .cell("Browser key", "Expires")
        .await
        .contains("Expires within 7 days"));

    // Reloaded: the plaintext is nowhere.
    browser.refresh().await.unwrap();
    page.row("Browser key").await;
    assert!(!browser.source().await.unwrap().contains(&key));

    // Rotate with grace "now": the old key is refused, the new one works.
    page.row_action("Browser key", "rotate").await;
    page.until(
        "the rotate dialog is open",
        "document.getElementById('rotate').open",
    )
    .await;
    page.click("input[name='grace'][value='0']").await;
    page.click("#rotate-confirm").await;
    let rotated = page.take_new_key().await;
    assert_ne!(rotated, key);
    let (status, body) = server.with_key("POST", "/api/v1/generate", &key);
    assert_eq!((status, code(&body)), (401, "expired_api_key".to_owned()));
    assert_eq!(server.with_key("POST", "/api/v1/generate", &rotated).0, 200);
    // The old row names its replacement by prefix and offers no second rotation.
    page.until(
        "the old key shows its replacement",
        &format!(
            "[...document.querySelectorAll('tbody tr')].some((tr) => \
             tr.textContent.includes('Replaced by {}…') \
             && tr.querySelector(\"[data-action='rotate']\").disabled)",
            &rotated[..8]
        ),
    )
    .await;

    // Disable, then enable, the replacement (the newest row of that name).
    page.row_action("Browser key", "disable").await;
    page.until(
        "the key shows disabled",
        "[...document.querySelectorAll('tbody tr')][0].textContent.includes('Disabled')",
    )
    .await;
    assert_eq!(
        page.js("return document.activeElement.dataset.action")
            .await,
        "enable",
        "focus stays on the toggle"
    );
    let (status, body) = server.with_key("POST", "/api/v1/generate", &rotated);
    assert_eq!((status, code(&body)), (401, "disabled_api_key".to_owned()));
    page.row_action("Browser key", "enable").await;
    page.until(
        "the key shows active",
        "[...document.querySelectorAll('tbody tr')][0].textContent.includes('Active')",
    )
    .await;
    assert_eq!(server.with_key("POST", "/api/v1/generate", &rotated).0, 200);

    // Delete after confirming; cancelling first changes nothing.
    page.row_action("Demo key", "delete").await;
    page.until(
        "the confirmation is open",
        "document.getElementById('delete').open",
    )
    .await;
    page.click("#delete-cancel").await;
    assert_eq!(
        server
            .with_key("GET", "/api/v1/projects", &server.demo_key)
            .0,
        200
    );
    page.row_action("Demo key", "delete").await;
    page.until(
        "the confirmation is open",
        "document.getElementById('delete').open",
    )
    .await;
    page.click("#delete-confirm").await;
    page.until(
        "the row is gone",
        "![...document.querySelectorAll('tbody th')].some((th) => th.textContent === 'Demo key')",
    )
    .await;
    assert_eq!(
        page.js("return document.activeElement.id").await,
        "keys-heading"
    );
    let activity = page.css("#activity").await.text().await.unwrap();
    for action in [
        "Key deleted",
        "Key enabled",
        "Key disabled",
        "Key rotated",
        "Key created",
    ] {
        assert!(activity.contains(action), "{action} in {activity}");
    }
    assert!(activity.contains("by a user of this account"), "{activity}");
    let (status, body) = server.with_key("GET", "/api/v1/projects", &server.demo_key);
    assert_eq!((status, code(&body)), (401, "invalid_api_key".to_owned()));

    // A narrow window: nothing scrolls sideways.
    browser.set_window_size(390, 900).await.unwrap();
    page.until(
        "the page fits",
        "document.documentElement.scrollWidth <= window.innerWidth",
    )
    .await;
    browser.set_window_size(1280, 1500).await.unwrap();
    page.js("window.scrollTo(0, 0)").await;
    let screenshot = browser.screenshot().await.unwrap();
    let target =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/settings-page.png");
    std::fs::write(&target, screenshot).unwrap();

    let problems = page.console_problems().await;
    assert!(problems.is_empty(), "console: {problems:?}");

    // A starter account: the page says keys need Scale or Business, and creation is refused.
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let (status, body) = server.request(
        "POST",
        "/admin/accounts",
        &[("Authorization", &bearer)],
        r#"{"name": "Small", "plan": "starter"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let account: Value = serde_json::from_str(&body).unwrap();
    let sign_in = format!(
        "return fetch('/demo/sign-in', {{method: 'POST', headers: {{authorization: '{bearer}'}}, body: JSON.stringify({{account_id: '{}'}})}}).then((r) => r.status)",
        account["id"].as_str().unwrap()
    );
    assert_eq!(page.js(&sign_in).await, json!(204));
    browser.refresh().await.unwrap();
    page.until(
        "the plan notice shows",
        "!document.getElementById('plan-notice').hidden",
    )
    .await;
    let notice = page.css("#plan-notice").await.text().await.unwrap();
    assert!(
        notice.contains("API keys need the scale or business plan"),
        "{notice}"
    );
    assert!(notice.contains("starter"), "{notice}");
    assert_eq!(
        page.js("return document.getElementById('create-button').matches(':disabled')")
            .await,
        json!(true)
    );
    let refused = page
        .js("return fetch(document.body.dataset.base + '/keys', {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({name: 'x', permissions: ['generate']})}).then((r) => r.json()).then((b) => b.code)")
        .await;
    assert_eq!(refused, json!("plan_required"));
    assert_eq!(
        page.js("return document.querySelectorAll('tbody tr').length")
            .await,
        json!(0)
    );

    let problems = page.console_problems().await;
    assert!(
        problems
            .iter()
            .all(|p| p.contains("402") || p.contains("404")),
        "console: {problems:?}"
    );
    browser.close().await.unwrap();
    server.signal("TERM");
    assert_eq!(server.wait(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_keys_a_page_at_a_time_and_counts_names_as_the_server_does() {
    let server = Server::start(&[]);
    let account = server.demo_account();
    for i in 0..30 {
        let body = format!(r#"{{"name": "Key {i:02}", "permissions": ["generate"]}}"#);
        let (status, _) = server
            .admin("POST", &format!("/accounts/{account}/keys"), &body)
            .unwrap();
        assert_eq!(status, 201);
    }
    let driver = Driver::start();
    let browser = driver.browser().await;
    let page = Page {
        browser: &browser,
        console_read: std::cell::Cell::new(0),
    };
    browser.goto(&server.sign_in).await.unwrap();
    let rows = "document.querySelectorAll('tbody tr').length";
    page.until("the first page shows", &format!("{rows} === 25"))
        .await;
    page.click("#more").await;
    // 30 made here and the demo key.
    page.until("the rest shows", &format!("{rows} === 31"))
        .await;
    assert_eq!(
        page.js("return document.getElementById('more').hidden")
            .await,
        json!(true)
    );

    // 60 characters that are 120 UTF-16 units: a name the server takes.
    page.js("document.getElementById('name').value = '🔑'.repeat(60);")
        .await;
    page.click("input[name='permissions'][value='generate']")
        .await;
    page.click("#create-button").await;
    let secret = page.take_new_key().await;
    assert!(secret.starts_with("nvl_"));
    // Listed first; the page keeps as many keys as it showed, so the oldest moves to the
    // next page.
    page.row(&"🔑".repeat(60)).await;
    assert_eq!(page.js(&format!("return {rows}")).await, json!(31));
    assert_eq!(
        page.js("return document.getElementById('more').hidden")
            .await,
        json!(false)
    );
    // 101 characters: the page says so, and sends nothing.
    page.js("document.getElementById('name').value = 'x'.repeat(101);")
        .await;
    page.click("input[name='permissions'][value='generate']")
        .await;
    page.click("#create-button").await;
    page.until(
        "the error shows",
        "!document.getElementById('error').hidden",
    )
    .await;
    let said = page.css("#error").await.text().await.unwrap();
    assert!(said.contains("at most 100 characters"), "{said}");
    assert_eq!(page.js(&format!("return {rows}")).await, json!(31));

    browser.close().await.unwrap();
    server.signal("TERM");
    assert_eq!(server.wait(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_offers_what_the_user_may_grant_and_signs_out_in_the_applications_clothes() {
    let server = Server::start_example(WEATHER, &[("WEATHER_ROTATE_AFTER", "1s")]);
    let driver = Driver::start();
    let browser = driver.browser().await;
    let page = Page {
        browser: &browser,
        console_read: std::cell::Cell::new(0),
    };
    browser.goto(&server.sign_in).await.unwrap();
    assert_eq!(browser.title().await.unwrap(), "API Keys · Weather");
    // The demo account is on pro: alerts are the team plan's, so the page does not offer them.
    let offered = |permission: &str| {
        format!("!document.querySelector(\"input[value='{permission}']\").closest('li').hidden")
    };
    page.until(
        "the account is read",
        "document.getElementById('account').textContent",
    )
    .await;
    page.until("forecasts are offered", &offered("forecast:read"))
        .await;
    assert_eq!(
        page.js(&format!("return {}", offered("alerts:write")))
            .await,
        json!(false),
        "alerts are not offered"
    );
    assert_eq!(page.console_problems().await, Vec::<String>::new());
    // The 401 of the sign-in page it lands on is the one entry the console gets after.
    // Three requests with the demo key: once the server has flushed them (every 5 s), its
    // row's chart and its usage view count them.
    for _ in 0..3 {
        let (status, _) = server.with_key("GET", "/api/v1/forecast/oslo", &server.demo_key);
        assert_eq!(status, 200);
    }
    let started = std::time::Instant::now();
    loop {
        browser.refresh().await.unwrap();
        page.until("the chart is drawn", "((c) => c && !c.textContent.includes('…'))(document.querySelector('tbody tr td[data-label=\"Last 7 days\"]'))")
            .await;
        if page.cell("Demo key", "Last 7 days").await == "3 in 7 days" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the usage never showed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        page.js("return document.querySelectorAll('tbody tr svg.chart rect').length")
            .await,
        json!(7),
        "a bar a day"
    );
    page.row_action("Demo key", "usage").await;
    page.until(
        "the usage view is open",
        "document.getElementById('usage').open",
    )
    .await;
    let last_row = |table: &str| {
        format!(
            "return [...document.querySelectorAll('#{table} tbody tr')].map((r) => r.innerText)"
        )
    };
    let hours = page.js(&last_row("usage-hours")).await;
    let hours = hours.as_array().unwrap();
    assert_eq!(hours.len(), 24);
    assert!(hours[23].as_str().unwrap().ends_with("3\t0"), "{hours:?}");
    let days = page.js(&last_row("usage-days")).await;
    assert_eq!(days.as_array().unwrap().len(), 30);
    page.click("#usage-close").await;
    // The demo key is older than the profile's one second: its row says to rotate it.
    let hint = page.css("tbody tr [data-hint='rotation_due']").await;
    assert_eq!(
        hint.text().await.unwrap(),
        "Created more than 1 second ago: rotate it."
    );
    assert_eq!(page.console_problems().await, Vec::<String>::new());
    page.click("nav.app .sign-out button").await;
    page.until(
        "the page asks to sign in",
        "document.title.startsWith('Sign in')",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_used_through_one_permission_is_narrowed_to_it_from_its_hint() {
    // Keys older than 8 s that were used within them can show `unused_permissions`.
    let server = Server::start(&[("NOUVEL_UNUSED_AFTER", "8s")]);
    let account = server.demo_account();
    let (status, made) = server
        .admin(
            "POST",
            &format!("/accounts/{account}/keys"),
            r#"{"name": "Wide", "permissions": ["generate", "projects:read", "publish"]}"#,
        )
        .unwrap();
    assert_eq!(status, 201);
    let wide = made["key"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(8_500)).await;
    let (status, _) = server.with_key("GET", "/api/v1/projects", &wide);
    assert_eq!(status, 200);

    let driver = Driver::start();
    let browser = driver.browser().await;
    let page = Page {
        browser: &browser,
        console_read: std::cell::Cell::new(0),
    };
    browser.goto(&server.sign_in).await.unwrap();
    // The usage is flushed within 5 s; until then the key shows no hint.
    let hint = "tbody tr [data-hint='unused_permissions']";
    let started = std::time::Instant::now();
    while page
        .js(&format!(
            "return document.querySelector(\"{hint}\") !== null"
        ))
        .await
        != json!(true)
    {
        assert!(started.elapsed() < Duration::from_secs(15), "no hint");
        tokio::time::sleep(Duration::from_millis(500)).await;
        browser.refresh().await.unwrap();
        page.row("Wide").await;
    }
    let text = page.css(hint).await.text().await.unwrap();
    assert!(
        text.starts_with("Not used in the last 8 seconds: generate, publish."),
        "{text}"
    );
    page.row_action("Wide", "narrow").await;
    page.until(
        "the rotate dialog is open",
        "document.getElementById('rotate').open",
    )
    .await;
    let kept = page
        .js("return [...document.querySelectorAll('input[name=\"keep\"]:checked')].map((i) => i.value)")
        .await;
    assert_eq!(
        kept,
        json!(["projects:read"]),
        "pre-filled with what the key uses"
    );
    page.click("input[name='grace'][value='0']").await;
    page.click("#rotate-confirm").await;
    let narrowed = page.take_new_key().await;
    let (status, _) = server.with_key("GET", "/api/v1/projects", &narrowed);
    assert_eq!(status, 200);
    for (method, path) in [("POST", "/api/v1/generate"), ("POST", "/api/v1/publish")] {
        let (status, body) = server.with_key(method, path, &narrowed);
        assert_eq!(
            (status, code(&body)),
            (403, "missing_permission".to_owned()),
            "{path}"
        );
    }
    assert_eq!(page.console_problems().await, Vec::<String>::new());
}

#[tokio::test]
async fn the_page_shows_each_limit_and_how_much_of_a_quota_is_used() {
    let server = Server::start(&[]);
    let account = server.demo_account();
    let (status, made) = server
        .admin(
            "POST",
            &format!("/accounts/{account}/keys"),
            r#"{"name": "Quota", "permissions": ["projects:read"], "rate_limits": [
                {"requests": 2, "window_seconds": 60},
                {"requests": 1000, "period": "day", "scope": "account"}]}"#,
        )
        .unwrap();
    assert_eq!(status, 201);
    let key = made["key"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        assert_eq!(server.with_key("GET", "/api/v1/projects", &key).0, 200);
    }

    let driver = Driver::start();
    let browser = driver.browser().await;
    let page = Page {
        browser: &browser,
        console_read: std::cell::Cell::new(0),
    };
    browser.goto(&server.sign_in).await.unwrap();
    // The usage is flushed within 5 s; until then the quota shows none used.
    let used = "return document.querySelector(\"tbody tr [data-limit='day'] meter\")?.value";
    let started = std::time::Instant::now();
    loop {
        page.row("Quota").await;
        if page.js(used).await == json!(2) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the quota's use is not shown"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        browser.refresh().await.unwrap();
    }
    let limits = page.cell("Quota", "Limits").await;
    assert!(limits.contains("2 a minute"), "{limits}");
    assert!(limits.contains("1,000 a day for the account"), "{limits}");
    assert!(limits.contains("2 used, starts again"), "{limits}");
    // Keys on the plan's limits say so too.
    let plan_key = page.cell("Demo key", "Limits").await;
    assert!(plan_key.contains("60 a minute"), "{plan_key}");
    assert_eq!(page.console_problems().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_keys_networks_and_marks_a_key_found_in_public() {
    let dir = common::WorkDir::new();
    let scanner = common::Scanner::new(&dir);
    let server = Server::start_in(
        dir.clone(),
        &[(
            "NOUVEL_SECRET_SCANNING_KEYS",
            scanner.document.to_str().unwrap(),
        )],
    );
    let driver = Driver::start();
    let browser = driver.browser().await;
    let page = Page {
        browser: &browser,
        console_read: std::cell::Cell::new(0),
    };
    browser.goto(&server.sign_in).await.unwrap();
    page.row("Demo key").await;
    let column = "return document.querySelector(\"#keys th[data-label='Networks']\").hidden";
    assert_eq!(page.js(column).await, json!(true), "no key has networks");

    // A key made on the page for two networks, which works from neither of them here.
    page.css("#name").await.send_keys("Office").await.unwrap();
    page.click("input[value='projects:read']").await;
    page.css("#networks")
        .await
        .send_keys("203.0.113.0/24, 2001:db8::/32")
        .await
        .unwrap();
    page.click("#create-button").await;
    let key = page.take_new_key().await;
    assert_eq!(page.js(column).await, json!(false));
    assert_eq!(page.cell("Demo key", "Networks").await, "Anywhere");
    let networks = page.cell("Office", "Networks").await;
    assert!(
        networks.contains("203.0.113.0/24") && networks.contains("2001:db8::/32"),
        "{networks}"
    );
    let (status, body) = server.with_key("GET", "/api/v1/projects", &key);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("network_not_allowed"), "{body}");

    // A network with host bits set: the server's reason, shown on the page.
    page.css("#name").await.send_keys("Bad").await.unwrap();
    page.click("input[value='projects:read']").await;
    page.css("#networks")
        .await
        .send_keys("10.1.2.3/16")
        .await
        .unwrap();
    page.click("#create-button").await;
    page.until(
        "the error names the field",
        "document.getElementById('error').textContent.includes('allowed_networks')",
    )
    .await;

    // GitHub finds the demo key in a gist: disabled, and the page says where.
    let url = "https://gist.github.com/someone/0123abcd";
    let (status, answer) = scanner.report(&server, &server.demo_key, url, "gist");
    assert_eq!(status, 200, "{answer}");
    browser.refresh().await.unwrap();
    let status = page.cell("Demo key", "Status").await;
    assert!(status.starts_with("Disabled"), "{status}");
    assert!(status.contains("Found in public"), "{status}");
    assert!(status.contains(url) && status.contains("gist"), "{status}");
    let link = page
        .js("return document.querySelector('.exposure a')?.getAttribute('href')")
        .await;
    assert_eq!(link, json!(url));
    page.until(
        "the activity names the scanner",
        "document.getElementById('activity').textContent.includes('Key found in public')",
    )
    .await;
    assert_eq!(
        page.console_problems().await.len(),
        1,
        "the refused create's 422"
    );
}
