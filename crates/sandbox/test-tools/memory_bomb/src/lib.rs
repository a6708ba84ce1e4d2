//! Allocates and touches 1 MiB blocks until allocation fails (which aborts: `panic = "abort"`).

wit_bindgen::generate!({ path: "../../wit/tool.wit", world: "tool" });

struct Tool;
export!(Tool);

impl Guest for Tool {
    fn call(_arguments: String) -> Result<String, String> {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        loop {
            blocks.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
}
