#include "bert/model_loader.hpp"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "pool/error.hpp"

namespace pool::bert {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

/// Upper bound on a JSON configuration file.
constexpr uint64_t max_json_file_bytes = 16u << 20;

/// Upper bound on a single dimension in config.json.
constexpr int64_t max_dimension = 1 << 24;

caf::error fail(const std::string& label, const std::string& what) {
  return make_error(pool_errc::invalid_input, label + ": " + what);
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

std::string shape_string(const std::vector<uint64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0)
      out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

/// Reads and parses a JSON file. A missing file is `std::nullopt` when
/// `required` is false, an error otherwise.
caf::expected<std::optional<json>> read_json(const std::string& path, bool required) {
  std::error_code ec;
  if (!required && !fs::exists(path, ec))
    return std::optional<json>{};
  auto bytes = read_whole_file(path, max_json_file_bytes);
  if (!bytes)
    return std::move(bytes.error());
  auto parsed =
      json::parse(bytes->begin(), bytes->end(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded())
    return fail(path, "not valid JSON");
  return std::optional<json>{std::move(parsed)};
}

/// Reads an integer field in [min, max]; `fallback` when absent (nullopt:
/// required).
caf::expected<int> get_int(const json& obj, const char* key, std::optional<int> fallback,
                           int64_t min, int64_t max, const std::string& label) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (fallback)
      return *fallback;
    return fail(label, std::string{"missing '"} + key + "'");
  }
  if (!it->is_number_integer())
    return fail(label, std::string{"'"} + key + "' is not an integer");
  bool in_range = false;
  int64_t value = 0;
  if (it->is_number_unsigned()) {
    auto u = it->get<uint64_t>();
    in_range = u <= static_cast<uint64_t>(max);
    value = in_range ? static_cast<int64_t>(u) : 0;
  } else {
    value = it->get<int64_t>();
    in_range = value <= max;
  }
  if (!in_range || value < min)
    return fail(label, std::string{"'"} + key + "' is " + it->dump() + ", outside [" +
                           std::to_string(min) + ", " + std::to_string(max) + "]");
  return static_cast<int>(value);
}

/// Reads an optional boolean field.
caf::expected<std::optional<bool>> get_bool(const json& obj, const char* key,
                                            const std::string& label) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null())
    return std::optional<bool>{};
  if (!it->is_boolean())
    return fail(label, std::string{"'"} + key + "' is not a boolean");
  return std::optional<bool>{it->get<bool>()};
}

/// Reads an optional string field.
caf::expected<std::optional<std::string>> get_string(const json& obj, const char* key,
                                                     const std::string& label) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null())
    return std::optional<std::string>{};
  if (!it->is_string())
    return fail(label, std::string{"'"} + key + "' is not a string");
  return std::optional<std::string>{it->get<std::string>()};
}

/// The tensors of a safetensors file by canonical name ("bert." stripped),
/// with the ignored families dropped. Tracks which ones were taken.
class tensor_table {
 public:
  tensor_table(const safetensors_view& file, const std::string& label) : label_(label) {
    for (const auto& [name, view] : file.tensors) {
      std::string canonical = starts_with(name, "bert.") ? name.substr(5) : name;
      if (starts_with(canonical, "pooler.") || starts_with(canonical, "cls.") ||
          canonical == "embeddings.position_ids")
        continue;
      auto [it, inserted] = entries_.emplace(canonical, entry{&name, &view, false});
      if (!inserted && !error_)
        error_ = fail(label_, "tensor '" + canonical +
                                  "' appears both with and without the "
                                  "'bert.' prefix");
    }
  }

  const caf::error& error() const { return error_; }

  bool has(const std::string& name) const { return entries_.count(name) > 0; }

