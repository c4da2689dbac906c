//! Finding (and once per test process, building) the binaries under test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

/// Paths of the executables and the guest component a [`Stack`](crate::Stack) runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `apphost`.
    pub apphost: PathBuf,
    /// `fake-m365`.
    pub fake_m365: PathBuf,
    /// `fake-pbx`.
    pub fake_pbx: PathBuf,
    /// The connector guest built by `make guest`.
    pub guest_wasm: PathBuf,
}

/// Set to `1` to use the binaries already in the target directory without running cargo.
pub const SKIP_BUILD_ENV: &str = "E2E_SKIP_BUILD";

static BINARIES: OnceLock<Result<Binaries, String>> = OnceLock::new();

impl Binaries {
    /// Builds the binaries once per process (`cargo build -p apphost -p fake-m365 -p fake-pbx`,
    /// same profile as this executable), then locates them and the guest `.wasm`.
    pub fn get() -> Result<Binaries> {
        BINARIES
            .get_or_init(|| locate().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(anyhow::Error::msg)
    }
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/e2e lies two levels below the workspace root")
        .to_path_buf()
}

fn locate() -> Result<Binaries> {
    let root = workspace_root();
    let guest_wasm = root.join("plugins/microsoft365.wasm");
    if !guest_wasm.is_file() {
        bail!(
            "{} is missing: run `make guest` first (the end-to-end tests run the built guest)",
            guest_wasm.display()
        );
    }
    // The test executable lives in target/<profile>/deps (tests) or target/<profile> (the demo).
    let exe = std::env::current_exe()?;
    let mut profile_dir = exe.parent().context("executable without a directory")?;
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir = profile_dir.parent().context("deps without a parent")?;
    }
    let profile_dir = profile_dir.to_path_buf();
    if std::env::var(SKIP_BUILD_ENV).as_deref() != Ok("1") {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&root).args([
            "build",
            "-p",
            "apphost",
            "-p",
            "fake-m365",
            "-p",
            "fake-pbx",
        ]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        // Same target directory as ours, wherever CARGO_TARGET_DIR put it.
        if let Some(target) = profile_dir.parent() {
            cmd.arg("--target-dir").arg(target);
        }
        // Output only matters when the build fails; keep test output readable otherwise.
        let out = cmd.output().context("running cargo build")?;
        if !out.status.success() {
            bail!(
                "cargo build of apphost, fake-m365 and fake-pbx failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let find = |name: &str| -> Result<PathBuf> {
        let p = profile_dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            bail!(
                "{} not found (build it with cargo build -p {name})",
                p.display()
            )
        }
    };
    Ok(Binaries {
        apphost: find("apphost")?,
        fake_m365: find("fake-m365")?,
        fake_pbx: find("fake-pbx")?,
        guest_wasm,
    })
}
