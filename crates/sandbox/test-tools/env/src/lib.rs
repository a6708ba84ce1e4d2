//! `{"name": NAME}`: the value of the environment variable NAME, or `err("absent")`.
//! `{"name": "*"}`: every variable name the guest can see, one per line.

wit_bindgen::generate!({ path: "../../wit/tool.wit", world: "tool" });

struct Tool;
export!(Tool);

impl Guest for Tool {
    fn call(arguments: String) -> Result<String, String> {
        let name = tool_args::string_field(&arguments, "name").ok_or("no name")?;
        if name == "*" {
            let names: Vec<String> = std::env::vars_os()
                .map(|(name, _)| name.to_string_lossy().into_owned())
                .collect();
            return Ok(names.join("\n"));
        }
        std::env::var(&name).map_err(|_| "absent".to_owned())
    }
}