  /// Converts tensor `name` to float32 after checking its dtype and shape.
  caf::expected<std::vector<float>> take(const std::string& name,
                                         const std::vector<uint64_t>& shape) {
    auto it = entries_.find(name);
    if (it == entries_.end())
      return fail(label_, "missing tensor '" + name + "' (expected shape " +
                              shape_string(shape) + ")");
    auto& e = it->second;
    if (e.view->shape != shape)
      return fail(label_, "tensor '" + *e.name + "' has shape " +
                              shape_string(e.view->shape) + ", expected " +
                              shape_string(shape));
    if (!is_float_dtype(e.view->dtype))
      return fail(label_, "tensor '" + *e.name + "' has dtype " +
                              dtype_name(e.view->dtype) +
                              "; only F32, F16 and BF16 are supported");
    e.taken = true;
    return to_float32(*e.view);
  }

  /// A LayerNorm parameter under `prefix`: "weight"/"bias", or the older
  /// "gamma"/"beta".
  caf::expected<std::vector<float>> take_ln(const std::string& prefix, bool gain,
                                            uint64_t size) {
    std::string modern = prefix + (gain ? ".weight" : ".bias");
    std::string legacy = prefix + (gain ? ".gamma" : ".beta");
    if (!has(modern) && has(legacy))
      return take(legacy, {size});
    return take(modern, {size});
  }

  /// An error naming the first tensor no expected name consumed.
  caf::error leftovers() const {
    for (const auto& [canonical, e] : entries_)
      if (!e.taken)
        return fail(label_, "unexpected tensor '" + *e.name +
                                "' (does config.json match the weights?)");
    return caf::error{};
  }

 private:
  struct entry {
    const std::string* name;
    const tensor_view* view;
    bool taken;
  };
  std::string label_;
  std::map<std::string, entry> entries_;
  caf::error error_;
};

std::string join(const std::string& dir, const std::string& file) {
  return (fs::path{dir} / file).string();
}

/// The last path component of `dir`, ignoring trailing separators.
std::string directory_name(const std::string& dir) {
  fs::path path = fs::path{dir}.lexically_normal();
  if (path.filename().empty())
    path = path.parent_path();
  auto name = path.filename().string();
  if (name.empty() || name == "." || name == "..") {
    std::error_code ec;
    auto absolute = fs::weakly_canonical(fs::path{dir}, ec);
    if (!ec)
      name = absolute.filename().string();
  }
  return name;
}

caf::error read_pooling(const std::string& path, bert_config& config, bool required) {
  auto doc = read_json(path, required);
  if (!doc)
    return std::move(doc.error());
  if (!*doc)
    return caf::error{};  // default: mean pooling
  const json& obj = **doc;
  if (!obj.is_object())
    return fail(path, "not a JSON object");
  auto mean = get_bool(obj, "pooling_mode_mean_tokens", path);
  if (!mean)
    return std::move(mean.error());
  auto cls = get_bool(obj, "pooling_mode_cls_token", path);
  if (!cls)
    return std::move(cls.error());
  for (const char* other :
       {"pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"}) {
    auto flag = get_bool(obj, other, path);
    if (!flag)
      return std::move(flag.error());
    if (flag->value_or(false))
      return fail(path, std::string{"unsupported pooling mode '"} + other +
                            "' (only mean tokens or the CLS token)");
  }
  bool use_mean = mean->value_or(false);
  bool use_cls = cls->value_or(false);
  if (use_mean == use_cls)
    return fail(path,
                "exactly one of pooling_mode_mean_tokens and pooling_mode_cls_token "
                "must be true");
  config.pooling = use_mean ? pooling_mode::mean : pooling_mode::cls;
  if (auto dim_it = obj.find("word_embedding_dimension");
      dim_it != obj.end() && !dim_it->is_null()) {
    if (!dim_it->is_number_integer() || dim_it->get<int64_t>() != config.hidden_size)
      return fail(path, "word_embedding_dimension " + dim_it->dump() +
                            " does not match hidden_size " +
                            std::to_string(config.hidden_size));
  }
  auto include_prompt = get_bool(obj, "include_prompt", path);
  if (!include_prompt)
    return std::move(include_prompt.error());
  if (!include_prompt->value_or(true) && !config.prompts.empty())
    return fail(path, "include_prompt=false is not supported with task prompts");
  return caf::error{};
}

