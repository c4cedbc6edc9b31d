//! Loading Region and RegionLink manifests from YAML files, for local mode.
//!
//! A file holds any number of YAML documents (`---` separated); empty documents are
//! skipped. Every object is checked with [`crate::validate`], fields the types do not
//! know are refused (as `kubectl apply` does by default), and the objects together must
//! form one mesh ([`crate::validate::mesh`]). All problems are reported at once, each
//! naming the file, the document (counted from 1), the object and the field.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

use crate::validate::{self, DEFAULT_NAMESPACE, MeshViolation, ObjectRef, Violation};
use crate::{Region, RegionLink};

const API_VERSION: &str = "meridian.dev/v1alpha1";

/// The objects of one mesh, in the order they appear in the files. Every object has a
/// namespace (`default` when its manifest names none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifests {
    /// The Regions.
    pub regions: Vec<Region>,
    /// The RegionLinks.
    pub links: Vec<RegionLink>,
}

impl Manifests {
    /// The namespace all objects share (`default` when there are none).
    pub fn namespace(&self) -> &str {
        self.regions
            .first()
            .map(|r| &r.metadata)
            .or_else(|| self.links.first().map(|l| &l.metadata))
            .map_or(DEFAULT_NAMESPACE, validate::namespace_of)
    }
}

/// Why manifests could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file could not be read.
    #[error("{}: {error}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error (part of this error's message, so not also its source).
        error: std::io::Error,
    },

    /// A document is not valid YAML, or does not have the shape of its kind.
    #[error("{}: document {document}{}: {error}", file.display(), Paren(object))]
    Yaml {
        /// The file.
        file: PathBuf,
        /// The document within the file, counted from 1.
        document: usize,
        /// The object, such as `Region "eu"`, when known.
        object: Option<String>,
        /// serde_yaml's error, with the field path and location when it has them
        /// (part of this error's message, so not also its source).
        error: serde_yaml::Error,
    },

    /// A document is not a Region or a RegionLink of a supported version.
    #[error("{}: document {document}: {message}", file.display())]
    Kind {
        /// The file.
        file: PathBuf,
        /// The document within the file, counted from 1.
        document: usize,
        /// What the document is and what was expected.
        message: String,
    },

    /// An object breaks a rule.
    #[error("{}: document {document} ({object}): {field}: {message}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The document within the file, counted from 1.
        document: usize,
        /// The object, such as `Region "eu"`.
        object: String,
        /// Path of the field, such as `spec.serviceCenter.replicas`.
        field: String,
        /// What is wrong.
        message: String,
    },

    /// More than one problem; each is on its own line.
    #[error("{}", Lines(.0))]
    Many(Vec<ManifestError>),
}

/// Where an object came from.
#[derive(Debug, Clone)]
struct Origin {
    file: PathBuf,
    document: usize,
    object: String,
}

impl Origin {
    fn invalid(&self, violation: Violation) -> ManifestError {
        ManifestError::Invalid {
            file: self.file.clone(),
            document: self.document,
            object: self.object.clone(),
            field: violation.field,
            message: violation.message,
        }
    }
}

/// Reads the files, in order, and returns the objects they define.
pub fn load_files(paths: &[PathBuf]) -> Result<Manifests, ManifestError> {
    load_files_with(paths, &|_| {})
}

/// Like [`load_files`], with `prepare` applied to each Region as read and
/// before it is validated: how a runner supplies what it knows of a region
/// beyond its manifest (local mode's `--postgres REGION=URL` makes that
/// region's data center PostgreSQL, so its rules are PostgreSQL's).
pub fn load_files_with(
    paths: &[PathBuf],
    prepare: &dyn Fn(&mut Region),
) -> Result<Manifests, ManifestError> {
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|error| ManifestError::Read {
            file: path.clone(),
            error,
        })?;
        files.push((path.clone(), text));
    }
    parse_with(&files, prepare)
}

/// Like [`load_files`], for files already read: each entry is a file name (used in
/// messages) and its text.
pub fn parse(files: &[(PathBuf, String)]) -> Result<Manifests, ManifestError> {
    parse_with(files, &|_| {})
}

