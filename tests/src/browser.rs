//! A real browser for the dashboard test: Debian's `chromium`, headless, loads a page, lets its
//! scripts run and prints the resulting DOM (`--dump-dom`); [`Dom`] reads that DOM back by
//! `data-testid` and `data-field` attributes, without an HTML or regex crate.
//!
//! `chromium` is found on `PATH`, or at `KITSYNC_CHROMIUM` (`chromedriver` likewise, or at
//! `KITSYNC_CHROMEDRIVER`). With `KITSYNC_DASHBOARD_SCREENSHOTS`
//! set to a directory, every [`Browser::load`] also saves a PNG there, to look at the page.
//!
//! [`Page`] drives one page the way a person does, over WebDriver with the `fantoccini` crate
//! and Debian's `chromedriver` (`chromium-driver`): clicks (WebDriver refuses an element that is
//! hidden or covered), typed text, reloads; its DOM is read back as a [`Dom`] too.

use fantoccini::{ClientBuilder, Locator};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

type Client = fantoccini::Client;

/// How long one browser run may take, wall clock, before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// Headless chromium's flags, for both ways of driving it.
const HEADLESS: [&str; 9] = [
    "--headless=new",
    "--disable-gpu",
    "--no-sandbox",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-sync",
    "--window-size=1280,1600",
];

/// The `chromium` executable, if there is one.
#[must_use]
pub fn chromium() -> Option<PathBuf> {
    installed("KITSYNC_CHROMIUM", "chromium")
}

/// The program `var` names, else `name` on `PATH`.
fn installed(var: &str, name: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| on_path(name))
}

/// Headless chromium with a profile of its own (so parallel tests do not share one).
pub struct Browser {
    exe: PathBuf,
    profile: tempfile::TempDir,
    shots: Option<PathBuf>,
    loads: usize,
}

impl Browser {
    /// # Panics
    /// No `chromium` is installed: a test that needs a browser must not pass without one.
    #[must_use]
    pub fn new() -> Browser {
        let exe = chromium().unwrap_or_else(|| {
            panic!(
                "no chromium on PATH (or KITSYNC_CHROMIUM): `apt-get install chromium`; \
                 .ci/run installs it"
            )
        });
        Browser {
            exe,
            profile: tempfile::tempdir().expect("a profile directory"),
            shots: std::env::var_os("KITSYNC_DASHBOARD_SCREENSHOTS").map(PathBuf::from),
            loads: 0,
        }
    }

    fn run(&self, extra: &[String], url: &str) -> (String, String) {
        let mut cmd = Command::new(&self.exe);
        cmd.args(HEADLESS)
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .args(extra)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("starting chromium");
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(RUN_LIMIT) {
            Ok(out) => out.expect("waiting for chromium"),
            Err(_) => {
                // Only the process this run started.
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                panic!("chromium did not finish within {RUN_LIMIT:?}: {url}");
            }
        };
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "chromium exited with {}: {}",
            out.status,
            tail(&stderr)
        );
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    }

    /// Loads `url` and returns the DOM once the page has settled: its `<body data-state>`
    /// is no longer `loading`. `--virtual-time-budget` lets timers run without waiting for
    /// them and pauses while requests are in flight, so one run normally suffices; a page
    /// still loading is loaded again with a larger budget.
    ///
    /// # Panics
    /// Chromium fails, or the page has not settled after three runs.
    #[must_use]
    pub fn load(&mut self, url: &str) -> Dom {
        self.loads += 1;
        let mut last = String::new();
        for budget in [10_000, 30_000, 90_000] {
            let (html, stderr) = self.run(
                &[
                    format!("--virtual-time-budget={budget}"),
                    "--dump-dom".into(),
                ],
                url,
            );
            let dom = Dom::new(html);
            if dom.state() != "loading" {
                if let Some(dir) = &self.shots {
                    std::fs::create_dir_all(dir).expect("screenshot directory");
                    let file = dir.join(format!("dashboard-{}.png", self.loads));
                    let _ = self.run(
                        &[
                            format!("--virtual-time-budget={budget}"),
                            format!("--screenshot={}", file.display()),
                        ],
                        url,
                    );
                }
                return dom;
            }
            last = stderr;
        }
        panic!(
            "the page was still loading after three runs: {url}\n{}",
            tail(&last)
        );
    }
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