/// Reads modules.json: sets `normalize` and the Pooling module's directory.
caf::error read_modules(const std::string& path, bert_config& config,
                        std::string& pooling_dir) {
  auto doc = read_json(path, false);
  if (!doc)
    return std::move(doc.error());
  if (!*doc)
    return caf::error{};
  const json& modules = **doc;
  if (!modules.is_array())
    return fail(path, "not a JSON array");
  bool has_transformer = false;
  bool has_pooling = false;
  for (const auto& module : modules) {
    if (!module.is_object())
      return fail(path, "a module entry is not an object");
    auto type = get_string(module, "type", path);
    if (!type)
      return std::move(type.error());
    if (!*type)
      return fail(path, "a module entry has no 'type'");
    const std::string& t = **type;
    if (ends_with(t, "Normalize")) {
      config.normalize = true;
    } else if (ends_with(t, "Transformer")) {
      has_transformer = true;
    } else if (ends_with(t, "Pooling")) {
      has_pooling = true;
      auto sub = get_string(module, "path", path);
      if (!sub)
        return std::move(sub.error());
      if (*sub && !(*sub)->empty()) {
        const std::string& p = **sub;
        if (p.find('/') != std::string::npos || p.find('\\') != std::string::npos ||
            p == "." || p == "..")
          return fail(path,
                      "Pooling module path '" + p + "' is not a plain directory name");
        pooling_dir = p;
      }
    } else {
      return fail(path, "unsupported module type '" + t +
                            "' (only Transformer, Pooling and Normalize)");
    }
  }
  if (!has_transformer)
    return fail(path, "no Transformer module");
  if (!has_pooling)
    return fail(path, "no Pooling module");
  return caf::error{};
}

caf::error read_prompts(const std::string& path, bert_config& config) {
  auto doc = read_json(path, false);
  if (!doc)
    return std::move(doc.error());
  if (!*doc)
    return caf::error{};
  const json& obj = **doc;
  if (!obj.is_object())
    return fail(path, "not a JSON object");
  auto prompts_it = obj.find("prompts");
  if (prompts_it != obj.end() && !prompts_it->is_null()) {
    if (!prompts_it->is_object())
      return fail(path, "'prompts' is not an object");
    for (const auto& [name, prefix] : prompts_it->items()) {
      if (!prefix.is_string())
        return fail(path, "'prompts' entry '" + name + "' is not a string");
      if (name.empty())
        return fail(path, "'prompts' has an empty prompt name");
      config.prompts[name] = prefix.get<std::string>();
    }
  }
  auto def = get_string(obj, "default_prompt_name", path);
  if (!def)
    return std::move(def.error());
  if (*def) {
    if (config.prompts.count(**def) == 0)
      return fail(path, "'default_prompt_name' is '" + **def +
                            "', which is not a key of 'prompts'");
    config.default_prompt_name = **def;
  }
  return caf::error{};
}

/// A number field that may be huge (HF writes model_max_length as 1e30 for
/// "no limit"): its value as size_t, saturated; nullopt when absent or null.
caf::expected<std::optional<size_t>> get_length(const json& obj, const char* key,
                                                const std::string& label) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null())
    return std::optional<size_t>{};
  if (!it->is_number() ||
      (it->is_number_integer() && !it->is_number_unsigned() && it->get<int64_t>() < 1))
    return fail(label, std::string{"'"} + key + "' is not a positive number");
  if (it->is_number_unsigned())
    return std::optional<size_t>{static_cast<size_t>(
        std::min<uint64_t>(it->get<uint64_t>(), std::numeric_limits<size_t>::max()))};
  auto d = it->get<double>();
  if (!(d >= 1))
    return fail(label, std::string{"'"} + key + "' is not a positive number");
  if (d >= 1e18)
    return std::optional<size_t>{std::numeric_limits<size_t>::max()};
  return std::optional<size_t>{static_cast<size_t>(d)};
}

