//! The manifest of the scenarios that start their own local mode: the three
//! regions of `examples/three-regions.yaml` (eu, us and ap, full mesh), with
//! eu's service center at a given number of replicas. More than one needs
//! eu's data center on PostgreSQL (`--postgres eu=URL`, docs/ARCHITECTURE.md
//! §12); the same text with one replica runs on SQLite or PostgreSQL.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The regions, with `replicas` service-center replicas in `region`.
pub fn three_regions(region: &str, replicas: u32) -> String {
    let mut text = String::from("# Written by meridian-bench.\n");
    for code in ["eu", "us", "ap"] {
        let n = if code == region { replicas } else { 1 };
        text.push_str(&format!(
            "---\napiVersion: meridian.dev/v1alpha1\nkind: Region\n\
             metadata: {{name: {code}, namespace: chat}}\n\
             spec: {{cluster: default, serviceCenter: {{replicas: {n}}}}}\n"
        ));
    }
    text
}

/// Writes [`three_regions`] to `dir/regions-<region>-<replicas>.yaml`.
pub fn write(dir: &Path, region: &str, replicas: u32) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("regions-{region}-{replicas}.yaml"));
    std::fs::write(&path, three_regions(region, replicas))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_region_named_gets_the_replicas() {
        let text = three_regions("eu", 2);
        let replicas: Vec<(String, u64)> = text
            .split("---\n")
            .skip(1)
            .map(|doc| {
                let v: serde_yaml::Value = serde_yaml::from_str(doc).unwrap();
                (
                    v["metadata"]["name"].as_str().unwrap().to_owned(),
                    v["spec"]["serviceCenter"]["replicas"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            replicas,
            [("eu".into(), 2), ("us".into(), 1), ("ap".into(), 1)]
        );
    }
}
