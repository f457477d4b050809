// Tests of load_bert_model: tiny sentence-transformers directories written at
// test time, loaded exactly, and refused with an error naming the file when
// anything is missing, malformed or inconsistent.
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "bert/model_loader.hpp"
#include "pool/error.hpp"
#include "safetensors_writer.hpp"

using namespace pool::bert;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr int vocab = 11, hidden = 4, heads = 2, inter = 6, positions = 16, types = 2,
              layers = 2;

struct model_options {
  std::string dtype = "F32";  // F32 | F16 | BF16
  std::string prefix;         // "" or "bert."
  bool extras = false;        // add pooler.*, cls.* and an I64 embeddings.position_ids
  bool legacy_ln = false;     // LayerNorm parameters named gamma/beta
  /// Applied to the tensor list before it is serialised.
  std::function<void(std::vector<st_test::tensor>&)> mutate;
};

json tiny_config() {
  return {{"architectures", {"BertModel"}},
          {"model_type", "bert"},
          {"vocab_size", vocab},
          {"hidden_size", hidden},
          {"num_hidden_layers", layers},
          {"num_attention_heads", heads},
          {"intermediate_size", inter},
          {"hidden_act", "gelu"},
          {"layer_norm_eps", 1e-5},
          {"max_position_embeddings", positions},
          {"type_vocab_size", types},
          {"position_embedding_type", "absolute"}};
}

/// Canonical tensor names and shapes of the tiny model, in file order.
std::vector<std::pair<std::string, std::vector<uint64_t>>> tiny_layout(bool legacy_ln) {
  const uint64_t h = hidden, i = inter;
  std::string g = legacy_ln ? ".gamma" : ".weight", b = legacy_ln ? ".beta" : ".bias";
  std::vector<std::pair<std::string, std::vector<uint64_t>>> out = {
      {"embeddings.word_embeddings.weight", {vocab, h}},
      {"embeddings.position_embeddings.weight", {positions, h}},
      {"embeddings.token_type_embeddings.weight", {types, h}},
      {"embeddings.LayerNorm" + g, {h}},
      {"embeddings.LayerNorm" + b, {h}},
  };
  for (int l = 0; l < layers; ++l) {
    std::string p = "encoder.layer." + std::to_string(l) + ".";
    for (const char* part : {"query", "key", "value"}) {
      out.push_back({p + "attention.self." + part + ".weight", {h, h}});
      out.push_back({p + "attention.self." + part + ".bias", {h}});
    }
    out.push_back({p + "attention.output.dense.weight", {h, h}});
    out.push_back({p + "attention.output.dense.bias", {h}});
    out.push_back({p + "attention.output.LayerNorm" + g, {h}});
    out.push_back({p + "attention.output.LayerNorm" + b, {h}});
    out.push_back({p + "intermediate.dense.weight", {i, h}});
    out.push_back({p + "intermediate.dense.bias", {i}});
    out.push_back({p + "output.dense.weight", {h, i}});
    out.push_back({p + "output.dense.bias", {h}});
    out.push_back({p + "output.LayerNorm" + g, {h}});
    out.push_back({p + "output.LayerNorm" + b, {h}});
  }
  return out;
}

