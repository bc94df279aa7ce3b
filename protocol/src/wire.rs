//! Wire messages and the frame they travel in.
//!
//! A frame is `u32 big-endian length | u8 kind | body`; the length counts kind and body.
//! Kind 1 is a JSON [`Message`]; kind 2 is a binary [`Chunk`]. The same frames are written to
//! the `.cairn` files of an offline collection, so an import replays exactly what an upload sends.

use crate::chunk::{Chunk, ChunkError, HEADER_LEN};
use crate::manifest::{CollectRequest, HostIdentity, ItemHeader, ItemManifest};
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

pub const KIND_MESSAGE: u8 = 1;
pub const KIND_CHUNK: u8 = 2;
/// JSON messages larger than this are refused (a manifest of a 64 GiB item is ~1.1 MiB).
pub const MAX_MESSAGE_LEN: usize = 16 * 1024 * 1024;
pub const MAX_FRAME_LEN: usize = MAX_MESSAGE_LEN + 1;

/// Every message on a control or item stream. Tagged by `type`; an unknown type is an error
/// that names it, so an old collector tells a newer agent what it did not understand.
// A few messages per stream, never stored in bulk: their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    // Enrollment (connection without a client certificate).
    Enroll {
        token: String,
        csr_pem: String,
        hostname: String,
        /// Who the machine is (machine id, cloud instance id): a machine enrolled before keeps
        /// its host id. Absent from agents before it: a new host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<Box<HostIdentity>>,
        /// A new host id even if this machine is known (`enroll --new-identity`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        new_identity: bool,
    },
    Enrolled {
        agent_id: String,
        cert_pem: String,
        ca_pem: String,
        /// The collector's age X25519 recipient (`age1…`), when it keeps evidence encrypted:
        /// offline collections encrypted to it can be read only at that collector.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        evidence_recipient: Option<String>,
    },

    // Control stream.
    Hello {
        protocol_version: u32,
        agent_version: String,
        host: HostIdentity,
        /// Collections this agent is still working on (or has finished but not yet reported).
        /// A collection the collector thinks is running and that is not listed was lost (the
        /// agent restarted); the collector marks it failed instead of waiting forever.
        /// `None` from a probe (`cairn-agent ping`, the self-test), which knows nothing of them.
        #[serde(default)]
        active_collections: Option<Vec<String>>,
    },
    Welcome {
        agent_id: String,
        collector_version: String,
        server_time: String,
        /// As in [`Message::Enrolled`]: the age recipient evidence may be encrypted to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        evidence_recipient: Option<String>,
    },
    Heartbeat {
        time: String,
        /// How the agent is doing, when it has something to say.
        #[serde(default)]
        status: Option<AgentStatus>,
    },
    HeartbeatAck {
        time: String,
    },
    Collect(Box<CollectRequest>),
    /// Collector → agent on the control stream: isolate, release, freeze, thaw or kill.
    Contain(Box<crate::containment::Request>),
    /// Agent → collector: what was enforced (or undone, or rolled back), acknowledged by
    /// `ContainedAck`; a break-glass release on the host is reported this way when the agent
    /// next connects.
    Contained(Box<crate::containment::Outcome>),
    ContainedAck {
        id: String,
    },
    /// Agent → collector: a marked host is shutting down or a marked container exited; the
    /// collector answers with the `last-breath` collection (`Collect`, with the id the agent
    /// chose) or `LastBreathRefused`.
    LastBreath(Box<crate::containment::LastBreathCall>),
    LastBreathRefused {
        collection_id: String,
        reason: String,
    },
    CommandAccepted {
        collection_id: String,
    },
    CollectionDone {
        collection_id: String,
        items: Vec<String>,
        errors: Vec<String>,
    },

    // Item stream: agent → ItemBegin, collector → ChunksHeld, agent → chunks…, agent → ItemEnd,
    // collector → ChunkAck (as each chunk is persisted) … ItemSealed.
    ItemBegin(Box<ItemHeader>),
    ChunksHeld {
        indices: Vec<u64>,
    },
    ChunkAck {
        index: u64,
    },
    ItemEnd(Box<ItemManifest>),
    ItemSealed {
        item_id: String,
        sha256: String,
    },

    // Live event stream: agent → Events (numbered batches), collector → EventsAck once stored.
    Events {
        /// Sequence number of the first event in the batch; numbers are per agent process.
        first_seq: u64,
        /// Events as the sensor wrote them (see docs/events.md), one JSON object per line;
        /// each has `time` and `kind`. Text, not a JSON array: the agent serialises each event
        /// once, and `RawValue` cannot live inside this internally tagged enum.
        jsonl: String,
    },
    EventsAck {
        /// Every event up to this sequence number (inclusive) is stored.
        upto_seq: u64,
    },

    // Readiness (a stream of its own, opened by `cairn-agent selftest` or the running agent):
    // agent → Readiness, collector → ReadinessAck once stored.
    Readiness(Box<crate::readiness::SelftestReport>),
    ReadinessAck {
        /// The host's readiness before this report, so the agent can log a change.
        previous: Option<crate::readiness::CheckStatus>,
    },
    // The self-test's evidence round trip (a stream of its own): agent → SelftestBegin,
    // collector → SelftestReady (a `selftest` collection now exists); the agent uploads one
    // item into it through the normal item stream, then → SelftestReadBack, and the collector
    // re-reads every stored chunk and answers SelftestReadBackResult.
    SelftestBegin {
        collection_id: String,
    },
    SelftestReady {
        collection_id: String,
    },
    SelftestReadBack {
        item_id: String,
    },
    SelftestReadBackResult {
        item_id: String,
        ok: bool,
        /// SHA-256 of the bytes the collector read back from its store.
        sha256: Option<String>,
        bytes_checked: u64,
        error: Option<String>,
    },

    // The self-test's encryption canary (a stream of its own): agent → Canary (random bytes
    // encrypted on the host to the collector's evidence recipient), collector → CanaryResult
    // with the SHA-256 of what it decrypted.
    Canary {
        /// The age-encrypted canary, base64.
        ciphertext: String,
    },
    CanaryResult {
        ok: bool,
        sha256: Option<String>,
        error: Option<String>,
    },

    /// Any refusal; `code` is stable (`bad_token`, `bad_request`, `item_rejected`,
    /// `chunk_rejected`, `storage_error`, `storage_full` — no room at the collector: keep the
    /// chunks and try again later —, `storage_unavailable` — its object store is away: the
    /// same —, …).
    Error {
        code: String,
        message: String,
    },
}

