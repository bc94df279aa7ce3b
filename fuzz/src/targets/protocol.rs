//! The protocol's decoders: frames (one body, and a stream read by both the blocking and the
//! async reader), wire messages as JSON, chunk headers and payload verification, item
//! manifests with `verify_against`, collection records.

use super::{mix, shape_of, text, Target, MIB};
use cairn_protocol::chunk::{Chunk, ChunkHeader, HEADER_LEN};
use cairn_protocol::manifest::{CollectionRecord, ItemManifest};
use cairn_protocol::wire::{self, Frame, Message};

pub const MESSAGE_DICT: &[&[u8]] = &[
    b"\"type\"",
    b"\"item_begin\"",
    b"\"item_end\"",
    b"\"chunks_held\"",
    b"\"chunk_ack\"",
    b"\"hello\"",
    b"\"collect\"",
    b"\"events\"",
    b"\"readiness\"",
    b"\"error\"",
    b"\"item_id\"",
    b"\"collection_id\"",
    b"\"kind\"",
    b"\"source\"",
    b"\"chunk_size\"",
    b"\"acquisition_start\"",
    b"\"chunk_sha256\"",
    b"\"raw_len\"",
    b"\"sha256\"",
    b"\"gaps\"",
    b"\"status\"",
    b"\"details\"",
    b"\"host\"",
    b"\"indices\"",
    b"\"first_seq\"",
    b"\"jsonl\"",
    b"\"file\"",
    b"\"process_core\"",
    b"\"complete\"",
    b"\"partial\"",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"1e999",
    b"-1",
    b"18446744073709551616",
    b"\"2026-11-29T09:57:52Z\"",
];

const CHUNK_DICT: &[&[u8]] = &[
    &[0, 0, 0, 0],
    &[0xff, 0xff, 0xff, 0xff],
    &[0, 0, 0x40, 0],                   // 4 MiB little-endian
    &[0x28, 0xb5, 0x2f, 0xfd],          // zstd frame magic
    &[0x28, 0xb5, 0x2f, 0xfd, 0x24, 0], // …with a header
    &[0x50, 0x2a, 0x4d, 0x18],          // zstd skippable frame
    &[1],
    &[2],
];

pub fn targets() -> Vec<Target> {
    let mut frame = text(
        "frame",
        "wire::Frame::decode_body: one frame body; encode(decode(b)) decodes to the same frame, and is b for a chunk",
        MESSAGE_DICT,
        frame,
    );
    frame.alloc_floor = 24 * MIB;
    let mut stream = text(
        "frame_stream",
        "wire::Frame::read_from and wire::aio::read_frame over one stream agree frame by frame; ingest::first_frame/next_frame order",
        MESSAGE_DICT,
        frame_stream,
    );
    stream.max_len = 256 * 1024;
    stream.alloc_floor = 48 * MIB;
    let mut chunk = text(
        "chunk",
        "chunk::ChunkHeader::decode, Chunk::read_from, verify/open (as given, and with stored_len fixed so zstd sees the payload)",
        CHUNK_DICT,
        chunk,
    );
    chunk.alloc_floor = 24 * MIB;
    chunk.max_len = 128 * 1024;
    vec![
        frame,
        stream,
        text(
            "message_json",
            "wire::Message from JSON; serialising it again gives the same message",
            MESSAGE_DICT,
            message_json,
        ),
        chunk,
        text(
            "manifest",
            "manifest::ItemManifest from JSON (round trip) and verify_against: a missing, extra or altered chunk is refused",
            MESSAGE_DICT,
            manifest,
        ),
        text(
            "collection_record",
            "manifest::CollectionRecord (collection.json) from JSON, round trip",
            MESSAGE_DICT,
            collection_record,
        ),
    ]
}

fn frame_name(f: &Frame) -> String {
    match f {
        Frame::Message(m) => format!("message {}", m.name()),
        Frame::Chunk(c) => format!("chunk {:?}", c.header.codec),
    }
}