/// Writes a tiny model directory (config.json, vocab.txt, model.safetensors);
/// returns the float values each tensor must load as, by canonical name with
/// gamma/beta spelled weight/bias.
std::map<std::string, std::vector<float>> write_model(const fs::path& dir,
                                                      const model_options& opt = {}) {
  std::map<std::string, std::vector<float>> expected;
  std::vector<st_test::tensor> tensors;
  uint32_t seed = 12345;
  int index = 0;
  for (const auto& [name, shape] : tiny_layout(opt.legacy_ln)) {
    size_t count = 1;
    for (auto d : shape)
      count *= d;
    std::vector<float> values(count);
    st_test::tensor t{opt.prefix + name, opt.dtype, shape, {}};
    if (opt.dtype == "F32") {
      for (size_t k = 0; k < count; ++k)
        values[k] = static_cast<float>(index * 1000 + static_cast<int>(k)) * 0.25f - 7.0f;
      t.bytes = st_test::f32_bytes(values);
    } else {
      std::vector<uint16_t> bits(count);
      for (size_t k = 0; k < count; ++k) {
        seed = seed * 1664525u + 1013904223u;
        auto raw = static_cast<uint16_t>(seed >> 16);
        // Clear the exponent's lowest bit: never all ones, so always finite.
        if (opt.dtype == "F16") {
          bits[k] = raw & 0xfbff;
          values[k] = st_test::reference_f16(bits[k]);
        } else {
          bits[k] = raw & 0xff7f;
          values[k] = st_test::reference_bf16(bits[k]);
        }
      }
      t.bytes = st_test::u16_bytes(bits);
    }
    std::string key = name;
    if (opt.legacy_ln) {
      if (key.size() > 6 && key.compare(key.size() - 6, 6, ".gamma") == 0)
        key = key.substr(0, key.size() - 6) + ".weight";
      if (key.size() > 5 && key.compare(key.size() - 5, 5, ".beta") == 0)
        key = key.substr(0, key.size() - 5) + ".bias";
    }
    expected[key] = values;
    tensors.push_back(std::move(t));
    ++index;
  }
  if (opt.extras) {
    tensors.push_back({opt.prefix + "embeddings.position_ids",
                       "I64",
                       {1, positions},
                       std::vector<uint8_t>(8 * positions, 0)});
    tensors.push_back({opt.prefix + "pooler.dense.weight",
                       "F32",
                       {hidden, hidden},
                       st_test::f32_bytes(std::vector<float>(hidden * hidden, 1.0f))});
    tensors.push_back({opt.prefix + "pooler.dense.bias",
                       "F32",
                       {hidden},
                       st_test::f32_bytes(std::vector<float>(hidden, 1.0f))});
    tensors.push_back({"cls.predictions.bias",
                       "F32",
                       {vocab},
                       st_test::f32_bytes(std::vector<float>(vocab, 1.0f))});
  }
  if (opt.mutate)
    opt.mutate(tensors);
  st_test::write_file(dir / "config.json", tiny_config().dump(2));
  st_test::write_file(dir / "vocab.txt",
                      std::string("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n"));
  st_test::write_file(dir / "model.safetensors",
                      st_test::serialize(tensors, json{{"format", "pt"}}));
  return expected;
}

void write_json(const fs::path& path, const json& value) {
  fs::create_directories(path.parent_path());
  st_test::write_file(path, value.dump(2));
}

/// Every weight of `model` equals the values written for it; Q, K and V are
/// fused in that order.
void check_weights(const bert_model& model,
                   const std::map<std::string, std::vector<float>>& expected) {
  const auto& w = model.weights;
  CHECK(w.word_emb == expected.at("embeddings.word_embeddings.weight"));
  CHECK(w.pos_emb == expected.at("embeddings.position_embeddings.weight"));
  CHECK(w.type_emb == expected.at("embeddings.token_type_embeddings.weight"));
  CHECK(w.emb_ln_g == expected.at("embeddings.LayerNorm.weight"));
  CHECK(w.emb_ln_b == expected.at("embeddings.LayerNorm.bias"));
  REQUIRE(w.layers.size() == static_cast<size_t>(layers));
  for (int l = 0; l < layers; ++l) {
    INFO("layer " << l);
    std::string p = "encoder.layer." + std::to_string(l) + ".";
    const auto& layer = w.layers[static_cast<size_t>(l)];
    std::vector<float> qkv_w, qkv_b;
    for (const char* part : {"query", "key", "value"}) {
      const auto& pw = expected.at(p + "attention.self." + part + ".weight");
      const auto& pb = expected.at(p + "attention.self." + part + ".bias");
      qkv_w.insert(qkv_w.end(), pw.begin(), pw.end());
      qkv_b.insert(qkv_b.end(), pb.begin(), pb.end());
    }
    CHECK(unpack_linear(layer.qkv_w) == qkv_w);
    CHECK(layer.qkv_b == qkv_b);
    CHECK(unpack_linear(layer.attn_out_w) ==
          expected.at(p + "attention.output.dense.weight"));
    CHECK(layer.attn_out_b == expected.at(p + "attention.output.dense.bias"));
    CHECK(layer.attn_ln_g == expected.at(p + "attention.output.LayerNorm.weight"));
    CHECK(layer.attn_ln_b == expected.at(p + "attention.output.LayerNorm.bias"));
    CHECK(unpack_linear(layer.ffn_in_w) == expected.at(p + "intermediate.dense.weight"));
    CHECK(layer.ffn_in_b == expected.at(p + "intermediate.dense.bias"));
    CHECK(unpack_linear(layer.ffn_out_w) == expected.at(p + "output.dense.weight"));
    CHECK(layer.ffn_out_b == expected.at(p + "output.dense.bias"));
    CHECK(layer.ffn_ln_g == expected.at(p + "output.LayerNorm.weight"));
    CHECK(layer.ffn_ln_b == expected.at(p + "output.LayerNorm.bias"));
  }
}

