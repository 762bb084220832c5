//! The web dashboard in headless Chromium, driven through chromedriver: a real page load on
//! the daemon's TCP listener, live values in the DOM that follow a balloon, and a screenshot.

mod common;
use common::*;
use fantoccini::{ClientBuilder, Locator};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The status code of a plain GET, without a token.
fn status_without_token(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply.lines().next().unwrap_or_default().to_string()
}

async fn text_of(c: &fantoccini::Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn wait_text(c: &fantoccini::Client, css: &str, what: &str, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let text = text_of(c, css).await;
        if done(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "dashboard: {what} not shown in {css} within 45 s; it shows '{text}'; page:\n{}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_live_values_in_a_real_browser() {
    require_vm_prerequisites();
    require_tool("chromium", "chromium");
    require_tool("chromedriver", "chromium-driver");
    let port = free_port();
    let mut host = Host::new();
    host.up_with(
        "1536M",
        r#"
[[vm]]
name = "a"
memory = "384M"
workload = "hold:64M"
"#,
        &format!("[scheduler]\npolicy = \"manual\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    assert!(
        status_without_token(port, "/v1/host").contains("401"),
        "TCP without the token must be refused"
    );
    let url = ok(host.path(), &["dashboard"]).trim().to_string();
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{port}/?token=")),
        "{url}"
    );

    let driver_port = free_port();
    let _driver = Driver(
        Command::new("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"]
        }),
    );
    let webdriver = format!("http://127.0.0.1:{driver_port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let browser = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&webdriver)
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => panic!("chromedriver: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    };

    browser.goto(&url).await.unwrap();
    wait_text(&browser, "#host-budget", "the budget", |t| t == "1536").await;
    wait_text(&browser, "#vm-a .consumed", "a's consumed memory", |t| {
        t.parse::<u64>().is_ok_and(|m| m > 0)
    })
    .await;
    wait_text(&browser, "#vm-a .balloon", "an empty balloon", |t| t == "0").await;
    let state = text_of(&browser, "#ladder .rung.current").await;
    assert!(state.starts_with("high"), "ladder shows '{state}'");

    host.balloon("a", 256);
    wait_text(&browser, "#vm-a .balloon", "the balloon at 128 MiB", |t| {
        t == "128"
    })
    .await;
    wait_text(&browser, "#events", "the balloon event", |t| {
        t.contains("a balloon 384 -> 256 MiB on request")
    })
    .await;
    assert_eq!(text_of(&browser, "#error").await, "");

    let png = browser.screenshot().await.unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&shot, &png).unwrap();
    println!("screenshot: {}", shot.display());
    browser.close().await.unwrap();
}
