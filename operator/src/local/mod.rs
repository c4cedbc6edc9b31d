//! Local mode: run the regions of a set of manifests as processes on this machine.

use std::path::PathBuf;

use meridian_crds::manifest;

/// Arguments of `meridian-operator local`.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalArgs {
    /// A manifest file of Region and RegionLink objects; repeat for several files.
    #[arg(short = 'f', long = "file", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// Directory for each region's data and logs.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
}

/// Runs the regions the manifests define.
///
/// For now this only loads and checks the manifests and prints a summary.
pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    let manifests = manifest::load_files(&args.files)?;
    let names: Vec<&str> = manifests
        .regions
        .iter()
        .filter_map(|r| r.metadata.name.as_deref())
        .collect();
    println!(
        "namespace {}: {} region(s) [{}], {} region link(s); state in {}",
        manifests.namespace(),
        names.len(),
        names.join(", "),
        manifests.links.len(),
        args.state_dir.display()
    );
    Ok(())
}
