//! Structured properties of the protocol's encoders and decoders (proptest): encode → decode
//! is the identity for chunks, frames and manifests; a stream cut anywhere inside a frame is an
//! error, never fewer frames; any change to what was received fails manifest verification;
//! decoders never panic and never accept a length past their limits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cairn_protocol::chunk::{Chunk, ChunkError, ChunkHeader, HEADER_LEN};
use cairn_protocol::manifest::{
    HostIdentity, ItemHeader, ItemKind, ItemManifest, ItemStatus, Source,
};
use cairn_protocol::pipeline::{ChunkStream, PipelineOptions};
use cairn_protocol::wire::{self, Frame, Message, MAX_FRAME_LEN};
use proptest::prelude::*;

fn raw_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..20_000),
        // Compressible and all-zero data take the other codecs.
        (0usize..50_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        (1usize..200, "[a-z ]{1,16}").prop_map(|(n, s)| s.repeat(n).into_bytes()),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        proptest::collection::vec(any::<u64>(), 0..50)
            .prop_map(|indices| Message::ChunksHeld { indices }),
        any::<u64>().prop_map(|index| Message::ChunkAck { index }),
        (any::<u64>(), ".{0,200}")
            .prop_map(|(first_seq, jsonl)| Message::Events { first_seq, jsonl }),
        (".{0,20}", ".{0,200}").prop_map(|(code, message)| Message::Error { code, message }),
        (".{0,40}", ".{0,80}")
            .prop_map(|(item_id, sha256)| Message::ItemSealed { item_id, sha256 }),
        header().prop_map(|h| Message::ItemBegin(Box::new(h))),
        manifest().prop_map(|m| Message::ItemEnd(Box::new(m))),
    ]
}

fn header() -> impl Strategy<Value = ItemHeader> {
    (
        "[a-zA-Z0-9_-]{1,64}",
        "[a-zA-Z0-9-]{1,64}",
        ".{0,60}",
        proptest::option::of(".{0,100}"),
        proptest::option::of(any::<u32>()),
        1u64..=(4 << 20),
    )
        .prop_map(
            |(item_id, collection_id, name, path, pid, chunk_size)| ItemHeader {
                item_id,
                collection_id,
                kind: ItemKind::File,
                source: Source {
                    name,
                    path,
                    pid,
                    ..Source::default()
                },
                chunk_size,
                acquisition_start: "2026-11-29T09:57:52.065472261Z".into(),
                expected_len: None,
            },
        )
}

fn manifest() -> impl Strategy<Value = ItemManifest> {
    (
        header(),
        raw_bytes(),
        ".{0,30}",
        proptest::option::of(-1e12f64..1e12),
    )
        .prop_map(|(header, raw, hostname, uptime)| {
            let size = header.chunk_size as usize;
            let chunk_sha256 = raw
                .chunks(size)
                .map(cairn_protocol::sha256_hex)
                .collect::<Vec<_>>();
            ItemManifest {
                header,
                host: HostIdentity {
                    hostname,
                    uptime_seconds: uptime,
                    ..HostIdentity::default()
                },
                acquisition_end: "2026-11-29T09:58:00Z".into(),
                raw_len: raw.len() as u64,
                sha256: cairn_protocol::sha256_hex(&raw),
                chunk_count: chunk_sha256.len() as u64,
                chunk_sha256,
                gaps: Vec::new(),
                status: ItemStatus::Complete,
                error: None,
                tool: "cairn-agent test".into(),
            }
        })
}

