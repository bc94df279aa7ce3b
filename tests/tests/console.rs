//! The web console through the real collector: every route's sign-in, CSRF and role checks,
//! hostile text rendered as text, and a real headless Chromium doing what a responder does
//! (sign in, find the host, collect, verify, search the timeline, annotate, save a search).
//! Screenshots go to `target/console-screenshots/` for a person to look at.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::Duration;

use cairn_harness::serde_json::Value;
use cairn_harness::*;

fn api_token(collector: &Collector, name: &str, role: &str) -> String {
    let mut cmd = Command::new(bin("cairn-collector").unwrap());
    cmd.args(["token", "api", "--data"])
        .arg(&collector.data)
        .args(["--name", name, "--role", role]);
    let out = run(cmd, Duration::from_secs(30)).unwrap().ok().unwrap();
    out.stdout.trim().to_string()
}

fn console(collector: &Collector) -> ConsoleClient {
    ConsoleClient::new(&collector.api_url(), &collector.init.ca_cert).unwrap()
}

/// A process whose argv is hostile markup, quotes and bytes that are not UTF-8, alive while a
/// volatile collection reads /proc.
fn hostile_process() -> KillOnDrop {
    let child = Command::new("sh")
        .arg("-c")
        .arg("while :; do sleep 1; done")
        .arg("<script>alert('argv')</script>")
        .arg("name with \"double\" and 'single' quotes")
        .arg(
            <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(vec![
                b'b', b'a', b'd', 0xff, 0xfe, b'<', b'i', b'>',
            ]),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

#[test]
fn every_console_route_needs_a_session_a_csrf_token_and_the_right_role() {
    let work = workdir("console-routes").unwrap();
    let (collector, _agent, host_id) = collector_with_agent(work.path()).unwrap();
    let _hostile = hostile_process();
    let reason = "<script>alert('reason')</script> \"quoted\" reason";
    let c = collector
        .collect_wait(&host_id, "volatile", reason, &[], Duration::from_secs(300))
        .unwrap();
    let cid = s(&c, "id").unwrap();
    let item = items(&c)
        .into_iter()
        .find(|i| i["status"] == "sealed")
        .unwrap();
    let iid = s(&item, "id").unwrap();

    // Nobody signed in: pages send to the sign-in page, actions are refused.
    let mut anon = console(&collector);
    for path in [
        "/".to_string(),
        "/architecture".into(),
        "/collections".into(),
        format!("/collections/{cid}"),
        format!("/collections/{cid}/archive"),
        format!("/items/{iid}/raw"),
        format!("/hosts/{host_id}"),
        "/timeline".into(),
        "/timeline?query=kind:process_exec".into(),
        "/timeline/stack?field=exe".into(),
        "/timeline/values?field=kind".into(),
        "/timeline/events/1".into(),
        "/timeline/events/1/json".into(),
        "/timeline/events/1/context".into(),
        "/cases".into(),
        "/cases/1".into(),
        "/cases/1/export".into(),
    ] {
        let p = anon.get(&path).unwrap();
        assert_eq!(p.status, 303, "GET {path} without a session: {p:?}");
        assert!(
            p.location
                .as_deref()
                .unwrap_or("")
                .starts_with("/login?next="),
            "GET {path}: {p:?}"
        );
    }
    let posts = [
        format!("/hosts/{host_id}/collect"),
        format!("/hosts/{host_id}/contain"),
        format!("/collections/{cid}/verify"),
        "/timeline/searches".to_string(),
        "/timeline/searches/x/rename".into(),
        "/timeline/searches/x/delete".into(),
        "/notes".into(),
        "/cases".into(),
        "/cases/1/status".into(),
        "/cases/1/links".into(),
        "/cases/1/links/delete".into(),
        "/cases/1/last-breath".into(),
    ];
    for path in &posts {
        let p = anon.post(path, &[("csrf", "guess")]).unwrap();
        assert_eq!(p.status, 401, "POST {path} without a session: {p:?}");
    }
    assert_eq!(anon.get("/login").unwrap().status, 200);
    assert_eq!(anon.get("/assets/console.css").unwrap().status, 200);

    // A trigger token is a machine's: it cannot sign in.
    let trigger = api_token(&collector, "soar", "trigger");
    let p = anon.sign_in(&trigger).unwrap();
    assert_eq!(p.status, 403, "{p:?}");
    assert!(anon.cookie.is_none());
    assert_eq!(anon.sign_in("cairn_api_wrong").unwrap().status, 401);
    assert!(anon.cookie.is_none());

    // An analyst: every state change needs the session's CSRF token.
    let mut admin = console(&collector);
    let p = admin.sign_in(&collector.init.admin_token).unwrap();
    assert_eq!(p.status, 303, "{p:?}");
    assert!(admin
        .cookie
        .as_deref()
        .unwrap()
        .starts_with("cairn_session="));
    for path in &posts {
        // Refused: 403 for the token, or 422 when the form lacks what the action needs.
        let p = admin.post(path, &[("csrf", "not-the-token")]).unwrap();
        assert!(
            p.status == 403 || p.status == 422,
            "POST {path} with a wrong CSRF token: {p:?}"
        );
        let p = admin.post(path, &[]).unwrap();
        assert!(
            p.status == 403 || p.status == 422 || p.status == 400,
            "POST {path} without a CSRF token: {p:?}"
        );
        assert_ne!(p.status / 100, 2, "POST {path} without CSRF succeeded");
    }
    assert!(collector
        .hosts()
        .unwrap()
        .iter()
        .any(|h| h["id"] == host_id.as_str()));
    let before = collector.api_get("/api/v1/collections").unwrap();
    for csrf in ["", "not-the-token"] {
        let p = admin
            .post(
                &format!("/hosts/{host_id}/collect"),
                &[
                    ("csrf", csrf),
                    ("profile", "volatile"),
                    ("reason", "no csrf"),
                ],
            )
            .unwrap();
        assert_eq!(
            p.status, 403,
            "a whole collect form with CSRF {csrf:?}: {p:?}"
        );
        assert!(p.body.contains("CSRF"), "{p:?}");
    }
    assert_eq!(
        collector.api_get("/api/v1/collections").unwrap()["collections"]
            .as_array()
            .map(Vec::len),
        before["collections"].as_array().map(Vec::len),
        "a POST without CSRF started a collection"
    );
    // Freeze a process tree from the host's page, see it frozen (the kernel agrees), thaw it.
    let mut sleeper = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let pid = sleeper.id().to_string();
    let state_of = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim().chars().next()))
            .flatten()
    };
    for (action, shown, want) in [
        ("freeze", "FROZEN", 'T'),
        ("thaw", "Nothing is isolated, frozen or marked", 'S'),
    ] {
        let p = admin
            .post_csrf(
                &format!("/hosts/{host_id}/contain"),
                &[
                    ("action", action),
                    ("pid", &pid),
                    ("reason", "IR-15 <console>"),
                ],
            )
            .unwrap();
        assert_eq!(p.status, 303, "{action}: {p:?}");
        wait_for(
            &format!("the host page to say {shown}"),
            Duration::from_secs(60),
            || {
                let page = admin.get(&format!("/hosts/{host_id}")).unwrap().body;
                Ok(page.contains(shown).then_some(()))
            },
        )
        .unwrap();
        assert_eq!(state_of(&pid), Some(want), "after {action}");
    }
    let page = admin.get(&format!("/hosts/{host_id}")).unwrap().body;
    assert!(
        page.contains("IR-15 &lt;console&gt;"),
        "the reason is shown as text"
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let p = admin
        .post_csrf("/cases", &[("title", "<b>web-1</b> intrusion")])
        .unwrap();
    assert_eq!(p.status, 303, "{p:?}");
    let case = p.location.clone().unwrap();
    assert!(case.starts_with("/cases/"), "{case}");
    // Every host of a case marked for a last breath, from the case.
    let p = admin
        .post_csrf(
            &format!("{case}/links"),
            &[("target", "collection"), ("target_id", cid.as_str())],
        )
        .unwrap();
    assert_eq!(p.status, 303, "{p:?}");
    assert!(admin.get(&case).unwrap().body.contains("case-last-breath"));
    let p = admin
        .post_csrf(
            &format!("{case}/last-breath"),
            &[("reason", "ASG may scale in")],
        )
        .unwrap();
    assert_eq!(p.status, 303, "{p:?}");
    let marks = collector
        .api_get(&format!("/api/v1/hosts/{host_id}/containment"))
        .unwrap();
    let mark = &marks["history"][0];
    assert_eq!(mark["action"], "mark_last_breath", "{marks:#}");
    assert!(
        mark["reason"]
            .as_str()
            .unwrap()
            .contains("ASG may scale in"),
        "{mark}"
    );

    // What the host put in argv and the reason are shown as text.
    for path in [
        "/collections".to_string(),
        format!("/collections/{cid}"),
        format!("/hosts/{host_id}"),
        "/timeline?query=%22alert%28%27argv%27%29%22".into(),
        case.clone(),
    ] {
        let p = admin.get(&path).unwrap();
        assert_eq!(p.status, 200, "GET {path}: {p:?}");
        for raw in ["<script>alert", "<b>web-1", "<i>", "\"double\" and"] {
            assert!(
                !p.body.contains(raw),
                "GET {path} carries {raw:?} unescaped"
            );
        }
    }
    let host_page = admin.get(&format!("/hosts/{host_id}")).unwrap().body;
    assert!(
        host_page.contains("&lt;script&gt;alert('argv')&lt;/script&gt;")
            || host_page.contains("&lt;script&gt;alert(&#39;argv&#39;)&lt;/script&gt;"),
        "the hostile argv is not on the host's process list as text"
    );
    assert!(host_page.contains("&quot;double&quot;"));
    assert!(
        host_page.contains("bad\u{fffd}\u{fffd}&lt;i&gt;"),
        "non-UTF-8 argv"
    );
    let timeline = admin
        .get("/timeline?query=%22alert%28%27argv%27%29%22")
        .unwrap();
    assert!(
        timeline.body.contains("&lt;script&gt;alert"),
        "the hostile argv is not in the timeline as text"
    );
    assert!(
        admin
            .get(&format!("/collections/{cid}"))
            .unwrap()
            .body
            .contains("&lt;script&gt;alert(&#39;reason&#39;)")
            || admin
                .get(&format!("/collections/{cid}"))
                .unwrap()
                .body
                .contains("&lt;script&gt;alert('reason')"),
    );

    // A viewer looks and cannot act.
    let viewer_token = api_token(&collector, "auditor", "viewer");
    let mut viewer = console(&collector);
    assert_eq!(viewer.sign_in(&viewer_token).unwrap().status, 303);
    assert_eq!(viewer.get("/").unwrap().status, 200);
    // The architecture view: a host with no cloud context is in no group, and the page says so.
    let arch = viewer.get("/architecture").unwrap();
    assert_eq!(arch.status, 200);
    assert!(arch.body.contains("in no group"), "{}", arch.body);
    assert_eq!(
        viewer.get(&format!("/collections/{cid}")).unwrap().status,
        200
    );
    let p = viewer
        .post_csrf(
            &format!("/hosts/{host_id}/collect"),
            &[("profile", "volatile"), ("reason", "viewer tries")],
        )
        .unwrap();
    assert_eq!(p.status, 403, "a viewer requested a collection: {p:?}");
    let p = viewer
        .post_csrf(
            &format!("/hosts/{host_id}/contain"),
            &[("action", "isolate"), ("reason", "viewer tries")],
        )
        .unwrap();
    assert_eq!(p.status, 403, "a viewer asked for an isolation: {p:?}");
    let p = viewer
        .post_csrf("/cases", &[("title", "viewer case")])
        .unwrap();
    assert_eq!(p.status, 403, "{p:?}");
    let p = viewer
        .post_csrf(
            "/notes",
            &[
                ("target", "collection"),
                ("target_id", &cid),
                ("note", "comment"),
                ("text", "viewer comment"),
            ],
        )
        .unwrap();
    assert_eq!(p.status, 403, "{p:?}");
    // Signing out ends the session on the server, not only in the browser.
    let cookie = viewer.cookie.clone().unwrap();
    let p = viewer.post_csrf("/logout", &[]).unwrap();
    assert_eq!(p.status, 303);
    viewer.cookie = Some(cookie);
    assert_eq!(
        viewer.get("/").unwrap().status,
        303,
        "the old cookie still works"
    );
}

