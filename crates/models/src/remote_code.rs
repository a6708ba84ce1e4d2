//! What a config's `auto_map` asks for, and what safeformers does instead of running it.
//!
//! `auto_map` names Python classes shipped in the repo (`modeling_x.MyModel`) or in another
//! repo (`org/code-repo--modeling_x.MyModel`) that Transformers would import with
//! `trust_remote_code=True`. safeformers never imports them. For the class being loaded:
//!
//! - when `model_type` is one safeformers implements and the referenced class has the name of
//!   the built-in class for that head (Phi-3's `modeling_phi3.Phi3ForCausalLM`, code that was
//!   upstreamed into Transformers), the built-in implementation is used, as Transformers does
//!   without `trust_remote_code`; [`notice`] says so;
//! - when `auto_map` names the classes of an architecture safeformers has ported natively
//!   ([`NATIVE_PORTS`]: NomicBert, JinaBert, GTE's `NewModel`), from the code repo those models
//!   point at or from a module of the same name in the model folder, the port is used with no
//!   flag needed: nothing remote runs, so there is nothing to trust; [`notice`] says which files
//!   are not run. The same class from another code repo is refused: a different repo may
//!   compute something else under the same class name (Jina's `jina-bert-v2-qk-post-norm` names
//!   its classes as `jina-bert-implementation` does and adds norms);
//! - otherwise the load is refused ([`Error::RemoteCodeRefused`], a policy refusal): a class of
//!   another name may compute something else under a familiar `model_type` (JinaBert's repos say
//!   `"model_type": "bert"`), and safeformers does not guess. The refusal names the class and
//!   every code file `auto_map` points at, with the sha256 of those present in the model folder,
//!   and points at `safeformers scan` for a review.
//!
//! The code files are only hashed: never parsed, imported or run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::ModelConfig;
use crate::error::{Error, RemoteCodeRequest};

/// Largest code file hashed (a bigger one is named without its hash).
const MAX_HASHED_CODE_BYTES: u64 = 16 << 20;

/// A class reference from `auto_map`: `module.Class`, or `org/repo--module.Class` for code in
/// another repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeReference {
    /// The repo holding the code, when it is not the model's own.
    pub repo: Option<String>,
    /// The module (`modeling_x`, or a dotted path to a module in a sub-folder).
    pub module: String,
    /// The class.
    pub class: String,
}

impl CodeReference {
    /// Parses `text`; `None` when it is not `[org/repo--]module.Class`.
    pub fn parse(text: &str) -> Option<CodeReference> {
        let (repo, rest) = match text.split_once("--") {
            Some((repo, rest)) => (Some(repo.to_string()), rest),
            None => (None, text),
        };
        let (module, class) = rest.rsplit_once('.')?;
        let plain = |part: &str| {
            !part.is_empty()
                && part
                    .split('.')
                    .all(|name| !name.is_empty() && name.chars().all(is_identifier_char))
        };
        (plain(module) && plain(class)).then(|| CodeReference {
            repo,
            module: module.to_string(),
            class: class.to_string(),
        })
    }

    /// The file holding the module, relative to its repo: `modeling_x.py`, `sub/mod.py`.
    pub fn file(&self) -> String {
        format!("{}.py", self.module.replace('.', "/"))
    }
}

fn is_identifier_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// One code file `auto_map` points at, with what is known of it without reading it as code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeFile {
    /// Its path in its repo.
    pub file: String,
    /// The repo holding it, when it is not the model's own (never fetched).
    pub repo: Option<String>,
    /// SHA-256 (hex) of the file in the model folder, when it is there and readable.
    pub sha256: Option<String>,
}

impl std::fmt::Display for CodeFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.repo, &self.sha256) {
            (Some(repo), _) => write!(f, "`{}` in repo {repo} (not fetched)", self.file),
            (None, Some(sha256)) => write!(f, "`{}` (sha256 {sha256})", self.file),
            (None, None) => write!(f, "`{}` (not in the folder)", self.file),
        }
    }
}