/// Like [`parse`], with `prepare` as in [`load_files_with`].
pub fn parse_with(
    files: &[(PathBuf, String)],
    prepare: &dyn Fn(&mut Region),
) -> Result<Manifests, ManifestError> {
    let mut loader = Loader {
        prepare: Some(prepare),
        ..Loader::default()
    };
    for (file, text) in files {
        loader.file(file, text);
    }
    loader.finish()
}

#[derive(Default)]
struct Loader<'a> {
    /// Applied to each Region before it is validated.
    prepare: Option<&'a dyn Fn(&mut Region)>,
    manifests: Manifests,
    region_origins: Vec<Origin>,
    link_origins: Vec<Origin>,
    errors: Vec<ManifestError>,
    /// Whether some document could not be read at all, so cross-object checks would
    /// report objects as missing that are only unreadable.
    unreadable: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Region,
    RegionLink,
}

impl Loader<'_> {
    fn file(&mut self, file: &Path, text: &str) {
        // First pass: each document as an untyped value, to learn its kind.
        let mut values = Vec::new();
        let mut syntax_error = None;
        for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            match Value::deserialize(document) {
                Ok(value) => values.push(value),
                Err(error) => {
                    self.unreadable = true;
                    syntax_error = Some(ManifestError::Yaml {
                        file: file.to_owned(),
                        document: i + 1,
                        object: None,
                        error,
                    });
                    // The parser cannot resynchronise after a syntax error; the
                    // documents before it are still checked below.
                    break;
                }
            }
        }

        // Second pass: deserialize straight from the text into the type of each
        // document, so that serde_yaml's errors carry the field path and line.
        let documents = serde_yaml::Deserializer::from_str(text);
        for (i, (document, value)) in documents.zip(&values).enumerate() {
            let number = i + 1;
            if value.is_null() {
                continue;
            }
            let kind = match kind_of(value) {
                Ok(kind) => kind,
                Err(message) => {
                    self.unreadable = true;
                    self.errors.push(ManifestError::Kind {
                        file: file.to_owned(),
                        document: number,
                        message,
                    });
                    continue;
                }
            };
            let origin = Origin {
                file: file.to_owned(),
                document: number,
                object: describe(kind, value),
            };
            match kind {
                Kind::Region => {
                    if let Some(mut region) = self.typed::<Region>(document, value, &origin) {
                        if let Some(prepare) = self.prepare {
                            prepare(&mut region);
                        }
                        self.errors.extend(
                            validate::region(&region)
                                .into_iter()
                                .map(|v| origin.invalid(v)),
                        );
                        self.manifests.regions.push(region);
                        self.region_origins.push(origin);
                    }
                }
                Kind::RegionLink => {
                    if let Some(link) = self.typed::<RegionLink>(document, value, &origin) {
                        self.errors.extend(
                            validate::region_link(&link)
                                .into_iter()
                                .map(|v| origin.invalid(v)),
                        );
                        self.manifests.links.push(link);
                        self.link_origins.push(origin);
                    }
                }
            }
        }
        self.errors.extend(syntax_error);
    }

    /// Deserializes one document into `T` and refuses fields `T` does not know.
    fn typed<T>(
        &mut self,
        document: serde_yaml::Deserializer<'_>,
        value: &Value,
        origin: &Origin,
    ) -> Option<T>
    where
        T: for<'de> Deserialize<'de> + serde::Serialize,
    {
        let object = match T::deserialize(document) {
            Ok(object) => object,
            Err(error) => {
                self.unreadable = true;
                self.errors.push(ManifestError::Yaml {
                    file: origin.file.clone(),
                    document: origin.document,
                    object: Some(origin.object.clone()),
                    error,
                });
                return None;
            }
        };
        // A field that does not survive the round trip is one the type does not know.
        // The status is the operator's to write; it is ignored here.
        if let Ok(known) = serde_yaml::to_value(&object) {
            let mut unknown = Vec::new();
            if let (Value::Mapping(given), Value::Mapping(known)) = (value, &known) {
                for (key, given) in given {
                    if key.as_str() != Some("status") {
                        unknown_fields(key, given, known.get(key), "", &mut unknown);
                    }
                }
            }
            self.errors.extend(unknown.into_iter().map(|field| {
                origin.invalid(Violation {
                    field,
                    message: "unknown field".to_owned(),
                })
            }));
        }
        Some(object)
    }

    fn finish(mut self) -> Result<Manifests, ManifestError> {
        if !self.unreadable {
            let violations = validate::mesh(&self.manifests.regions, &self.manifests.links);
            for MeshViolation {
                object,
                violation,
                conflicts_with,
            } in violations
            {
                let mut violation = violation;
                if let Some(other) = conflicts_with {
                    let other = self.origin(other);
                    violation.message = format!(
                        "{} (see {}: document {})",
                        violation.message,
                        other.file.display(),
                        other.document
                    );
                }
                let error = self.origin(object).invalid(violation);
                self.errors.push(error);
            }
        }
        match self.errors.len() {
            0 => {}
            1 => return Err(self.errors.remove(0)),
            _ => return Err(ManifestError::Many(self.errors)),
        }

        let mut manifests = self.manifests;
        let metas = manifests
            .regions
            .iter_mut()
            .map(|r| &mut r.metadata)
            .chain(manifests.links.iter_mut().map(|l| &mut l.metadata));
        for meta in metas {
            meta.namespace
                .get_or_insert_with(|| DEFAULT_NAMESPACE.to_owned());
        }
        Ok(manifests)
    }

    fn origin(&self, object: ObjectRef) -> &Origin {
        match object {
            ObjectRef::Region(i) => &self.region_origins[i],
            ObjectRef::Link(i) => &self.link_origins[i],
        }
    }
}

