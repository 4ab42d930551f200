//! Builds observer-ebpf for the BPF target with the linked Debian toolchain (see
//! xtask/setup.sh) so that the object can be embedded in the observer binary.
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=OBSERVER_BPF_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=OBSERVER_EBPF_SKIP");
    // The fuzz targets use only the parsers, and build with another toolchain and flags:
    // an empty object stands in (loading it fails with a clear error, should anyone try).
    if std::env::var_os("OBSERVER_EBPF_SKIP").is_some() {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("observer-ebpf");
        std::fs::write(out, [])?;
        return Ok(());
    }
    println!("cargo:rerun-if-changed=../observer-common/src");
    let toolchain =
        std::env::var("OBSERVER_BPF_TOOLCHAIN").unwrap_or_else(|_| "observer-bpf".to_owned());
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../observer-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package { name: "observer-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
