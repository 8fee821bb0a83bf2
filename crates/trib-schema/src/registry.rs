//! The registry: loading the schema directory, looking schemas up, publishing and validating.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::compat::{Incompatibility, is_backward_compatible};
use crate::document::{
    MAX_DOCUMENT_BYTES, SelfDescriptor, check_stored, compile, normalize,
    same_content_ignoring_self,
};
use crate::error::{PublishError, SchemaError};
use crate::subject::{SchemaId, Subject, check_event_name, slug};
use crate::validation::{self, Validation};
use crate::version::{Bump, SchemaVer};

/// Versioned schemas for every subject, compiled once and kept in memory.
///
/// Cloning is cheap (compiled schemas are shared), which allows copy-on-write publishing:
/// clone, [`publish`](Registry::publish) on the clone, swap it in.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    dir: Option<PathBuf>,
    events: BTreeMap<String, Versions>,
    traits: Versions,
}

type Versions = BTreeMap<SchemaVer, Arc<Schema>>;

/// One stored schema version.
pub struct Schema {
    id: SchemaId,
    document: Value,
    path: Option<PathBuf>,
    validator: jsonschema::Validator,
}

/// A line of [`Registry::list`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaInfo {
    /// What the schema describes.
    pub subject: Subject,
    /// Its version.
    pub version: SchemaVer,
    /// Its file, `None` in a registry without a directory.
    pub path: Option<PathBuf>,
}

/// What a publish does (or, from [`Registry::check_publish`], would do).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PublishPlan {
    /// What the schema describes.
    pub subject: Subject,
    /// The version published.
    pub version: SchemaVer,
    /// How the version relates to the previous one.
    pub change: Change,
    /// The latest version before this publish, if any.
    pub previous: Option<SchemaVer>,
    /// For a MODEL bump: why it was needed, i.e. what in the new version rejects data the
    /// previous version accepted. Empty otherwise.
    pub breaking: Vec<Incompatibility>,
    /// Things worth telling the publisher that do not block the publish.
    pub warnings: Vec<String>,
    /// The file written (or to be written); `None` in a registry without a directory.
    pub path: Option<PathBuf>,
    /// The document as stored, with `$schema` and `self` filled in.
    pub document: Value,
}

/// How a published version relates to the subject's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The subject's first version, `1-0-0`.
    Initial,
    /// A step from the previous latest version.
    Bump(Bump),
    /// The version exists with identical content: nothing to do.
    Unchanged,
}

/// A rule that a stored registry breaks, from [`check_dir`] or [`Registry::check`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckProblem {
    /// The offending version.
    pub schema: SchemaId,
    /// Its file, when it has one.
    pub path: Option<PathBuf>,
    /// What is wrong, in lowercase.
    pub message: String,
    /// The compatibility problems behind `message`, when that is the issue.
    pub incompatibilities: Vec<Incompatibility>,
}

impl fmt::Display for CheckProblem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(
                formatter,
                "{} ({}): {}",
                self.schema,
                path.display(),
                self.message
            ),
            None => write!(formatter, "{}: {}", self.schema, self.message),
        }
    }
}

/// Loads the registry in `dir` and checks every subject's history: the first version is
/// `1-0-0`, each version follows the previous one by one step, and ADDITIONs and REVISIONs
/// accept everything their predecessor accepted. Catches hand-edited or tampered directories.
///
/// Files that cannot be loaded are an `Err` (naming the file); rule violations are the
/// returned problems (empty when the directory is sound).
pub fn check_dir(dir: impl AsRef<Path>) -> Result<Vec<CheckProblem>, SchemaError> {
    Ok(Registry::load(dir)?.check())
}

impl Schema {
    /// Returns the schema's id (`Order Completed/1-0-2`).
    pub fn id(&self) -> &SchemaId {
        &self.id
    }

    /// Returns what the schema describes.
    pub fn subject(&self) -> &Subject {
        &self.id.subject
    }

    /// Returns the version.
    pub fn version(&self) -> &SchemaVer {
        &self.id.version
    }

    /// Returns the document as stored.
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// Returns the file, `None` in a registry without a directory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Validates a value against this exact version (the registry's `validate` uses the latest).
    pub fn validate(&self, value: &Value) -> Validation<'_> {
        validation::validate(&self.validator, &self.id, self.id.subject.field(), value)
    }
}

