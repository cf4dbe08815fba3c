//! A real browser for the dashboard test: Debian's `chromium`, headless, loads a page, lets its
//! scripts run and prints the resulting DOM (`--dump-dom`); [`Dom`] reads that DOM back by
//! `data-testid` and `data-field` attributes, without an HTML or regex crate.
//!
//! `chromium` is found on `PATH`, or at `KITSYNC_CHROMIUM`. With `KITSYNC_DASHBOARD_SCREENSHOTS`
//! set to a directory, every [`Browser::load`] also saves a PNG there, to look at the page.
//!
//! [`Page`] drives one page the way a person does, over the DevTools protocol: mouse clicks at
//! an element's centre (which must be visible and not covered), typed text, reloads; its DOM is
//! read back as a [`Dom`] too.

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

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
    if let Some(p) = std::env::var_os("KITSYNC_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    })
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

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long one protocol call, or the page settling after an action, may take.
const STEP_LIMIT: Duration = Duration::from_secs(30);

/// One page of a headless chromium of its own, driven over the DevTools protocol.
pub struct Page {
    child: std::process::Child,
    _profile: tempfile::TempDir,
    ws: Socket,
    next_id: u64,
}

impl Page {
    /// Starts chromium on `url` and connects to the page.
    ///
    /// # Panics
    /// No chromium, or it does not offer the protocol within 30 s.
    pub async fn open(url: &str) -> Page {
        let exe = chromium().unwrap_or_else(|| panic!("no chromium on PATH (or KITSYNC_CHROMIUM)"));
        let profile = tempfile::tempdir().expect("a profile directory");
        let child = Command::new(exe)
            .args(HEADLESS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--remote-debugging-port=0", "--remote-allow-origins=*"])
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromium");
        // Chromium writes the port it chose (and the browser's path) to this file.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = std::time::Instant::now() + STEP_LIMIT;
        let port: u16 = loop {
            let port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()));
            if let Some(port) = port {
                break port;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chromium wrote no DevToolsActivePort within {STEP_LIMIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // The page's own endpoint, from the target list (HTTP/1.0: the answer ends with the
        // connection).
        let ws_url = loop {
            let list = http_get(port, "/json/list").await;
            let page = list.as_array().and_then(|targets| {
                targets
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
            });
            if let Some(page) = page {
                break page;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no page target: {list}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .unwrap_or_else(|e| panic!("connecting to the page at {ws_url} (port {port}): {e}"));
        let mut page = Page {
            child,
            _profile: profile,
            ws,
            next_id: 0,
        };
        // The tab starts on about:blank: wait for `url` itself.
        let without_fragment = url.split('#').next().unwrap_or(url);
        let target = serde_json::to_string(without_fragment).expect("a JSON string");
        page.wait_for(&format!(
            "location.href.split('#')[0] === {target} && document.readyState === 'complete'"
        ))
        .await;
        page
    }

    /// Calls a protocol method; its result. Events in between are skipped.
    ///
    /// # Panics
    /// The method fails or does not answer within 30 s.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws
            .send(Message::Text(msg.into()))
            .await
            .expect("sending to chromium");
        loop {
            let next = tokio::time::timeout(STEP_LIMIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer within {STEP_LIMIT:?}"));
            let Some(Ok(Message::Text(text))) = next else {
                if matches!(next, Some(Ok(_))) {
                    continue;
                }
                panic!("{method}: the DevTools connection ended: {next:?}");
            };
            let v: Value = serde_json::from_str(&text).expect("protocol JSON");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise); its value.
    ///
    /// # Panics
    /// The expression throws.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expr} threw: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
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

    /// Clicks the centre of the element `selector` finds with the mouse, as a person would:
    /// it must be visible and not covered by another element.
    ///
    /// # Panics
    /// Nothing matches, or the element is hidden or covered.
    pub async fn click(&mut self, selector: &str) {
        let sel = serde_json::to_string(selector).expect("a JSON string");
        let at = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return 'missing'; \
                 e.scrollIntoView({{ block: 'center' }}); const r = e.getBoundingClientRect(); \
                 if (r.width === 0 || r.height === 0) return 'hidden'; \
                 const x = r.left + r.width / 2, y = r.top + r.height / 2; \
                 const top = document.elementFromPoint(x, y); \
                 if (!top || !(e === top || e.contains(top) || top.contains(e) \
                   || (top.tagName === 'LABEL' && top.control === e))) \
                   return 'covered by ' + (top ? top.outerHTML.slice(0, 80) : 'nothing'); \
                 return [x, y]; }})()"
            ))
            .await;
        let Some([x, y]) = at.as_array().map(|a| [a[0].clone(), a[1].clone()]) else {
            panic!("cannot click {selector}: {at}");
        };
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// Types `text` into the focused element.
    pub async fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({ "text": text })).await;
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
        self.call("Page.enable", json!({})).await;
        // The new address first, synchronously (a fragment-only `Page.navigate` may still be
        // under way when the reload starts, which would then reload the old address).
        let target = serde_json::to_string(url).expect("a JSON string");
        self.eval(&format!("history.replaceState(null, '', {target})"))
            .await;
        // The reload's answer and then its load event (events before the answer count too).
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": "Page.reload", "params": {} }).to_string();
        self.ws
            .send(Message::Text(msg.into()))
            .await
            .expect("sending to chromium");
        let (mut answered, mut loaded) = (false, false);
        while !(answered && loaded) {
            let next = tokio::time::timeout(STEP_LIMIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("the reload did not finish within {STEP_LIMIT:?}"));
            if let Some(Ok(Message::Text(text))) = next {
                let v: Value = serde_json::from_str(&text).expect("protocol JSON");
                answered |= v["id"] == id;
                loaded |= answered && v["method"] == "Page.loadEventFired";
            } else if !matches!(next, Some(Ok(_))) {
                panic!("the DevTools connection ended: {next:?}");
            }
        }
        self.call("Page.disable", json!({})).await;
        self.settle().await
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on the DevTools HTTP endpoint; the JSON answer (`Null` if it is not JSON yet).
/// HTTP/1.1 (chromium does not answer HTTP/1.0), read up to its `Content-Length`.
async fn http_get(port: u16, path: &str) -> Value {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the DevTools endpoint");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("asking the DevTools endpoint");
    let mut answer: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = tokio::time::timeout(STEP_LIMIT, s.read(&mut buf))
            .await
            .expect("the DevTools endpoint answers")
            .expect("reading its answer");
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            if n == 0 || length.is_some_and(|len| body.len() >= len) {
                return serde_json::from_str(body).unwrap_or(Value::Null);
            }
        } else if n == 0 {
            return Value::Null;
        }
    }
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
