//! Builds observer-ebpf for the BPF target with the linked Debian toolchain (see
//! xtask/setup.sh) so that the object can be embedded in the observer binary.
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=OBSERVER_BPF_TOOLCHAIN");
    println!("cargo:rerun-if-changed=../observer-common/src");
    let toolchain =
        std::env::var("OBSERVER_BPF_TOOLCHAIN").unwrap_or_else(|_| "observer-bpf".to_owned());
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../observer-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package { name: "observer-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