/// Loads `dir`, expecting failure; returns the message.
std::string load_error(const fs::path& dir) {
  auto model = load_bert_model(dir.string());
  if (model)
    return "<loaded successfully>";
  CHECK(pool::pool_code(model.error()) == pool::pool_errc::invalid_input);
  return pool::error_message(model.error());
}

}  // namespace

TEST_CASE("a tiny F32 model directory loads with every weight in place",
          "[model_loader]") {
  st_test::temp_dir tmp;
  auto dir = tmp.path() / "tiny-bert";
  fs::create_directories(dir);
  auto expected = write_model(dir);
  auto model = load_bert_model(dir.string() + "/");
  REQUIRE(model);
  const auto& c = model->config;
  CHECK(c.vocab_size == vocab);
  CHECK(c.hidden_size == hidden);
  CHECK(c.num_layers == layers);
  CHECK(c.num_heads == heads);
  CHECK(c.intermediate_size == inter);
  CHECK(c.max_position_embeddings == positions);
  CHECK(c.type_vocab_size == types);
  CHECK(c.layer_norm_eps == 1e-5f);
  // Defaults without any sentence-transformers file.
  CHECK(c.pooling == pooling_mode::mean);
  CHECK_FALSE(c.normalize);
  CHECK(c.max_seq_length == static_cast<size_t>(positions));  // 512 capped
  CHECK(c.do_lower_case);
  CHECK_FALSE(c.strip_accents.has_value());
  CHECK(c.tokenize_chinese_chars);
  CHECK_FALSE(c.lower_input);
  CHECK(c.prompts.empty());
  CHECK(c.default_prompt_name.empty());
  CHECK(model->name == "tiny-bert");
  CHECK(model->vocab_path == (dir / "vocab.txt").string());
  check_weights(*model, expected);
}

TEST_CASE(
    "F16 and BF16 weights with a bert. prefix load exactly and extra heads are ignored",
    "[model_loader][dtype]") {
  for (std::string dtype : {"F16", "BF16"}) {
    for (std::string prefix : {"", "bert."}) {
      INFO(dtype << " with prefix '" << prefix << "'");
      st_test::temp_dir tmp;
      model_options opt;
      opt.dtype = dtype;
      opt.prefix = prefix;
      opt.extras = true;
      auto expected = write_model(tmp.path(), opt);
      auto model = load_bert_model(tmp.path().string());
      REQUIRE(model);
      check_weights(*model, expected);
    }
  }
}

TEST_CASE("LayerNorm parameters named gamma and beta are accepted", "[model_loader]") {
  st_test::temp_dir tmp;
  model_options opt;
  opt.legacy_ln = true;
  auto expected = write_model(tmp.path(), opt);
  auto model = load_bert_model(tmp.path().string());
  REQUIRE(model);
  check_weights(*model, expected);
}