caf::error read_lower_case_and_length(const std::string& dir, bert_config& config) {
  // The tokenizer's normalizer settings, read the way transformers'
  // BertTokenizerFast applies them (they override tokenizer.json's).
  std::optional<size_t> model_max_length;
  auto tok_path = join(dir, "tokenizer_config.json");
  auto tok = read_json(tok_path, false);
  if (!tok)
    return std::move(tok.error());
  if (*tok) {
    if (!(*tok)->is_object())
      return fail(tok_path, "not a JSON object");
    auto flag = get_bool(**tok, "do_lower_case", tok_path);
    if (!flag)
      return std::move(flag.error());
    config.do_lower_case = flag->value_or(true);
    auto strip = get_bool(**tok, "strip_accents", tok_path);
    if (!strip)
      return std::move(strip.error());
    config.strip_accents = *strip;
    auto chinese = get_bool(**tok, "tokenize_chinese_chars", tok_path);
    if (!chinese)
      return std::move(chinese.error());
    config.tokenize_chinese_chars = chinese->value_or(true);
    auto length = get_length(**tok, "model_max_length", tok_path);
    if (!length)
      return std::move(length.error());
    model_max_length = *length;
  }
  const auto positions = static_cast<size_t>(config.max_position_embeddings);
  config.max_seq_length = std::min(positions, model_max_length.value_or(positions));
  auto sb_path = join(dir, "sentence_bert_config.json");
  auto sb = read_json(sb_path, false);
  if (!sb)
    return std::move(sb.error());
  if (*sb) {
    if (!(*sb)->is_object())
      return fail(sb_path, "not a JSON object");
    auto flag = get_bool(**sb, "do_lower_case", sb_path);
    if (!flag)
      return std::move(flag.error());
    config.lower_input = flag->value_or(false);
    auto length =
        get_int(**sb, "max_seq_length", std::nullopt, 1, max_dimension, sb_path);
    if (length)
      config.max_seq_length = std::min(static_cast<size_t>(*length), positions);
    else if ((*sb)->contains("max_seq_length") && !(*sb)->at("max_seq_length").is_null())
      return std::move(length.error());
  }
  if (config.max_seq_length < 2)
    return fail(sb_path, "max_seq_length " + std::to_string(config.max_seq_length) +
                             " cannot hold [CLS] and [SEP]");
  return caf::error{};
}

}  // namespace

