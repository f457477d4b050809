#include "bert/bert_embedder.hpp"

#include <algorithm>
#include <exception>
#include <new>
#include <stdexcept>
#include <utility>

#include "pool/error.hpp"

namespace pool::bert {

bert_embedder::bert_embedder(std::shared_ptr<const bert_model> model,
                             wordpiece_tokenizer tokenizer)
    : encoder_(std::move(model)), tokenizer_(std::move(tokenizer)) {
  const auto vocab = static_cast<size_t>(encoder_.config().vocab_size);
  if (tokenizer_.vocab_size() > vocab) {
    throw std::invalid_argument(
        "bert embedder: vocab.txt has " + std::to_string(tokenizer_.vocab_size()) +
        " tokens but the model has only " + std::to_string(vocab) + " word embeddings");
  }
  if (tokenizer_.options().max_length > encoder_.max_tokens()) {
    throw std::invalid_argument("bert embedder: max_seq_length " +
                                std::to_string(tokenizer_.options().max_length) +
                                " exceeds max_position_embeddings " +
                                std::to_string(encoder_.max_tokens()));
  }
}

size_t bert_embedder::count_tokens(const std::vector<std::string_view>& texts) const {
  size_t tokens = 0;
  for (auto text : texts)
    tokens += tokenizer_.encode(text).size();
  return tokens;
}

const std::string& bert_embedder::prefix_for(const std::string& task) const {
  static const std::string none;
  const bert_config& c = encoder_.config();
  if (task == "query") {
    return c.query_prefix;
  }
  if (task == "passage" || task == "document") {
    return c.passage_prefix;
  }
  return none;
}

std::vector<int32_t> bert_embedder::tokenize(std::string_view text,
                                             const std::string& task) const {
  const std::string& prefix = prefix_for(task);
  if (prefix.empty()) {
    return tokenizer_.encode(text);
  }
  std::string full;
  full.reserve(prefix.size() + text.size());
  full.append(prefix).append(text);
  return tokenizer_.encode(full);
}

size_t bert_embedder::weights_bytes() const {
  const auto& w = encoder_.model().weights;
  size_t floats = w.word_emb.size() + w.pos_emb.size() + w.type_emb.size() +
                  w.emb_ln_g.size() + w.emb_ln_b.size();
  for (const auto& l : w.layers)
    floats += l.qkv_w.values.size() + l.qkv_b.size() + l.attn_out_w.values.size() +
              l.attn_out_b.size() + l.attn_ln_g.size() + l.attn_ln_b.size() +
              l.ffn_in_w.values.size() + l.ffn_in_b.size() + l.ffn_out_w.values.size() +
              l.ffn_out_b.size() + l.ffn_ln_g.size() + l.ffn_ln_b.size();
  return floats * sizeof(float);
}

size_t bert_embedder::worker_bytes(uint32_t max_batch_texts) const {
  const size_t texts = std::max<size_t>(max_batch_texts, 1);
  const size_t max_len = encoder_.model().config.max_seq_length;
  const size_t token_id_bytes = texts * max_len * sizeof(int32_t);
  const size_t output_bytes = texts * dim() * sizeof(float);
  return encoder_.scratch_bytes(texts, max_len) + token_id_bytes + output_bytes;
}

void bert_embedder::embed(const std::vector<std::string_view>& texts,
                          const std::string& task, float* out) const {
  std::vector<std::vector<int32_t>> ids;
  ids.reserve(texts.size());
  for (auto text : texts) {
    ids.push_back(tokenize(text, task));
  }
  encoder_.encode(ids, out);
}

caf::expected<std::shared_ptr<const pool::embedder>> make_bert_embedder(
    const pool::model_config& cfg) {
  if (cfg.path.empty()) {
    return make_error(
        pool_errc::invalid_input,
        "model.path: empty; model.kind = bert needs a sentence-transformers "
        "directory");
  }
  auto model = load_bert_model(cfg.path,
                               preferred_panel_width(static_cast<int>(cfg.blas_threads)));
  if (!model) {
    return std::move(model.error());
  }
  tokenizer_options opts;
  opts.lower_case = model->config.do_lower_case;
  opts.max_length = model->config.max_seq_length;
  auto tokenizer = wordpiece_tokenizer::load(model->vocab_path, opts);
  if (!tokenizer) {
    return std::move(tokenizer.error());
  }
  try {
    auto shared = std::make_shared<const bert_model>(std::move(*model));
    return std::shared_ptr<const pool::embedder>{
        std::make_shared<const bert_embedder>(std::move(shared), std::move(*tokenizer))};
  } catch (const std::bad_alloc&) {
    return make_error(pool_errc::invalid_input,
                      "model.path = " + cfg.path + ": out of memory loading the model");
  } catch (const std::exception& ex) {
    return make_error(pool_errc::invalid_input,
                      "model.path = " + cfg.path + ": " + ex.what());
  }
}

}  // namespace pool::bert
