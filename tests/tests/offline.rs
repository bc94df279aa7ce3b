//! Offline collection: `cairn-agent collect --out DIR` on a host without a network, then
//! `cairn import DIR` on a collector gives the same evidence, byte for byte.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use cairn_harness::*;
use serde_json::Value;

#[test]
fn offline_collection_imports_byte_for_byte() {
    let work = workdir("offline").unwrap();
    let out_dir = work.path().join("offline-collection");
    let mut cmd = Command::new(bin("cairn-agent").unwrap());
    cmd.env_remove("CAIRN_AGENT_STATE")
        .args([
            "collect",
            "--profile",
            "volatile",
            "--reason",
            "e2e offline",
            "--out",
        ])
        .arg(&out_dir);
    run(cmd, Duration::from_secs(180)).unwrap().ok().unwrap();
    assert!(
        out_dir.join("collection.json").is_file(),
        "no collection.json in {}",
        out_dir.display()
    );

    // What the agent wrote: item id -> sha256, from DIR/items/*.manifest.json.
    let mut on_disk: BTreeMap<String, String> = BTreeMap::new();
    for entry in std::fs::read_dir(out_dir.join("items")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".manifest.json") {
            let m: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            let id = m["item_id"].as_str().unwrap_or(stem).to_string();
            on_disk.insert(id, s(&m, "sha256").unwrap());
        }
    }
    assert!(
        !on_disk.is_empty(),
        "no *.manifest.json under {}/items",
        out_dir.display()
    );

    let collector = Collector::start(work.path()).unwrap();
    let dir = out_dir.to_string_lossy().into_owned();
    let imported = collector
        .cli_raw(&["import", &dir], Duration::from_secs(300))
        .unwrap();
    // `import --json` prints the collection (or its id); a non-zero exit for a partial
    // collection still prints it, and the status assertion below explains the failure.
    let cid = match imported.json() {
        Ok(v) => v["id"]
            .as_str()
            .or(v["collection_id"].as_str())
            .unwrap_or_else(|| panic!("{}", imported.describe("printed no collection id")))
            .to_string(),
        Err(_) => {
            assert!(imported.success(), "{}", imported.describe("failed"));
            imported.stdout.trim().to_string()
        }
    };
    let collection = collector.show(&cid).unwrap();
    assert_eq!(collection["status"], "sealed", "{}", summary(&collection));

    let mut in_collector: BTreeMap<String, String> = BTreeMap::new();
    for item in items(&collection) {
        assert_eq!(
            item["status"], "sealed",
            "imported item not sealed: {item:#}"
        );
        in_collector.insert(s(&item, "id").unwrap(), s(&item, "sha256").unwrap());
    }
    assert_eq!(
        in_collector, on_disk,
        "imported items (id -> sha256) differ from the offline manifests"
    );

    // One exported item is the exact bytes.
    let (id, sha) = on_disk.iter().next().unwrap();
    let out = work.path().join("exported");
    collector.export(id, &out).unwrap();
    assert_eq!(&sha256sum_cli(&out).unwrap(), sha, "exported item {id}");
}