/// Reads `apiVersion` and `kind`, and refuses anything but this crate's kinds.
fn kind_of(value: &Value) -> Result<Kind, String> {
    let Value::Mapping(map) = value else {
        return Err("not a Kubernetes object (expected a mapping with apiVersion and kind)".into());
    };
    let field = |name: &str| map.get(name).and_then(Value::as_str);
    let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
        return Err("not a Kubernetes object (apiVersion and kind are required)".into());
    };
    let kind = match kind {
        "Region" => Kind::Region,
        "RegionLink" => Kind::RegionLink,
        other => {
            return Err(format!(
                "kind {other:?} ({api_version}) is not supported; only Region and RegionLink ({API_VERSION}) are"
            ));
        }
    };
    if api_version != API_VERSION {
        return Err(format!(
            "apiVersion {api_version:?} is not supported for {}; expected {API_VERSION}",
            describe(kind, value)
        ));
    }
    Ok(kind)
}

/// `Region "eu"`, or `Region without a name`.
fn describe(kind: Kind, value: &Value) -> String {
    let kind = match kind {
        Kind::Region => "Region",
        Kind::RegionLink => "RegionLink",
    };
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    match name {
        Some(name) => format!("{kind} {name:?}"),
        None => format!("{kind} without a name"),
    }
}

/// Collects the paths of fields in `given` that have no counterpart in `known`. Null
/// values are skipped: they mean "unset" to every field.
fn unknown_fields(
    key: &Value,
    given: &Value,
    known: Option<&Value>,
    parent: &str,
    out: &mut Vec<String>,
) {
    let name = match key {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_default(),
    };
    let path = if parent.is_empty() {
        name
    } else {
        format!("{parent}.{name}")
    };
    if given.is_null() {
        return;
    }
    let Some(known) = known else {
        out.push(path);
        return;
    };
    match (given, known) {
        (Value::Mapping(given), Value::Mapping(known)) => {
            for (key, value) in given {
                unknown_fields(key, value, known.get(key), &path, out);
            }
        }
        (Value::Sequence(given), Value::Sequence(known)) => {
            for (i, (given, known)) in given.iter().zip(known).enumerate() {
                if let (Value::Mapping(given), Value::Mapping(known)) = (given, known) {
                    for (key, value) in given {
                        unknown_fields(key, value, known.get(key), &format!("{path}[{i}]"), out);
                    }
                }
            }
        }
        _ => {}
    }
}

/// Displays ` (x)` for `Some(x)` and nothing for `None`.
struct Paren<'a>(&'a Option<String>);

impl fmt::Display for Paren<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, " ({s})"),
            None => Ok(()),
        }
    }
}

