// Loading a sentence-transformers BERT model directory: configuration files
// and weights, validated completely before anything is returned.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "bert/linear.hpp"
#include "bert/safetensors.hpp"

namespace pool::bert {

enum class pooling_mode { mean, cls };

struct bert_config {
  int vocab_size = 0, hidden_size = 0, num_layers = 0, num_heads = 0,
      intermediate_size = 0;
  int max_position_embeddings = 0, type_vocab_size = 0;
  float layer_norm_eps = 1e-12f;
  // sentence-transformers settings
  pooling_mode pooling = pooling_mode::mean;
  bool normalize = false;  // modules.json lists a Normalize module
  size_t max_seq_length =
      512;  // sentence_bert_config.json, capped by max_position_embeddings
  /// Lower-case input before WordPiece: true when tokenizer_config.json's
  /// do_lower_case is true (HF default when absent: true) or
  /// sentence_bert_config.json's do_lower_case is true.
  bool do_lower_case = true;
  /// Task prefixes from config_sentence_transformers.json "prompts" ("query";
  /// "passage", else "document"); "" if none.
  std::string query_prefix, passage_prefix;
};

/// All weights as row-major float32; Linear weights packed for the encoder's
/// sgemm calls (see linear.hpp).
struct layer_weights {
  linear_weight qkv_w;       // out 3H, in H: query outputs, then key, then value (fused)
  std::vector<float> qkv_b;  // [3H]
  linear_weight attn_out_w;  // out H, in H
  std::vector<float> attn_out_b;            // [H]
  std::vector<float> attn_ln_g, attn_ln_b;  // [H], [H]
  linear_weight ffn_in_w;                   // out I, in H
  std::vector<float> ffn_in_b;              // [I]
  linear_weight ffn_out_w;                  // out H, in I
  std::vector<float> ffn_out_b;             // [H]
  std::vector<float> ffn_ln_g, ffn_ln_b;    // [H], [H]
};

struct bert_weights {
  std::vector<float> word_emb, pos_emb, type_emb;  // [V x H], [P x H], [T x H]
  std::vector<float> emb_ln_g, emb_ln_b;           // [H]
  std::vector<layer_weights> layers;
};

struct bert_model {
  bert_config config;
  bert_weights weights;
  std::string vocab_path;  // DIR/vocab.txt, checked to exist
  std::string name;        // the directory's name
};

/// Loads DIR: config.json, vocab.txt (path only; checked to exist),
/// model.safetensors, modules.json (optional), the Pooling module's
/// config.json (optional; default 1_Pooling/, mean pooling),
/// sentence_bert_config.json, tokenizer_config.json and
/// config_sentence_transformers.json (all optional). Linear weights are packed
/// in panels of `panel_width` columns (0: one panel; see
/// preferred_panel_width). Every error is `invalid_input` with a message
/// "<path of the file>: <what>".
caf::expected<bert_model> load_bert_model(const std::string& dir, size_t panel_width = 0);

/// Largest accepted num_hidden_layers.
constexpr int max_layers = 256;

/// Reads the architecture fields of a HF BERT config.json text (the
/// sentence-transformers fields keep their defaults). Refuses hidden_act other
/// than "gelu" (erf form), position_embedding_type other than "absolute",
/// model_type other than "bert", and hidden_size not divisible by the heads.
/// Errors name `label`.
caf::expected<bert_config> parse_bert_config(const std::string& text,
                                             const std::string& label);

/// Maps the tensors of a validated safetensors file onto `config`'s shapes:
/// names with or without a "bert." prefix; pooler.*, cls.* and
/// embeddings.position_ids ignored; any other unexpected tensor, a missing
/// tensor, a wrong shape or a non-float dtype is an error naming `label`.
/// Linear weights are packed in panels of `panel_width` columns.
caf::expected<bert_weights> extract_weights(const safetensors_view& file,
                                            const bert_config& config,
                                            const std::string& label,
                                            size_t panel_width = 0);

}  // namespace pool::bert
