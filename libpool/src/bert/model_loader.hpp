// Loading a sentence-transformers BERT model directory: configuration files
// and weights, validated completely before anything is returned.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
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
  /// sentence_bert_config.json max_seq_length, capped by
  /// max_position_embeddings; absent: min(max_position_embeddings,
  /// tokenizer_config.json model_max_length), as sentence-transformers does.
  size_t max_seq_length = 512;
  /// tokenizer_config.json do_lower_case (HF's BertTokenizer default: true):
  /// the BertNormalizer's lowercase.
  bool do_lower_case = true;
  /// tokenizer_config.json strip_accents; unset (absent or null) = follows
  /// do_lower_case.
  std::optional<bool> strip_accents;
  /// tokenizer_config.json tokenize_chinese_chars (default true).
  bool tokenize_chinese_chars = true;
  /// sentence_bert_config.json do_lower_case: Python's str.lower() of the
  /// input before the tokenizer (not the tokenizer's lowercasing).
  bool lower_input = false;
  /// config_sentence_transformers.json "prompts": task name -> prefix.
  std::map<std::string, std::string> prompts;
  /// config_sentence_transformers.json "default_prompt_name" (a key of
  /// prompts) or "": the prompt of a request without a task.
  std::string default_prompt_name;
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
/// config.json (required when modules.json lists a Pooling module; without
/// modules.json 1_Pooling/ is optional, default mean pooling),
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
