//! Returns a 100 MB string.

wit_bindgen::generate!({ path: "../../wit/tool.wit", world: "tool" });

struct Tool;
export!(Tool);

impl Guest for Tool {
    fn call(_arguments: String) -> Result<String, String> {
        Ok("x".repeat(100_000_000))
    }
}