/// Every code file the `auto_map` of `config` names, each once, in `auto_map` order; those in
/// the model folder hashed.
pub fn code_files(config: &ModelConfig) -> Vec<CodeFile> {
    let folder = config.path().parent().map(Path::to_path_buf);
    let mut seen = BTreeSet::new();
    let mut files = Vec::new();
    for reference in config.auto_map.values().flatten() {
        let Some(reference) = CodeReference::parse(reference) else {
            continue;
        };
        let file = reference.file();
        if !seen.insert((reference.repo.clone(), file.clone())) {
            continue;
        }
        let sha256 = match (&reference.repo, &folder) {
            (None, Some(folder)) => sha256_of(&folder.join(&file)),
            _ => None,
        };
        files.push(CodeFile {
            file,
            repo: reference.repo,
            sha256,
        });
    }
    files
}

/// SHA-256 of a regular file of at most [`MAX_HASHED_CODE_BYTES`] (links followed only within
/// the capped reader's rules); `None` otherwise.
fn sha256_of(path: &Path) -> Option<String> {
    let cap = safeformers_files::ReadCap::new("a code file", MAX_HASHED_CODE_BYTES);
    let bytes = safeformers_files::read_capped(path, cap).ok()?;
    let digest = Sha256::digest(&bytes);
    Some(digest.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// A remote-code architecture safeformers implements natively, as `auto_map` names it.
#[derive(Debug)]
pub struct NativePort {
    /// The architecture that runs instead.
    pub architecture: crate::auto::Architecture,
    /// The class-name prefix of the remote code (`NomicBert`: `NomicBertModel`,
    /// `NomicBertConfig`, `NomicBertForSequenceClassification`).
    pub class_prefix: &'static str,
    /// The modules holding those classes (`modeling_hf_nomic_bert`,
    /// `configuration_hf_nomic_bert`).
    pub modules: &'static [&'static str],
    /// The code repos the published models reference (`nomic-ai/nomic-bert-2048`); a reference
    /// without a repo (a module in the model folder) also counts.
    pub code_repos: &'static [&'static str],
    /// The `model_type` the published configs say (`nomic_bert`; JinaBert's say `bert`): a
    /// config of another type is not taken for this port.
    pub model_type: &'static str,
}

impl NativePort {
    /// Whether `reference` names one of this port's classes, in one of its modules and repos.
    fn names(&self, reference: &CodeReference) -> bool {
        reference.class.starts_with(self.class_prefix)
            && self.modules.contains(&reference.module.as_str())
            && reference
                .repo
                .as_deref()
                .is_none_or(|repo| self.code_repos.contains(&repo))
    }
}

/// The remote-code architectures ported natively.
pub const NATIVE_PORTS: &[NativePort] = &[
    NativePort {
        architecture: crate::auto::Architecture::NomicBert,
        class_prefix: "NomicBert",
        modules: &["modeling_hf_nomic_bert", "configuration_hf_nomic_bert"],
        code_repos: &["nomic-ai/nomic-bert-2048"],
        model_type: "nomic_bert",
    },
    NativePort {
        architecture: crate::auto::Architecture::Gte,
        class_prefix: "New",
        modules: &["modeling", "configuration"],
        code_repos: &["Alibaba-NLP/new-impl"],
        model_type: "new",
    },
    NativePort {
        architecture: crate::auto::Architecture::JinaBert,
        class_prefix: "JinaBert",
        modules: &["modeling_bert", "configuration_bert"],
        code_repos: &["jinaai/jina-bert-implementation"],
        model_type: "bert",
    },
];

/// The native port `config`'s `auto_map` asks for: the first port of the config's
/// `model_type` one of its entries names.
pub fn native_port(config: &ModelConfig) -> Option<&'static NativePort> {
    let references: Vec<CodeReference> = config
        .auto_map
        .values()
        .flatten()
        .filter_map(|reference| CodeReference::parse(reference))
        .collect();
    NATIVE_PORTS.iter().find(|port| {
        port.model_type == config.model_type
            && references.iter().any(|reference| port.names(reference))
    })
}

/// Checks a load of `auto_class` (whose port class is `class`) through `port`: the entries for
/// it and for `AutoConfig`, when present, must name `class` and the port's config class from
/// the port's modules and repos; anything else is refused as remote code.
pub(crate) fn check_native_port(
    config: &ModelConfig,
    port: &NativePort,
    auto_class: &str,
    class: &str,
) -> Result<(), Error> {
    let config_class = format!("{}Config", port.class_prefix);
    for (auto_class, expected) in [(auto_class, class), ("AutoConfig", config_class.as_str())] {
        let Some(reference) = config.auto_map_entry(auto_class) else {
            continue;
        };
        let ported = CodeReference::parse(reference)
            .is_some_and(|parsed| parsed.class == expected && port.names(&parsed));
        if !ported {
            return Err(refusal(config, auto_class, reference));
        }
    }
    Ok(())
}

