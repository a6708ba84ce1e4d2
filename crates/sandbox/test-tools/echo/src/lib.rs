//! Returns its arguments unchanged; `{"err": MESSAGE}` makes it return `err(MESSAGE)`.

wit_bindgen::generate!({ path: "../../wit/tool.wit", world: "tool" });

struct Tool;
export!(Tool);

impl Guest for Tool {
    fn call(arguments: String) -> Result<String, String> {
        match tool_args::string_field(&arguments, "err") {
            Some(message) => Err(message),
            None => Ok(arguments),
        }
    }
}