fn frame(data: &[u8]) -> u64 {
    let r = Frame::decode_body(data);
    if let Ok(f) = &r {
        let bytes = f.encode();
        assert!(bytes.is_ok(), "a decoded frame does not encode: {bytes:?}");
        let bytes = bytes.unwrap_or_default();
        let again = Frame::decode_body(&bytes[4..]);
        assert!(
            matches!(&again, Ok(g) if g == f),
            "encode(decode) does not decode to the same frame: {again:?}"
        );
        if matches!(f, Frame::Chunk(_)) {
            assert_eq!(&bytes[4..], data, "a chunk frame re-encodes differently");
        }
    }
    shape_of(&r, frame_name)
}

thread_local! {
    static RUNTIME: Option<tokio::runtime::Runtime> =
        tokio::runtime::Builder::new_current_thread().build().ok();
}

/// Frames of a stream by the async reader the QUIC streams use.
fn read_async(data: &[u8], max: usize) -> Vec<Result<Frame, String>> {
    RUNTIME.with(|rt| {
        let Some(rt) = rt else {
            return Vec::new();
        };
        rt.block_on(async {
            let mut r = data;
            let mut out = Vec::new();
            while out.len() < max {
                match wire::aio::read_frame(&mut r).await {
                    Ok(Some(f)) => out.push(Ok(f)),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e.to_string()));
                        break;
                    }
                }
            }
            out
        })
    })
}

fn frame_stream(data: &[u8]) -> u64 {
    const MAX: usize = 10_000;
    let mut r = data;
    let mut sync = Vec::new();
    while sync.len() < MAX {
        match Frame::read_from(&mut r) {
            Ok(Some(f)) => sync.push(Ok(f)),
            Ok(None) => break,
            Err(e) => {
                sync.push(Err(e.to_string()));
                break;
            }
        }
    }
    let asynchronous = read_async(data, MAX);
    assert_eq!(
        sync.len(),
        asynchronous.len(),
        "the blocking and the async reader see different numbers of frames"
    );
    let mut shape = 0u64;
    for (a, b) in sync.iter().zip(&asynchronous) {
        assert_eq!(
            a.is_ok(),
            b.is_ok(),
            "the blocking reader says {a:?}, the async reader {b:?}"
        );
        if let (Ok(a), Ok(b)) = (a, b) {
            assert_eq!(a, b, "the two readers decode a frame differently");
        }
        shape = mix(shape, shape_of(a, frame_name));
    }
    // The item stream's order, as an import replays it.
    let mut frames = sync.into_iter().map_while(Result::ok);
    let first = cairn_collector::ingest::first_frame(frames.next());
    shape = mix(shape, shape_of(&first, |h| format!("{:?}", h.kind)));
    if let Ok(h) = first {
        for f in frames {
            let next = cairn_collector::ingest::next_frame(Some(f), &h.item_id);
            shape = mix(shape, shape_of(&next, |_| String::new()));
            if next.is_err() {
                break;
            }
        }
    }
    shape
}

fn message_json(data: &[u8]) -> u64 {
    shape_of(&message(data), |m| m.name().to_string())
}

/// A message from JSON, which must serialise back to itself.
pub(super) fn message(data: &[u8]) -> Result<Message, serde_json::Error> {
    let r: Result<Message, _> = serde_json::from_slice(data);
    if let Ok(m) = &r {
        let text = serde_json::to_vec(m);
        assert!(
            text.is_ok(),
            "a decoded message does not serialise: {text:?}"
        );
        let back: Result<Message, _> = serde_json::from_slice(&text.unwrap_or_default());
        assert!(
            matches!(&back, Ok(b) if b == m),
            "a message does not survive serialisation: {back:?}"
        );
    }
    r
}