/// The first entry of `auto_map` among `auto_classes` (the class being loaded, then
/// `AutoConfig`, which Transformers imports first), as (Auto class, reference).
fn requested_entry<'a>(
    config: &'a ModelConfig,
    auto_classes: &[&'a str],
) -> Option<(&'a str, &'a str)> {
    auto_classes.iter().find_map(|&auto_class| {
        config
            .auto_map_entry(auto_class)
            .map(|reference| (auto_class, reference))
    })
}

/// Checks the `auto_map` of a config whose `model_type` safeformers implements, for a load of
/// `auto_class` whose built-in class is `builtin_class`: fine when `auto_map` has no entry for
/// it (nor for `AutoConfig`), or when the entries name classes of the built-in names
/// (`builtin_class`, or `builtin_config` for `AutoConfig`); refused otherwise.
pub(crate) fn check_known_model_type(
    config: &ModelConfig,
    auto_class: &str,
    builtin_class: &str,
    builtin_config: &str,
) -> Result<(), Error> {
    for (auto_class, expected) in [(auto_class, builtin_class), ("AutoConfig", builtin_config)] {
        let Some(reference) = config.auto_map_entry(auto_class) else {
            continue;
        };
        let same_name = CodeReference::parse(reference)
            .is_some_and(|parsed| parsed.class == expected && parsed.repo.is_none());
        if !same_name {
            return Err(refusal(config, auto_class, reference));
        }
    }
    Ok(())
}

/// The refusal of a config whose `auto_map` names code for one of `auto_classes` (a
/// `model_type` we do not implement); `None` when it names none.
pub(crate) fn refusal_for(config: &ModelConfig, auto_classes: &[&str]) -> Option<Error> {
    requested_entry(config, auto_classes)
        .map(|(auto_class, reference)| refusal(config, auto_class, reference))
}

fn refusal(config: &ModelConfig, auto_class: &str, reference: &str) -> Error {
    let files = code_files(config);
    Error::RemoteCodeRefused {
        path: config.path().to_path_buf(),
        code: Box::new(RemoteCodeRequest {
            model_type: config.model_type.clone(),
            auto_class: auto_class.to_string(),
            reference: reference.to_string(),
            files: files
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The folder of the config file `path` (`.` for a bare file name): what to scan.
pub(crate) fn folder_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// What a load of `config` says about the code its `auto_map` names, when it names any: that
/// none of it runs, and which implementation is used instead.
pub fn notice(config: &ModelConfig, used: &str) -> Option<String> {
    let files = code_files(config);
    if files.is_empty() {
        return None;
    }
    let listed: Vec<String> = files.iter().map(ToString::to_string).collect();
    Some(format!(
        "{} {} not run; safeformers' {used} is used",
        listed.join(", "),
        if listed.len() == 1 { "is" } else { "are" }
    ))
}

/// Tells (a `tracing` warning, which the CLI prints on stderr) that the code `config`'s
/// `auto_map` names is not run and `used` is, when it names any.
pub(crate) fn announce(config: &ModelConfig, used: &str) {
    if let Some(text) = notice(config, used) {
        tracing::warn!(
            target: "safeformers::remote_code",
            "note: {}: {text}",
            config.path().display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_and_without_a_repo() {
        let local = CodeReference::parse("modeling_hf_nomic_bert.NomicBertModel").unwrap();
        assert_eq!(local.repo, None);
        assert_eq!(local.file(), "modeling_hf_nomic_bert.py");
        assert_eq!(local.class, "NomicBertModel");
        let remote =
            CodeReference::parse("jinaai/jina-bert-implementation--modeling_bert.JinaBertModel")
                .unwrap();
        assert_eq!(
            remote.repo.as_deref(),
            Some("jinaai/jina-bert-implementation")
        );
        assert_eq!(remote.file(), "modeling_bert.py");
        let nested = CodeReference::parse("sub.modeling.Model").unwrap();
        assert_eq!(nested.file(), "sub/modeling.py");
        for bad in [
            "",
            "Model",
            ".Model",
            "mod.",
            "../x.Model",
            "mod..Model",
            "a/b.c",
        ] {
            assert_eq!(CodeReference::parse(bad), None, "{bad}");
        }
    }
}