/// `collect --out DIR --encrypt-to age1…`: each item file is the age encryption of exactly the
/// clear `.cairn` bytes, which the `age` CLI decrypts with the identity; manifests stay clear.
#[test]
fn encrypted_offline_collection_decrypts_with_age_to_the_same_evidence() {
    assert!(
        have_command("age") && have_command("age-keygen"),
        "the age CLI is needed: `apt-get install age` (`cargo xtask setup` does)"
    );
    let work = workdir("offline-encrypted").unwrap();
    let key = work.path().join("collector.key");
    let mut keygen = Command::new("age-keygen");
    keygen.arg("-o").arg(&key);
    run(keygen, CLI_TIMEOUT).unwrap().ok().unwrap();
    let mut public = Command::new("age-keygen");
    public.arg("-y").arg(&key);
    let recipient = run(public, CLI_TIMEOUT)
        .unwrap()
        .ok()
        .unwrap()
        .stdout
        .trim()
        .to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");

    let evidence = work.path().join("evidence.bin");
    let sha = write_random_file(&evidence, 10 << 20, 0xA6E).unwrap();
    let state = work.path().join("state");
    let collect = |out: &std::path::Path, flags: &[&str]| {
        let mut cmd = Command::new(bin("cairn-agent").unwrap());
        cmd.env_remove("CAIRN_AGENT_STATE")
            .arg("--state-dir")
            .arg(&state)
            .args(["collect", "--profile", "file", "--path"])
            .arg(&evidence)
            .arg("--out")
            .arg(out)
            .args(flags);
        run(cmd, Duration::from_secs(180)).unwrap()
    };
    let out = work.path().join("usb-stick");
    collect(&out, &["--encrypt-to", &recipient]).ok().unwrap();

    let record: Value =
        serde_json::from_slice(&std::fs::read(out.join("collection.json")).unwrap()).unwrap();
    assert_eq!(record["encrypted_to"], recipient.as_str(), "{record:#}");
    let id = record["items"][0].as_str().unwrap().to_string();
    let items_dir = out.join("items");
    let sealed = items_dir.join(format!("{id}.cairn.age"));
    assert!(sealed.is_file(), "no {}", sealed.display());
    assert!(
        !items_dir.join(format!("{id}.cairn")).exists(),
        "a clear copy was left"
    );
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(items_dir.join(format!("{id}.manifest.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["sha256"], sha.as_str(), "the manifest stays clear");
    let ciphertext = std::fs::read(&sealed).unwrap();
    assert!(ciphertext.starts_with(b"age-encryption.org/v1\n"));
    let head = std::fs::read(&evidence).unwrap()[..64].to_vec();
    assert!(
        !ciphertext.windows(64).any(|w| w == head.as_slice()),
        "the evidence is readable in the encrypted file"
    );

    // Without the key the responder cannot unpack it, and is told why.
    let mut unpack = Command::new(bin("cairn-agent").unwrap());
    unpack
        .arg("unpack")
        .arg(&out)
        .args(["--item", &id, "--to"])
        .arg(work.path().join("nope.bin"));
    let refused = run(unpack, CLI_TIMEOUT).unwrap();
    assert!(!refused.success());
    assert!(
        refused.stderr.contains("encrypted to the collector's key"),
        "{}",
        refused.stderr
    );

    // With it, `age -d` gives back a clear collection that unpacks to the file.
    let clear = work.path().join("clear");
    std::fs::create_dir_all(clear.join("items")).unwrap();
    let mut age = Command::new("age");
    age.arg("-d")
        .arg("-i")
        .arg(&key)
        .arg("-o")
        .arg(clear.join(format!("items/{id}.cairn")))
        .arg(&sealed);
    run(age, CLI_TIMEOUT).unwrap().ok().unwrap();
    std::fs::copy(
        items_dir.join(format!("{id}.manifest.json")),
        clear.join(format!("items/{id}.manifest.json")),
    )
    .unwrap();
    let restored = work.path().join("restored.bin");
    let mut unpack = Command::new(bin("cairn-agent").unwrap());
    unpack
        .arg("unpack")
        .arg(&clear)
        .args(["--item", &id, "--to"])
        .arg(&restored);
    run(unpack, CLI_TIMEOUT).unwrap().ok().unwrap();
    assert_eq!(sha256_file(&restored).unwrap(), sha);

    // --encrypt: the collector's recipient, once the agent has one; a clear error before.
    let without = collect(&work.path().join("no-recipient"), &["--encrypt"]);
    assert!(!without.success(), "{}", without.describe("should refuse"));
    assert!(
        without.stderr.contains("--encrypt-to"),
        "{}",
        without.stderr
    );
    assert!(!work.path().join("no-recipient/collection.json").exists());
    // What the agent keeps from the collector's welcome.
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("collector.age-recipient"),
        format!("{recipient}\n"),
    )
    .unwrap();
    let out2 = work.path().join("with-recipient");
    collect(&out2, &["--encrypt"]).ok().unwrap();
    let record: Value =
        serde_json::from_slice(&std::fs::read(out2.join("collection.json")).unwrap()).unwrap();
    assert_eq!(record["encrypted_to"], recipient.as_str());
}