/// How long one WebDriver command, or the page settling after an action, may take.
const STEP_LIMIT: Duration = Duration::from_secs(30);

/// The `chromedriver` executable (Debian's `chromium-driver`), if there is one.
#[must_use]
pub fn chromedriver() -> Option<PathBuf> {
    installed("KITSYNC_CHROMEDRIVER", "chromedriver")
}

/// One page of a headless chromium of its own, driven over WebDriver (`fantoccini` talking
/// to `chromedriver`).
pub struct Page {
    driver: std::process::Child,
    profile: tempfile::TempDir,
    client: Client,
}

impl Page {
    /// Starts chromedriver and a chromium session on `url`.
    ///
    /// # Panics
    /// No chromium or chromedriver, or they do not start within 30 s.
    pub async fn open(url: &str) -> Page {
        let exe = chromium().unwrap_or_else(|| panic!("no chromium on PATH (or KITSYNC_CHROMIUM)"));
        let driver_exe = chromedriver()
            .unwrap_or_else(|| panic!("no chromedriver on PATH (or KITSYNC_CHROMEDRIVER)"));
        let profile = tempfile::tempdir().expect("a profile directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(driver_exe)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so dropping the page ends chromium too.
            .process_group(0)
            .spawn()
            .expect("starting chromedriver");
        let mut args: Vec<String> = HEADLESS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut caps = fantoccini::wd::Capabilities::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": exe, "args": args }),
        );
        let webdriver = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + STEP_LIMIT;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&webdriver)
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no chromium session at {webdriver} within {STEP_LIMIT:?}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let page = Page {
            driver,
            profile,
            client,
        };
        step("goto", page.client.goto(url)).await;
        page
    }

    /// Evaluates `expr` in the page (awaiting a promise); its value.
    ///
    /// # Panics
    /// The expression throws.
    pub async fn eval(&mut self, expr: &str) -> Value {
        step(
            expr,
            self.client.execute(&format!("return ({expr});"), vec![]),
        )
        .await
    }

    /// Waits until `condition` (JavaScript) is true.
    ///
    /// # Panics
    /// It is not within 30 s.
    pub async fn wait_for(&mut self, condition: &str) {
        let deadline = std::time::Instant::now() + STEP_LIMIT;
        while self.eval(&format!("!!({condition})")).await != json!(true) {
            assert!(
                std::time::Instant::now() < deadline,
                "not within {STEP_LIMIT:?}: {condition}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Clicks the element `selector` finds, as a person would: WebDriver scrolls it into view
    /// and refuses an element that is hidden or covered by another one.
    ///
    /// # Panics
    /// Nothing matches, or the element is hidden or covered.
    pub async fn click(&mut self, selector: &str) {
        let element = step(selector, self.client.find(Locator::Css(selector))).await;
        step(&format!("clicking {selector}"), element.click()).await;
    }

    /// Types `text` into the focused element.
    pub async fn type_text(&mut self, text: &str) {
        let focused = step("the focused element", self.client.active_element()).await;
        step(&format!("typing {text:?}"), focused.send_keys(text)).await;
    }

    /// The page's DOM now.
    pub async fn dom_now(&mut self) -> Dom {
        let html = self.eval("document.documentElement.outerHTML").await;
        Dom::new(html.as_str().unwrap_or_default().to_owned())
    }

    /// Clicks `selector`, then waits for the load it starts to finish (`<body data-state>`
    /// leaves `loading`) and returns the DOM.
    pub async fn click_and_settle(&mut self, selector: &str) -> Dom {
        self.eval("document.body.dataset.state = 'acting'").await;
        self.click(selector).await;
        self.settle().await
    }

    /// Waits until the page is settled (neither `acting` nor `loading`); its DOM.
    pub async fn settle(&mut self) -> Dom {
        self.wait_for(
            "document.readyState === 'complete' && document.body \
             && typeof document.body.dataset.state === 'string' \
             && !['acting', 'loading'].includes(document.body.dataset.state)",
        )
        .await;
        self.dom_now().await
    }

    /// Goes to `url` (same origin; a new fragment, say) and loads the page again.
    pub async fn reload_at(&mut self, url: &str) -> Dom {
        // The new address first, synchronously, then a reload that returns once it loaded.
        let target = serde_json::to_string(url).expect("a JSON string");
        self.eval(&format!("history.replaceState(null, '', {target})"))
            .await;
        step("reload", self.client.refresh()).await;
        self.settle().await
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // Chromium leaves chromedriver's process group; its profile directory names it. Its
        // keep-alive connections would otherwise hold the server's graceful shutdown open.
        let profile_arg = format!("--user-data-dir={}", self.profile.path().display());
        for pid in processes_with_arg(&profile_arg) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        // `--`: procps' kill reads a bare `-PGID` after the signal as an option.
        let _ = Command::new("kill")
            .args(["-9", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The processes (from `/proc`) one of whose arguments is exactly `arg`.
fn processes_with_arg(arg: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| cmd.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
        })
        .collect()
}

/// Awaits a WebDriver command for at most [`STEP_LIMIT`]; its result.
///
/// # Panics
/// It fails or takes longer, naming `what`.
async fn step<T, E: std::fmt::Display>(
    what: &str,
    command: impl std::future::Future<Output = Result<T, E>>,
) -> T {
    match tokio::time::timeout(STEP_LIMIT, command).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: no answer within {STEP_LIMIT:?}"),
    }
}

/// `name` in one of `PATH`'s directories.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A dumped DOM (HTML text as chromium serialises it: attributes in double quotes).
pub struct Dom {
    html: String,
}

/// One element of a [`Dom`]: its tag, the text of its opening tag, and its inner HTML.
#[derive(Debug, Clone, Copy)]
pub struct Element<'a> {
    pub tag: &'a str,
    open: &'a str,
    inner: &'a str,
}

const VOID: [&str; 8] = ["input", "br", "img", "meta", "link", "hr", "source", "wbr"];

/// Every element of `html` whose opening tag carries `attr="value"`, outermost first.
fn find_all<'a>(html: &'a str, attr: &str, value: &str) -> Vec<Element<'a>> {
    let needle = format!(" {attr}=\"{}\"", escape_attr(value));
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = html[from..].find(&needle) {
        let at = from + i;
        from = at + needle.len();
        let Some(start) = html[..at].rfind('<') else {
            continue;
        };
        let Some(open_end) = html[at..].find('>').map(|j| at + j) else {
            continue;
        };
        let open = &html[start..=open_end];
        let tag = open[1..]
            .split(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
            .next()
            .unwrap_or_default();
        let body = &html[open_end + 1..];
        let inner = if VOID.contains(&tag) {
            ""
        } else {
            &body[..closing(body, tag)]
        };
        found.push(Element { tag, open, inner });
    }
    found
}

/// Where the `</tag>` that closes an element whose content starts `body` begins.
fn closing(body: &str, tag: &str) -> usize {
    let (open, close) = (format!("<{tag}"), format!("</{tag}>"));
    let mut depth = 0usize;
    let mut i = 0;
    while i < body.len() {
        let rest = &body[i..];
        if rest.starts_with(&close) {
            if depth == 0 {
                return i;
            }
            depth -= 1;
            i += close.len();
        } else if rest.starts_with(&open)
            && rest[open.len()..].starts_with(|c: char| c.is_ascii_whitespace() || c == '>')
        {
            depth += 1;
            i += open.len();
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    body.len()
}

fn escape_attr(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;")
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

impl Dom {
    #[must_use]
    pub fn new(html: String) -> Dom {
        Dom { html }
    }

    /// The whole serialised document.
    #[must_use]
    pub fn html(&self) -> &str {
        &self.html
    }

    /// `<body data-state>`: what the page says it is doing (`loading`, `ready`, `error`,
    /// `login`).
    #[must_use]
    pub fn state(&self) -> String {
        let body = self.html.find("<body").map_or("", |i| &self.html[i..]);
        let end = body.find('>').unwrap_or(0);
        Element {
            tag: "body",
            open: &body[..=end.min(body.len().saturating_sub(1))],
            inner: "",
        }
        .attr("data-state")
        .unwrap_or_default()
    }

    /// Every element with `data-testid="id"`, in document order.
    #[must_use]
    pub fn all(&self, id: &str) -> Vec<Element<'_>> {
        find_all(&self.html, "data-testid", id)
    }

    /// Every element with `attr="value"` (e.g. `id="login"`), in document order.
    #[must_use]
    pub fn find(&self, attr: &str, value: &str) -> Vec<Element<'_>> {
        find_all(&self.html, attr, value)
    }

    /// The one element with `data-testid="id"`.
    ///
    /// # Panics
    /// There is none, or more than one.
    #[must_use]
    pub fn one(&self, id: &str) -> Element<'_> {
        let all = self.all(id);
        assert_eq!(all.len(), 1, "elements with data-testid=\"{id}\"");
        all[0]
    }

    /// The text of the one element with `data-testid="id"`.
    #[must_use]
    pub fn text(&self, id: &str) -> String {
        self.one(id).text()
    }
}

impl<'a> Element<'a> {
    /// An attribute of the opening tag, unescaped; `Some("")` for a bare attribute.
    #[must_use]
    pub fn attr(&self, name: &str) -> Option<String> {
        let open = self.open;
        let mut from = 0;
        while let Some(i) = open[from..].find(name) {
            let at = from + i;
            from = at + name.len();
            let before_ok = open[..at].ends_with(|c: char| c.is_ascii_whitespace());
            let after = &open[at + name.len()..];
            if !before_ok {
                continue;
            }
            if let Some(v) = after.strip_prefix("=\"") {
                return v.find('"').map(|end| unescape(&v[..end]));
            }
            if after.starts_with(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/') {
                return Some(String::new());
            }
        }
        None
    }

    /// The element's text: tags removed, entities decoded, white space collapsed.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut in_tag = false;
        for c in self.inner.chars() {
            match c {
                '<' => in_tag = true,
                '>' if in_tag => {
                    in_tag = false;
                    out.push(' ');
                }
                _ if !in_tag => out.push(c),
                _ => {}
            }
        }
        unescape(&out)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The descendants with `attr="value"` (e.g. `data-field="name"`).
    #[must_use]
    pub fn find(&self, attr: &str, value: &str) -> Vec<Element<'a>> {
        find_all(self.inner, attr, value)
    }

    /// The first descendant `<tag …>`.
    #[must_use]
    pub fn first(&self, tag: &str) -> Option<Element<'a>> {
        let open = format!("<{tag}");
        let mut from = 0;
        while let Some(i) = self.inner[from..].find(&open) {
            let start = from + i;
            from = start + open.len();
            let rest = &self.inner[from..];
            if !rest.starts_with(|c: char| c.is_ascii_whitespace() || c == '>') {
                continue;
            }
            let open_end = from + rest.find('>')?;
            let body = &self.inner[open_end + 1..];
            let inner = if VOID.contains(&tag) {
                ""
            } else {
                &body[..closing(body, tag)]
            };
            return Some(Element {
                tag: &self.inner[start + 1..start + 1 + tag.len()],
                open: &self.inner[start..=open_end],
                inner,
            });
        }
        None
    }

    /// The one descendant with `data-field="field"`.
    ///
    /// # Panics
    /// There is none, or more than one.
    #[must_use]
    pub fn field(&self, field: &str) -> Element<'a> {
        let all = self.find("data-field", field);
        assert_eq!(all.len(), 1, "cells with data-field=\"{field}\"");
        all[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_read_by_attribute_with_nesting_and_entities() {
        let dom = Dom::new(
            r#"<html><body data-state="ready"><div data-testid="a" title="x &amp; &quot;y&quot;"><div>in <b>bold</b></div> &lt;tail&gt;</div>
<table><tr data-testid="row"><td data-field="n">1</td><td data-field="t"><time datetime="2026-01-01T00:00:00Z">2026-01-01 08:00</time></td></tr>
<tr data-testid="row"><td data-field="n">2</td><td data-field="t"><span>never</span></td></tr></table>
<input data-testid="box" checked=""></body></html>"#
                .into(),
        );
        assert_eq!(dom.state(), "ready");
        let a = dom.one("a");
        assert_eq!(a.tag, "div");
        assert_eq!(a.text(), "in bold <tail>");
        assert_eq!(a.attr("title").as_deref(), Some("x & \"y\""));
        let rows = dom.all("row");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].field("n").text(), "2");
        let t = rows[0].field("t").first("time").unwrap();
        assert_eq!(t.attr("datetime").as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(t.text(), "2026-01-01 08:00");
        assert!(rows[1].field("t").first("time").is_none());
        assert_eq!(rows[1].field("t").text(), "never");
        assert_eq!(dom.one("box").attr("checked").as_deref(), Some(""));
        assert_eq!(dom.one("box").attr("hidden"), None);
        assert!(dom.all("missing").is_empty());
    }
}
