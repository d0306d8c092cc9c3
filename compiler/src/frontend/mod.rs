//! Frontend: Kubernetes manifests (YAML or JSON) → typed API objects.
//!
//! Accepts files and directories; multi-document YAML streams; `kind: List` (and typed lists
//! such as `PodList`) as `kubectl get -o yaml|json` prints them. Large JSON files take a fast
//! path: items are decoded straight from borrowed slices of the file, and the slice's
//! position is the object's span, so no tree of the whole file is ever built.
//!
//! Decoding uses k8s-openapi types where they exist and [`crd`] types for Cilium and the
//! Network Policy API. Every problem is a [`Diagnostic`] with a span; the stage keeps going
//! so that one run reports all of them.

pub mod crd;
mod dupkeys;
mod lean;
pub mod strict;
pub mod yaml;

use crate::diag::{Code, Diagnostic, Sink};
use crate::secret::SecretBytes;
use crate::source::{FieldPath, FileId, PathSeg, Sources, Span};
use k8s_openapi::api::{
    apps::v1 as apps, batch::v1 as batch, core::v1 as core, discovery::v1 as discovery,
    networking::v1 as networking,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::path::{Path, PathBuf};

/// A decoded object and the text it came from.
#[derive(Clone, Debug)]
pub struct Object {
    /// The object's text.
    pub span: Span,
    /// The decoded object.
    pub body: Body,
}

/// The kinds pipec models.
#[derive(Clone, Debug)]
#[allow(
    missing_docs,
    reason = "each variant is the Kubernetes kind of the same name"
)]
pub enum Body {
    Namespace(Box<core::Namespace>),
    Pod(Box<core::Pod>),
    Node(Box<core::Node>),
    Service(Box<core::Service>),
    Endpoints(Box<core::Endpoints>),
    EndpointSlice(Box<discovery::EndpointSlice>),
    Deployment(Box<apps::Deployment>),
    ReplicaSet(Box<apps::ReplicaSet>),
    StatefulSet(Box<apps::StatefulSet>),
    DaemonSet(Box<apps::DaemonSet>),
    Job(Box<batch::Job>),
    ReplicationController(Box<core::ReplicationController>),
    CronJob(Box<batch::CronJob>),
    NetworkPolicy(Box<networking::NetworkPolicy>),
    CiliumNetworkPolicy(Box<crd::CiliumNetworkPolicy>),
    CiliumClusterwideNetworkPolicy(Box<crd::CiliumNetworkPolicy>),
    CiliumIdentity(Box<crd::CiliumIdentity>),
    CiliumEndpoint(Box<crd::CiliumEndpoint>),
    AdminNetworkPolicy(Box<crd::AdminNetworkPolicy>),
    BaselineAdminNetworkPolicy(Box<crd::AdminNetworkPolicy>),
    ClusterNetworkPolicy(Box<crd::ClusterNetworkPolicy>),
    Secret(Box<Secret>),
}

/// A Secret, its values redacted: `stringData` is merged over `data` as the API server
/// does on write, and every value is a [`SecretBytes`], so printing the object never shows
/// one.
#[derive(Clone, Debug)]
pub struct Secret {
    /// Metadata.
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    /// `type`, such as `Opaque`.
    pub type_: Option<String>,
    /// Values by key.
    pub data: std::collections::BTreeMap<String, SecretBytes>,
}

impl Secret {
    fn from_api(s: core::Secret) -> Secret {
        let mut data: std::collections::BTreeMap<String, SecretBytes> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, SecretBytes::new(v.0)))
            .collect();
        for (k, v) in s.string_data.unwrap_or_default() {
            data.insert(k, SecretBytes::new(v.into_bytes()));
        }
        Secret {
            metadata: s.metadata,
            type_: s.type_,
            data,
        }
    }
}

