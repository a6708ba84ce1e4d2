//! `{"addr": "HOST:PORT"}`: resolves the address (name lookup for a host name), opens a TCP
//! connection and writes to it. Returns "connected", `err("lookup ...")` when resolving
//! failed, or `err("connect ...")` naming the addresses it resolved to.

wit_bindgen::generate!({ path: "../../wit/tool.wit", world: "tool" });

struct Tool;
export!(Tool);

impl Guest for Tool {
    fn call(arguments: String) -> Result<String, String> {
        use std::io::Write;
        use std::net::ToSocketAddrs;
        let addr = tool_args::string_field(&arguments, "addr").ok_or("no addr")?;
        let resolved: Vec<std::net::SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|error| format!("lookup {addr}: {error}"))?
            .collect();
        let mut stream = std::net::TcpStream::connect(&resolved[..])
            .map_err(|error| format!("connect {addr} (resolved to {resolved:?}): {error}"))?;
        stream
            .write_all(b"exfiltrated")
            .map_err(|error| format!("write {addr}: {error}"))?;
        Ok("connected".to_owned())
    }
}