impl fmt::Debug for Schema {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Schema")
            .field("id", &self.id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Returns a registry with no schemas and no directory. Publishing to it keeps schemas in
    /// memory only.
    pub fn empty() -> Registry {
        Registry::default()
    }

    /// Loads every schema under `dir` (the config directory's `schemas/`).
    ///
    /// Layout: `events/<slug>/<MODEL-REVISION-ADDITION>.json` and
    /// `traits/<MODEL-REVISION-ADDITION>.json`. Each file must be a 2020-12 document whose
    /// `self` matches its place (kind, name, version), and must compile. Hidden entries (`.*`,
    /// e.g. temporary files of an interrupted publish) and plain files at the top (a README) are
    /// skipped; anything else unexpected is an error. Errors name the file.
    pub fn load(dir: impl AsRef<Path>) -> Result<Registry, SchemaError> {
        let dir = dir.as_ref();
        let mut registry = Registry {
            dir: Some(dir.to_path_buf()),
            ..Registry::default()
        };
        for (name, path) in visible_entries(dir)? {
            let is_dir = is_directory(&path)?;
            match (name.as_str(), is_dir) {
                ("events", true) => registry.load_events(&path)?,
                ("traits", true) => registry.load_versions(&path, None)?,
                (_, true) => {
                    return Err(SchemaError::UnexpectedEntry {
                        path,
                        reason: "only the `events` and `traits` directories belong here".to_owned(),
                    });
                }
                (_, false) => {}
            }
        }
        Ok(registry)
    }

    /// Like [`load`](Registry::load), but a missing `dir` gives an empty registry rooted there
    /// (the first publish creates it).
    pub fn open(dir: impl AsRef<Path>) -> Result<Registry, SchemaError> {
        let dir = dir.as_ref();
        match fs::metadata(dir) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Registry {
                dir: Some(dir.to_path_buf()),
                ..Registry::default()
            }),
            _ => Registry::load(dir),
        }
    }

    /// Returns the directory publishes write to, `None` for an in-memory registry.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Returns the number of stored versions, all subjects together.
    pub fn len(&self) -> usize {
        self.traits.len() + self.events.values().map(BTreeMap::len).sum::<usize>()
    }

    /// Returns true when no schema is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lists every version: the trait schema first, then events by name, versions ascending.
    pub fn list(&self) -> impl Iterator<Item = SchemaInfo> + '_ {
        self.traits
            .values()
            .chain(self.events.values().flat_map(BTreeMap::values))
            .map(|schema| SchemaInfo {
                subject: schema.id.subject.clone(),
                version: schema.id.version,
                path: schema.path.clone(),
            })
    }

    /// Returns one version of a subject, or its latest when `version` is `None`.
    pub fn get(&self, subject: &Subject, version: Option<&SchemaVer>) -> Option<&Schema> {
        let versions = self.versions(subject)?;
        let schema = match version {
            Some(version) => versions.get(version),
            None => versions.values().next_back(),
        };
        schema.map(Arc::as_ref)
    }

    /// Returns the latest version of a subject.
    pub fn latest(&self, subject: &Subject) -> Option<&Schema> {
        self.get(subject, None)
    }

    /// Validates a value (an event's `properties` or a call's `traits`) against the subject's
    /// latest version. Error paths start with `properties.` or `traits.`. Pass `{}` for a call
    /// without properties or traits: `null` fails a schema of `"type": "object"`.
    pub fn validate(&self, subject: &Subject, value: &Value) -> Validation<'_> {
        match self.latest(subject) {
            Some(schema) => schema.validate(value),
            None => Validation::NoSchema,
        }
    }

    /// Validates a track event's `properties` by event name, without building a [`Subject`]
    /// (no allocation on the hot path).
    pub fn validate_event(&self, name: &str, properties: &Value) -> Validation<'_> {
        match self
            .events
            .get(name)
            .and_then(|versions| versions.values().next_back())
        {
            Some(schema) => schema.validate(properties),
            None => Validation::NoSchema,
        }
    }

    /// Validates an identify call's `traits`.
    pub fn validate_traits(&self, traits: &Value) -> Validation<'_> {
        self.validate(&Subject::Traits, traits)
    }

    /// Works out what publishing `schema` as `subject`/`version` would do, without doing it.
    ///
    /// `schema` may omit `$schema` and `self` (they are filled in); if present they must agree.
    /// Rules: the first version is `1-0-0`; a later one follows the latest by one step; an
    /// existing version may only be republished identically (a no-op); an ADDITION or REVISION
    /// must accept everything the latest version accepts; a MODEL may break it, and the plan's
    /// `breaking` says why it was needed.
    pub fn check_publish(
        &self,
        subject: &Subject,
        version: &SchemaVer,
        schema: &Value,
    ) -> Result<PublishPlan, PublishError> {
        self.prepare(subject, version, schema).map(|(plan, _)| plan)
    }

    /// Publishes a version: checks it like [`check_publish`](Registry::check_publish), writes
    /// the file (temporary file, fsync, no-clobber link into place, directory fsync) and adds
    /// it to the registry. Returns the plan that was carried out.
    pub fn publish(
        &mut self,
        subject: &Subject,
        version: &SchemaVer,
        schema: &Value,
    ) -> Result<PublishPlan, PublishError> {
        let (mut plan, validator) = self.prepare(subject, version, schema)?;
        let Some(validator) = validator else {
            return Ok(plan);
        };
        if let Some(dir) = &self.dir {
            let target_dir = dir.join(subject.relative_dir());
            let file_name = format!("{version}.json");
            let mut text = serde_json::to_string_pretty(&plan.document).map_err(|source| {
                SchemaError::Json {
                    origin: target_dir.join(&file_name).display().to_string(),
                    source,
                }
            })?;
            text.push('\n');
            plan.path = Some(write_new_file(&target_dir, &file_name, text.as_bytes())?);
        }
        let schema = Schema {
            id: SchemaId {
                subject: subject.clone(),
                version: *version,
            },
            document: plan.document.clone(),
            path: plan.path.clone(),
            validator,
        };
        let versions = match subject {
            Subject::Event(name) => self.events.entry(name.clone()).or_default(),
            Subject::Traits => &mut self.traits,
        };
        versions.insert(*version, Arc::new(schema));
        Ok(plan)
    }

    /// [`check_publish`](Registry::check_publish) with the subject and version read from the
    /// document's `self` (a file given to the CLI, a body posted to the API).
    pub fn check_publish_document(&self, document: &Value) -> Result<PublishPlan, PublishError> {
        let descriptor = SelfDescriptor::from_document(document)?;
        self.check_publish(&descriptor.subject, &descriptor.version, document)
    }

    /// [`publish`](Registry::publish) with the subject and version read from the document's
    /// `self`.
    pub fn publish_document(&mut self, document: &Value) -> Result<PublishPlan, PublishError> {
        let descriptor = SelfDescriptor::from_document(document)?;
        self.publish(&descriptor.subject, &descriptor.version, document)
    }

    /// Checks every subject's history (see [`check_dir`]).
    pub fn check(&self) -> Vec<CheckProblem> {
        let mut problems = Vec::new();
        for versions in std::iter::once(&self.traits).chain(self.events.values()) {
            let mut previous: Option<&Schema> = None;
            for schema in versions.values() {
                match previous {
                    None if schema.id.version != SchemaVer::INITIAL => {
                        problems.push(problem(
                            schema,
                            "the first version must be 1-0-0".to_owned(),
                            Vec::new(),
                        ));
                    }
                    None => {}
                    Some(previous) => check_step(previous, schema, &mut problems),
                }
                previous = Some(schema);
            }
        }
        problems
    }

    fn versions(&self, subject: &Subject) -> Option<&Versions> {
        match subject {
            Subject::Event(name) => self.events.get(name),
            Subject::Traits => Some(&self.traits),
        }
    }

    /// Returns the plan and, unless it is a no-op, the compiled validator.
    fn prepare(
        &self,
        subject: &Subject,
        version: &SchemaVer,
        schema: &Value,
    ) -> Result<(PublishPlan, Option<jsonschema::Validator>), PublishError> {
        if let Subject::Event(name) = subject {
            check_event_name(name)?;
            let wanted = slug(name);
            if let Some(existing) = self
                .events
                .keys()
                .find(|existing| *existing != name && slug(existing) == wanted)
            {
                return Err(PublishError::SlugCollision {
                    name: name.clone(),
                    existing: existing.clone(),
                    slug: wanted,
                });
            }
        }
        let id = SchemaId {
            subject: subject.clone(),
            version: *version,
        };
        let origin = id.to_string();
        let document = normalize(subject, version, schema, &origin)?;
        let path = self.dir.as_ref().map(|dir| {
            dir.join(subject.relative_dir())
                .join(format!("{version}.json"))
        });
        let mut plan = PublishPlan {
            subject: subject.clone(),
            version: *version,
            change: Change::Initial,
            previous: None,
            breaking: Vec::new(),
            warnings: Vec::new(),
            path,
            document,
        };
        let versions = self.versions(subject);
        if let Some(existing) = versions.and_then(|versions| versions.get(version)) {
            // Compare normalized forms: a stored `$schema` may carry the optional trailing `#`.
            let existing_document = normalize(subject, version, &existing.document, &origin)?;
            if existing_document == plan.document {
                plan.change = Change::Unchanged;
                plan.previous = versions.and_then(|versions| versions.keys().next_back().copied());
                return Ok((plan, None));
            }
            return Err(PublishError::Immutable {
                subject: subject.clone(),
                version: *version,
            });
        }
        let validator = compile(&plan.document, &origin)?;
        let Some(latest) = versions.and_then(|versions| versions.values().next_back()) else {
            if *version != SchemaVer::INITIAL {
                return Err(PublishError::FirstVersion {
                    subject: subject.clone(),
                    version: *version,
                });
            }
            return Ok((plan, Some(validator)));
        };
        let latest_version = latest.id.version;
        plan.previous = Some(latest_version);
        let bump =
            version
                .bump_from(&latest_version)
                .ok_or_else(|| PublishError::NotNextVersion {
                    subject: subject.clone(),
                    version: *version,
                    latest: latest_version,
                })?;
        plan.change = Change::Bump(bump);
        if same_content_ignoring_self(&latest.document, &plan.document) {
            plan.warnings.push(format!(
                "the content is identical to {latest_version}: this version changes nothing"
            ));
        }
        match (bump, is_backward_compatible(&latest.document, &plan.document)) {
            (Bump::Addition, Ok(())) => {}
            (Bump::Revision | Bump::Model, Ok(())) => plan.warnings.push(format!(
                "the change is backward compatible with {latest_version}: an ADDITION ({}) would have been enough",
                latest_version.next_addition()
            )),
            (Bump::Addition | Bump::Revision, Err(reasons)) => {
                return Err(PublishError::Incompatible {
                    subject: subject.clone(),
                    version: *version,
                    previous: latest_version,
                    reasons,
                });
            }
            (Bump::Model, Err(reasons)) => plan.breaking = reasons,
        }
        Ok((plan, Some(validator)))
    }

    fn load_events(&mut self, events_dir: &Path) -> Result<(), SchemaError> {
        for (name, path) in visible_entries(events_dir)? {
            if !is_directory(&path)? {
                return Err(SchemaError::UnexpectedEntry {
                    path,
                    reason:
                        "expected one directory per event, named after the event (`events/<slug>/`)"
                            .to_owned(),
                });
            }
            self.load_versions(&path, Some(&name))?;
        }
        Ok(())
    }

    /// Loads `dir`'s versions: the trait schema when `event_slug` is `None`, else one event.
    fn load_versions(&mut self, dir: &Path, event_slug: Option<&str>) -> Result<(), SchemaError> {
        let mut event_name: Option<String> = None;
        let mut versions = Versions::new();
        for (file_name, path) in visible_entries(dir)? {
            let version = file_name
                .strip_suffix(".json")
                .and_then(|stem| stem.parse::<SchemaVer>().ok())
                .filter(|_| !is_directory(&path).unwrap_or(true));
            let Some(version) = version else {
                return Err(SchemaError::UnexpectedEntry {
                    path,
                    reason: "expected files named MODEL-REVISION-ADDITION.json, such as 1-0-0.json"
                        .to_owned(),
                });
            };
            let schema = load_file(&path, version)?;
            let invalid = |reason: String| SchemaError::InvalidDocument {
                origin: path.display().to_string(),
                reason,
            };
            match (&schema.id.subject, event_slug) {
                (Subject::Traits, None) => {}
                (Subject::Event(_), None) => {
                    return Err(invalid(
                        "it is an event schema but lies in `traits/`".to_owned(),
                    ));
                }
                (Subject::Traits, Some(_)) => {
                    return Err(invalid(
                        "it is the trait schema but lies in `events/`".to_owned(),
                    ));
                }
                (Subject::Event(name), Some(event_slug)) => {
                    let expected = slug(name);
                    if expected != event_slug {
                        return Err(invalid(format!(
                            "`self.name` {name:?} belongs in `events/{expected}/`, not `events/{event_slug}/`"
                        )));
                    }
                    if let Some(other) = event_name.as_ref().filter(|other| *other != name) {
                        return Err(invalid(format!(
                            "`self.name` is {name:?} but other files in this directory name {other:?}"
                        )));
                    }
                    event_name = Some(name.clone());
                }
            }
            versions.insert(version, Arc::new(schema));
        }
        match event_name {
            Some(name) => {
                self.events.insert(name, versions);
            }
            None if event_slug.is_none() => self.traits = versions,
            None => {}
        }
        Ok(())
    }
}

