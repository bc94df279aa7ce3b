//! Where the workspace binaries are.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// The directory holding `cairn-collector`, `cairn-agent` and `cairn`, and what to tell the
/// user when one of them is missing.
#[derive(Debug, Clone)]
pub struct Bins {
    dir: PathBuf,
    how_to_build: String,
}

impl Bins {
    /// Beside the running test executable: it lives in `target/<profile>/deps/`, the binaries
    /// in `target/<profile>/`.
    pub fn beside_test_exe() -> Result<Bins> {
        let exe = std::env::current_exe().context("cannot find the test executable's path")?;
        let mut dir = exe
            .parent()
            .ok_or_else(|| anyhow!("test executable {} has no parent", exe.display()))?
            .to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        Ok(Bins {
            dir,
            how_to_build: "run `cargo build --workspace --bins` (or `cargo xtask test`, which \
                           builds them) before `cargo test`"
                .into(),
        })
    }

    /// In `dir` (e.g. `target/release`); `how_to_build` is the advice given when one is missing.
    pub fn in_dir(dir: impl Into<PathBuf>, how_to_build: &str) -> Bins {
        Bins {
            dir: dir.into(),
            how_to_build: how_to_build.into(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the binary `name`; an error saying how to build it when it is not there.
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        if !path.is_file() {
            bail!(
                "binary {} is missing: {}",
                path.display(),
                self.how_to_build
            );
        }
        Ok(path)
    }

    pub fn collector(&self) -> Result<PathBuf> {
        self.path("cairn-collector")
    }

    pub fn agent(&self) -> Result<PathBuf> {
        self.path("cairn-agent")
    }

    /// The analyst CLI, `cairn`.
    pub fn cli(&self) -> Result<PathBuf> {
        self.path("cairn")
    }

    /// Errors unless all three binaries are there.
    pub fn check(&self) -> Result<()> {
        self.collector()?;
        self.agent()?;
        self.cli()?;
        Ok(())
    }
}

/// The directory of the binaries beside the test executable ([`Bins::beside_test_exe`]).
pub fn bin_dir() -> Result<PathBuf> {
    Ok(Bins::beside_test_exe()?.dir)
}

/// Path of one of the workspace binaries (`cairn`, `cairn-agent`, `cairn-collector`) beside the
/// test executable.
pub fn bin(name: &str) -> Result<PathBuf> {
    Bins::beside_test_exe()?.path(name)
}