fn read_all(bytes: &[u8]) -> Result<Vec<Frame>, wire::WireError> {
    let mut r = bytes;
    let mut out = Vec::new();
    while let Some(f) = Frame::read_from(&mut r)? {
        out.push(f);
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_sealed_chunk_reads_back_as_its_raw_bytes(raw in raw_bytes(), index in any::<u64>(), level in 1i32..4) {
        let c = Chunk::seal(index, &raw, level).unwrap();
        prop_assert_eq!(c.header.raw_len as usize, raw.len());
        let mut buf = Vec::new();
        c.write_to(&mut buf).unwrap();
        prop_assert_eq!(buf.len(), HEADER_LEN + c.payload.len());
        let back = Chunk::read_from(&mut &buf[..]).unwrap().unwrap();
        prop_assert_eq!(&back, &c);
        prop_assert_eq!(back.open().unwrap(), raw.clone());
        prop_assert_eq!(Chunk::seal_owned(index, raw, level).unwrap(), c);
    }

    #[test]
    fn a_chunk_header_round_trips_and_refuses_what_is_out_of_range(
        index in any::<u64>(), raw_len in any::<u32>(), codec in any::<u8>(),
        sha in any::<[u8; 32]>(), stored_len in any::<u32>(),
    ) {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&index.to_le_bytes());
        b[8..12].copy_from_slice(&raw_len.to_le_bytes());
        b[12] = codec;
        b[13..45].copy_from_slice(&sha);
        b[45..49].copy_from_slice(&stored_len.to_le_bytes());
        let max = cairn_protocol::CHUNK_SIZE as u32;
        match ChunkHeader::decode(&b) {
            Ok(h) => {
                prop_assert!(codec <= 2 && raw_len <= max && stored_len <= max + 1024);
                prop_assert_eq!(h.encode(), b);
            }
            Err(ChunkError::UnknownCodec(c)) => prop_assert_eq!(c, codec),
            Err(ChunkError::TooLarge { .. }) => prop_assert!(raw_len > max || stored_len > max + 1024),
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    #[test]
    fn a_flipped_payload_byte_verifies_only_if_the_raw_bytes_are_unchanged(raw in raw_bytes(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        // A zstd frame has bits that do not change its content (a flag, a window size): such a
        // flip may verify, but only ever to the very bytes that were sealed.
        let mut c = Chunk::seal(0, &raw, 1).unwrap();
        prop_assume!(!c.payload.is_empty());
        let i = at.index(c.payload.len());
        c.payload[i] ^= 1 << bit;
        if let Ok(back) = c.verify() {
            prop_assert_eq!(&back[..], &raw[..]);
        }
    }

    #[test]
    fn frames_round_trip_one_by_one_and_as_a_stream(msgs in proptest::collection::vec(message(), 1..6), raw in raw_bytes()) {
        let mut frames: Vec<Frame> = msgs.into_iter().map(Frame::Message).collect();
        frames.insert(1, Frame::Chunk(Chunk::seal(0, &raw, 1).unwrap()));
        let mut stream = Vec::new();
        let mut bounds = vec![0];
        for f in &frames {
            let b = f.encode().unwrap();
            prop_assert_eq!(Frame::decode_body(&b[4..]).unwrap(), f.clone());
            stream.extend_from_slice(&b);
            bounds.push(stream.len());
        }
        prop_assert_eq!(read_all(&stream).unwrap(), frames.clone());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let via_async = rt.block_on(async {
            let mut r = &stream[..];
            let mut out = Vec::new();
            while let Some(f) = wire::aio::read_frame(&mut r).await.unwrap() {
                out.push(f);
            }
            out
        });
        prop_assert_eq!(via_async, frames.clone());
        // Cut inside a frame: an error. Cut between frames: the frames before the cut.
        for cut in [1, 4, 5, 6, stream.len() / 2, stream.len() - 1] {
            match bounds.iter().position(|b| *b == cut) {
                Some(n) => prop_assert_eq!(read_all(&stream[..cut]).unwrap().len(), n),
                None => prop_assert!(read_all(&stream[..cut]).is_err(), "cut at {}", cut),
            }
        }
    }

    #[test]
    fn a_manifest_round_trips_and_verifies_only_what_it_describes(m in manifest(), which in any::<prop::sample::Index>()) {
        let text = serde_json::to_vec(&m).unwrap();
        let back: ItemManifest = serde_json::from_slice(&text).unwrap();
        prop_assert_eq!(&back, &m);
        let size = m.header.chunk_size;
        let n = m.chunk_sha256.len();
        let received: Vec<(u64, String, u64)> = m.chunk_sha256.iter().enumerate().map(|(i, h)| {
            let len = if i + 1 == n { m.raw_len - size * (n as u64 - 1) } else { size };
            (i as u64, h.clone(), len)
        }).collect();
        prop_assert!(m.verify_against(&received, &m.sha256).is_ok());
        if n > 0 {
            let i = which.index(n);
            let mut swapped = received.clone();
            swapped[i].1 = cairn_protocol::sha256_hex(b"planted");
            prop_assert!(m.verify_against(&swapped, &m.sha256).is_err());
            let mut longer = received.clone();
            longer[i].2 += 1;
            prop_assert!(m.verify_against(&longer, &m.sha256).is_err());
            prop_assert!(m.verify_against(&received[..n - 1], &m.sha256).is_err());
        }
        prop_assert!(m.verify_against(&received, &cairn_protocol::sha256_hex(b"other")).is_err());
    }

    #[test]
    fn the_pipeline_gives_back_every_byte(raw in raw_bytes(), chunk_kib in 1usize..64) {
        let opts = PipelineOptions { chunk_size: chunk_kib * 1024, zstd_level: 1, workers: 2 };
        let mut stream = ChunkStream::new(std::io::Cursor::new(raw.clone()), &opts);
        let mut back = Vec::new();
        for (i, c) in stream.by_ref().enumerate() {
            let c = c.unwrap();
            prop_assert_eq!(c.header.index, i as u64);
            back.extend_from_slice(&c.open().unwrap());
        }
        let summary = stream.finish();
        prop_assert_eq!(&back, &raw);
        prop_assert_eq!(summary.raw_len, raw.len() as u64);
        prop_assert_eq!(summary.sha256, cairn_protocol::sha256_hex(&raw));
    }

    #[test]
    fn decoders_never_panic_and_never_accept_a_length_past_the_limit(bytes in proptest::collection::vec(any::<u8>(), 0..2048), prefix in any::<[u8; 4]>()) {
        let _ = Frame::decode_body(&bytes);
        let _ = read_all(&bytes);
        let _ = ChunkHeader::decode(&bytes);
        let _ = serde_json::from_slice::<Message>(&bytes);
        if let Ok(n) = Frame::body_len(prefix) {
            prop_assert!(n > 0 && n <= MAX_FRAME_LEN.max(1 + HEADER_LEN + cairn_protocol::CHUNK_SIZE + 1024));
        }
    }
}
