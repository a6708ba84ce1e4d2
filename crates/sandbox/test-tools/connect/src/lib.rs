//! `{"addr": "HOST:PORT"}`: opens a TCP connection (a host name goes through DNS first) and
//! writes to it. Returns "connected" or `err(<io error>)`.

wit_bindgen::generate!({ path: "../../wit/tool.wit", world: "tool" });

struct Tool;
export!(Tool);

impl Guest for Tool {
    fn call(arguments: String) -> Result<String, String> {
        use std::io::Write;
        let addr = tool_args::string_field(&arguments, "addr").ok_or("no addr")?;
        let mut stream =
            std::net::TcpStream::connect(&addr).map_err(|error| format!("connect {addr}: {error}"))?;
        stream.write_all(b"exfiltrated").map_err(|error| format!("write {addr}: {error}"))?;
        Ok("connected".to_owned())
    }
}