impl Body {
    /// The Kubernetes kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Namespace(_) => "Namespace",
            Body::Pod(_) => "Pod",
            Body::Node(_) => "Node",
            Body::Service(_) => "Service",
            Body::Endpoints(_) => "Endpoints",
            Body::EndpointSlice(_) => "EndpointSlice",
            Body::Deployment(_) => "Deployment",
            Body::ReplicaSet(_) => "ReplicaSet",
            Body::StatefulSet(_) => "StatefulSet",
            Body::DaemonSet(_) => "DaemonSet",
            Body::Job(_) => "Job",
            Body::ReplicationController(_) => "ReplicationController",
            Body::CronJob(_) => "CronJob",
            Body::NetworkPolicy(_) => "NetworkPolicy",
            Body::CiliumNetworkPolicy(_) => "CiliumNetworkPolicy",
            Body::CiliumClusterwideNetworkPolicy(_) => "CiliumClusterwideNetworkPolicy",
            Body::CiliumIdentity(_) => "CiliumIdentity",
            Body::CiliumEndpoint(_) => "CiliumEndpoint",
            Body::Secret(_) => "Secret",
            Body::AdminNetworkPolicy(_) => "AdminNetworkPolicy",
            Body::BaselineAdminNetworkPolicy(_) => "BaselineAdminNetworkPolicy",
            Body::ClusterNetworkPolicy(_) => "ClusterNetworkPolicy",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(&self) -> bool {
        !matches!(
            self,
            Body::Namespace(_)
                | Body::Node(_)
                | Body::CiliumClusterwideNetworkPolicy(_)
                | Body::CiliumIdentity(_)
                | Body::AdminNetworkPolicy(_)
                | Body::BaselineAdminNetworkPolicy(_)
                | Body::ClusterNetworkPolicy(_)
        )
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Body::Namespace(o) => &o.metadata,
            Body::Pod(o) => &o.metadata,
            Body::Node(o) => &o.metadata,
            Body::Service(o) => &o.metadata,
            Body::Endpoints(o) => &o.metadata,
            Body::EndpointSlice(o) => &o.metadata,
            Body::Deployment(o) => &o.metadata,
            Body::ReplicaSet(o) => &o.metadata,
            Body::StatefulSet(o) => &o.metadata,
            Body::DaemonSet(o) => &o.metadata,
            Body::Job(o) => &o.metadata,
            Body::ReplicationController(o) => &o.metadata,
            Body::CronJob(o) => &o.metadata,
            Body::NetworkPolicy(o) => &o.metadata,
            Body::CiliumNetworkPolicy(o) | Body::CiliumClusterwideNetworkPolicy(o) => &o.metadata,
            Body::CiliumIdentity(o) => &o.metadata,
            Body::CiliumEndpoint(o) => &o.metadata,
            Body::Secret(o) => &o.metadata,
            Body::AdminNetworkPolicy(o) | Body::BaselineAdminNetworkPolicy(o) => &o.metadata,
            Body::ClusterNetworkPolicy(o) => &o.metadata,
        }
    }

    /// The object's metadata, to change (`kubectl apply -n` filling in the namespace).
    pub fn metadata_mut(
        &mut self,
    ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Body::Namespace(o) => &mut o.metadata,
            Body::Pod(o) => &mut o.metadata,
            Body::Node(o) => &mut o.metadata,
            Body::Service(o) => &mut o.metadata,
            Body::Endpoints(o) => &mut o.metadata,
            Body::EndpointSlice(o) => &mut o.metadata,
            Body::Deployment(o) => &mut o.metadata,
            Body::ReplicaSet(o) => &mut o.metadata,
            Body::StatefulSet(o) => &mut o.metadata,
            Body::DaemonSet(o) => &mut o.metadata,
            Body::Job(o) => &mut o.metadata,
            Body::ReplicationController(o) => &mut o.metadata,
            Body::CronJob(o) => &mut o.metadata,
            Body::NetworkPolicy(o) => &mut o.metadata,
            Body::CiliumNetworkPolicy(o) | Body::CiliumClusterwideNetworkPolicy(o) => {
                &mut o.metadata
            }
            Body::CiliumIdentity(o) => &mut o.metadata,
            Body::CiliumEndpoint(o) => &mut o.metadata,
            Body::Secret(o) => &mut o.metadata,
            Body::AdminNetworkPolicy(o) | Body::BaselineAdminNetworkPolicy(o) => &mut o.metadata,
            Body::ClusterNetworkPolicy(o) => &mut o.metadata,
        }
    }
}

/// Reads the files named on the command line into `sources`. A directory contributes its
/// `.yaml`, `.yml` and `.json` files in name order, not its subdirectories (as
/// `kubectl apply -f DIR` without `-R`). This is the only I/O the compiler does.
pub fn read_inputs(paths: &[PathBuf], sources: &mut Sources, sink: &mut Sink) -> Vec<FileId> {
    let mut files = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            files.push(path.clone());
        } else {
            collect_files(path, &mut files, sink);
        }
    }
    // A file named twice (`pipec check a.yaml a.yaml`, or a file and its directory) is read
    // once, as kubectl reads it once: its objects are not "defined twice".
    let mut seen = std::collections::BTreeSet::new();
    files.retain(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
    files
        .into_iter()
        .filter_map(|path| match read_path(&path) {
            Ok(bytes) => add_text(sources, &path, bytes, sink),
            Err(e) => {
                sink.push(
                    Diagnostic::error(Code::Io, format!("cannot read {}: {e}", path.display()))
                        .hint(
                            "name regular files (not devices, FIFOs or sockets) of at most 2 GiB",
                        ),
                );
                None
            }
        })
        .collect()
}

/// Reads one input: `-` is standard input (as kubectl's `-f -`), anything else a regular file.
fn read_path(path: &Path) -> Result<Vec<u8>, String> {
    if path.as_os_str() != "-" {
        return read_regular_file(path);
    }
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!(
            "standard input is larger than {MAX_INPUT_BYTES} bytes"
        ));
    }
    Ok(bytes)
}

/// The largest input file pipec reads: spans are 32-bit offsets, and the largest real
/// cluster dump measured (BENCHMARKS.md) is 1.1 GB as kubectl indents it.
pub const MAX_INPUT_BYTES: u64 = 2 << 30;

/// Reads a regular file of at most [`MAX_INPUT_BYTES`]. Devices (`/dev/zero`), FIFOs and
/// sockets are refused before they are opened for reading, since reading them may never
/// end; a file that grows past the limit while it is read is refused too. The `.pipe`
/// include loader uses this as well, so an include cannot name such a file either.
pub fn read_regular_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".to_string());
    }
    if meta.len() > MAX_INPUT_BYTES {
        return Err(format!(
            "the file has {} bytes, more than the limit of {MAX_INPUT_BYTES}",
            meta.len()
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!(
            "the file grew past the limit of {MAX_INPUT_BYTES} bytes while it was read"
        ));
    }
    Ok(bytes)
}

