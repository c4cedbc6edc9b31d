//! The node pods' log level (`--node-log-level`, chart value
//! `nodeLogLevel`): `RUST_LOG` in every container of a Region's service
//! center and roaming system, which the node reads as its log filter.
//! Applied to what `build::desired` made; unset, no pod changes.

use k8s_openapi::api::core::v1::{EnvVar, PodTemplateSpec};

use super::build::Desired;

/// The variable the node (and the operator) read their log filter from.
pub const ENV: &str = "RUST_LOG";

/// The levels a log filter may name.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a log filter: comma-separated directives, each a level (`error`,
/// `warn`, `info`, `debug`, `trace`, `off`) or `module=level`, as in
/// `info,meridian_node=debug`; the chart's schema allows the same. (The
/// filter syntax would take any word as a module name: `loud` would enable
/// every level of a module named loud, which is never what is meant.)
pub fn parse(level: &str) -> Result<String, String> {
    let target = |t: &str| {
        let mut chars = t.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let directive = |d: &str| match d.split_once('=') {
        None => LEVELS.contains(&d),
        Some((t, l)) => target(t) && LEVELS.contains(&l),
    };
    if level.split(',').all(directive)
        && tracing_subscriber::EnvFilter::builder()
            .parse(level)
            .is_ok()
    {
        Ok(level.to_owned())
    } else {
        Err(format!(
            "{level:?} is not a log filter: a level ({}) or module=level, comma-separated, as in info,meridian_node=debug",
            LEVELS.join(", ")
        ))
    }
}

/// Sets `level` as the log filter of every container of `desired`'s pods.
pub fn apply(desired: &mut Desired, level: Option<&str>) {
    let Some(level) = level else {
        return;
    };
    set(desired.service_center.template_mut(), level);
    set(&mut desired.roaming.spec.template, level);
}

fn set(template: &mut PodTemplateSpec, level: &str) {
    for container in template
        .spec
        .iter_mut()
        .flat_map(|s| s.containers.iter_mut())
    {
        let env = container.env.get_or_insert_default();
        env.retain(|e| e.name != ENV);
        env.push(EnvVar {
            name: ENV.to_owned(),
            value: Some(level.to_owned()),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    use super::*;

    fn template() -> PodTemplateSpec {
        PodTemplateSpec {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "node".into(),
                    env: Some(vec![EnvVar {
                        name: ENV.into(),
                        value: Some("warn".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn levels(template: &PodTemplateSpec) -> Vec<Option<String>> {
        template.spec.as_ref().unwrap().containers[0]
            .env
            .iter()
            .flatten()
            .filter(|e| e.name == ENV)
            .map(|e| e.value.clone())
            .collect()
    }

    #[test]
    fn the_level_becomes_rust_log_once_in_each_container() {
        let mut t = template();
        set(&mut t, "info,meridian_node=debug");
        assert_eq!(levels(&t), vec![Some("info,meridian_node=debug".into())]);
    }

    #[test]
    fn only_log_filters_are_accepted() {
        for good in [
            "info",
            "debug",
            "off",
            "info,meridian_node=debug,tonic=warn",
        ] {
            assert_eq!(parse(good).as_deref(), Ok(good), "{good}");
        }
        for bad in [
            "loud",
            "info,meridian_node=loud",
            "=debug",
            "",
            "info,",
            "INFO",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("not a log filter"), "{bad}: {err}");
        }
    }
}
