// libFuzzer target: parses arbitrary bytes as a safetensors file, converts
// every float tensor and maps the tensors onto a tiny BERT configuration.
// Beyond crashes and sanitizer reports, it traps when a validated view breaks
// the parser's contract (outside the input, wrong size, overlapping).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "bert/model_loader.hpp"
#include "bert/safetensors.hpp"

namespace {

const pool::bert::bert_config& tiny_config() {
  static const pool::bert::bert_config config = [] {
    pool::bert::bert_config c;
    c.vocab_size = 3;
    c.hidden_size = 2;
    c.num_layers = 1;
    c.num_heads = 1;
    c.intermediate_size = 2;
    c.max_position_embeddings = 2;
    c.type_vocab_size = 1;
    return c;
  }();
  return config;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pool::bert;
  auto view = parse_safetensors(data, size, "fuzz");
  if (!view)
    return 0;
  struct span {
    const uint8_t* begin;
    const uint8_t* end;
  };
  std::vector<span> spans;
  for (const auto& [name, tensor] : view->tensors) {
    if (tensor.byte_size != tensor.element_count * dtype_size(tensor.dtype))
      __builtin_trap();
    if (tensor.byte_size > 0) {
      if (tensor.data < data || tensor.data + tensor.byte_size > data + size)
        __builtin_trap();
      spans.push_back({tensor.data, tensor.data + tensor.byte_size});
    }
    auto values = to_float32(tensor);
    if (is_float_dtype(tensor.dtype) && values.size() != tensor.element_count)
      __builtin_trap();
  }
  for (size_t i = 0; i < spans.size(); ++i)
    for (size_t j = i + 1; j < spans.size(); ++j)
      if (spans[i].begin < spans[j].end && spans[j].begin < spans[i].end)
        __builtin_trap();
  auto weights = extract_weights(*view, tiny_config(), "fuzz");
  if (weights && weights->layers.size() != 1)
    __builtin_trap();
  return 0;
}