caf::expected<bert_config> parse_bert_config(const std::string& text,
                                             const std::string& label) {
  auto doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded())
    return fail(label, "not valid JSON");
  if (!doc.is_object())
    return fail(label, "not a JSON object");
  bert_config config;
  struct int_field {
    const char* key;
    int* target;
    std::optional<int> fallback;
    int64_t max;
  };
  const int_field fields[] = {
      {"vocab_size", &config.vocab_size, std::nullopt, max_dimension},
      {"hidden_size", &config.hidden_size, std::nullopt, max_dimension},
      {"num_hidden_layers", &config.num_layers, std::nullopt, max_layers},
      {"num_attention_heads", &config.num_heads, std::nullopt, max_dimension},
      {"intermediate_size", &config.intermediate_size, std::nullopt, max_dimension},
      {"max_position_embeddings", &config.max_position_embeddings, std::nullopt,
       max_dimension},
      {"type_vocab_size", &config.type_vocab_size, 2, max_dimension},
  };
  for (const auto& field : fields) {
    auto value = get_int(doc, field.key, field.fallback, 1, field.max, label);
    if (!value)
      return std::move(value.error());
    *field.target = *value;
  }
  if (config.hidden_size % config.num_heads != 0)
    return fail(label, "hidden_size " + std::to_string(config.hidden_size) +
                           " is not divisible by num_attention_heads " +
                           std::to_string(config.num_heads));
  auto eps_it = doc.find("layer_norm_eps");
  if (eps_it != doc.end() && !eps_it->is_null()) {
    if (!eps_it->is_number())
      return fail(label, "'layer_norm_eps' is not a number");
    auto eps = eps_it->get<double>();
    if (!std::isfinite(eps) || eps <= 0 || eps > 1)
      return fail(label, "'layer_norm_eps' is " + eps_it->dump() + ", outside (0, 1]");
    config.layer_norm_eps = static_cast<float>(eps);
  }
  auto act = get_string(doc, "hidden_act", label);
  if (!act)
    return std::move(act.error());
  if (act->value_or("gelu") != "gelu")
    return fail(label, "unsupported hidden_act '" + **act +
                           "' (only \"gelu\", the erf form, is supported)");
  auto pos_type = get_string(doc, "position_embedding_type", label);
  if (!pos_type)
    return std::move(pos_type.error());
  if (pos_type->value_or("absolute") != "absolute")
    return fail(label, "unsupported position_embedding_type '" + **pos_type +
                           "' (only \"absolute\")");
  auto model_type = get_string(doc, "model_type", label);
  if (!model_type)
    return std::move(model_type.error());
  if (model_type->value_or("bert") != "bert")
    return fail(label, "unsupported model_type '" + **model_type + "' (only \"bert\")");
  return config;
}

caf::expected<bert_weights> extract_weights(const safetensors_view& file,
                                            const bert_config& config,
                                            const std::string& label,
                                            size_t panel_width) {
  if (config.hidden_size <= 0 || config.vocab_size <= 0 || config.num_layers < 0 ||
      config.num_layers > max_layers || config.intermediate_size <= 0 ||
      config.max_position_embeddings <= 0 || config.type_vocab_size <= 0)
    return fail(label, "invalid model dimensions");
  tensor_table table{file, label};
  if (table.error())
    return table.error();
  const auto h = static_cast<uint64_t>(config.hidden_size);
  const auto inter = static_cast<uint64_t>(config.intermediate_size);
  bert_weights w;
  caf::error err;
  // Assigns tensor `name` of `shape` to `out`; records the first error.
  auto take = [&](std::vector<float>& out, const std::string& name,
                  std::vector<uint64_t> shape) {
    if (err)
      return;
    auto values = table.take(name, shape);
    if (!values)
      err = std::move(values.error());
    else
      out = std::move(*values);
  };
  auto take_ln = [&](std::vector<float>& gain, std::vector<float>& bias,
                     const std::string& prefix) {
    for (int i = 0; i < 2 && !err; ++i) {
      auto values = table.take_ln(prefix, i == 0, h);
      if (!values)
        err = std::move(values.error());
      else
        (i == 0 ? gain : bias) = std::move(*values);
    }
  };
  take(w.word_emb, "embeddings.word_embeddings.weight",
       {static_cast<uint64_t>(config.vocab_size), h});
  take(w.pos_emb, "embeddings.position_embeddings.weight",
       {static_cast<uint64_t>(config.max_position_embeddings), h});
  take(w.type_emb, "embeddings.token_type_embeddings.weight",
       {static_cast<uint64_t>(config.type_vocab_size), h});
  take_ln(w.emb_ln_g, w.emb_ln_b, "embeddings.LayerNorm");
  for (int i = 0; i < config.num_layers && !err; ++i) {
    const std::string p = "encoder.layer." + std::to_string(i) + ".";
    layer_weights layer;
    std::vector<float> parts_w[3];
    std::vector<float> parts_b[3];
    const char* names[3] = {"query", "key", "value"};
    for (int k = 0; k < 3; ++k) {
      take(parts_w[k], p + "attention.self." + names[k] + ".weight", {h, h});
      take(parts_b[k], p + "attention.self." + names[k] + ".bias", {h});
    }
    if (err)
      break;
    std::vector<float> qkv_w;
    qkv_w.reserve(3 * h * h);
    layer.qkv_b.reserve(3 * h);
    for (int k = 0; k < 3; ++k) {
      qkv_w.insert(qkv_w.end(), parts_w[k].begin(), parts_w[k].end());
      layer.qkv_b.insert(layer.qkv_b.end(), parts_b[k].begin(), parts_b[k].end());
    }
    std::vector<float> attn_out_w, ffn_in_w, ffn_out_w;
    take(attn_out_w, p + "attention.output.dense.weight", {h, h});
    take(layer.attn_out_b, p + "attention.output.dense.bias", {h});
    take_ln(layer.attn_ln_g, layer.attn_ln_b, p + "attention.output.LayerNorm");
    take(ffn_in_w, p + "intermediate.dense.weight", {inter, h});
    take(layer.ffn_in_b, p + "intermediate.dense.bias", {inter});
    take(ffn_out_w, p + "output.dense.weight", {h, inter});
    take(layer.ffn_out_b, p + "output.dense.bias", {h});
    if (err)
      break;
    layer.qkv_w = pack_linear(qkv_w.data(), 3 * h, h, panel_width);
    layer.attn_out_w = pack_linear(attn_out_w.data(), h, h, panel_width);
    layer.ffn_in_w = pack_linear(ffn_in_w.data(), inter, h, panel_width);
    layer.ffn_out_w = pack_linear(ffn_out_w.data(), h, inter, panel_width);
    take_ln(layer.ffn_ln_g, layer.ffn_ln_b, p + "output.LayerNorm");
    if (!err)
      w.layers.push_back(std::move(layer));
  }
  if (err)
    return err;
  if (auto leftover = table.leftovers())
    return leftover;
  return w;
}

