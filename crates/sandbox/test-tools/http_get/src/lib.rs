//! `{"url"}`: fetches the URL through an imported `wasi:http/outgoing-handler` (a stand-in of
//! that name). The sandbox provides no such import in this version, so this tool never compiles
//! there.

wit_bindgen::generate!({ path: "wit", world: "http-tool", generate_all });

struct Tool;
export!(Tool);

impl Guest for Tool {
    fn call(arguments: String) -> Result<String, String> {
        let url = tool_args::string_field(&arguments, "url").ok_or("no url")?;
        wasi::http::outgoing_handler::handle(&url)
    }
}
