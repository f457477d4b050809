#include "pool/embedder.hpp"

#include <algorithm>

#include "pool/error.hpp"
#include "whitespace_words.hpp"

#include <cblas.h>

namespace pool {

size_t embedder::count_tokens(const std::vector<std::string_view>& texts) const {
  size_t tokens = 0;
  for (auto text : texts)
    tokens += detail::whitespace_words(text);
  return tokens;
}

void embedder::embed_counted(const std::vector<std::string_view>& texts,
                             const std::string& task, float* out,
                             embed_report& report) const {
  report.tokens.resize(texts.size());
  report.refused.assign(texts.size(), caf::error{});
  // One list reused for every text: a call of 64 texts makes one allocation,
  // not 64.
  std::vector<std::string_view> one(1);
  for (size_t i = 0; i < texts.size(); ++i) {
    one[0] = texts[i];
    report.tokens[i] = static_cast<uint32_t>(count_tokens(one));
  }
  embed(texts, task, out);
}

caf::expected<std::vector<embedder::token>> embedder::tokenize(std::string_view,
                                                               const std::string&) const {
  return make_error(pool_errc::invalid_input,
                    "the model has no vocabulary: it has no tokens");
}

caf::expected<std::string> embedder::detokenize(const std::vector<int64_t>&) const {
  return make_error(
      pool_errc::invalid_input,
      "the model has no vocabulary: token ids are not supported, send text");
}

caf::error check_task(const std::string& task, const std::vector<std::string>& known,
                      const std::string& model_name) {
  if (task.empty() || std::binary_search(known.begin(), known.end(), task))
    return caf::error{};
  std::string names;
  for (const auto& k : known)
    names += (names.empty() ? "" : ", ") + k;
  return make_error(
      pool_errc::invalid_input,
      "unknown task '" + task.substr(0, 64) + "' for model " + model_name +
          (known.empty() ? " (it has no tasks)" : " (known tasks: " + names + ")"));
}

void set_blas_threads(int n) {
  openblas_set_num_threads(n < 1 ? 1 : n);
}

}  // namespace pool