TEST_CASE(
    "sentence-transformers files set pooling, normalisation, length, case and prompts",
    "[model_loader][st]") {
  st_test::temp_dir tmp;
  const auto& dir = tmp.path();
  write_model(dir);
  SECTION("CLS pooling and a Normalize module") {
    write_json(dir / "modules.json",
               {{{"idx", 0},
                 {"name", "0"},
                 {"path", ""},
                 {"type", "sentence_transformers.models.Transformer"}},
                {{"idx", 1},
                 {"name", "1"},
                 {"path", "1_Pooling"},
                 {"type", "sentence_transformers.models.Pooling"}},
                {{"idx", 2},
                 {"name", "2"},
                 {"path", "2_Normalize"},
                 {"type", "sentence_transformers.models.Normalize"}}});
    write_json(dir / "1_Pooling" / "config.json",
               {{"word_embedding_dimension", hidden},
                {"pooling_mode_cls_token", true},
                {"pooling_mode_mean_tokens", false},
                {"pooling_mode_max_tokens", false},
                {"pooling_mode_mean_sqrt_len_tokens", false}});
    auto model = load_bert_model(dir.string());
    REQUIRE(model);
    CHECK(model->config.pooling == pooling_mode::cls);
    CHECK(model->config.normalize);
  }
  SECTION("the Pooling module's path from modules.json is honoured") {
    write_json(dir / "modules.json",
               {{{"path", ""}, {"type", "sentence_transformers.models.Transformer"}},
                {{"path", "pool"}, {"type", "sentence_transformers.models.Pooling"}}});
    write_json(dir / "pool" / "config.json",
               {{"pooling_mode_cls_token", true}, {"pooling_mode_mean_tokens", false}});
    auto model = load_bert_model(dir.string());
    REQUIRE(model);
    CHECK(model->config.pooling == pooling_mode::cls);
    CHECK_FALSE(model->config.normalize);
  }
  SECTION("mean pooling") {
    write_json(dir / "1_Pooling" / "config.json",
               {{"pooling_mode_cls_token", false}, {"pooling_mode_mean_tokens", true}});
    auto model = load_bert_model(dir.string());
    REQUIRE(model);
    CHECK(model->config.pooling == pooling_mode::mean);
  }
  SECTION("max_seq_length is read and capped by max_position_embeddings") {
    write_json(dir / "sentence_bert_config.json", {{"max_seq_length", 8}});
    auto model = load_bert_model(dir.string());
    REQUIRE(model);
    CHECK(model->config.max_seq_length == 8);
    write_json(dir / "sentence_bert_config.json", {{"max_seq_length", 1000}});
    model = load_bert_model(dir.string());
    REQUIRE(model);
    CHECK(model->config.max_seq_length == static_cast<size_t>(positions));
  }
  SECTION("an uncased tokenizer lower-cases even when sentence_bert_config says false") {
    // all-MiniLM-L6-v2 ships exactly this combination.
    write_json(dir / "sentence_bert_config.json",
               {{"max_seq_length", 256}, {"do_lower_case", false}});
    write_json(dir / "tokenizer_config.json", {{"do_lower_case", true}});
    auto model = load_bert_model(dir.string());
    REQUIRE(model);
    CHECK(model->config.do_lower_case);
  }
  SECTION(
      "sentence_bert_config's do_lower_case is str.lower() before a cased tokenizer") {
    write_json(dir / "tokenizer_config.json", {{"do_lower_case", false}});
    auto model = load_bert_model(dir.string());
    REQUIRE(model);
    CHECK_FALSE(model->config.do_lower_case);
    CHECK_FALSE(model->config.lower_input);
    write_json(dir / "sentence_bert_config.json", {{"do_lower_case", true}});
    model = load_bert_model(dir.string());
    REQUIRE(model);
    // The tokenizer stays cased (no accent stripping); the text is lowered.
    CHECK_FALSE(model->config.do_lower_case);
    CHECK(model->config.lower_input);
  }
  SECTION(
      "strip_accents and tokenize_chinese_chars are read from tokenizer_config.json") {
    write_json(dir / "tokenizer_config.json", {{"do_lower_case", true},
                                               {"strip_accents", false},
                                               {"tokenize_chinese_chars", false}});
    auto model = load_bert_model(dir.string());
    REQUIRE(model);
    CHECK(model->config.do_lower_case);
    REQUIRE(model->config.strip_accents.has_value());
    CHECK_FALSE(*model->config.strip_accents);
    CHECK_FALSE(model->config.tokenize_chinese_chars);
    write_json(dir / "tokenizer_config.json", {{"strip_accents", nullptr}});
    model = load_bert_model(dir.string());
    REQUIRE(model);
    CHECK_FALSE(model->config.strip_accents.has_value());  // follows do_lower_case
    CHECK(model->config.tokenize_chinese_chars);
  }
  SECTION("without max_seq_length the limit is min(positions, model_max_length)") {
    write_json(dir / "tokenizer_config.json", {{"model_max_length", 7}});
    auto model = load_bert_model(dir.string());
    REQUIRE(model);
    CHECK(model->config.max_seq_length == 7);
    // HF's "no limit" (1e30) leaves max_position_embeddings.
    write_json(dir / "tokenizer_config.json",
               nlohmann::json::parse(
                   R"({"model_max_length": 1000000000000000019884624838656})"));
    model = load_bert_model(dir.string());
    REQUIRE(model);
    CHECK(model->config.max_seq_length == static_cast<size_t>(positions));
    // An explicit max_seq_length wins over model_max_length.
    write_json(dir / "tokenizer_config.json", {{"model_max_length", 7}});
    write_json(dir / "sentence_bert_config.json", {{"max_seq_length", 9}});
    model = load_bert_model(dir.string());
    REQUIRE(model);
    CHECK(model->config.max_seq_length == 9);
  }
  SECTION("every prompt and the default prompt name are read") {
    write_json(dir / "config_sentence_transformers.json",
               {{"prompts",
                 {{"query", "query: "}, {"passage", "passage: "}, {"classify", "c: "}}},
                {"default_prompt_name", "query"}});
    auto model = load_bert_model(dir.string());
    REQUIRE(model);
    const std::map<std::string, std::string> want = {
        {"query", "query: "}, {"passage", "passage: "}, {"classify", "c: "}};
    CHECK(model->config.prompts == want);
    CHECK(model->config.default_prompt_name == "query");
  }
}