/// Adds a file's bytes to `sources` and returns the id of a file to decode. Text that is
/// not UTF-8 is added with replacement characters, so that the error can point at the
/// first bad byte, and is not decoded (`None`).
fn add_text(sources: &mut Sources, path: &Path, bytes: Vec<u8>, sink: &mut Sink) -> Option<FileId> {
    let name = path.display().to_string();
    // kubectl reads files through a decoder that drops a UTF-8 byte-order mark (cli-runtime's
    // FileVisitor), so a file saved by an editor that writes one loads there too.
    let bytes = match bytes.strip_prefix(b"\xef\xbb\xbf") {
        Some(rest) => rest.to_vec(),
        None => bytes,
    };
    match String::from_utf8(bytes) {
        Ok(text) => Some(sources.add(name, text)),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let bad = e.as_bytes().get(valid).copied().unwrap_or(0);
            let file = sources.add(name, String::from_utf8_lossy(e.as_bytes()).into_owned());
            // The replacement character is 3 bytes; the valid prefix is unchanged.
            sink.push(
                Diagnostic::error(
                    Code::Io,
                    format!("{} is not UTF-8 text", path.display()),
                )
                .at(
                    Span::from_range(file, valid..valid + 3),
                    format!("byte 0x{bad:02x} is not UTF-8"),
                )
                .hint("Kubernetes manifests are UTF-8; re-encode the file, for example with `iconv -f latin1 -t utf-8`"),
            );
            None
        }
    }
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>, sink: &mut Sink) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                sink.push(Diagnostic::error(
                    Code::Io,
                    format!("cannot read directory {}: {e}", path.display()),
                ));
                return;
            }
        };
        entries.sort();
        for entry in entries {
            let is_manifest = entry
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json" || e == "pipe");
            if entry.is_file() && is_manifest {
                out.push(entry);
            }
        }
    } else if path.exists() {
        out.push(path.to_path_buf());
    } else {
        sink.push(Diagnostic::error(
            Code::Io,
            format!("{}: no such file or directory", path.display()),
        ));
    }
}

/// Decodes every object of the given files, in file order, then document order.
pub fn files_to_objects(sources: &Sources, files: &[FileId], sink: &mut Sink) -> Vec<Object> {
    let mut out = Vec::new();
    for_each_object(sources, files, sink, |o| out.push(o));
    out
}

/// Like [`files_to_objects`], but hands each object to `f` as soon as it is decoded, so a
/// caller that consumes objects one by one never holds all of them (the model stage of
/// [`crate::driver::load`] does this: 150k decoded pods would not fit the memory budget).
pub fn for_each_object(
    sources: &Sources,
    files: &[FileId],
    sink: &mut Sink,
    mut f: impl FnMut(Object),
) {
    for &file in files {
        let text = sources.text(file);
        let trimmed = text.trim_start();
        let errors_before = sink.diags.len();
        let mut count = 0usize;
        let mut counted = |o: Object| {
            count += 1;
            f(o)
        };
        if is_json(sources.name(file), trimmed) {
            decode_json_file(sources, file, &mut counted, sink);
        } else {
            decode_yaml_file(sources, file, &mut counted, sink);
        }
        if count == 0 && sink.diags.len() == errors_before {
            let end = text.len();
            sink.push(
                Diagnostic::warning(
                    Code::EmptyInput,
                    format!("{} holds no Kubernetes object", sources.name(file)),
                )
                .at(Span::from_range(file, end..end), "end of file")
                .hint("add objects to the file, or leave it out of the input"),
            );
        }
    }
}

/// Whether a file is read as JSON: a `.json` file always (its errors are JSON errors);
/// another file when it starts like JSON and is JSON, so that a YAML file in flow style
/// (`{apiVersion: v1, ...}`, unquoted keys) is read as the YAML it is.
fn is_json(name: &str, trimmed: &str) -> bool {
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return false;
    }
    name.ends_with(".json")
        || serde_json::Deserializer::from_str(trimmed)
            .into_iter::<serde::de::IgnoredAny>()
            .all(|r| r.is_ok())
}

/// Where decoded objects go.
type Out<'o> = dyn FnMut(Object) + 'o;

/// The fields every object has, read before the typed decode to choose the type.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    api_version: Option<String>,
    kind: Option<String>,
}

impl Header {
    /// Reads the header without scanning the whole object when `apiVersion` and `kind` are
    /// its first two keys, as kubectl and the API server write them (keys sorted). `None`
    /// when they are not, or are not plain strings: then the object is decoded as a whole.
    /// `text` is one JSON value that has already been checked for syntax.
    fn quick(text: &str) -> Option<Header> {
        fn string(s: &str) -> Option<(&str, &str)> {
            let rest = s.trim_start().strip_prefix('"')?;
            let end = rest.find(['"', '\\'])?;
            (rest.as_bytes()[end] == b'"').then(|| (&rest[..end], &rest[end + 1..]))
        }
        let mut rest = text.trim_start().strip_prefix('{')?;
        let mut header = Header {
            api_version: None,
            kind: None,
        };
        for i in 0..2 {
            if i == 1 {
                rest = rest.trim_start().strip_prefix(',')?;
            }
            let (key, after) = string(rest)?;
            let (value, after) = string(after.trim_start().strip_prefix(':')?)?;
            let slot = match key {
                "apiVersion" => &mut header.api_version,
                "kind" => &mut header.kind,
                _ => return None,
            };
            if slot.replace(value.to_string()).is_some() {
                return None;
            }
            rest = after;
        }
        Some(header)
    }
}

#[derive(Deserialize)]
struct JsonList<'a> {
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

/// A JSON file that is one `List` object, read in a single pass: header and item slices.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonRootList<'a> {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(borrow)]
    items: Option<Vec<&'a RawValue>>,
}

