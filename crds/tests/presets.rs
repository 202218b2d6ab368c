//! Analytic parameter counts of every preset, and preset/override resolution.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tributary_crds::{ModelConfig, ModelPreset, ModelSpec};

fn count(preset: ModelPreset) -> u64 {
    ModelSpec::preset(preset)
        .resolve()
        .unwrap()
        .parameter_count()
}

#[test]
fn covenant_72b_matches_the_published_size() {
    // arXiv 2603.08163: 80 layers, hidden 8192, FFN 28672, 64 heads / 8 KV heads, vocab 262144,
    // untied head. Per layer: q,o 2·8192² + k,v 2·8192·1024 + SwiGLU 3·8192·28672 + 2 norms.
    let config = ModelPreset::Covenant72b.config();
    assert_eq!(config.head_dim(), 128);
    assert_eq!(config.kv_dim(), 1024);
    assert_eq!(config.parameters_per_layer(), 855_654_400);
    assert_eq!(count(ModelPreset::Covenant72b), 72_747_327_488);
    // "72B": within 1% of 72e9 and about 72.7e9.
    let billions = count(ModelPreset::Covenant72b) as f64 / 1e9;
    assert!((72.0..72.8).contains(&billions), "{billions}");
}

#[test]
fn one_b_is_tinyllama_1_1b() {
    // TinyLlama-1.1B's published parameter count is 1,100,048,384.
    assert_eq!(count(ModelPreset::OneB), 1_100_048_384);
}

#[test]
fn small_is_cpu_trainable() {
    let n = count(ModelPreset::Small);
    assert_eq!(n, 31_990_272);
    assert!((25_000_000..=40_000_000).contains(&n));
}

#[test]
fn tiny_is_a_test_model() {
    let n = count(ModelPreset::Tiny);
    assert_eq!(n, 180_672);
    assert!((100_000..=300_000).contains(&n));
}

#[test]
fn counts_by_hand_for_a_two_layer_model() {
    let config = ModelConfig {
        layers: 2,
        hidden: 8,
        heads: 2,
        kv_heads: 1,
        intermediate: 16,
        vocab: 10,
        context: 4,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        tie_embeddings: false,
    };
    // embedding 80; per layer q 64 + k 32 + v 32 + o 64 + mlp 3·8·16=384 + norms 16 = 592;
    // final norm 8; head 80.
    assert_eq!(config.parameter_count(), 80 + 2 * 592 + 8 + 80);
    let tied = ModelConfig {
        tie_embeddings: true,
        ..config
    };
    assert_eq!(tied.parameter_count(), 80 + 2 * 592 + 8);
}

#[test]
fn explicit_fields_override_the_preset() {
    let spec = ModelSpec {
        vocab: Some(4096),
        layers: Some(2),
        tie_embeddings: Some(true),
        ..ModelSpec::preset(ModelPreset::Tiny)
    };
    let config = spec.resolve().unwrap();
    assert_eq!(config.vocab, 4096);
    assert_eq!(config.layers, 2);
    assert!(config.tie_embeddings);
    assert_eq!(config.hidden, 64);
}

#[test]
fn explicit_config_without_preset() {
    let spec: ModelSpec = serde_yaml::from_str(
        "{layers: 2, hidden: 64, heads: 4, intermediate: 128, vocab: 256, context: 32}",
    )
    .unwrap();
    let config = spec.resolve().unwrap();
    assert_eq!(config.kv_heads, 4, "kvHeads defaults to heads");
    assert_eq!(config.rope_theta, 10_000.0);
    assert_eq!(config.norm_eps, 1e-5);
    assert!(!config.tie_embeddings);
}

#[test]
fn incomplete_or_inconsistent_configs_are_refused_readably() {
    let err = ModelSpec {
        hidden: Some(64),
        ..ModelSpec::default()
    }
    .resolve()
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "model: no preset, so these fields are required: layers, heads, intermediate, vocab, context"
    );
    let err = ModelSpec {
        heads: Some(3),
        kv_heads: Some(2),
        ..ModelSpec::preset(ModelPreset::Tiny)
    }
    .resolve()
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "model: heads (3) must divide hidden (64); kvHeads (2) must divide heads (3)"
    );
}

#[test]
fn preset_names_round_trip() {
    for preset in ModelPreset::ALL {
        let json = serde_json::to_string(&preset).unwrap();
        assert_eq!(json, format!("\"{}\"", preset.name()));
        assert_eq!(serde_json::from_str::<ModelPreset>(&json).unwrap(), preset);
    }
    assert!(serde_json::from_str::<ModelPreset>("\"huge\"").is_err());
}
