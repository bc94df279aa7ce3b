//! Containment on the wire: the collector's `contain` request as the agent reads it (decoded,
//! named in its log, then checked), the agent's `contained` answer as the collector reads it
//! (named in the custody record and the timeline), and the allow-list entries responders type
//! (`cairn isolate --allow`, the console's form).

use super::{mix, shape_of, text, Target};
use cairn_protocol::containment::{Action, Allow, Cidr, Request, Target as On};
use cairn_protocol::wire::Message;

const DICT: &[&[u8]] = &[
    b"\"type\"",
    b"\"contain\"",
    b"\"contained\"",
    b"\"contained_ack\"",
    b"\"id\"",
    b"\"action\"",
    b"\"isolate\"",
    b"\"release\"",
    b"\"freeze\"",
    b"\"thaw\"",
    b"\"kill\"",
    b"\"target\"",
    b"\"kind\"",
    b"\"host\"",
    b"\"container\"",
    b"\"process\"",
    b"\"pid\"",
    b"\"allow\"",
    b"\"cidr\"",
    b"\"port\"",
    b"\"proto\"",
    b"\"tcp\"",
    b"\"udp\"",
    b"\"note\"",
    b"\"reason\"",
    b"\"requested_by\"",
    b"\"ok\"",
    b"\"mechanism\"",
    b"\"rules_sha256\"",
    b"\"rules\"",
    b"\"pids\"",
    b"\"verified_rtt_ms\"",
    b"\"rolled_back\"",
    b"\"error\"",
    b"\"local\"",
    b"\"user\"",
    b"\"at\"",
    // Container ids: hex, and text that is not (multi-byte, past the 12 shown).
    b"0123456789abcdef",
    "é".as_bytes(),
    "\u{1F600}".as_bytes(),
    b"\\u00e9",
    // Addresses, prefixes and ports.
    b"/",
    b"/0",
    b"/32",
    b"/33",
    b"/128",
    b"::",
    b"::ffff:",
    b"0.0.0.0",
    b"255.255.255.255",
    b"fd00::1",
    b",",
    b",tcp/",
    b",udp/",
    b"65535",
    b"65536",
    b"0",
    b"-1",
    b" ",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"1e999",
    b"-0.0",
];

pub fn targets() -> Vec<Target> {
    vec![
        text(
            "contain_request",
            "wire::Message::Contain from JSON as the agent reads it: round trip, Target::describe, Request::check (an accepted request's CIDRs are canonical)",
            DICT,
            contain_request,
        ),
        text(
            "contain_outcome",
            "wire::Message::Contained from JSON as the collector reads it: round trip, Target::describe",
            DICT,
            contain_outcome,
        ),
        text(
            "allow_spec",
            "containment::Allow::parse_spec on any text: an accepted entry is accepted in an isolation request, and its CIDR is canonical",
            DICT,
            allow_spec,
        ),
    ]
}

fn target_shape(t: &On) -> &'static str {
    match t {
        On::Host => "host",
        On::Container { .. } => "container",
        On::Process { .. } => "process",
    }
}

/// A checked CIDR prints as text that parses to the same CIDR and contains its own address.
fn canonical(c: &Cidr) {
    let again = Cidr::parse(&c.to_string());
    assert_eq!(again, Ok(*c), "CIDR {c} does not parse back to itself");
    assert!(c.contains(c.addr), "CIDR {c} does not contain its address");
}

fn contain_request(data: &[u8]) -> u64 {
    let r = super::protocol::message(data);
    let shape = shape_of(&r, |m| m.name().to_string());
    let Ok(Message::Contain(req)) = r else {
        return shape;
    };
    // The agent names the request in its log before it checks it.
    let _ = req.target.describe();
    let checked = req.check();
    if checked.is_ok() {
        for a in &req.allow {
            let c = a.cidr();
            assert!(c.is_ok(), "check accepted the allow-list entry {a:?}");
            if let Ok(c) = c {
                canonical(&c);
            }
            assert!(
                a.port.is_none() || a.proto.is_some(),
                "check accepted a port without a protocol: {a:?}"
            );
        }
        assert!(
            req.allow.is_empty() || req.action == Action::Isolate,
            "check accepted an allow-list on {}",
            req.action.as_str()
        );
    }
    // Some refusals name the entry's CIDR as given: left out of the shape, as quoted text is.
    let checked = checked.map_err(|e| {
        req.allow
            .iter()
            .filter(|a| !a.cidr.is_empty())
            .fold(e, |e, a| e.replace(&a.cidr, "CIDR"))
    });
    mix(
        shape,
        shape_of(&checked, |()| {
            format!("{} {}", req.action.as_str(), target_shape(&req.target))
        }),
    )
}

fn contain_outcome(data: &[u8]) -> u64 {
    let r = super::protocol::message(data);
    let shape = shape_of(&r, |m| m.name().to_string());
    let Ok(Message::Contained(o)) = r else {
        return shape;
    };
    // What the collector writes into the custody record and the timeline event.
    let what = format!(
        "{} {} {}",
        o.action.as_str(),
        o.target.describe(),
        o.error.as_deref().unwrap_or("")
    );
    mix(
        shape,
        crate::engine::shape(&format!(
            "{} {} {} {}",
            target_shape(&o.target),
            o.ok,
            o.rolled_back,
            what.is_empty()
        )),
    )
}

fn allow_spec(data: &[u8]) -> u64 {
    let s = String::from_utf8_lossy(data);
    let r = Allow::parse_spec(&s);
    if let Ok(a) = &r {
        let c = a.cidr();
        assert!(
            c.is_ok(),
            "parse_spec kept a CIDR that does not parse: {a:?}"
        );
        if let Ok(c) = c {
            canonical(&c);
        }
        assert!(
            a.note.as_ref().is_none_or(|n| n.chars().count() <= 200),
            "a note longer than 200 characters: {a:?}"
        );
        // What the CLI and the console accept, the agent enforces: one isolation with it.
        let req = Request {
            id: "fuzz".into(),
            action: Action::Isolate,
            target: On::Host,
            allow: vec![a.clone()],
            reason: "fuzz".into(),
            requested_by: "fuzz".into(),
        };
        let checked = req.check();
        assert!(
            checked.is_ok(),
            "parse_spec accepted {s:?} as {a:?}, which an isolation refuses: {checked:?}"
        );
    }
    // Its errors quote the entry: without it, every input would be a shape of its own.
    let r = r.map_err(|e| e.replace(s.as_ref(), "SPEC"));
    shape_of(&r, |a| {
        format!("{} {:?} {}", a.port.is_some(), a.proto, a.note.is_some())
    })
}
