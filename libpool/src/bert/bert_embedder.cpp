#include "bert/bert_embedder.hpp"

#include <algorithm>
#include <exception>
#include <new>
#include <stdexcept>
#include <utility>

#include "pool/error.hpp"

namespace pool::bert {

bert_embedder::bert_embedder(std::shared_ptr<const bert_model> model,
                             wordpiece_tokenizer tokenizer, bool truncate)
    : encoder_(std::move(model)), tokenizer_(std::move(tokenizer)), truncate_(truncate) {
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
  const std::string& name = task.empty() ? c.default_prompt_name : task;
  if (name.empty())
    return none;
  auto it = c.prompts.find(name);
  return it == c.prompts.end() ? none : it->second;
}

std::vector<std::string> bert_embedder::tasks() const {
  std::vector<std::string> names;
  for (const auto& [name, prefix] : encoder_.config().prompts)
    names.push_back(name);
  return names;  // std::map: sorted
}

void bert_embedder::embed_counted(const std::vector<std::string_view>& texts,
                                  const std::string& task, float* out,
                                  pool::embed_report& report) const {
  report.tokens.assign(texts.size(), 0);
  report.refused.assign(texts.size(), caf::error{});
  const size_t limit = tokenizer_.options().max_length;
  std::vector<std::vector<int32_t>> ids;
  ids.reserve(texts.size());
  std::vector<size_t> kept;  // rows of `out` that are encoded
  kept.reserve(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    if (truncate_) {
      ids.push_back(token_ids(texts[i], task));
    } else {
      // One token over the limit shows the text is too long; only then count
      // all of its tokens for the message.
      const std::string& prefix = prefix_for(task);
      std::string full;
      full.reserve(prefix.size() + texts[i].size());
      full.append(prefix).append(texts[i]);
      auto v = tokenizer_.encode_untruncated(full);
      if (v.size() > limit) {
        report.tokens[i] = static_cast<uint32_t>(v.size());
        report.refused[i] =
            make_error(pool_errc::too_large,
                       "text " + std::to_string(i) + " has " + std::to_string(v.size()) +
                           " tokens, over the model's limit of " + std::to_string(limit) +
                           " (model.truncate = false)");
        std::fill(out + i * dim(), out + (i + 1) * dim(), 0.0f);
        continue;
      }
      ids.push_back(std::move(v));
    }
    report.tokens[i] = static_cast<uint32_t>(ids.back().size());
    kept.push_back(i);
  }
  if (kept.size() == texts.size()) {
    encoder_.encode(ids, out);
    return;
  }
  if (ids.empty())
    return;
  std::vector<float> rows(ids.size() * dim());
  encoder_.encode(ids, rows.data());
  for (size_t k = 0; k < kept.size(); ++k)
    std::copy(rows.begin() + static_cast<std::ptrdiff_t>(k * dim()),
              rows.begin() + static_cast<std::ptrdiff_t>((k + 1) * dim()),
              out + kept[k] * dim());
}

std::vector<int32_t> bert_embedder::token_ids(std::string_view text,
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

caf::expected<std::vector<pool::embedder::token>> bert_embedder::tokenize(
    std::string_view text, const std::string& task) const {
  std::vector<token> out;
  for (auto id : token_ids(text, task)) {
    token t;
    t.id = id;
    t.text = std::string{tokenizer_.token_text(id)};
    t.special = tokenizer_.is_special(id);
    out.push_back(std::move(t));
  }
  return out;
}

caf::expected<std::string> bert_embedder::detokenize(
    const std::vector<int64_t>& ids) const {
  const auto vocab = static_cast<int64_t>(tokenizer_.vocab_size());
  size_t first = 0;
  size_t last = ids.size();
  if (last > 0 && ids.front() == tokenizer_.cls_id())
    ++first;
  if (last > first && ids[last - 1] == tokenizer_.sep_id())
    --last;
  if (first == last)
    return make_error(pool_errc::invalid_input, "no token ids besides [CLS] and [SEP]");
  std::string text;
  std::vector<int32_t> expected{tokenizer_.cls_id()};
  for (size_t i = first; i < last; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab)
      return make_error(pool_errc::invalid_input, "token id " + std::to_string(ids[i]) +
                                                      " is outside the vocabulary [0, " +
                                                      std::to_string(vocab) + ")");
    const auto id = static_cast<int32_t>(ids[i]);
    auto piece = tokenizer_.token_text(id);
    if (piece.size() > 2 && piece.compare(0, 2, "##") == 0 && !text.empty()) {
      text.append(piece.substr(2));
    } else {
      if (!text.empty())
        text += ' ';
      text.append(piece);
    }
    expected.push_back(id);
  }
  expected.push_back(tokenizer_.sep_id());
  // Only ids the tokenizer itself produces are accepted, so the worker embeds
  // exactly these ids.
  if (tokenizer_.encode_untruncated(text) != expected)
    return make_error(pool_errc::invalid_input,
                      "the token ids are not what the model's tokenizer produces "
                      "for any text (they do not round-trip through its vocabulary)");
  return text;
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
    ids.push_back(token_ids(text, task));
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
  opts.strip_accents = model->config.strip_accents;
  opts.chinese_chars = model->config.tokenize_chinese_chars;
  opts.lower_first = model->config.lower_input;
  auto tokenizer = wordpiece_tokenizer::load(model->vocab_path, opts);
  if (!tokenizer) {
    return std::move(tokenizer.error());
  }
  try {
    auto shared = std::make_shared<const bert_model>(std::move(*model));
    return std::shared_ptr<const pool::embedder>{std::make_shared<const bert_embedder>(
        std::move(shared), std::move(*tokenizer), cfg.truncate)};
  } catch (const std::bad_alloc&) {
    return make_error(pool_errc::invalid_input,
                      "model.path = " + cfg.path + ": out of memory loading the model");
  } catch (const std::exception& ex) {
    return make_error(pool_errc::invalid_input,
                      "model.path = " + cfg.path + ": " + ex.what());
  }
}

}  // namespace pool::bert