fn decode_json_file(sources: &Sources, file: FileId, out: &mut Out<'_>, sink: &mut Sink) {
    let text = sources.text(file);
    if let Some((key, end)) = dupkeys::first_duplicate(text) {
        sink.push(duplicate_json_key(file, text, &key, end));
        return;
    }
    // Fast path for the usual large input, one `kind: List` object: one pass over the file
    // instead of three (syntax check, header, items). Anything else, or any problem, takes
    // the general path below, which reports it.
    if let Ok(root) = serde_json::from_str::<JsonRootList>(text) {
        if let (Some(kind), Some(_), Some(items)) = (&root.kind, &root.api_version, root.items) {
            if is_list(kind) {
                for item in items {
                    let span = Span::from_range(file, slice_range(text, item.get()));
                    decode_json_object(sources, span, item, out, sink, 1);
                }
                return;
            }
        }
    }
    // A file may hold several JSON values one after another (`kubectl get -o json` run
    // twice into one file, `jq -c` output): each is read in turn, as kubectl reads them.
    let mut roots: Vec<&RawValue> = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<&RawValue>() {
        match value {
            Ok(v) => roots.push(v),
            Err(e) => {
                let offset = offset_of_line_col(text, e.line(), e.column());
                let mut message = tidy(&e.to_string());
                let mut span = Span::from_range(file, offset..offset);
                let mut label = "here";
                let mut hint = "check for a missing comma, quote or bracket near this position";
                // serde_json reports `{"a": 1,}` as "key must be a string" at the `}`; the comma
                // before it is the mistake.
                let before = text.get(..offset).unwrap_or("").trim_end();
                let at_close = matches!(text.as_bytes().get(offset), Some(b'}' | b']'));
                if (at_close || message.contains("trailing comma")) && before.ends_with(',') {
                    let comma = before.len() - 1;
                    message = "trailing comma".to_string();
                    span = Span::from_range(file, comma..comma + 1);
                    label = "this comma";
                    hint =
                    "JSON allows no comma after the last member of an object or array; remove it";
                }
                sink.push(
                    Diagnostic::error(Code::JsonSyntax, format!("invalid JSON: {message}"))
                        .at(span, label)
                        .hint(hint),
                );
                return;
            }
        }
    }
    for root in roots {
        let items: Vec<&RawValue> = if root.get().trim_start().starts_with('[') {
            serde_json::from_str(root.get()).unwrap_or_default()
        } else {
            vec![root]
        };
        for item in items {
            let span = Span::from_range(file, slice_range(text, item.get()));
            decode_json_object(sources, span, item, out, sink, 0);
        }
    }
}

/// A key written twice in one JSON object. The whole file is refused, as kubectl's strict
/// decoding refuses it: serde_json would keep the second value without a word.
fn duplicate_json_key(file: FileId, text: &str, key: &str, end: usize) -> Diagnostic {
    let quoted = format!("\"{key}\"");
    let before = text.get(..end).unwrap_or("");
    let span = match before.rfind(&quoted) {
        Some(start) => start..start + quoted.len(),
        None => end..end,
    };
    let mut d = Diagnostic::error(
        Code::JsonSyntax,
        format!("invalid JSON: the key `{key}` appears twice in one object"),
    )
    .at(Span::from_range(file, span.clone()), "again here");
    if let Some(first) = before.get(..span.start).and_then(|b| b.rfind(&quoted)) {
        // The earlier occurrence may belong to another object; it is shown only as a
        // likely place, hence the cautious label.
        d = d.also(
            Span::from_range(file, first..first + quoted.len()),
            "written before here",
        );
    }
    d.hint(
        "JSON keys of one object must be unique; kubectl rejects this file. Remove one of the two",
    )
}

fn decode_json_object(
    sources: &Sources,
    span: Span,
    raw: &RawValue,
    out: &mut Out<'_>,
    sink: &mut Sink,
    depth: usize,
) {
    let header: Header = match Header::quick(raw.get()).map_or_else(
        || serde_json::from_str(raw.get()),
        Ok::<_, serde_json::Error>,
    ) {
        Ok(h) => h,
        Err(_) => {
            sink.push(not_an_object(span));
            return;
        }
    };
    let Some(kind) = header.kind.as_deref() else {
        sink.push(missing_header(sources, span, "kind"));
        return;
    };
    if is_list(kind) && depth == 0 {
        match serde_json::from_str::<JsonList>(raw.get()) {
            Ok(list) => {
                let text = sources.text(span.file);
                for item in list.items {
                    let item_span = Span::from_range(span.file, slice_range(text, item.get()));
                    decode_json_object(sources, item_span, item, out, sink, depth + 1);
                }
            }
            Err(e) => sink.push(type_error(
                sources,
                span,
                &FieldPath::parse("items"),
                &e.to_string(),
            )),
        }
        return;
    }
    let Some(api_version) = header.api_version else {
        sink.push(missing_header(sources, span, "apiVersion").hint(api_version_hint(kind)));
        return;
    };
    let mut decode = |path_err: Result<Body, (FieldPath, String)>| match path_err {
        Ok(body) => out(Object { span, body }),
        Err((path, msg)) => sink.push(type_error(sources, span, &path, &msg)),
    };
    match choose(&api_version, kind) {
        Choice::Known(make) => decode(make(Input::Json(raw))),
        Choice::WrongVersion(expected) => sink.push(
            unenforced_policy(sources, span, kind, &api_version, Some(expected))
                .unwrap_or_else(|| wrong_version(sources, span, kind, &api_version, expected)),
        ),
        Choice::Unknown => sink.push(
            unenforced_policy(sources, span, kind, &api_version, None)
                .unwrap_or_else(|| unknown_kind(sources, span, kind, &api_version)),
        ),
    }
}