impl Message {
    pub fn error(code: &str, message: impl Into<String>) -> Message {
        Message::Error {
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Message::Enroll { .. } => "enroll",
            Message::Enrolled { .. } => "enrolled",
            Message::Hello { .. } => "hello",
            Message::Welcome { .. } => "welcome",
            Message::Heartbeat { .. } => "heartbeat",
            Message::HeartbeatAck { .. } => "heartbeat_ack",
            Message::Collect(_) => "collect",
            Message::Contain(_) => "contain",
            Message::Contained(_) => "contained",
            Message::ContainedAck { .. } => "contained_ack",
            Message::LastBreath(_) => "last_breath",
            Message::LastBreathRefused { .. } => "last_breath_refused",
            Message::CommandAccepted { .. } => "command_accepted",
            Message::CollectionDone { .. } => "collection_done",
            Message::ItemBegin(_) => "item_begin",
            Message::ChunksHeld { .. } => "chunks_held",
            Message::ChunkAck { .. } => "chunk_ack",
            Message::ItemEnd(_) => "item_end",
            Message::ItemSealed { .. } => "item_sealed",
            Message::Events { .. } => "events",
            Message::EventsAck { .. } => "events_ack",
            Message::Readiness(_) => "readiness",
            Message::ReadinessAck { .. } => "readiness_ack",
            Message::SelftestBegin { .. } => "selftest_begin",
            Message::SelftestReady { .. } => "selftest_ready",
            Message::SelftestReadBack { .. } => "selftest_read_back",
            Message::SelftestReadBackResult { .. } => "selftest_read_back_result",
            Message::Canary { .. } => "canary",
            Message::CanaryResult { .. } => "canary_result",
            Message::Error { .. } => "error",
        }
    }
}

/// One event as validated JSON text, kept without being parsed into a tree: the agent
/// serialises each event once and queues that text for its journal and the live stream (which
/// carries it as JSON lines in [`Message::Events`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawEvent(pub Box<serde_json::value::RawValue>);