fn load_file(path: &Path, version: SchemaVer) -> Result<Schema, SchemaError> {
    let origin = path.display().to_string();
    let io_error = |source| SchemaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = fs::metadata(path).map_err(io_error)?.len();
    if size > MAX_DOCUMENT_BYTES {
        return Err(SchemaError::InvalidDocument {
            origin,
            reason: format!("it is {size} bytes, more than the {MAX_DOCUMENT_BYTES} allowed"),
        });
    }
    let text = fs::read(path).map_err(io_error)?;
    let document: Value = serde_json::from_slice(&text).map_err(|source| SchemaError::Json {
        origin: origin.clone(),
        source,
    })?;
    let descriptor = check_stored(&document, &origin)?;
    if descriptor.version != version {
        return Err(SchemaError::InvalidDocument {
            origin,
            reason: format!(
                "`self.version` is {} but the file name says {version}",
                descriptor.version
            ),
        });
    }
    let validator = compile(&document, &origin)?;
    Ok(Schema {
        id: SchemaId {
            subject: descriptor.subject,
            version,
        },
        document,
        path: Some(path.to_path_buf()),
        validator,
    })
}

fn check_step(previous: &Schema, schema: &Schema, problems: &mut Vec<CheckProblem>) {
    let from = previous.id.version;
    let to = schema.id.version;
    let bump = to.bump_from(&from);
    if bump.is_none() {
        problems.push(problem(
            schema,
            format!(
                "does not follow {from} by one step: expected {}, {} or {}",
                from.next_addition(),
                from.next_revision(),
                from.next_model()
            ),
            Vec::new(),
        ));
    }
    // Within one MODEL every version must accept what the previous one accepted, gap or not.
    if bump == Some(Bump::Model) || (bump.is_none() && to.model != from.model) {
        return;
    }
    if let Err(reasons) = is_backward_compatible(&previous.document, &schema.document) {
        let message = format!(
            "is not backward compatible with {from} ({}); a change that breaks old data requires a new MODEL",
            crate::compat::summarize(&reasons)
        );
        problems.push(problem(schema, message, reasons));
    }
}