fn decode_yaml_file(sources: &Sources, file: FileId, out: &mut Out<'_>, sink: &mut Sink) {
    let text = sources.text(file);
    let docs = match yaml::parse_stream(text) {
        Ok(d) => d,
        Err(e) => {
            let hint = if e.message.contains("tab") {
                "YAML indentation must be spaces; replace the tab characters"
            } else if e.message.contains("too many nodes") {
                "write the repeated parts out, or use fewer levels of aliases"
            } else if e.message.contains("merge key") {
                "merge a mapping (`<<: *base`) or a list of mappings (`<<: [*a, *b]`)"
            } else {
                "check the indentation and the quoting near this position"
            };
            let mut d = Diagnostic::error(Code::YamlSyntax, format!("invalid YAML: {}", e.message))
                .at(Span::from_range(file, e.offset..e.offset), "here")
                .hint(hint);
            if e.message.contains("flow") {
                if let Some(open) = unclosed_bracket(text.get(..e.offset).unwrap_or("")) {
                    let c = &text[open..open + 1];
                    d = d
                        .also(
                            Span::from_range(file, open..open + 1),
                            format!("this `{c}` is not closed"),
                        )
                        .hint(format!(
                            "close the `{c}` on its line, or write the value as an indented block"
                        ));
                }
            }
            sink.push(d);
            return;
        }
    };
    for doc in docs {
        for (first, again) in &doc.duplicate_keys {
            let key = text.get(again.clone()).unwrap_or("");
            sink.push(
                Diagnostic::error(
                    Code::YamlSyntax,
                    format!("invalid YAML: the key `{key}` appears twice in one mapping"),
                )
                .at(Span::from_range(file, again.clone()), "again here")
                .also(Span::from_range(file, first.clone()), "first here")
                .hint("YAML keys must be unique; kubectl rejects this file. Remove one of the two"),
            );
        }
        let Some(root) = doc.root else { continue };
        if root.is_null() {
            continue;
        }
        decode_yaml_node(sources, file, &root, out, sink, 0);
    }
}

fn decode_yaml_node(
    sources: &Sources,
    file: FileId,
    node: &yaml::Node,
    out: &mut Out<'_>,
    sink: &mut Sink,
    depth: usize,
) {
    let span = Span::from_range(file, node.span.clone());
    if !matches!(node.kind, yaml::NodeKind::Map(_)) {
        sink.push(not_an_object(span));
        return;
    }
    // `kind: null` or `kind: 5` is no kind: only a string names one, as in JSON.
    let kind = node.get("kind").map(yaml::to_json);
    let Some(serde_json::Value::String(kind)) = &kind else {
        sink.push(missing_header(sources, span, "kind"));
        return;
    };
    let kind = kind.as_str();
    if is_list(kind) && depth == 0 {
        match node.get("items").map(|n| &n.kind) {
            Some(yaml::NodeKind::Seq(items)) => {
                for item in items {
                    decode_yaml_node(sources, file, item, out, sink, depth + 1);
                }
            }
            Some(_) => sink.push(
                Diagnostic::error(
                    Code::NotAnObject,
                    format!("the `items` of a {kind} must be a sequence of objects"),
                )
                .at(
                    sources.locate_key(span, &FieldPath::parse("items")),
                    "not a sequence",
                )
                .hint("write each object as a `- ` item under `items:`"),
            ),
            None => {}
        }
        return;
    }
    let Some(api_version) = node
        .get("apiVersion")
        .and_then(yaml::Node::as_str)
        .map(str::to_string)
    else {
        sink.push(missing_header(sources, span, "apiVersion").hint(api_version_hint(kind)));
        return;
    };
    let value = yaml::to_json(node);
    match choose(&api_version, kind) {
        Choice::Known(make) => match make(Input::Value(value)) {
            Ok(body) => out(Object { span, body }),
            Err((path, msg)) => sink.push(type_error(sources, span, &path, &msg)),
        },
        Choice::WrongVersion(expected) => sink.push(
            unenforced_policy(sources, span, kind, &api_version, Some(expected))
                .unwrap_or_else(|| wrong_version(sources, span, kind, &api_version, expected)),
        ),
        Choice::Unknown => sink.push(
            unenforced_policy(sources, span, kind, &api_version, None)
                .unwrap_or_else(|| unknown_kind(sources, span, kind, &api_version)),
        ),
    }
}

/// The offset of the last `[` or `{` of `text` that is not closed, outside quotes and
/// comments: where an unclosed flow collection began.
fn unclosed_bracket(text: &str) -> Option<usize> {
    let mut open = Vec::new();
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut prev = '\n';
    for (i, c) in text.char_indices() {
        // A quote opens a quoted scalar only where a scalar can start (not in `don't`).
        let starts_scalar = prev.is_whitespace() || matches!(prev, ':' | '[' | '{' | ',');
        let p = prev;
        prev = c;
        match (quote, c) {
            _ if comment => comment = c != '\n',
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') if starts_scalar => quote = Some(c),
            (None, '#') if p.is_whitespace() => comment = true,
            (None, '[' | '{') => open.push(i),
            (None, ']' | '}') => {
                open.pop();
            }
            _ => {}
        }
    }
    open.pop()
}

fn is_list(kind: &str) -> bool {
    kind == "List" || kind.ends_with("List")
}

/// The text of one object, in either form the frontend reads.
enum Input<'a> {
    Json(&'a RawValue),
    Value(serde_json::Value),
}