fn link(collector: &Collector) -> String {
    collector.console_link("responder", "admin").unwrap()
}

/// The heading of a collection's page once it is finished (the page refreshes itself).
fn finished_heading(b: &Browser) -> String {
    wait_for("the collection to finish", Duration::from_secs(300), || {
        // The form's redirect may not have landed yet: only a collection's page counts.
        if !b.url()?.contains("/collections/") {
            return Ok(None);
        }
        let h = b.script("return document.querySelector('h1').innerText")?;
        let h = h.as_str().unwrap_or("").to_string();
        let running = ["requested", "queued", "running", "paused"]
            .iter()
            .any(|s| h.contains(s));
        Ok((!running && !h.is_empty()).then_some(h))
    })
    .unwrap()
}

fn count_text(b: &Browser) -> String {
    b.text(&b.find("p.count").unwrap()).unwrap()
}

#[test]
fn a_responder_works_an_incident_in_a_real_browser() {
    let work = workdir("console-browser").unwrap();
    let (collector, _agent, host_id) = collector_with_agent(work.path()).unwrap();
    let shots =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    let b = Browser::start(work.path(), &shots).unwrap();

    // Sign in with a one-time link; the fleet lists the agent.
    let link = link(&collector);
    b.goto(&link).unwrap();
    b.wait_text("Fleet", Duration::from_secs(20), false)
        .unwrap();
    let hostname = collector
        .hosts()
        .unwrap()
        .into_iter()
        .find(|h| h["id"] == host_id.as_str())
        .map(|h| h["hostname"].as_str().unwrap_or("").to_string())
        .unwrap();
    b.wait_text(&hostname, Duration::from_secs(20), true)
        .unwrap();
    b.screenshot("01-fleet").unwrap();
    // A link is used once.
    b.goto(&link).unwrap();
    b.wait_text("used already", Duration::from_secs(10), false)
        .unwrap();
    b.goto(&format!("{}/", collector.api_url())).unwrap();

    // Request a volatile collection from the host's page and watch it become sealed.
    let host_link = b.find(&format!("a[href='/hosts/{host_id}']"));
    b.click(&host_link.unwrap()).unwrap();
    let reason = b
        .find("form.collect textarea[name=reason], form.collect input[name=reason]")
        .unwrap();
    b.type_into(&reason, "browser: suspicious outbound connection")
        .unwrap();
    b.screenshot("02-host").unwrap();
    b.click(&b.find("form.collect button[type=submit]").unwrap())
        .unwrap();
    // The collection's own status, in its heading (items say "sealed" before it is).
    let heading = finished_heading(&b);
    assert!(heading.contains("sealed"), "{heading}");
    b.screenshot("03-collection-sealed").unwrap();

    // Verify its custody.
    b.click(&b.find("form[action$='/verify'] button").unwrap())
        .unwrap();
    b.wait_text("custody intact", Duration::from_secs(120), false)
        .unwrap();
    b.screenshot("04-custody-verified").unwrap();

    // The timeline: a facet click narrows the search, an alt-click excludes a value.
    b.goto(&format!("{}/timeline", collector.api_url()))
        .unwrap();
    let all = count_text(&b);
    let kinds = b
        .find_all("section.facet[data-field=kind] a.include")
        .unwrap();
    assert!(kinds.len() >= 2, "fewer than two kinds in the timeline");
    let first_kind = b.text(&kinds[0]).unwrap();
    b.click(&kinds[0]).unwrap();
    b.wait(".query-error, p.count", Duration::from_secs(20))
        .unwrap();
    assert!(b.url().unwrap().contains("kind%3A"), "{}", b.url().unwrap());
    let narrowed = count_text(&b);
    assert_ne!(narrowed, all, "a facet click did not change the counts");
    b.screenshot("05-timeline-facet").unwrap();
    b.goto(&format!("{}/timeline", collector.api_url()))
        .unwrap();
    let kinds = b
        .find_all("section.facet[data-field=kind] a.include")
        .unwrap();
    let excluded = b.text(&kinds[0]).unwrap();
    assert_eq!(excluded, first_kind);
    b.alt_click(&kinds[0]).unwrap();
    b.wait_text("events", Duration::from_secs(20), false)
        .unwrap();
    assert!(
        b.url().unwrap().contains("-kind%3A"),
        "{}",
        b.url().unwrap()
    );
    assert_ne!(
        count_text(&b),
        all,
        "excluding a kind did not change the counts"
    );
    let facet_kinds: Vec<String> = b
        .find_all("section.facet[data-field=kind] a.include")
        .unwrap()
        .iter()
        .map(|e| b.text(e).unwrap())
        .collect();
    assert!(
        !facet_kinds.contains(&excluded),
        "{excluded} still in the kind facet after excluding it: {facet_kinds:?}"
    );
    b.screenshot("06-timeline-excluded").unwrap();

    // An event: its drawer, its context, a star and a comment.
    b.click(&b.find("table.events tbody tr[data-event] td.time").unwrap())
        .unwrap();
    b.wait("#drawer:not([hidden]) pre", Duration::from_secs(10))
        .unwrap();
    b.wait_text("\"host_id\"", Duration::from_secs(10), false)
        .unwrap();
    b.screenshot("07-event-drawer").unwrap();
    b.click(&b.find("table.events tbody a.event").unwrap())
        .unwrap();
    b.wait("section.notes", Duration::from_secs(10)).unwrap();
    let event_url = b.url().unwrap();
    b.click(&b.find("a[href$='/context']").unwrap()).unwrap();
    b.wait("tr.focus", Duration::from_secs(10)).unwrap();
    b.screenshot("08-event-context").unwrap();
    b.goto(&event_url).unwrap();
    b.click(&b.find("button.star").unwrap()).unwrap();
    b.wait_text("★ 1", Duration::from_secs(10), false).unwrap();
    let comment = b.find("form.comment textarea").unwrap();
    b.type_into(&comment, "beacon to 203.0.113.7 <b>not bold</b>")
        .unwrap();
    b.click(&b.find("form.comment button").unwrap()).unwrap();
    b.wait_text(
        "beacon to 203.0.113.7 <b>not bold</b>",
        Duration::from_secs(10),
        false,
    )
    .unwrap();
    b.screenshot("09-event-annotated").unwrap();

    // Save a search, reload, run it again.
    b.goto(&format!(
        "{}/timeline?query=kind%3Aprocess_start&last=7d",
        collector.api_url()
    ))
    .unwrap();
    let name = b.find("form.save input[name=name]").unwrap();
    b.type_into(&name, "process snapshot, last week").unwrap();
    b.click(&b.find("form.save button").unwrap()).unwrap();
    b.wait_text(
        "process snapshot, last week",
        Duration::from_secs(10),
        false,
    )
    .unwrap();
    b.goto(&format!("{}/timeline", collector.api_url()))
        .unwrap();
    b.click(&b.find("section.saved li a").unwrap()).unwrap();
    b.wait("#query", Duration::from_secs(10)).unwrap();
    let q = b
        .script("return document.getElementById('query').value")
        .unwrap();
    assert_eq!(q, Value::String("kind:process_start".into()));
    let last = b
        .script("return document.querySelector('select[name=last]').value")
        .unwrap();
    assert_eq!(
        last,
        Value::String("7d".into()),
        "the range did not stay relative"
    );
    b.screenshot("10-saved-search").unwrap();

    // A failed acquisition shows as failed: this kernel has no physical memory source.
    b.goto(&format!("{}/hosts/{host_id}", collector.api_url()))
        .unwrap();
    b.script("document.querySelector('form.collect select[name=profile]').value = 'full'")
        .unwrap();
    let reason = b
        .find("form.collect textarea[name=reason], form.collect input[name=reason]")
        .unwrap();
    b.type_into(&reason, "browser: RAM please").unwrap();
    b.click(&b.find("form.collect button[type=submit]").unwrap())
        .unwrap();
    b.wait_text("acquisition failed", Duration::from_secs(300), false)
        .unwrap();
    let page = b.source().unwrap();
    assert!(
        !page.contains("physical-memory.lime</td><td>memory</td><td class=\"num\">0 B</td><td><span class=\"badge ok\">sealed"),
        "physical memory shown as sealed"
    );
    let heading = finished_heading(&b);
    assert!(
        heading.contains("partial") && !heading.contains("sealed"),
        "a collection whose RAM capture failed is headed {heading:?}"
    );
    b.screenshot("11-failed-acquisition").unwrap();
}