fn problem(
    schema: &Schema,
    message: String,
    incompatibilities: Vec<Incompatibility>,
) -> CheckProblem {
    CheckProblem {
        schema: schema.id.clone(),
        path: schema.path.clone(),
        message,
        incompatibilities,
    }
}

/// Entries of `dir` sorted by name, without hidden ones (`.` prefix).
fn visible_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, SchemaError> {
    let io_error = |source| SchemaError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(SchemaError::UnexpectedEntry {
                path,
                reason: "the name is not valid UTF-8".to_owned(),
            });
        };
        if !name.starts_with('.') {
            entries.push((name, path));
        }
    }
    entries.sort();
    Ok(entries)
}

fn is_directory(path: &Path) -> Result<bool, SchemaError> {
    fs::metadata(path)
        .map(|metadata| metadata.is_dir())
        .map_err(|source| SchemaError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes `bytes` to `dir/file_name`, which must not exist: a hidden temporary file is written
/// and fsynced, hard-linked into place (which fails instead of overwriting a file another
/// process published meanwhile), removed, and the directory fsynced. Readers never see a
/// partial file.
fn write_new_file(dir: &Path, file_name: &str, bytes: &[u8]) -> Result<PathBuf, SchemaError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SchemaError::Io { path, source }
    };
    let created_dirs = !dir.exists();
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let final_path = dir.join(file_name);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let temp_path = dir.join(format!(".{file_name}.tmp-{}-{nanos}", std::process::id()));
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&temp_path);
        return Err(SchemaError::Io {
            path: temp_path,
            source,
        });
    }
    let linked = match fs::hard_link(&temp_path, &final_path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Err(error),
        // File systems without hard links: check, then rename (a small race remains there).
        Err(_) if final_path.exists() => {
            Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
        }
        Err(_) => fs::rename(&temp_path, &final_path),
    };
    let _ = fs::remove_file(&temp_path);
    linked.map_err(io_error(&final_path))?;
    sync_dir(dir)?;
    if created_dirs {
        // The subject's directory is new: make its entry in the parent durable too.
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
            if let Some(grandparent) = parent.parent() {
                sync_dir(grandparent)?;
            }
        }
    }
    Ok(final_path)
}

fn sync_dir(dir: &Path) -> Result<(), SchemaError> {
    #[cfg(unix)]
    {
        fs::File::open(dir)
            .and_then(|handle| handle.sync_all())
            .map_err(|source| SchemaError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
