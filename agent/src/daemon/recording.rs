//! Recording: the sensor's events go to the flight recorder (the journal on disk, which every
//! collection slices) and to the live event stream, serialised once for both.

use super::{lock, release_freed_memory, Agent};
use crate::flight_recorder::{self, FlightRecorder, RecorderConfig};
use crate::sensor::{RunningMode, Sensor};
use anyhow::Result;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Start the sensor and the flight recorder: every event goes to the journal on disk and to
/// the live stream. Returns the sensor, which runs until dropped (`None`: disabled in
/// agent.toml).
pub fn start(agent: &Arc<Agent>) -> Result<Option<Sensor>> {
    if !agent.cfg.sensor_enabled {
        tracing::info!("sensor disabled in agent.toml (sensor_enabled = false)");
        return Ok(None);
    }
    let recorder = FlightRecorder::open(
        &agent.state.journal(),
        RecorderConfig {
            max_bytes: agent.cfg.journal_max_bytes,
            max_age: Duration::from_secs(agent.cfg.journal_max_age_secs),
            ..Default::default()
        },
    )?;
    let sensor = Sensor::start(agent.cfg.sensor.clone())?;
    // Loading parses the kernel's BTF (tens of MB, freed once the programs are in); give
    // that memory back to the system instead of keeping it as the agent's resident set.
    release_freed_memory();
    let status = sensor.status().clone();
    match &status.reason {
        None => tracing::info!(
            "sensor running: {:?}, {} tracepoints",
            status.mode,
            status.tracepoints.len()
        ),
        Some(r) => tracing::warn!("sensor running in {:?} mode: {r}", status.mode),
    }
    if status.mode == RunningMode::Ebpf {
        *lock(&agent.sensor_proof) = Some(format!(
            "the agent's eBPF sensor is loaded and attached to {} tracepoints, reading a {}-byte ring buffer",
            status.tracepoints.len(),
            status.ring_buffer_bytes.unwrap_or(0)
        ));
    }
    *lock(&agent.sensor_status) = (
        match status.mode {
            RunningMode::Ebpf => "ebpf".into(),
            RunningMode::Procfs => "procfs".into(),
        },
        status.reason.clone(),
    );
    let lost = agent.sensor_lost.clone();
    let events = sensor.subscribe();
    let shipper = agent.shipper.clone();
    let recorder = Arc::new(Mutex::new(recorder));
    let _ = agent.recorder.set(recorder.clone());
    std::thread::Builder::new()
        .name("flight-recorder".into())
        .spawn(move || loop {
            match events.recv_timeout(Duration::from_secs(1)) {
                Ok(ev) => {
                    if let Some(l) = &ev.lost {
                        lost.fetch_add(l.count, Ordering::Relaxed);
                    }
                    // Serialised once: the same text goes to the journal and the wire.
                    let Ok(line) = serde_json::to_string(&ev) else {
                        continue;
                    };
                    let t =
                        flight_recorder::time_ns(&ev.time).unwrap_or_else(flight_recorder::now_ns);
                    if let Err(e) = lock(&recorder).append(t, line.as_bytes()) {
                        tracing::warn!("flight recorder: {e:#}");
                    }
                    if let Ok(raw) = cairn_protocol::wire::RawEvent::from_json(line) {
                        shipper.push(raw);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = lock(&recorder).flush() {
                        tracing::warn!("flight recorder: {e:#}");
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = lock(&recorder).flush();
                    return;
                }
            }
        })?;
    Ok(Some(sensor))
}
