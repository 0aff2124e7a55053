//! Builds sip-lb-ebpf for bpfel-unknown-none (nightly, build-std) and drops the
//! object in OUT_DIR, where `xdp::loader` embeds it.
use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } =
        cargo_metadata::MetadataCommand::new().no_deps().exec().context("MetadataCommand::exec")?;
    // The eBPF program is built from sip-lb-common too (the map ABI, the
    // Call-ID hash): aya-build watches only the eBPF crate, so a change in
    // common alone would leave a stale object embedded.
    if let Some(common) = packages.iter().find(|p| p.name.as_str() == "sip-lb-common") {
        if let Some(dir) = common.manifest_path.parent() {
            println!("cargo:rerun-if-changed={dir}");
        }
    }
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "sip-lb-ebpf")
        .ok_or_else(|| anyhow!("sip-lb-ebpf package not found"))?;
    let root_dir = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            no_default_features: false,
            features: &[],
        }],
        Toolchain::default(),
    )
}
