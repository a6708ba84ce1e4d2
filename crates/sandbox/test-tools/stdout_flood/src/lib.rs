//! Prints 100 MB to stdout (and 1 MB to stderr), then returns "flooded".

wit_bindgen::generate!({ path: "../../wit/tool.wit", world: "tool" });

struct Tool;
export!(Tool);

impl Guest for Tool {
    fn call(_arguments: String) -> Result<String, String> {
        use std::io::Write;
        let line = [b'o'; 64 * 1024];
        let mut stdout = std::io::stdout();
        for _ in 0..(100_000_000 / line.len()) {
            stdout
                .write_all(&line)
                .map_err(|error| format!("stdout: {error}"))?;
        }
        let mut stderr = std::io::stderr();
        for _ in 0..16 {
            stderr
                .write_all(&[b'e'; 64 * 1024])
                .map_err(|error| format!("stderr: {error}"))?;
        }
        Ok("flooded".to_owned())
    }
}