TEST_CASE(
    "tokenizer and prompt settings of the wrong type or meaning are refused naming "
    "the file and the key",
    "[model_loader][errors]") {
  st_test::temp_dir tmp;
  const auto& dir = tmp.path();
  write_model(dir);
  SECTION("strip_accents") {
    write_json(dir / "tokenizer_config.json", {{"strip_accents", "no"}});
    CHECK_THAT(load_error(dir), Catch::Contains("tokenizer_config.json") &&
                                    Catch::Contains("strip_accents"));
  }
  SECTION("tokenize_chinese_chars") {
    write_json(dir / "tokenizer_config.json", {{"tokenize_chinese_chars", 1}});
    CHECK_THAT(load_error(dir), Catch::Contains("tokenizer_config.json") &&
                                    Catch::Contains("tokenize_chinese_chars"));
  }
  SECTION("model_max_length") {
    write_json(dir / "tokenizer_config.json", {{"model_max_length", "512"}});
    CHECK_THAT(load_error(dir), Catch::Contains("tokenizer_config.json") &&
                                    Catch::Contains("model_max_length"));
  }
  SECTION("a prompt that is not a string") {
    write_json(dir / "config_sentence_transformers.json", {{"prompts", {{"query", 3}}}});
    CHECK_THAT(load_error(dir), Catch::Contains("config_sentence_transformers.json") &&
                                    Catch::Contains("prompts") &&
                                    Catch::Contains("query"));
  }
  SECTION("a default prompt name that is not a prompt") {
    write_json(dir / "config_sentence_transformers.json",
               {{"prompts", {{"query", "q: "}}}, {"default_prompt_name", "passage"}});
    CHECK_THAT(load_error(dir), Catch::Contains("config_sentence_transformers.json") &&
                                    Catch::Contains("default_prompt_name"));
  }
  SECTION("modules.json lists a Pooling module whose folder is missing") {
    write_json(
        dir / "modules.json",
        {{{"path", ""}, {"type", "sentence_transformers.models.Transformer"}},
         {{"path", "1_Pooling"}, {"type", "sentence_transformers.models.Pooling"}}});
    fs::remove_all(dir / "1_Pooling");
    CHECK_THAT(load_error(dir), Catch::Contains("modules.json") &&
                                    Catch::Contains("1_Pooling") &&
                                    Catch::Contains("missing"));
  }
}