/// Displays errors one per line.
struct Lines<'a>(&'a [ManifestError]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(files: &[(&str, &str)]) -> Result<Manifests, ManifestError> {
        let files: Vec<_> = files
            .iter()
            .map(|(name, text)| (PathBuf::from(name), text.to_string()))
            .collect();
        parse(&files)
    }

    #[test]
    fn prepare_sees_each_region_before_it_is_validated() {
        let text = "apiVersion: meridian.dev/v1alpha1\nkind: Region\n\
                    metadata: {name: eu}\nspec: {cluster: c}\n";
        let files = vec![(PathBuf::from("m.yaml"), text.to_owned())];
        let seen = std::cell::RefCell::new(Vec::new());
        let prepared = parse_with(&files, &|region| {
            seen.borrow_mut()
                .push(region.metadata.name.clone().unwrap_or_default());
            region.spec.roaming.replicas = 3;
        })
        .unwrap();
        assert_eq!(*seen.borrow(), ["eu"]);
        assert_eq!(
            prepared.regions[0].spec.roaming.replicas, 3,
            "kept as prepared"
        );
        let err = parse_with(&files, &|region| region.spec.roaming.replicas = 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.roaming.replicas"),
            "validated after: {err}"
        );
        assert!(parse(&files).is_ok());
    }

    fn error(files: &[(&str, &str)]) -> String {
        load(files)
            .expect_err("manifests should be refused")
            .to_string()
    }

    const MESH: &str = "\
# two regions and the link between them
---
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: eu, namespace: chat}
spec:
  cluster: default
  serviceCenter:
    resources: {requests: {cpu: 1, memory: 512Mi}}
    storage: {size: 1Gi}