caf::expected<bert_model> load_bert_model(const std::string& dir, size_t panel_width) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return fail(dir, "model directory not found");
  bert_model model;
  model.name = directory_name(dir);

  auto config_path = join(dir, "config.json");
  auto config_bytes = read_whole_file(config_path, max_json_file_bytes);
  if (!config_bytes)
    return std::move(config_bytes.error());
  auto config = parse_bert_config(std::string(config_bytes->begin(), config_bytes->end()),
                                  config_path);
  if (!config)
    return std::move(config.error());
  model.config = std::move(*config);

  std::string pooling_dir = "1_Pooling";
  const bool has_modules = fs::exists(join(dir, "modules.json"), ec);
  if (auto err = read_modules(join(dir, "modules.json"), model.config, pooling_dir))
    return err;
  if (auto err =
          read_prompts(join(dir, "config_sentence_transformers.json"), model.config))
    return err;
  if (has_modules && !fs::is_directory(join(dir, pooling_dir), ec))
    return fail(join(dir, "modules.json"),
                "lists a Pooling module whose folder '" + pooling_dir + "' is missing");
  if (auto err = read_pooling(join(join(dir, pooling_dir), "config.json"), model.config,
                              has_modules))
    return err;
  if (auto err = read_lower_case_and_length(dir, model.config))
    return err;

  model.vocab_path = join(dir, "vocab.txt");
  if (!fs::is_regular_file(model.vocab_path, ec))
    return fail(model.vocab_path, "file not found");

  auto weights_path = join(dir, "model.safetensors");
  auto file = safetensors_file::load(weights_path);
  if (!file)
    return std::move(file.error());
  auto weights =
      extract_weights((*file)->view(), model.config, weights_path, panel_width);
  if (!weights)
    return std::move(weights.error());
  model.weights = std::move(*weights);
  return model;
}

}  // namespace pool::bert