fn chunk_once(data: &[u8]) -> u64 {
    let header = ChunkHeader::decode(data);
    if let Ok(h) = &header {
        let again = ChunkHeader::decode(&h.encode());
        assert!(
            matches!(&again, Ok(g) if g == h),
            "header round trip: {again:?}"
        );
    }
    let mut r = data;
    let c = Chunk::read_from(&mut r);
    let mut shape = mix(
        shape_of(&header, |h| format!("{:?}", h.codec)),
        shape_of(&c, |c| format!("{}", c.is_some())),
    );
    if let Ok(Some(c)) = c {
        let consumed = data.len() - r.len();
        let mut out = Vec::new();
        assert!(c.write_to(&mut out).is_ok());
        assert_eq!(out, &data[..consumed], "a chunk re-encodes differently");
        let v = c.verify();
        if let Ok(raw) = &v {
            assert_eq!(raw.len(), c.header.raw_len as usize);
            assert_eq!(cairn_protocol::sha256_hex(raw), c.header.sha256_hex());
            assert!(c.open().is_ok_and(|o| o[..] == raw[..]));
        } else {
            assert!(c.open().is_err(), "open accepts what verify refuses");
        }
        shape = mix(shape, shape_of(&v, |_| String::new()));
    }
    shape
}

fn chunk(data: &[u8]) -> u64 {
    let shape = chunk_once(data);
    if data.len() < HEADER_LEN {
        return shape;
    }
    // The same chunk with its stored length made to fit, so the payload reaches the decoder.
    let mut fixed = data.to_vec();
    let stored = (data.len() - HEADER_LEN).min(u32::MAX as usize) as u32;
    fixed[45..49].copy_from_slice(&stored.to_le_bytes());
    fixed[12] %= 3;
    mix(shape, chunk_once(&fixed))
}

fn manifest(data: &[u8]) -> u64 {
    let r: Result<ItemManifest, _> = serde_json::from_slice(data);
    let Ok(m) = &r else {
        return shape_of(&r, |_| String::new());
    };
    let text = serde_json::to_vec(m).unwrap_or_default();
    let back: Result<ItemManifest, _> = serde_json::from_slice(&text);
    assert!(
        matches!(&back, Ok(b) if b == m),
        "a manifest does not survive serialisation: {back:?}"
    );
    // What the collector would have received, had the chunks been the manifest's.
    let n = m.chunk_sha256.len();
    let size = m.header.chunk_size;
    let received: Vec<(u64, String, u64)> = m
        .chunk_sha256
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let len = if i + 1 == n {
                m.raw_len.wrapping_sub(size.wrapping_mul(n as u64 - 1))
            } else {
                size
            };
            (i as u64, h.clone(), len)
        })
        .collect();
    let as_sent = m.verify_against(&received, &m.sha256);
    // A chunk missing, a chunk added, a hash altered, another item hash: always refused.
    if n > 0 {
        let short = &received[..n - 1];
        assert!(
            m.verify_against(short, &m.sha256).is_err(),
            "a missing chunk is accepted"
        );
        let mut altered = received.clone();
        altered[n - 1].1.push('0');
        assert!(
            m.verify_against(&altered, &m.sha256).is_err(),
            "an altered chunk is accepted"
        );
    }
    let mut extra = received.clone();
    extra.push((n as u64, String::new(), 0));
    assert!(
        m.verify_against(&extra, &m.sha256).is_err(),
        "an extra chunk is accepted"
    );
    let other = format!("{}0", m.sha256);
    assert!(
        m.verify_against(&received, &other).is_err(),
        "another item hash is accepted"
    );
    shape_of(&as_sent, |_| String::new())
}

fn collection_record(data: &[u8]) -> u64 {
    let r: Result<CollectionRecord, _> = serde_json::from_slice(data);
    if let Ok(rec) = &r {
        let text = serde_json::to_vec(rec).unwrap_or_default();
        let back: Result<CollectionRecord, _> = serde_json::from_slice(&text);
        assert!(
            matches!(&back, Ok(b) if b == rec),
            "a collection record does not survive serialisation: {back:?}"
        );
    }
    shape_of(&r, |rec| format!("{:?}", rec.status))
}