---
---
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: us, namespace: chat}
spec: {cluster: default, roaming: {replicas: 2}}
---
apiVersion: meridian.dev/v1alpha1
kind: RegionLink
metadata: {name: eu-us, namespace: chat}
spec: {regions: [eu, us], cost: 10}
";

    #[test]
    fn loads_regions_and_links_skipping_empty_documents() {
        let m = load(&[("mesh.yaml", MESH)]).unwrap();
        let names: Vec<_> = m
            .regions
            .iter()
            .map(|r| r.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(names, ["eu", "us"]);
        assert_eq!(m.links.len(), 1);
        assert_eq!(m.links[0].spec.cost, Some(10));
        assert_eq!(m.namespace(), "chat");
        assert_eq!(m.regions[1].spec.roaming.replicas, 2);
        assert_eq!(m.regions[1].spec.service_center.replicas, 1);
        let requests = m.regions[0].spec.service_center.resources.as_ref().unwrap();
        assert_eq!(requests.requests.as_ref().unwrap()["cpu"].0, "1");
    }

    #[test]
    fn objects_may_come_from_several_files() {
        let m = load(&[
            (
                "eu.yaml",
                "apiVersion: meridian.dev/v1alpha1\nkind: Region\nmetadata: {name: eu}\nspec: {cluster: c}\n",
            ),
            (
                "us.yaml",
                "apiVersion: meridian.dev/v1alpha1\nkind: Region\nmetadata: {name: us}\nspec: {cluster: c}\n",
            ),
        ])
        .unwrap();
        assert_eq!(m.regions.len(), 2);
        assert_eq!(m.namespace(), "default");
        assert_eq!(m.regions[0].metadata.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn nothing_at_all_is_empty() {
        assert_eq!(load(&[("empty.yaml", "")]).unwrap(), Manifests::default());
        assert_eq!(load(&[]).unwrap(), Manifests::default());
    }

    #[test]
    fn a_bad_region_code_names_file_document_object_and_field() {
        let text = "\
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: eu}
spec: {cluster: c}
---
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: EU}
spec: {cluster: c}
";
        assert_eq!(
            error(&[("examples/bad.yaml", text)]),
            "examples/bad.yaml: document 2 (Region \"EU\"): metadata.name: \"EU\" is not a region code (lowercase letters, digits and '-', at most 32 characters)"
        );
    }

    #[test]
    fn other_kinds_are_refused_by_name() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n";
        assert_eq!(
            error(&[("x.yaml", text)]),
            "x.yaml: document 1: kind \"Deployment\" (apps/v1) is not supported; only Region and RegionLink (meridian.dev/v1alpha1) are"
        );
        let text = "apiVersion: meridian.dev/v1\nkind: Region\nmetadata: {name: eu}\n";
        assert_eq!(
            error(&[("x.yaml", text)]),
            "x.yaml: document 1: apiVersion \"meridian.dev/v1\" is not supported for Region \"eu\"; expected meridian.dev/v1alpha1"
        );
        let text = "just: a map\n";
        assert_eq!(
            error(&[("x.yaml", text)]),
            "x.yaml: document 1: not a Kubernetes object (apiVersion and kind are required)"
        );
    }

    #[test]
    fn type_errors_name_the_field() {
        let text = "\
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: eu}
spec:
  cluster: c
  serviceCenter:
    replicas: two
";
        let message = error(&[("x.yaml", text)]);
        assert!(
            message.starts_with(
                "x.yaml: document 1 (Region \"eu\"): spec.serviceCenter.replicas: invalid type"
            ),
            "{message}"
        );
        assert!(message.contains("line 7"), "{message}");
    }

    #[test]
    fn missing_required_fields_are_reported() {
        let text =
            "apiVersion: meridian.dev/v1alpha1\nkind: Region\nmetadata: {name: eu}\nspec: {}\n";
        let message = error(&[("x.yaml", text)]);
        assert!(message.contains("missing field `cluster`"), "{message}");
        assert!(
            message.starts_with("x.yaml: document 1 (Region \"eu\"): spec"),
            "{message}"
        );
    }

    #[test]
    fn syntax_errors_name_file_and_document() {
        let text = "apiVersion: meridian.dev/v1alpha1\nkind: Region\nmetadata: {name: eu}\nspec: {cluster: c}\n---\nkind: [unclosed\n";
        let message = error(&[("x.yaml", text)]);
        assert!(message.starts_with("x.yaml: document 2: "), "{message}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = "\
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: eu, labels: {a: b}}
spec:
  cluster: c
  serviceCenter: {replica: 2, storage: {size: 1Gi, class: fast}}
  peerEndpoint: null
status: {anything: goes}
";
        assert_eq!(
            error(&[("x.yaml", text)]),
            "x.yaml: document 1 (Region \"eu\"): spec.serviceCenter.replica: unknown field\n\
             x.yaml: document 1 (Region \"eu\"): spec.serviceCenter.storage.class: unknown field"
        );
    }

    #[test]
    fn cross_object_problems_point_at_both_objects() {
        let region = |name: &str, ns: &str| {
            format!(
                "apiVersion: meridian.dev/v1alpha1\nkind: Region\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{cluster: c}}\n"
            )
        };
        let link = "apiVersion: meridian.dev/v1alpha1\nkind: RegionLink\nmetadata: {name: eu-ap, namespace: chat}\nspec: {regions: [eu, ap]}\n";
        let a = format!("{}---\n{}", region("eu", "chat"), region("us", "chat"));
        let b = format!(
            "{}---\n{}---\n{link}",
            region("eu", "chat"),
            region("ap", "other")
        );
        assert_eq!(
            error(&[("a.yaml", &a), ("b.yaml", &b)]),
            "b.yaml: document 2 (Region \"ap\"): metadata.namespace: \"other\" differs from \"chat\"; all Regions and RegionLinks of a mesh share one namespace (see a.yaml: document 1)\n\
             b.yaml: document 1 (Region \"eu\"): metadata.name: Region \"eu\" is defined more than once (see a.yaml: document 1)"
        );
    }

    #[test]
    fn links_must_join_existing_regions_once() {
        let text = "\
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: eu}
spec: {cluster: c}
---
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: us}
spec: {cluster: c}
---
apiVersion: meridian.dev/v1alpha1
kind: RegionLink
metadata: {name: a}
spec: {regions: [eu, us]}
---
apiVersion: meridian.dev/v1alpha1
kind: RegionLink
metadata: {name: b}
spec: {regions: [us, eu], enabled: false}
---
apiVersion: meridian.dev/v1alpha1
kind: RegionLink
metadata: {name: c}
spec: {regions: [eu, xx]}
";
        assert_eq!(
            error(&[("l.yaml", text)]),
            "l.yaml: document 4 (RegionLink \"b\"): spec.regions: another RegionLink already sets the link between \"eu\" and \"us\" (see l.yaml: document 3)\n\
             l.yaml: document 5 (RegionLink \"c\"): spec.regions[1]: there is no Region \"xx\" in namespace \"default\""
        );
    }

    #[test]
    fn unreadable_files_are_named() {
        let missing = PathBuf::from("/nonexistent/meridian.yaml");
        let message = load_files(std::slice::from_ref(&missing))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("/nonexistent/meridian.yaml: "),
            "{message}"
        );
    }
}
