//! The live event stream: each batch is stored (with its timeline rows), then acknowledged up
//! to its last sequence number; the agent deletes what was acknowledged from its event spool.

use super::blocking;
use crate::state::State;
use anyhow::Result;
use cairn_protocol::wire::aio::{read_frame, write_message};
use cairn_protocol::wire::{Frame, Message};
use quinn::{RecvStream, SendStream};
use std::sync::Arc;

pub(super) async fn events_stream(
    state: Arc<State>,
    host_id: &str,
    mut first_seq: u64,
    mut events: String,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<()> {
    loop {
        let st = state.clone();
        let hid = host_id.to_string();
        let n = blocking(move || crate::timeline::live::store_batch(st.meta(), &hid, &events))
            .await? as u64;
        crate::metrics::Metrics::add(&state.stores.metrics.timeline_events, n);
        if n > 0 {
            write_message(
                &mut send,
                Message::EventsAck {
                    upto_seq: first_seq + n - 1,
                },
            )
            .await?;
        }
        match read_frame(&mut recv).await? {
            Some(Frame::Message(Message::Events {
                first_seq: f,
                jsonl: e,
            })) => {
                first_seq = f;
                events = e;
            }
            None => return Ok(()),
            Some(Frame::Message(m)) => {
                anyhow::bail!("unexpected {} on the event stream", m.name())
            }
            Some(Frame::Chunk(_)) => anyhow::bail!("unexpected chunk on the event stream"),
        }
    }
}
