//! What the review flags: modules by what they give access to, and calls by what they do.
//! A denylist, and so bypassable: the report lists every import, not only these.

use crate::scan::Severity;

/// Top-level modules that reach outside the process's own computation, by what they reach.
const FLAGGED_MODULES: [(&str, &str); 31] = [
    ("os", "process and filesystem"),
    ("subprocess", "process"),
    ("pty", "process"),
    ("multiprocessing", "process"),
    ("sys", "interpreter"),
    ("builtins", "interpreter"),
    ("importlib", "dynamic import"),
    ("runpy", "code execution"),
    ("code", "code execution"),
    ("socket", "network"),
    ("urllib", "network"),
    ("urllib3", "network"),
    ("requests", "network"),
    ("httpx", "network"),
    ("http", "network"),
    ("aiohttp", "network"),
    ("ftplib", "network"),
    ("smtplib", "network"),
    ("webbrowser", "network"),
    ("shutil", "filesystem"),
    ("tempfile", "filesystem"),
    ("ctypes", "native code"),
    ("cffi", "native code"),
    ("pickle", "deserialisation"),
    ("_pickle", "deserialisation"),
    ("cloudpickle", "deserialisation"),
    ("dill", "deserialisation"),
    ("joblib", "deserialisation"),
    ("marshal", "deserialisation"),
    ("shelve", "deserialisation"),
    ("zipimport", "dynamic import"),
];

/// What a module gives access to, when it is one the review flags (`os.path` counts as `os`).
pub(super) fn module_category(module: &str) -> Option<&'static str> {
    let root = module.split('.').next().unwrap_or(module);
    FLAGGED_MODULES
        .iter()
        .find(|(name, _)| *name == root)
        .map(|(_, category)| *category)
}

/// Calls named exactly.
const FLAGGED_CALLS: [(&str, &str, &str); 22] = [
    ("exec", "code_execution", "executes a string as Python code"),
    (
        "eval",
        "code_execution",
        "evaluates a string as Python code",
    ),
    ("compile", "code_execution", "compiles a string to code"),
    (
        "__import__",
        "dynamic_import",
        "imports a module named at run time",
    ),
    (
        "builtins.exec",
        "code_execution",
        "executes a string as Python code",
    ),
    (
        "builtins.eval",
        "code_execution",
        "evaluates a string as Python code",
    ),
    (
        "builtins.compile",
        "code_execution",
        "compiles a string to code",
    ),
    (
        "builtins.__import__",
        "dynamic_import",
        "imports a module named at run time",
    ),
    (
        "importlib.import_module",
        "dynamic_import",
        "imports a module named at run time",
    ),
    (
        "importlib.__import__",
        "dynamic_import",
        "imports a module named at run time",
    ),
    ("runpy.run_path", "code_execution", "runs a Python file"),
    ("runpy.run_module", "code_execution", "runs a Python module"),
    ("os.system", "process", "runs a shell command"),
    ("os.popen", "process", "runs a shell command"),
    ("os.fork", "process", "forks the process"),
    ("os.forkpty", "process", "forks the process"),
    (
        "os.startfile",
        "process",
        "opens a file with its associated program",
    ),
    ("pty.spawn", "process", "runs a program"),
    (
        "pickle.load",
        "deserialisation",
        "unpickles (can run any code)",
    ),
    (
        "pickle.loads",
        "deserialisation",
        "unpickles (can run any code)",
    ),
    (
        "joblib.load",
        "deserialisation",
        "unpickles (can run any code)",
    ),
    (
        "numpy.load",
        "deserialisation",
        "may unpickle with allow_pickle=True",
    ),
];

/// Calls flagged by the start of their qualified name.
const FLAGGED_CALL_PREFIXES: [(&str, &str, &str); 25] = [
    ("os.exec", "process", "replaces the process with a program"),
    ("os.spawn", "process", "runs a program"),
    ("os.posix_spawn", "process", "runs a program"),
    ("subprocess.", "process", "runs a program"),
    ("multiprocessing.", "process", "starts processes"),
    ("ctypes.", "native_code", "loads or calls native code"),
    ("cffi.", "native_code", "loads or calls native code"),
    ("socket.", "network", "opens a network socket"),
    ("urllib.request.", "network", "fetches from the network"),
    ("urllib3.", "network", "fetches from the network"),
    ("requests.", "network", "fetches from the network"),
    ("httpx.", "network", "fetches from the network"),
    ("http.client.", "network", "fetches from the network"),
    ("aiohttp.", "network", "fetches from the network"),
    ("ftplib.", "network", "fetches from the network"),
    ("webbrowser.", "network", "opens a browser"),
    ("pickle.", "deserialisation", "unpickles (can run any code)"),
    (
        "_pickle.",
        "deserialisation",
        "unpickles (can run any code)",
    ),
    (
        "cloudpickle.",
        "deserialisation",
        "unpickles (can run any code)",
    ),
    ("dill.", "deserialisation", "unpickles (can run any code)"),
    ("marshal.", "deserialisation", "loads code objects"),
    ("shelve.", "deserialisation", "opens a pickle-backed store"),
    ("shutil.", "filesystem", "copies, moves or deletes files"),
    ("tempfile.", "filesystem", "creates files"),
    ("os.remove", "filesystem", "deletes files"),
];

/// Why a call to `qualified_name` is flagged: its severity, kind and what it does.
pub(super) fn call_rating(qualified_name: &str) -> Option<(Severity, &'static str, &'static str)> {
    let exact = FLAGGED_CALLS
        .iter()
        .find(|(name, _, _)| *name == qualified_name);
    let by_prefix = || {
        FLAGGED_CALL_PREFIXES
            .iter()
            .find(|(prefix, _, _)| qualified_name.starts_with(prefix))
    };
    let (_, kind, what) = exact.or_else(by_prefix)?;
    let severity = match *kind {
        "filesystem" => Severity::Suspicious,
        _ => Severity::Dangerous,
    };
    Some((severity, kind, what))
}

/// Functions that fetch a model or files from the Hub, by their last name.
pub(super) const DOWNLOAD_FUNCTIONS: [&str; 4] = [
    "hf_hub_download",
    "snapshot_download",
    "from_pretrained",
    "cached_download",
];

/// The built-in `open` under its names.
pub(super) const OPEN_FUNCTIONS: [&str; 3] = ["open", "io.open", "builtins.open"];

/// Built-ins that read or write an attribute named by their second argument.
pub(super) const ATTRIBUTE_FUNCTIONS: [&str; 4] = ["getattr", "setattr", "delattr", "hasattr"];

/// URL schemes whose string literals are reported.
pub(super) const URL_SCHEMES: [&str; 6] =
    ["http://", "https://", "ftp://", "file://", "s3://", "gs://"];