type Maker = fn(Input<'_>) -> Result<Body, (FieldPath, String)>;

enum Choice {
    Known(Maker),
    WrongVersion(&'static str),
    Unknown,
}

fn decode_as<T: DeserializeOwned>(input: Input<'_>) -> Result<T, (FieldPath, String)> {
    // Fast path: a plain decode. Path tracking allocates a string per key, so it runs only
    // when the plain decode fails, to say where; both report the same first error.
    if let Input::Json(raw) = &input {
        if let Ok(v) = serde_json::from_str::<T>(raw.get()) {
            let value: serde_json::Value =
                serde_json::from_str(raw.get()).map_err(|e| (FieldPath(vec![]), e.to_string()))?;
            reject_unknown_fields::<T>(&value)?;
            return Ok(v);
        }
    }
    let result = match input {
        Input::Json(raw) => {
            let mut de = serde_json::Deserializer::from_str(raw.get());
            serde_path_to_error::deserialize(&mut de)
        }
        Input::Value(v) => {
            reject_unknown_fields::<T>(&v)?;
            serde_path_to_error::deserialize(v)
        }
    };
    result.map_err(|e| (to_field_path(e.path()), e.into_inner().to_string()))
}

/// Refuses a key the type does not read, as kubectl's strict validation does: the typed
/// decode would drop it and the object would mean something else than it says.
fn reject_unknown_fields<T: DeserializeOwned>(
    value: &serde_json::Value,
) -> Result<(), (FieldPath, String)> {
    match strict::first_unknown_field::<T>(value) {
        Some(u) => Err((u.path.clone(), u.message())),
        None => Ok(()),
    }
}

fn to_field_path(path: &serde_path_to_error::Path) -> FieldPath {
    use serde_path_to_error::Segment;
    FieldPath(
        path.iter()
            .filter_map(|s| match s {
                Segment::Seq { index } => Some(PathSeg::Index(*index)),
                Segment::Map { key } | Segment::Enum { variant: key } => {
                    Some(PathSeg::Key(key.clone()))
                }
                Segment::Unknown => None,
            })
            .collect(),
    )
}

macro_rules! maker {
    ($variant:ident, $ty:ty) => {
        |i| decode_as::<$ty>(i).map(|o| Body::$variant(Box::new(o)))
    };
}

/// Pods from JSON take the lean decoder (see [`lean`]); anything it rejects, and YAML, the
/// full one.
fn decode_pod(input: Input<'_>) -> Result<Body, (FieldPath, String)> {
    if let Input::Json(raw) = &input {
        if let Some(pod) = lean::pod(raw.get()) {
            return Ok(Body::Pod(Box::new(pod)));
        }
    }
    decode_as::<core::Pod>(input).map(|o| Body::Pod(Box::new(o)))
}

/// Secrets decode like any object, but an error must not show a value: the serde message
/// can quote it, and a span on the value would print its line. The error therefore names
/// the field only and points at the object's `kind`.
fn decode_secret(input: Input<'_>) -> Result<Body, (FieldPath, String)> {
    decode_as::<core::Secret>(input)
        .map(|o| Body::Secret(Box::new(Secret::from_api(o))))
        .map_err(|(path, _)| {
            let field = path
                .0
                .iter()
                .map(|s| match s {
                    PathSeg::Key(k) => k.clone(),
                    PathSeg::Index(i) => i.to_string(),
                })
                .collect::<Vec<_>>()
                .join(".");
            // The label goes on `kind: Secret`: any span over the values would print them.
            (
                FieldPath(vec![PathSeg::Key("kind".into())]),
                format!("Secret field `{field}` is invalid (the value is not shown): values in `data` are base64 strings, values in `stringData` are strings"),
            )
        })
}

/// Chooses the type for an apiVersion and kind.
fn choose(api_version: &str, kind: &str) -> Choice {
    let (expected, make): (&'static str, Maker) = match kind {
        "Namespace" => ("v1", maker!(Namespace, core::Namespace)),
        "Pod" => ("v1", decode_pod),
        "Node" => ("v1", maker!(Node, core::Node)),
        "Service" => ("v1", maker!(Service, core::Service)),
        "Endpoints" => ("v1", maker!(Endpoints, core::Endpoints)),
        "EndpointSlice" => (
            "discovery.k8s.io/v1",
            maker!(EndpointSlice, discovery::EndpointSlice),
        ),
        "Deployment" => ("apps/v1", maker!(Deployment, apps::Deployment)),
        "ReplicaSet" => ("apps/v1", maker!(ReplicaSet, apps::ReplicaSet)),
        "StatefulSet" => ("apps/v1", maker!(StatefulSet, apps::StatefulSet)),
        "DaemonSet" => ("apps/v1", maker!(DaemonSet, apps::DaemonSet)),
        "Job" => ("batch/v1", maker!(Job, batch::Job)),
        "ReplicationController" => (
            "v1",
            maker!(ReplicationController, core::ReplicationController),
        ),
        "CronJob" => ("batch/v1", maker!(CronJob, batch::CronJob)),
        "NetworkPolicy" => (
            "networking.k8s.io/v1",
            maker!(NetworkPolicy, networking::NetworkPolicy),
        ),
        "CiliumNetworkPolicy" => (
            "cilium.io/v2",
            maker!(CiliumNetworkPolicy, crd::CiliumNetworkPolicy),
        ),
        "CiliumClusterwideNetworkPolicy" => (
            "cilium.io/v2",
            maker!(CiliumClusterwideNetworkPolicy, crd::CiliumNetworkPolicy),
        ),
        "CiliumIdentity" => ("cilium.io/v2", maker!(CiliumIdentity, crd::CiliumIdentity)),
        "CiliumEndpoint" => ("cilium.io/v2", maker!(CiliumEndpoint, crd::CiliumEndpoint)),
        "AdminNetworkPolicy" => (
            "policy.networking.k8s.io/v1alpha1",
            maker!(AdminNetworkPolicy, crd::AdminNetworkPolicy),
        ),
        "BaselineAdminNetworkPolicy" => (
            "policy.networking.k8s.io/v1alpha1",
            maker!(BaselineAdminNetworkPolicy, crd::AdminNetworkPolicy),
        ),
        "ClusterNetworkPolicy" => (
            "policy.networking.k8s.io/v1alpha2",
            maker!(ClusterNetworkPolicy, crd::ClusterNetworkPolicy),
        ),
        "Secret" => ("v1", decode_secret),
        _ => return Choice::Unknown,
    };
    if api_version == expected {
        Choice::Known(make)
    } else {
        Choice::WrongVersion(expected)
    }
}

/// The byte range of `slice` inside `text`; `slice` must borrow from `text`.
fn slice_range(text: &str, slice: &str) -> std::ops::Range<usize> {
    let start = (slice.as_ptr() as usize)
        .saturating_sub(text.as_ptr() as usize)
        .min(text.len());
    start..(start + slice.len()).min(text.len())
}

fn offset_of_line_col(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            // serde_json counts columns in bytes; an error inside a multi-byte character
            // must still name a character boundary, or every later slice panics.
            let mut at = (offset + column.saturating_sub(1)).min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            return at;
        }
        offset += l.len();
    }
    text.len()
}