impl RawEvent {
    /// From JSON text; fails if it is not a single JSON value.
    pub fn from_json(text: String) -> Result<RawEvent, serde_json::Error> {
        serde_json::value::RawValue::from_string(text).map(RawEvent)
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawEvent {
    fn eq(&self, other: &RawEvent) -> bool {
        self.get() == other.get()
    }
}

/// What an agent reports about itself with each heartbeat: enough for `cairn hosts` to show
/// a host whose sensor fell back to /proc or is losing events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// `ebpf`, `procfs` (fallback) or `off`.
    pub sensor_mode: String,
    /// Why the sensor is not on eBPF, when it is not.
    #[serde(default)]
    pub sensor_reason: Option<String>,
    /// Events lost since the agent started (ring buffer, subscribers, live stream).
    #[serde(default)]
    pub events_lost: u64,
    /// Events waiting for the collector's acknowledgment.
    #[serde(default)]
    pub events_queued: u64,
    /// Why evidence uploads wait, while they wait (`storage full at the collector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploads_paused: Option<String>,
    /// Containers running on the host, so that a trigger naming a container or a pod finds
    /// this host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerInfo>,
}

/// A container seen running on the host (from `/proc/PID/cgroup`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// The full 64-hex container id.
    pub id: String,
    /// `docker`, `containerd`, `cri-o`, `podman` or `unknown`.
    pub runtime: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The pod's name (its containers' `HOSTNAME`), when the container is in a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// The pod's namespace (from its service-account mount), when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
}

/// One decoded frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Message(Message),
    Chunk(Chunk),
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    FrameTooLarge(usize),
    #[error("empty frame")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("stream ended inside a frame ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
    #[error("malformed message: {0}")]
    BadMessage(serde_json::Error),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl Frame {
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::new();
        match self {
            Frame::Message(m) => {
                let body = serde_json::to_vec(m).map_err(WireError::BadMessage)?;
                if body.len() > MAX_MESSAGE_LEN {
                    return Err(WireError::FrameTooLarge(body.len()));
                }
                out.extend(((body.len() + 1) as u32).to_be_bytes());
                out.push(KIND_MESSAGE);
                out.extend(body);
            }
            Frame::Chunk(c) => {
                out.reserve(5 + HEADER_LEN + c.payload.len());
                out.extend(((1 + HEADER_LEN + c.payload.len()) as u32).to_be_bytes());
                out.push(KIND_CHUNK);
                out.extend(c.header.encode());
                out.extend(&c.payload);
            }
        }
        Ok(out)
    }

    /// Decode the body of a frame (kind byte first) whose length prefix was already read.
    pub fn decode_body(body: &[u8]) -> Result<Frame, WireError> {
        let (&kind, rest) = body.split_first().ok_or(WireError::Empty)?;
        match kind {
            KIND_MESSAGE => Ok(Frame::Message(
                serde_json::from_slice(rest).map_err(WireError::BadMessage)?,
            )),
            KIND_CHUNK => {
                let mut r = rest;
                match Chunk::read_from(&mut r)? {
                    Some(c) if r.is_empty() => Ok(Frame::Chunk(c)),
                    Some(_) => Err(WireError::Chunk(ChunkError::Truncated(
                        "chunk frame longer than its chunk",
                    ))),
                    None => Err(WireError::Empty),
                }
            }
            other => Err(WireError::UnknownKind(other)),
        }
    }

    /// Parse and validate a length prefix.
    pub fn body_len(prefix: [u8; 4]) -> Result<usize, WireError> {
        let len = u32::from_be_bytes(prefix) as usize;
        if len == 0 {
            return Err(WireError::Empty);
        }
        if len > MAX_FRAME_LEN.max(1 + HEADER_LEN + crate::CHUNK_SIZE + 1024) {
            return Err(WireError::FrameTooLarge(len));
        }
        Ok(len)
    }

    pub fn write_to<W: Write>(&self, w: &mut W) -> Result<(), WireError> {
        w.write_all(&self.encode()?)?;
        Ok(())
    }

    /// Read one frame from a blocking reader; `Ok(None)` at a clean end of stream.
    pub fn read_from<R: Read>(r: &mut R) -> Result<Option<Frame>, WireError> {
        let mut prefix = [0u8; 4];
        match crate::chunk::read_full(r, &mut prefix)? {
            0 => return Ok(None),
            4 => {}
            got => return Err(WireError::Truncated { got, want: 4 }),
        }
        let len = Frame::body_len(prefix)?;
        let mut body = vec![0u8; len];
        let got = crate::chunk::read_full(r, &mut body)?;
        if got < len {
            return Err(WireError::Truncated { got, want: len });
        }
        Frame::decode_body(&body).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trip_and_names() {
        let m = Message::ChunksHeld {
            indices: vec![0, 2, 5],
        };
        let bytes = Frame::Message(m.clone()).encode().unwrap();
        let back = Frame::read_from(&mut &bytes[..]).unwrap().unwrap();
        assert_eq!(back, Frame::Message(m));
        let json = &bytes[5..];
        assert_eq!(
            std::str::from_utf8(json).unwrap(),
            r#"{"type":"chunks_held","indices":[0,2,5]}"#
        );
    }

    #[test]
    fn unknown_message_type_is_named() {
        let body = br#"{"type":"self_destruct"}"#;
        let mut frame = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        frame.push(KIND_MESSAGE);
        frame.extend(body);
        let err = Frame::read_from(&mut &frame[..]).unwrap_err().to_string();
        assert!(err.contains("self_destruct"), "{err}");
    }

    #[test]
    fn truncated_and_oversized_frames_are_errors() {
        let c = Chunk::seal(1, &[7u8; 5000], 1).unwrap();
        let bytes = Frame::Chunk(c).encode().unwrap();
        for cut in [2, 5, 20, bytes.len() - 1] {
            assert!(Frame::read_from(&mut &bytes[..cut]).is_err(), "cut {cut}");
        }
        let huge = (u32::MAX).to_be_bytes();
        assert!(matches!(
            Frame::read_from(&mut &huge[..]),
            Err(WireError::FrameTooLarge(_))
        ));
        let kind9 = [0, 0, 0, 1, 9];
        assert!(matches!(
            Frame::read_from(&mut &kind9[..]),
            Err(WireError::UnknownKind(9))
        ));
    }
}