TEST_CASE("missing files are refused with an error naming the file",
          "[model_loader][errors]") {
  st_test::temp_dir tmp;
  const auto& dir = tmp.path();
  write_model(dir);
  SECTION("config.json") {
    fs::remove(dir / "config.json");
    CHECK_THAT(load_error(dir),
               Catch::Contains("config.json") && Catch::Contains("not found"));
  }
  SECTION("model.safetensors") {
    fs::remove(dir / "model.safetensors");
    CHECK_THAT(load_error(dir),
               Catch::Contains("model.safetensors") && Catch::Contains("not found"));
  }
  SECTION("vocab.txt") {
    fs::remove(dir / "vocab.txt");
    CHECK_THAT(load_error(dir),
               Catch::Contains("vocab.txt") && Catch::Contains("not found"));
  }
  SECTION("the directory itself") {
    CHECK_THAT(load_error(dir / "nope"),
               Catch::Contains("nope") && Catch::Contains("not found"));
  }
}

TEST_CASE("malformed model.safetensors files are refused naming the file",
          "[model_loader][errors]") {
  st_test::temp_dir tmp;
  const auto& dir = tmp.path();
  write_model(dir);
  auto path = dir / "model.safetensors";
  auto error_for = [&](const std::vector<uint8_t>& bytes) {
    st_test::write_file(path, bytes);
    return load_error(dir);
  };
  SECTION("truncated file") {
    auto bytes = st_test::serialize({{"embeddings.word_embeddings.weight",
                                      "F32",
                                      {vocab, hidden},
                                      std::vector<uint8_t>(vocab * hidden * 4)}});
    bytes.resize(bytes.size() - 10);
    CHECK_THAT(error_for(bytes), Catch::Contains("model.safetensors") &&
                                     Catch::Contains("past the data buffer"));
    bytes.resize(5);
    CHECK_THAT(error_for(bytes),
               Catch::Contains("model.safetensors") && Catch::Contains("too short"));
  }
  SECTION("header length larger than the file") {
    CHECK_THAT(
        error_for(st_test::raw_file("{}", {}, 1000)),
        Catch::Contains("model.safetensors") && Catch::Contains("exceeds the file size"));
  }
  SECTION("data_offsets past the end") {
    CHECK_THAT(
        error_for(st_test::raw_file(
            R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
            std::vector<uint8_t>(12))),
        Catch::Contains("model.safetensors") && Catch::Contains("past the data buffer"));
  }
  SECTION("overlapping data_offsets") {
    CHECK_THAT(error_for(st_test::raw_file(
                   R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                   R"("y":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
                   std::vector<uint8_t>(24))),
               Catch::Contains("model.safetensors") && Catch::Contains("overlap"));
  }
  SECTION("data_offsets that do not match the shape") {
    CHECK_THAT(error_for(st_test::raw_file(
                   R"({"x":{"dtype":"F16","shape":[4],"data_offsets":[0,16]}})",
                   std::vector<uint8_t>(16))),
               Catch::Contains("model.safetensors") && Catch::Contains("need 8"));
  }
  SECTION("unknown dtype") {
    CHECK_THAT(error_for(st_test::raw_file(
                   R"({"x":{"dtype":"Q4_K","shape":[4],"data_offsets":[0,16]}})",
                   std::vector<uint8_t>(16))),
               Catch::Contains("model.safetensors") && Catch::Contains("'x'") &&
                   Catch::Contains("Q4_K"));
  }
  SECTION("header that is not JSON") {
    CHECK_THAT(error_for(st_test::raw_file("{nope", {})),
               Catch::Contains("model.safetensors") && Catch::Contains("not valid JSON"));
  }
}

