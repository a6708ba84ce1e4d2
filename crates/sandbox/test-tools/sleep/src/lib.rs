//! Sleeps 60 s: the guest blocks inside a host call (`wasi:io/poll` on a monotonic-clock
//! pollable), where neither fuel nor epochs reach it.

wit_bindgen::generate!({ path: "../../wit/tool.wit", world: "tool" });

struct Tool;
export!(Tool);

impl Guest for Tool {
    fn call(_arguments: String) -> Result<String, String> {
        std::thread::sleep(std::time::Duration::from_secs(60));
        Ok("woke up".to_owned())
    }
}