/// Frame I/O over tokio's async streams (QUIC streams on both sides).
#[cfg(feature = "tokio")]
pub mod aio {
    use super::{Frame, WireError};
    use crate::chunk::{Chunk, HEADER_LEN};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), WireError> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = r.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Err(WireError::Truncated {
                    got: filled,
                    want: buf.len(),
                });
            }
            filled += n;
        }
        Ok(())
    }

    /// Read one frame; `Ok(None)` when the peer finished the stream between frames.
    /// A chunk's payload is read straight into its own buffer (no second copy).
    pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, WireError> {
        let mut prefix = [0u8; 5];
        let first = r.read(&mut prefix).await?;
        if first == 0 {
            return Ok(None);
        }
        if first < 5 {
            fill(r, &mut prefix[first..]).await?;
        }
        let len = Frame::body_len([prefix[0], prefix[1], prefix[2], prefix[3]])?;
        if prefix[4] == super::KIND_CHUNK {
            let mut hb = [0u8; HEADER_LEN];
            fill(r, &mut hb).await?;
            let header = crate::chunk::ChunkHeader::decode(&hb)?;
            if len != 1 + HEADER_LEN + header.stored_len as usize {
                return Err(WireError::Chunk(crate::chunk::ChunkError::Truncated(
                    "chunk frame length disagrees with its header",
                )));
            }
            let mut payload = vec![0u8; header.stored_len as usize];
            fill(r, &mut payload).await?;
            return Ok(Some(Frame::Chunk(Chunk { header, payload })));
        }
        let mut body = vec![0u8; len];
        body[0] = prefix[4];
        fill(r, &mut body[1..]).await?;
        Frame::decode_body(&body).map(Some)
    }

    pub async fn write_frame<W: AsyncWrite + Unpin>(
        w: &mut W,
        frame: &Frame,
    ) -> Result<(), WireError> {
        w.write_all(&frame.encode()?).await?;
        Ok(())
    }

    pub async fn write_message<W: AsyncWrite + Unpin>(
        w: &mut W,
        m: super::Message,
    ) -> Result<(), WireError> {
        write_frame(w, &Frame::Message(m)).await
    }
}