TEST_CASE("weights that do not match config.json are refused naming the tensor",
          "[model_loader][errors]") {
  st_test::temp_dir tmp;
  const auto& dir = tmp.path();
  auto rewrite_config = [&](const std::function<void(json&)>& edit) {
    auto config = tiny_config();
    edit(config);
    st_test::write_file(dir / "config.json", config.dump());
  };
  SECTION("wrong shape") {
    write_model(dir);
    rewrite_config([](json& c) { c["vocab_size"] = 12; });
    CHECK_THAT(load_error(dir),
               Catch::Contains("model.safetensors") &&
                   Catch::Contains("embeddings.word_embeddings.weight") &&
                   Catch::Contains("shape [11, 4], expected [12, 4]"));
  }
  SECTION("wrong intermediate size") {
    write_model(dir);
    rewrite_config([](json& c) { c["intermediate_size"] = 8; });
    CHECK_THAT(load_error(dir),
               Catch::Contains("encoder.layer.0.intermediate.dense.weight") &&
                   Catch::Contains("shape [6, 4], expected [8, 4]"));
  }
  SECTION("a layer more than the file holds") {
    write_model(dir);
    rewrite_config([](json& c) { c["num_hidden_layers"] = 3; });
    CHECK_THAT(load_error(dir), Catch::Contains("model.safetensors") &&
                                    Catch::Contains("missing tensor 'encoder.layer.2."));
  }
  SECTION("a layer fewer than the file holds") {
    write_model(dir);
    rewrite_config([](json& c) { c["num_hidden_layers"] = 1; });
    CHECK_THAT(load_error(dir),
               Catch::Contains("model.safetensors") &&
                   Catch::Contains("unexpected tensor 'encoder.layer.1."));
  }
  SECTION("a missing tensor") {
    model_options opt;
    opt.mutate = [](std::vector<st_test::tensor>& ts) {
      for (auto it = ts.begin(); it != ts.end(); ++it)
        if (it->name == "encoder.layer.1.attention.self.value.bias") {
          ts.erase(it);
          break;
        }
    };
    write_model(dir, opt);
    CHECK_THAT(
        load_error(dir),
        Catch::Contains("missing tensor 'encoder.layer.1.attention.self.value.bias'"));
  }
  SECTION("an integer dtype where floats are needed") {
    model_options opt;
    opt.mutate = [](std::vector<st_test::tensor>& ts) {
      for (auto& t : ts)
        if (t.name == "embeddings.LayerNorm.bias")
          t.dtype = "I32";
    };
    write_model(dir, opt);
    CHECK_THAT(load_error(dir), Catch::Contains("embeddings.LayerNorm.bias") &&
                                    Catch::Contains("dtype I32"));
  }
  SECTION("the same tensor with and without the bert. prefix") {
    model_options opt;
    opt.mutate = [](std::vector<st_test::tensor>& ts) {
      auto copy = ts.front();
      copy.name = "bert." + copy.name;
      ts.push_back(copy);
    };
    write_model(dir, opt);
    CHECK_THAT(load_error(dir), Catch::Contains("both with and without"));
  }
}

TEST_CASE("unsupported or malformed config.json is refused naming the file",
          "[model_loader][errors][config]") {
  st_test::temp_dir tmp;
  const auto& dir = tmp.path();
  write_model(dir);
  auto with_config = [&](const std::function<void(json&)>& edit) {
    auto config = tiny_config();
    edit(config);
    st_test::write_file(dir / "config.json", config.dump());
    return load_error(dir);
  };
  SECTION("bad JSON") {
    st_test::write_file(dir / "config.json", std::string("{\"hidden_size\": 4,"));
    CHECK_THAT(load_error(dir),
               Catch::Contains("config.json") && Catch::Contains("not valid JSON"));
  }
  SECTION("not an object") {
    st_test::write_file(dir / "config.json", std::string("[]"));
    CHECK_THAT(load_error(dir), Catch::Contains("config.json"));
  }
  SECTION("hidden_act other than erf gelu") {
    for (std::string act : {"gelu_new", "relu", "gelu_pytorch_tanh"}) {
      CHECK_THAT(with_config([&](json& c) { c["hidden_act"] = act; }),
                 Catch::Contains("config.json") && Catch::Contains("hidden_act") &&
                     Catch::Contains(act));
    }
  }
  SECTION("relative position embeddings") {
    CHECK_THAT(
        with_config([](json& c) { c["position_embedding_type"] = "relative_key"; }),
        Catch::Contains("config.json") && Catch::Contains("relative_key"));
  }
  SECTION("another architecture") {
    CHECK_THAT(with_config([](json& c) { c["model_type"] = "roberta"; }),
               Catch::Contains("config.json") && Catch::Contains("roberta"));
  }
  SECTION("hidden_size not divisible by the heads") {
    CHECK_THAT(with_config([](json& c) { c["num_attention_heads"] = 3; }),
               Catch::Contains("config.json") && Catch::Contains("divisible"));
  }
  SECTION("missing, mistyped and out-of-range sizes") {
    CHECK_THAT(
        with_config([](json& c) { c.erase("hidden_size"); }),
        Catch::Contains("config.json") && Catch::Contains("missing 'hidden_size'"));
    CHECK_THAT(with_config([](json& c) { c["hidden_size"] = "4"; }),
               Catch::Contains("'hidden_size' is not an integer"));
    CHECK_THAT(with_config([](json& c) { c["vocab_size"] = -5; }),
               Catch::Contains("'vocab_size' is -5"));
    CHECK_THAT(with_config([](json& c) { c["num_hidden_layers"] = 1000000000; }),
               Catch::Contains("num_hidden_layers"));
    CHECK_THAT(with_config([](json& c) { c["layer_norm_eps"] = -1; }),
               Catch::Contains("layer_norm_eps"));
  }
}