fn not_an_object(span: Span) -> Diagnostic {
    Diagnostic::error(
        Code::NotAnObject,
        "this document is not a Kubernetes object",
    )
    .at(
        span,
        "expected a mapping with apiVersion, kind and metadata",
    )
    .hint("each document (between `---` lines) must be one object, or a `kind: List` with `items`")
}

fn missing_header(sources: &Sources, span: Span, field: &str) -> Diagnostic {
    // Point at the first key of the object, where the missing field would usually be.
    let text = sources.text(span.file).get(span.range()).unwrap_or("");
    let first_key = yaml::parse_stream(text)
        .ok()
        .and_then(|docs| docs.into_iter().find_map(|d| d.root))
        .and_then(|root| match root.kind {
            yaml::NodeKind::Map(entries) => entries.first().map(|(k, _)| k.span.clone()),
            _ => None,
        });
    let at = match first_key {
        Some(r) => Span::from_range(
            span.file,
            span.start as usize + r.start..span.start as usize + r.end,
        ),
        None => Span::from_range(span.file, span.start as usize..span.start as usize),
    };
    Diagnostic::error(Code::NotAnObject, format!("object has no `{field}`"))
        .at(at, format!("this object has no `{field}`"))
        .hint("every Kubernetes object needs `apiVersion` and `kind`")
}

fn api_version_hint(kind: &str) -> String {
    match choose("", kind) {
        Choice::WrongVersion(v) => format!("a {kind} has `apiVersion: {v}`"),
        _ => "add the apiVersion of the object's API group, such as `v1`".to_string(),
    }
}

fn type_error(sources: &Sources, object: Span, path: &FieldPath, message: &str) -> Diagnostic {
    let message = tidy(message);
    let (code, hint, label) = classify_serde_error(&message, path);
    let span = match code {
        // The path of a missing field is its parent; the parent's key is the place.
        Code::MissingField => sources.locate_key(object, path),
        _ if message.starts_with("unknown field") => sources.locate_key(object, path),
        _ => sources.locate(object, path),
    };
    // serde lists every accepted field after "expected one of"; the hint has the useful part.
    let short = match message.find(", expected one of") {
        Some(i) if message.starts_with("unknown field") => &message[..i],
        _ => &message,
    };
    let whole = if path.0.is_empty() {
        "object".to_string()
    } else {
        path.to_string()
    };
    Diagnostic::error(code, format!("{whole}: {short}"))
        .at(span, label)
        .hint(hint)
}

/// The code, a hint and a label for a serde message.
fn classify_serde_error(message: &str, path: &FieldPath) -> (Code, String, &'static str) {
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or("");
        let parent = if path.0.is_empty() {
            "the object".to_string()
        } else {
            format!("`{path}`")
        };
        return (
            Code::MissingField,
            format!("add the required field `{field}` to {parent}"),
            "a required field is missing here",
        );
    }
    if message.starts_with("unknown field") {
        let expected = message.split("expected ").nth(1);
        let field = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
            .unwrap_or("");
        let hint = match expected {
            Some(e) => match did_you_mean(field, e) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("expected {e}"),
            },
            None => "remove the field".to_string(),
        };
        return (Code::WrongType, hint, "unknown field");
    }
    let field = match path.0.last() {
        Some(crate::source::PathSeg::Key(k)) => format!("`{k}`"),
        _ => "this value".to_string(),
    };
    let expected = message
        .rsplit("expected ")
        .next()
        .filter(|_| message.contains("expected "))
        .map(describe_expected);
    let hint = match expected {
        Some(e) => format!("{field} must be {e}"),
        None => "check the field against the API reference (`kubectl explain`)".to_string(),
    };
    (Code::WrongType, hint, "wrong type")
}

/// Turns serde's Rust-flavoured expectations into words.
fn describe_expected(e: &str) -> String {
    let e = e.trim();
    match e {
        "i32" | "i64" | "u16" | "u32" | "u64" | "usize" | "u8" | "i16" => {
            "a whole number".to_string()
        }
        "f64" | "f32" => "a number".to_string(),
        "a string" | "a borrowed string" | "string" => "a string".to_string(),
        "a boolean" | "bool" => "`true` or `false`".to_string(),
        "a sequence" => "a list (`- item` lines, or `[a, b]`)".to_string(),
        "a map" => "a mapping (`key: value` lines, or `{}`)".to_string(),
        _ if e.contains("IntOrString") || e.contains("int or string") => {
            "a number or a string".to_string()
        }
        _ => e.to_string(),
    }
}

/// Suggests the closest name among the backquoted candidates of a serde message.
pub fn did_you_mean(word: &str, candidates: &str) -> Option<String> {
    candidates
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|c| (crate::util::edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c.to_string())
}

