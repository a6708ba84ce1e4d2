//! The walk over a parsed module: every import, and the calls, literals and keywords worth a
//! reviewer's eye, each at its line.

use std::collections::HashMap;

use ruff_python_ast::visitor::{Visitor, walk_expr, walk_stmt};
use ruff_python_ast::{
    Expr, ExprCall, ExprFString, FStringPart, InterpolatedStringElement, Keyword, Stmt,
};
use ruff_text_size::{Ranged, TextSize};

use super::PythonImport;
use super::modules::{
    ATTRIBUTE_FUNCTIONS, DOWNLOAD_FUNCTIONS, OPEN_FUNCTIONS, URL_SCHEMES, call_rating,
    module_category,
};
use crate::scan::{Finding, Severity};

/// Byte offsets where each line starts, to turn offsets into 1-based lines and columns.
pub(super) struct LineIndex<'source> {
    source: &'source str,
    starts: Vec<usize>,
}

impl<'source> LineIndex<'source> {
    /// Indexes the lines of `source` (`\n`, `\r\n` and `\r` end a line, as in Python).
    pub(super) fn new(source: &'source str) -> LineIndex<'source> {
        let bytes = source.as_bytes();
        let mut starts = vec![0];
        for (offset, byte) in bytes.iter().enumerate() {
            let ends_line =
                *byte == b'\n' || (*byte == b'\r' && bytes.get(offset + 1) != Some(&b'\n'));
            if ends_line {
                starts.push(offset + 1);
            }
        }
        LineIndex { source, starts }
    }

    /// The 1-based line and column (in characters) of a byte offset.
    pub(super) fn position(&self, offset: usize) -> (u32, u32) {
        let line = self.starts.partition_point(|start| *start <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let column = self
            .source
            .get(start..offset)
            .map_or(0, |text| text.chars().count());
        (to_u32(line), to_u32(column + 1))
    }
}

fn to_u32(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// What the walk collects.
pub(super) struct Reviewer<'a> {
    lines: &'a LineIndex<'a>,
    /// Local name -> what it refers to (`sp` -> `subprocess`, `system` -> `os.system`).
    aliases: HashMap<String, String>,
    pub(super) imports: Vec<PythonImport>,
    pub(super) findings: Vec<Finding>,
    /// How many `def`s and `lambda`s enclose the current node: 0 means it runs at import.
    function_depth: usize,
    depth: usize,
    max_depth: usize,
    /// Set when the tree nests deeper than `max_depth` (the rest was not walked).
    pub(super) too_deep: bool,
}

impl<'a> Reviewer<'a> {
    pub(super) fn new(lines: &'a LineIndex<'a>, max_depth: usize) -> Reviewer<'a> {
        Reviewer {
            lines,
            aliases: HashMap::new(),
            imports: Vec::new(),
            findings: Vec::new(),
            function_depth: 0,
            depth: 0,
            max_depth,
            too_deep: false,
        }
    }

    fn report(&mut self, at: TextSize, severity: Severity, kind: &str, detail: String) {
        let (line, column) = self.lines.position(at.to_usize());
        self.findings
            .push(Finding::new(severity, kind, detail).at(line, column));
    }

    fn record_import(&mut self, module: String, at: TextSize) {
        let (line, _) = self.lines.position(at.to_usize());
        let category = module_category(&module);
        if let Some(category) = category {
            self.report(
                at,
                Severity::Suspicious,
                "import",
                format!("imports `{module}` ({category})"),
            );
        }
        self.imports.push(PythonImport {
            module,
            line,
            category,
        });
    }

    fn review_import(&mut self, stmt: &Stmt) {
        match stmt {
            Stmt::Import(import) => {
                for alias in &import.names {
                    let module = alias.name.id.as_str();
                    let (local, target) = match &alias.asname {
                        Some(asname) => (asname.id.as_str(), module),
                        None => {
                            let root = module.split('.').next().unwrap_or(module);
                            (root, root)
                        }
                    };
                    self.aliases.insert(local.to_owned(), target.to_owned());
                    self.record_import(module.to_owned(), alias.range.start());
                }
            }
            Stmt::ImportFrom(import) => {
                let dots = ".".repeat(usize::try_from(import.level).unwrap_or(0));
                let module = import.module.as_ref().map_or("", |name| name.id.as_str());
                let base = format!("{dots}{module}");
                for alias in &import.names {
                    let name = alias.name.id.as_str();
                    let local = alias
                        .asname
                        .as_ref()
                        .map_or(name, |asname| asname.id.as_str());
                    let target = match (base.as_str(), base.ends_with('.')) {
                        (_, true) => format!("{base}{name}"),
                        _ => format!("{base}.{name}"),
                    };
                    if name != "*" {
                        self.aliases.insert(local.to_owned(), target.clone());
                    }
                    // `from . import x` imports the module `.x`; `from m import x` imports `m`.
                    if module.is_empty() {
                        self.record_import(target, alias.range.start());
                    }
                }
                if !module.is_empty() {
                    self.record_import(base, import.range.start());
                }
            }
            _ => {}
        }
    }

    /// A simple alias by assignment: `run = subprocess.run`, `e = exec`.
    fn review_assignment(&mut self, stmt: &Stmt) {
        let Stmt::Assign(assign) = stmt else { return };
        let [Expr::Name(target)] = assign.targets.as_slice() else {
            return;
        };
        if !matches!(*assign.value, Expr::Name(_) | Expr::Attribute(_)) {
            return;
        }
        if let Some(name) = self.qualified_name(&assign.value, 0)
            && name != target.id.as_str()
        {
            self.aliases.insert(target.id.to_string(), name);
        }
    }

    /// What `expr` names, through the aliases: `sp.run` -> `subprocess.run`,
    /// `__import__("os").system` -> `os.system`, `getattr(os, "system")` -> `os.system`.
    fn qualified_name(&self, expr: &Expr, depth: usize) -> Option<String> {
        if depth > self.max_depth {
            return None;
        }
        match expr {
            Expr::Name(name) => Some(
                self.aliases
                    .get(name.id.as_str())
                    .cloned()
                    .unwrap_or_else(|| name.id.to_string()),
            ),
            Expr::Attribute(attribute) => {
                let base = self.qualified_name(&attribute.value, depth + 1)?;
                Some(format!("{base}.{}", attribute.attr.id))
            }
            Expr::Call(call) => {
                let function = self.qualified_name(&call.func, depth + 1)?;
                let first = call.arguments.args.first().and_then(string_literal);
                match function.as_str() {
                    "__import__" | "importlib.import_module" | "builtins.__import__" => first,
                    "getattr" | "builtins.getattr" => {
                        let object = call.arguments.args.first()?;
                        let name = call.arguments.args.get(1).and_then(string_literal)?;
                        let base = self.qualified_name(object, depth + 1)?;
                        Some(format!("{base}.{name}"))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn review_call(&mut self, call: &ExprCall) {
        let at = call.range.start();
        for keyword in &call.arguments.keywords {
            self.review_keyword(keyword);
        }
        let Some(name) = self.qualified_name(&call.func, 0) else {
            return;
        };
        let last = name.rsplit('.').next().unwrap_or(&name);
        if let Some((severity, kind, what)) = call_rating(&name) {
            self.report(at, severity, kind, format!("calls `{name}`: {what}"));
        }
        if matches!(name.as_str(), "__import__" | "importlib.import_module")
            && let Some(module) = call.arguments.args.first().and_then(string_literal)
        {
            self.record_import(module, at);
        }
        if name == "torch.load" {
            self.review_torch_load(call);
        } else if OPEN_FUNCTIONS.contains(&name.as_str()) {
            self.review_open(call);
        } else if ATTRIBUTE_FUNCTIONS.contains(&name.as_str()) {
            self.review_attribute_call(call, &name);
        } else if DOWNLOAD_FUNCTIONS.contains(&last) {
            if self.function_depth == 0 {
                self.report(
                    at,
                    Severity::Dangerous,
                    "import_time_download",
                    format!("calls `{name}` at module level: downloads when the file is imported"),
                );
            } else {
                self.report(
                    at,
                    Severity::Suspicious,
                    "download",
                    format!("calls `{name}` inside a function: downloads when called"),
                );
            }
        }
    }

    fn review_keyword(&mut self, keyword: &Keyword) {
        let Some(arg) = &keyword.arg else { return };
        if arg.id.as_str() != "trust_remote_code" {
            return;
        }
        let at = keyword.range.start();
        match &keyword.value {
            Expr::BooleanLiteral(literal) if !literal.value => {}
            Expr::BooleanLiteral(_) => self.report(
                at,
                Severity::Dangerous,
                "trust_remote_code",
                "passes `trust_remote_code=True`: runs more remote Python".to_owned(),
            ),
            _ => self.report(
                at,
                Severity::Suspicious,
                "trust_remote_code",
                "passes `trust_remote_code` a computed value".to_owned(),
            ),
        }
    }

    fn review_torch_load(&mut self, call: &ExprCall) {
        let weights_only = call.arguments.find_keyword("weights_only");
        let restricted = weights_only
            .is_some_and(|keyword| matches!(&keyword.value, Expr::BooleanLiteral(b) if b.value));
        let (severity, detail) = if restricted {
            (
                Severity::Suspicious,
                "calls `torch.load` with `weights_only=True` (PyTorch's restricted unpickler)",
            )
        } else {
            (
                Severity::Dangerous,
                "calls `torch.load` without `weights_only=True`: unpickles, can run any code",
            )
        };
        self.report(
            call.range.start(),
            severity,
            "torch_load",
            detail.to_owned(),
        );
    }

    fn review_open(&mut self, call: &ExprCall) {
        let Some(mode) = call.arguments.find_argument_value("mode", 1) else {
            return;
        };
        let at = call.range.start();
        match string_literal(mode) {
            Some(mode) if mode.contains(['w', 'a', 'x', '+']) => self.report(
                at,
                Severity::Suspicious,
                "write_open",
                format!("opens a file for writing (mode \"{mode}\")"),
            ),
            Some(_) => {}
            None => self.report(
                at,
                Severity::Suspicious,
                "write_open",
                "opens a file with a computed mode".to_owned(),
            ),
        }
    }

    fn review_attribute_call(&mut self, call: &ExprCall, name: &str) {
        let computed = call
            .arguments
            .args
            .get(1)
            .is_some_and(|attribute| string_literal(attribute).is_none());
        if computed {
            self.report(
                call.range.start(),
                Severity::Dangerous,
                "computed_attribute",
                format!("calls `{name}` with a computed attribute name: hides what it reaches"),
            );
        }
    }

    fn review_string(&mut self, text: &str, at: TextSize) {
        let head = text.trim_start();
        let is_url = URL_SCHEMES.iter().any(|scheme| {
            head.get(..scheme.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
        });
        if is_url {
            let shown: String = head.chars().take(120).collect();
            self.report(
                at,
                Severity::Suspicious,
                "url",
                format!("URL literal \"{shown}\""),
            );
        }
    }
}

/// The value of a plain string literal (implicit concatenation included).
fn string_literal(expr: &Expr) -> Option<String> {
    match expr {
        Expr::StringLiteral(literal) => Some(literal.value.to_str().to_owned()),
        _ => None,
    }
}

/// The literal text an f-string starts with (`f"https://{host}/..."` starts with `https://`).
fn fstring_head(fstring: &ExprFString) -> Option<&str> {
    match fstring.value.iter().next()? {
        FStringPart::Literal(literal) => Some(&literal.value),
        FStringPart::FString(part) => match part.elements.first()? {
            InterpolatedStringElement::Literal(literal) => Some(&literal.value),
            InterpolatedStringElement::Interpolation(_) => None,
        },
    }
}

impl<'a> Visitor<'a> for Reviewer<'a> {
    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        self.depth += 1;
        if self.depth > self.max_depth {
            self.too_deep = true;
        } else {
            self.review_import(stmt);
            self.review_assignment(stmt);
            let is_function = matches!(stmt, Stmt::FunctionDef(_));
            self.function_depth += usize::from(is_function);
            walk_stmt(self, stmt);
            self.function_depth -= usize::from(is_function);
        }
        self.depth -= 1;
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        self.depth += 1;
        if self.depth > self.max_depth {
            self.too_deep = true;
        } else {
            match expr {
                Expr::Call(call) => self.review_call(call),
                Expr::StringLiteral(literal) => {
                    self.review_string(literal.value.to_str(), literal.range.start());
                }
                Expr::FString(fstring) => {
                    if let Some(head) = fstring_head(fstring) {
                        self.review_string(head, fstring.range.start());
                    }
                }
                _ => {}
            }
            let is_lambda = matches!(expr, Expr::Lambda(_));
            self.function_depth += usize::from(is_lambda);
            walk_expr(self, expr);
            self.function_depth -= usize::from(is_lambda);
        }
        self.depth -= 1;
    }
}

/// Notes each module-level statement that does more than define, import or assign literals:
/// it runs when the file is imported.
pub(super) fn note_import_time_code(
    body: &[Stmt],
    lines: &LineIndex<'_>,
    findings: &mut Vec<Finding>,
) {
    for stmt in body {
        if is_declarative(stmt, 0) {
            continue;
        }
        let (line, column) = lines.position(stmt.range().start().to_usize());
        findings.push(
            Finding::new(
                Severity::Info,
                "import_time_code",
                format!(
                    "module-level `{}` statement runs at import",
                    statement_name(stmt)
                ),
            )
            .at(line, column),
        );
    }
}

/// Deepest `if`/`try` nesting looked into by [`is_declarative`]; deeper counts as code.
const MAX_DECLARATIVE_DEPTH: usize = 16;

fn is_declarative(stmt: &Stmt, depth: usize) -> bool {
    let all = |body: &[Stmt]| {
        depth < MAX_DECLARATIVE_DEPTH && body.iter().all(|inner| is_declarative(inner, depth + 1))
    };
    match stmt {
        Stmt::FunctionDef(_)
        | Stmt::ClassDef(_)
        | Stmt::Import(_)
        | Stmt::ImportFrom(_)
        | Stmt::Pass(_) => true,
        Stmt::Expr(expression) => expression.value.is_string_literal_expr(),
        Stmt::Assign(assign) => is_literal(&assign.value, 0),
        Stmt::AnnAssign(assign) => assign
            .value
            .as_ref()
            .is_none_or(|value| is_literal(value, 0)),
        // `if TYPE_CHECKING:` and `try: import x / except ImportError: ...`.
        Stmt::If(if_stmt) => {
            matches!(*if_stmt.test, Expr::Name(_) | Expr::Attribute(_))
                && all(&if_stmt.body)
                && if_stmt
                    .elif_else_clauses
                    .iter()
                    .all(|clause| clause.test.is_none() && all(&clause.body))
        }
        Stmt::Try(try_stmt) => {
            all(&try_stmt.body)
                && all(&try_stmt.orelse)
                && all(&try_stmt.finalbody)
                && try_stmt.handlers.iter().all(|handler| {
                    let ruff_python_ast::ExceptHandler::ExceptHandler(handler) = handler;
                    all(&handler.body)
                })
        }
        _ => false,
    }
}

/// Deepest container nesting looked into by [`is_literal`]; deeper counts as code.
const MAX_LITERAL_DEPTH: usize = 32;

fn is_literal(expr: &Expr, depth: usize) -> bool {
    if depth > MAX_LITERAL_DEPTH {
        return false;
    }
    let all = |items: &[Expr]| items.iter().all(|item| is_literal(item, depth + 1));
    match expr {
        Expr::StringLiteral(_)
        | Expr::BytesLiteral(_)
        | Expr::NumberLiteral(_)
        | Expr::BooleanLiteral(_)
        | Expr::NoneLiteral(_)
        | Expr::EllipsisLiteral(_)
        | Expr::Name(_) => true,
        Expr::UnaryOp(unary) => is_literal(&unary.operand, depth + 1),
        Expr::Tuple(tuple) => all(&tuple.elts),
        Expr::List(list) => all(&list.elts),
        Expr::Set(set) => all(&set.elts),
        Expr::Dict(dict) => dict.items.iter().all(|item| {
            item.key
                .as_ref()
                .is_none_or(|key| is_literal(key, depth + 1))
                && is_literal(&item.value, depth + 1)
        }),
        _ => false,
    }
}

fn statement_name(stmt: &Stmt) -> &'static str {
    match stmt {
        Stmt::Expr(_) => "expression",
        Stmt::Assign(_) | Stmt::AnnAssign(_) | Stmt::AugAssign(_) => "assignment",
        Stmt::If(_) => "if",
        Stmt::Try(_) => "try",
        Stmt::For(_) => "for",
        Stmt::While(_) => "while",
        Stmt::With(_) => "with",
        Stmt::Match(_) => "match",
        Stmt::Delete(_) => "del",
        Stmt::Raise(_) => "raise",
        Stmt::Assert(_) => "assert",
        _ => "other",
    }
}