TEST_CASE("unsupported sentence-transformers settings are refused naming the file",
          "[model_loader][errors][st]") {
  st_test::temp_dir tmp;
  const auto& dir = tmp.path();
  write_model(dir);
  auto pooling = dir / "1_Pooling" / "config.json";
  SECTION("both pooling modes") {
    write_json(pooling,
               {{"pooling_mode_cls_token", true}, {"pooling_mode_mean_tokens", true}});
    CHECK_THAT(load_error(dir),
               Catch::Contains("1_Pooling") && Catch::Contains("exactly one"));
  }
  SECTION("no pooling mode") {
    write_json(pooling, {{"pooling_mode_cls_token", false}});
    CHECK_THAT(load_error(dir),
               Catch::Contains("1_Pooling") && Catch::Contains("exactly one"));
  }
  SECTION("max pooling") {
    write_json(pooling,
               {{"pooling_mode_mean_tokens", false}, {"pooling_mode_max_tokens", true}});
    CHECK_THAT(load_error(dir), Catch::Contains("1_Pooling") &&
                                    Catch::Contains("pooling_mode_max_tokens"));
  }
  SECTION("pooling dimension that differs from hidden_size") {
    write_json(pooling,
               {{"pooling_mode_mean_tokens", true}, {"word_embedding_dimension", 384}});
    CHECK_THAT(load_error(dir), Catch::Contains("1_Pooling") &&
                                    Catch::Contains("word_embedding_dimension"));
  }
  SECTION("bad JSON in the pooling config") {
    fs::create_directories(pooling.parent_path());
    st_test::write_file(pooling, std::string("{nope"));
    CHECK_THAT(load_error(dir),
               Catch::Contains("1_Pooling") && Catch::Contains("not valid JSON"));
  }
  SECTION("a Dense module that would be silently skipped") {
    write_json(dir / "modules.json",
               {{{"path", ""}, {"type", "sentence_transformers.models.Transformer"}},
                {{"path", "1_Pooling"}, {"type", "sentence_transformers.models.Pooling"}},
                {{"path", "2_Dense"}, {"type", "sentence_transformers.models.Dense"}}});
    CHECK_THAT(load_error(dir),
               Catch::Contains("modules.json") && Catch::Contains("Dense"));
  }
  SECTION("a Pooling path that leaves the directory") {
    write_json(
        dir / "modules.json",
        {{{"path", ""}, {"type", "sentence_transformers.models.Transformer"}},
         {{"path", "../elsewhere"}, {"type", "sentence_transformers.models.Pooling"}}});
    CHECK_THAT(load_error(dir),
               Catch::Contains("modules.json") && Catch::Contains("../elsewhere"));
  }
  SECTION("a prompt that is not a string") {
    write_json(dir / "config_sentence_transformers.json", {{"prompts", {{"query", 5}}}});
    CHECK_THAT(load_error(dir), Catch::Contains("config_sentence_transformers.json") &&
                                    Catch::Contains("query"));
  }
  SECTION("a max_seq_length that is not a positive integer") {
    write_json(dir / "sentence_bert_config.json", {{"max_seq_length", 0}});
    CHECK_THAT(load_error(dir), Catch::Contains("sentence_bert_config.json") &&
                                    Catch::Contains("max_seq_length"));
  }
}