fn tidy(message: &str) -> String {
    // serde_json appends " at line L column C" for the raw-slice decoder; the rendered
    // snippet already shows the place.
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn wrong_version(
    sources: &Sources,
    span: Span,
    kind: &str,
    found: &str,
    expected: &str,
) -> Diagnostic {
    Diagnostic::error(
        Code::WrongType,
        format!("{kind} has apiVersion `{found}`, which pipec does not read"),
    )
    .at(
        sources.locate(span, &FieldPath::parse("apiVersion")),
        "this version",
    )
    .hint(format!("use `apiVersion: {expected}`"))
}

/// An object of a network-policy kind that pipec does not enforce (E0124): skipping it
/// would make every verdict more permissive than the cluster's, so it is an error unless
/// the run allows ignored policies (`BuildOptions::allow_ignored_policies`, which makes it
/// a warning). `expected` is the version pipec reads when it knows the kind. `None` when
/// the object is not a policy (then W0001 or the wrong-version error applies).
fn unenforced_policy(
    sources: &Sources,
    span: Span,
    kind: &str,
    api_version: &str,
    expected: Option<&str>,
) -> Option<Diagnostic> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let policy_kind = kind.ends_with("NetworkPolicy") || kind.ends_with("NetworkPolicies");
    let (reason, hint) = match group {
        "projectcalico.org" | "crd.projectcalico.org" if policy_kind || kind == "Tier" => (
            format!("`{kind}` of `{api_version}` is a Calico policy, which pipec does not enforce"),
            "Calico policies have their own tiers, order, actions and selector syntax; write the intent as a `networking.k8s.io/v1` NetworkPolicy or a `cilium.io/v2` CiliumNetworkPolicy".to_string(),
        ),
        "crd.antrea.io" if policy_kind || kind == "Tier" => (
            format!("`{kind}` of `{api_version}` is an Antrea policy, which pipec does not enforce"),
            "write the intent as a `networking.k8s.io/v1` NetworkPolicy or an AdminNetworkPolicy".to_string(),
        ),
        _ => match expected {
            Some(v) if policy_kind => (
                format!("pipec enforces `{kind}` only as `{v}`, not `{api_version}`"),
                format!("if the object is written for `{v}` (same fields), change its apiVersion; otherwise convert it"),
            ),
            None if policy_kind => (
                format!("`{kind}` of `{api_version}` is a policy kind pipec does not enforce"),
                "pipec enforces Kubernetes NetworkPolicy, Cilium (cilium.io/v2) and network-policy-api (v1alpha1) policies".to_string(),
            ),
            _ => return None,
        },
    };
    Some(
        Diagnostic::error(Code::UnenforcedPolicy, reason)
            .at(
                sources.locate(span, &FieldPath::parse("apiVersion")),
                "not enforced",
            )
            .hint(hint)
            .hint("to go on without this policy (verdicts then allow more than the cluster does), pass `--allow-ignored-policies`"),
    )
}

fn unknown_kind(sources: &Sources, span: Span, kind: &str, api_version: &str) -> Diagnostic {
    let at = sources.locate(span, &FieldPath::parse("kind"));
    if let Some(known) = misspelt_kind(kind, api_version) {
        // Skipping the object would drop a policy without a word; kubectl would refuse
        // the object too ("no matches for kind").
        return Diagnostic::error(
            Code::MisspeltKind,
            format!("`{kind}` is not a kind of `{api_version}`"),
        )
        .at(at, "unknown kind")
        .hint(format!("did you mean `{known}`?"));
    }
    Diagnostic::warning(
        Code::UnknownKind,
        format!("objects of kind `{kind}` are not modelled and are skipped"),
    )
    .at(at, "this kind")
    .hint("pipec reads namespaces, nodes, workloads, pods, services, endpoints and network policies; other kinds have no effect on the datapath")
}

/// Kinds of the API groups pipec reads that it does not model: they stay warnings even
/// when their name is close to a modelled kind.
const OTHER_KINDS: &[&str] = &[
    "Binding",
    "ComponentStatus",
    "ConfigMap",
    "Event",
    "LimitRange",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "PodTemplate",
    "ResourceQuota",
    "ServiceAccount",
    "ControllerRevision",
    "Ingress",
    "IngressClass",
    "IPAddress",
    "ServiceCIDR",
    "CiliumNode",
    "CiliumEndpointSlice",
    "CiliumCIDRGroup",
    "CiliumLocalRedirectPolicy",
    "CiliumEgressGatewayPolicy",
    "CiliumNodeConfig",
    "CiliumLoadBalancerIPPool",
    "CiliumBGPPeeringPolicy",
    "CiliumEnvoyConfig",
    "CiliumClusterwideEnvoyConfig",
];

/// The modelled kind of `api_version`'s group that `kind` is a misspelling of, if any:
/// within two edits, or the same but for case.
fn misspelt_kind(kind: &str, api_version: &str) -> Option<&'static str> {
    const MODELLED: &[&str] = &[
        "Namespace",
        "Pod",
        "Node",
        "Service",
        "Endpoints",
        "EndpointSlice",
        "Deployment",
        "ReplicaSet",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "ReplicationController",
        "CronJob",
        "NetworkPolicy",
        "CiliumNetworkPolicy",
        "CiliumClusterwideNetworkPolicy",
        "CiliumIdentity",
        "CiliumEndpoint",
        "AdminNetworkPolicy",
        "BaselineAdminNetworkPolicy",
        "ClusterNetworkPolicy",
        "Secret",
    ];
    if OTHER_KINDS.contains(&kind) {
        return None;
    }
    MODELLED
        .iter()
        .filter(|k| matches!(choose(api_version, k), Choice::Known(_)))
        .map(|k| {
            let d = if k.eq_ignore_ascii_case(kind) {
                0
            } else {
                crate::util::edit_distance(kind, k)
            };
            (d, *k)
        })
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}
