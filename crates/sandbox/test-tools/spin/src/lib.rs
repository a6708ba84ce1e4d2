//! Never returns and never calls the host: only fuel or the epoch deadline stop it.

wit_bindgen::generate!({ path: "../../wit/tool.wit", world: "tool" });

struct Tool;
export!(Tool);

impl Guest for Tool {
    fn call(_arguments: String) -> Result<String, String> {
        let mut counter = 0u64;
        loop {
            counter = std::hint::black_box(counter.wrapping_add(1));
        }
    }
}
