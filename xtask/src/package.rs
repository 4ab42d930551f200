//! `cargo xtask package`: the .deb, with cargo-deb. The release binary writes its own man page
//! and completion scripts (`observer generate`) into target/release/package (cargo-deb finds what is under target/release), which the package's
//! assets name (observer/Cargo.toml, [package.metadata.deb]).

use std::{fs, io::Write as _, path::{Path, PathBuf}, process::Command};

use anyhow::{Context as _, bail};

pub fn build(root: &Path) -> anyhow::Result<PathBuf> {
    crate::run(crate::cargo().args(["build", "--release", "-p", "observer"]))?;
    let out = root.join("target/release/package");
    fs::create_dir_all(&out)?;
    let observer = root.join("target/release/observer");
    for (what, file) in [("man", "observer.1"), ("bash", "observer.bash"), ("zsh", "_observer"), ("fish", "observer.fish")] {
        let o = Command::new(&observer).args(["generate", what]).output().with_context(|| format!("cannot run {}", observer.display()))?;
        if !o.status.success() {
            bail!("observer generate {what}: {}", String::from_utf8_lossy(&o.stderr));
        }
        fs::write(out.join(file), &o.stdout)?;
    }
    // Debian wants man pages compressed, without a timestamp (reproducible).
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&fs::read(out.join("observer.1"))?)?;
    fs::write(out.join("observer.1.gz"), gz.finish()?)?;
    let deb = root.join("target/debian");
    let _ = fs::remove_dir_all(&deb);
    crate::run(crate::cargo().args(["deb", "-p", "observer", "--no-build", "--output"]).arg(&deb))?;
    let built = fs::read_dir(&deb)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("cargo deb wrote no .deb")?;
    println!("xtask: built {}", built.display());
    Ok(built)
}
