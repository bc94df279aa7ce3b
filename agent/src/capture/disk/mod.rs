//! Disk evidence: triage collection driven by declarative profiles (`triage`, `minimal`, and
//! the user's own), and raw block-device images (`disk`).
//!
//! Triage yields one `file` item per copied file, a `bodyfile` of everything walked (The Sleuth
//! Kit's format), and `triage-index.json` saying what was done with every entry and why.

pub mod bodyfile;
pub mod glob;
pub mod homes;
pub mod image;
pub mod profile;
pub mod root_identity;
pub mod triage;
pub mod walk;

use cairn_protocol::manifest::{CollectRequest, Source};
use std::path::{Path, PathBuf};

/// Where triage looks, and which profiles it knows besides the shipped ones.
#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// The filesystem root triage collects from (`/`; a mounted image or another root for
    /// offline work). A request's `pid` or `container_id` replaces it by `/proc/PID/root`.
    pub root: PathBuf,
    /// Where processes are (`/proc`, or `HOST_ROOT/proc`), for a request's `pid`/`container_id`.
    pub proc_root: PathBuf,
    /// Directories holding `NAME.toml` profiles (the agent's `STATE/profiles`).
    pub profile_dirs: Vec<PathBuf>,
    /// A profile file given on the command line; used when its name is the requested profile.
    pub profile_file: Option<PathBuf>,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            root: PathBuf::from("/"),
            proc_root: PathBuf::from("/proc"),
            profile_dirs: Vec::new(),
            profile_file: None,
        }
    }
}

/// One item a disk profile yields.
pub enum DiskItem {
    /// A triage file, opened when its item is produced.
    File {
        source: Source,
        file: triage::CopyFile,
    },
    /// A document made here: the bodyfile or the index.
    Document { source: Source, bytes: Vec<u8> },
    /// A block device to image.
    Device {
        source: Source,
        file: crate::capture::file::OpenedFile,
    },
}

pub struct DiskPlan {
    pub items: Vec<DiskItem>,
    pub errors: Vec<String>,
    /// The flight recorder window the profile asks for (`events_window_secs`), if it says.
    pub events_window_secs: Option<u64>,
}

/// Plan a disk profile, or None when `req.profile` is not one.
pub fn plan(req: &CollectRequest, opts: &DiskOptions) -> Option<DiskPlan> {
    if req.profile == "disk" {
        return Some(plan_devices(&req.devices));
    }
    let none = |items, errors| DiskPlan {
        items,
        errors,
        events_window_secs: None,
    };
    let profile = match &opts.profile_file {
        Some(f) => match profile::load_file(f) {
            Ok(p) if p.name == req.profile => Ok(p),
            Ok(_) => profile::find(&req.profile, &opts.profile_dirs)?,
            Err(e) => Err(e),
        },
        None => profile::find(&req.profile, &opts.profile_dirs)?,
    };
    let items = Vec::new();
    let mut errors = Vec::new();
    let profile = match profile {
        Ok(p) => p,
        Err(e) => {
            errors.push(e.to_string());
            return Some(none(items, errors));
        }
    };
    let root = match triage::resolve_root(
        &opts.root,
        &opts.proc_root,
        req.pid,
        req.container_id.as_deref(),
    ) {
        Ok(r) => r,
        Err(e) => {
            errors.push(e);
            return Some(DiskPlan {
                items,
                errors,
                events_window_secs: profile.events_window_secs,
            });
        }
    };
    Some(triage_plan(&profile, &root, items, errors))
}

/// A container's writable layer (its overlay upperdir) collected whole, within the
/// `writable-layer` profile's caps: what a last-breath collection keeps of a container the
/// runtime is about to delete.
pub fn plan_writable_layer(layer: &Path) -> DiskPlan {
    match profile::find("writable-layer", &[]) {
        Some(Ok(p)) => triage_plan(&p, layer, Vec::new(), Vec::new()),
        Some(Err(e)) => DiskPlan {
            items: Vec::new(),
            errors: vec![e.to_string()],
            events_window_secs: None,
        },
        None => DiskPlan {
            items: Vec::new(),
            errors: vec!["the writable-layer profile is not built in".into()],
            events_window_secs: None,
        },
    }
}

/// `profile` run over `root`: each file an item, then the bodyfile and the index.
fn triage_plan(
    profile: &profile::Profile,
    root: &Path,
    mut items: Vec<DiskItem>,
    mut errors: Vec<String>,
) -> DiskPlan {
    let t = match triage::run(profile, root) {
        Ok(t) => t,
        Err(e) => {
            errors.push(e);
            return DiskPlan {
                items,
                errors,
                events_window_secs: profile.events_window_secs,
            };
        }
    };
    let root_shown = root.display().to_string();
    let on_host_root = root_shown == "/";
    for f in t.files {
        let path = String::from_utf8_lossy(&f.path).into_owned();
        let mut details = f.stat.details();
        walk::insert_exact_bytes(&mut details, "path", &f.path);
        if !on_host_root {
            details.insert("root".into(), root_shown.clone().into());
        }
        details.insert("artifact".into(), f.artifact.clone().into());
        if let Some(h) = &f.home {
            details.insert("home".into(), h.path.clone().into());
            details.insert("home_found".into(), h.found.into());
        }
        details.insert("profile".into(), profile.name.clone().into());
        items.push(DiskItem::File {
            source: Source {
                name: path.clone(),
                path: Some(path),
                details,
                ..Default::default()
            },
            file: f,
        });
    }
    let mut details = serde_json::Map::new();
    details.insert("root".into(), root_shown.clone().into());
    details.insert("profile".into(), profile.name.clone().into());
    details.insert("entries".into(), t.bodyfile_lines.into());
    if !t.capped.is_empty() {
        // Left out by a cap on purpose: said where the responder looks, not only in the index.
        tracing::info!("triage caps left files out: {:?}", t.capped);
        details.insert("capped".into(), t.capped.clone().into());
    }
    items.push(DiskItem::Document {
        source: Source {
            name: "bodyfile".into(),
            media_type: Some("text/x-bodyfile".into()),
            details: details.clone(),
            ..Default::default()
        },
        bytes: t.bodyfile,
    });
    match serde_json::to_vec_pretty(&t.index) {
        Ok(bytes) => items.push(DiskItem::Document {
            source: Source {
                name: "triage-index.json".into(),
                media_type: Some("application/json".into()),
                details,
                ..Default::default()
            },
            bytes,
        }),
        Err(e) => errors.push(format!("triage-index.json: cannot serialise: {e}")),
    }
    // What could not be walked is in the index; here it reaches the collection's errors.
    errors.extend(t.errors);
    DiskPlan {
        items,
        errors,
        events_window_secs: profile.events_window_secs,
    }
}

fn plan_devices(devices: &[String]) -> DiskPlan {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    if devices.is_empty() {
        errors.push(
            "profile disk needs at least one device (`--device /dev/nvme0n1`, or \"devices\" in the request)"
                .into(),
        );
    }
    for dev in devices {
        match image::open(dev) {
            Ok((file, details)) => {
                let name = std::path::Path::new(dev)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| dev.clone());
                items.push(DiskItem::Device {
                    source: Source {
                        name,
                        device: Some(dev.clone()),
                        media_type: Some("application/octet-stream".into()),
                        details,
                        ..Default::default()
                    },
                    file,
                });
            }
            Err(e) => errors.push(e),
        }
    }
    DiskPlan {
        items,
        errors,
        events_window_secs: None,
    }
}
