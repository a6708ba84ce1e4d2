//! `{"path"}`: returns the file's content (lossy UTF-8). `{"path", "content"}`: writes
//! `content` to the file instead and returns "written". Every failure is `err(<io error>)`.

wit_bindgen::generate!({ path: "../../wit/tool.wit", world: "tool" });

struct Tool;
export!(Tool);

impl Guest for Tool {
    fn call(arguments: String) -> Result<String, String> {
        let path = tool_args::string_field(&arguments, "path").ok_or("no path")?;
        match tool_args::string_field(&arguments, "content") {
            Some(content) => std::fs::write(&path, content)
                .map(|()| "written".to_owned())
                .map_err(|error| format!("write {path}: {error}")),
            None => std::fs::read(&path)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .map_err(|error| format!("read {path}: {error}")),
        }
    }
}
