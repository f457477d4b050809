#include "bert/safetensors.hpp"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "pool/error.hpp"

namespace pool::bert {

namespace {

using nlohmann::json;

struct dtype_entry {
  const char* name;
  st_dtype type;
  size_t size;
};

constexpr dtype_entry dtype_table[] = {
    {"BOOL", st_dtype::boolean, 1},    {"U8", st_dtype::u8, 1},
    {"I8", st_dtype::i8, 1},           {"F8_E5M2", st_dtype::f8_e5m2, 1},
    {"F8_E4M3", st_dtype::f8_e4m3, 1}, {"I16", st_dtype::i16, 2},
    {"U16", st_dtype::u16, 2},         {"F16", st_dtype::f16, 2},
    {"BF16", st_dtype::bf16, 2},       {"I32", st_dtype::i32, 4},
    {"U32", st_dtype::u32, 4},         {"F32", st_dtype::f32, 4},
    {"F64", st_dtype::f64, 8},         {"I64", st_dtype::i64, 8},
    {"U64", st_dtype::u64, 8},
};

std::optional<st_dtype> parse_dtype(const std::string& name) {
  for (const auto& entry : dtype_table)
    if (name == entry.name)
      return entry.type;
  return std::nullopt;
}

/// A name safe to put in a log line: printable ASCII, at most 120 characters.
std::string printable(const std::string& text) {
  constexpr size_t max_chars = 120;
  std::string out;
  for (size_t i = 0; i < text.size() && i < max_chars; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  if (text.size() > max_chars)
    out += "...";
  return out;
}

caf::error fail(const std::string& label, const std::string& what) {
  return make_error(pool_errc::invalid_input, label + ": " + what);
}

caf::error fail_tensor(const std::string& label, const std::string& name,
                       const std::string& what) {
  return fail(label, "tensor '" + printable(name) + "': " + what);
}

uint16_t load_u16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}

uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

uint64_t load_u64(const uint8_t* p) {
  return static_cast<uint64_t>(load_u32(p)) |
         (static_cast<uint64_t>(load_u32(p + 4)) << 32);
}

float bits_to_float(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

/// Parses the JSON header; flags a top-level key that appears twice (nlohmann
/// would silently keep one of them).
json parse_header_json(const uint8_t* first, const uint8_t* last, bool& duplicate_key,
                       std::string& duplicate_name) {
  std::set<std::string> seen;
  json::parser_callback_t callback = [&](int depth, json::parse_event_t event,
                                         json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second && !duplicate_key) {
        duplicate_key = true;
        duplicate_name = key;
      }
    }
    return true;
  };
  return json::parse(first, last, callback, /*allow_exceptions=*/false);
}

struct range {
  uint64_t begin;
  uint64_t end;
  const std::string* name;
};

}  // namespace

size_t dtype_size(st_dtype type) {
  for (const auto& entry : dtype_table)
    if (entry.type == type)
      return entry.size;
  return 0;
}

const char* dtype_name(st_dtype type) {
  for (const auto& entry : dtype_table)
    if (entry.type == type)
      return entry.name;
  return "?";
}

bool is_float_dtype(st_dtype type) {
  return type == st_dtype::f32 || type == st_dtype::f16 || type == st_dtype::bf16;
}

caf::expected<safetensors_view> parse_safetensors(const uint8_t* data, size_t size,
                                                  const std::string& label) {
  if (size < 8)
    return fail(label, "file too short for a safetensors header (" +
                           std::to_string(size) + " bytes, need at least 8)");
  const uint64_t header_len = load_u64(data);
  const uint64_t available = size - 8;
  if (header_len > available)
    return fail(label, "header length " + std::to_string(header_len) +
                           " exceeds the file size (" + std::to_string(available) +
                           " bytes after the length field); truncated file?");
  if (header_len > max_header_bytes)
    return fail(label, "header length " + std::to_string(header_len) +
                           " exceeds the limit of " + std::to_string(max_header_bytes) +
                           " bytes");
  const uint8_t* header_begin = data + 8;
  const uint8_t* header_end = header_begin + header_len;
  const uint8_t* buffer = header_end;
  const uint64_t buffer_size = available - header_len;

  bool duplicate_key = false;
  std::string duplicate_name;
  json header =
      parse_header_json(header_begin, header_end, duplicate_key, duplicate_name);
  if (header.is_discarded())
    return fail(label, "header is not valid JSON");
  if (!header.is_object())
    return fail(label, "header JSON is not an object");
  if (duplicate_key)
    return fail(label, "header lists '" + printable(duplicate_name) + "' twice");

  safetensors_view result;
  std::vector<range> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object())
        return fail(label, "__metadata__ is not an object");
      for (auto m = entry.begin(); m != entry.end(); ++m)
        if (m.value().is_string())
          result.metadata.emplace(m.key(), m.value().get<std::string>());
      continue;
    }
    if (!entry.is_object())
      return fail_tensor(label, name, "entry is not an object");
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || shape_it == entry.end() || offsets_it == entry.end())
      return fail_tensor(label, name, "entry needs 'dtype', 'shape' and 'data_offsets'");
    if (!dtype_it->is_string())
      return fail_tensor(label, name, "'dtype' is not a string");
    const auto& dtype_str = dtype_it->get_ref<const std::string&>();
    auto dtype = parse_dtype(dtype_str);
    if (!dtype)
      return fail_tensor(label, name, "unknown dtype '" + printable(dtype_str) + "'");

    tensor_view view;
    view.dtype = *dtype;
    if (!shape_it->is_array())
      return fail_tensor(label, name, "'shape' is not an array");
    uint64_t count = 1;
    bool overflow = false;
    for (const auto& dim : *shape_it) {
      if (!dim.is_number_unsigned())
        return fail_tensor(label, name,
                           "'shape' holds a value that is not a non-negative integer");
      auto d = dim.get<uint64_t>();
      view.shape.push_back(d);
      if (d != 0 && count > std::numeric_limits<uint64_t>::max() / d)
        overflow = true;
      else
        count *= d;
    }
    const uint64_t elem_size = dtype_size(*dtype);
    if (overflow || count > std::numeric_limits<uint64_t>::max() / elem_size)
      return fail_tensor(label, name, "shape's byte size overflows 64 bits");
    view.element_count = count;
    const uint64_t byte_size = count * elem_size;

    if (!offsets_it->is_array() || offsets_it->size() != 2 ||
        !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned())
      return fail_tensor(label, name,
                         "'data_offsets' is not [begin, end] of non-negative integers");
    const auto begin = (*offsets_it)[0].get<uint64_t>();
    const auto end = (*offsets_it)[1].get<uint64_t>();
    if (begin > end)
      return fail_tensor(label, name,
                         "data_offsets begin " + std::to_string(begin) +
                             " is after end " + std::to_string(end));
    if (end > buffer_size)
      return fail_tensor(label, name,
                         "data_offsets end " + std::to_string(end) +
                             " is past the data buffer (" + std::to_string(buffer_size) +
                             " bytes)");
    if (end - begin != byte_size)
      return fail_tensor(label, name,
                         "data_offsets span " + std::to_string(end - begin) +
                             " bytes but shape and dtype " + dtype_name(*dtype) +
                             " need " + std::to_string(byte_size));
    view.data = buffer + begin;
    view.byte_size = static_cast<size_t>(byte_size);
    auto [pos, inserted] = result.tensors.emplace(name, std::move(view));
    if (begin != end)
      ranges.push_back(range{begin, end, &pos->first});
  }

  std::sort(ranges.begin(), ranges.end(),
            [](const range& a, const range& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].begin < ranges[i - 1].end)
      return fail(label, "tensors '" + printable(*ranges[i - 1].name) + "' and '" +
                             printable(*ranges[i].name) + "' overlap in the data buffer");
  return result;
}

float f16_to_f32(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1f)  // infinity or NaN: keep the payload
    return bits_to_float(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {
    if (mantissa == 0)
      return bits_to_float(sign);
    // Subnormal: normalise into binary32's wider exponent range.
    uint32_t e = 127 - 15 + 1;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --e;
    }
    mantissa &= 0x3ffu;
    return bits_to_float(sign | (e << 23) | (mantissa << 13));
  }
  return bits_to_float(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

float bf16_to_f32(uint16_t bits) {
  return bits_to_float(static_cast<uint32_t>(bits) << 16);
}

std::vector<float> to_float32(const tensor_view& tensor) {
  std::vector<float> out;
  if (!is_float_dtype(tensor.dtype) ||
      tensor.byte_size != tensor.element_count * dtype_size(tensor.dtype))
    return out;
  out.resize(static_cast<size_t>(tensor.element_count));
  const uint8_t* p = tensor.data;
  switch (tensor.dtype) {
    case st_dtype::f32:
      for (size_t i = 0; i < out.size(); ++i)
        out[i] = bits_to_float(load_u32(p + 4 * i));
      break;
    case st_dtype::f16:
      for (size_t i = 0; i < out.size(); ++i)
        out[i] = f16_to_f32(load_u16(p + 2 * i));
      break;
    case st_dtype::bf16:
      for (size_t i = 0; i < out.size(); ++i)
        out[i] = bf16_to_f32(load_u16(p + 2 * i));
      break;
    default:
      break;
  }
  return out;
}

caf::expected<std::vector<uint8_t>> read_whole_file(const std::string& path,
                                                    uint64_t max_bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  auto status = fs::status(path, ec);
  if (ec || !fs::exists(status))
    return fail(path, "file not found");
  if (!fs::is_regular_file(status))
    return fail(path, "not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return fail(path, "cannot open file");
  in.seekg(0, std::ios::end);
  auto end = in.tellg();
  if (end < 0)
    return fail(path, "cannot determine the file size");
  auto file_size = static_cast<uint64_t>(end);
  if (file_size > max_bytes)
    return fail(path, "file is " + std::to_string(file_size) +
                          " bytes, over the limit of " + std::to_string(max_bytes));
  in.seekg(0, std::ios::beg);
  std::vector<uint8_t> bytes(static_cast<size_t>(file_size));
  if (file_size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()),
                                static_cast<std::streamsize>(file_size)))
    return fail(path, "read error");
  return bytes;
}

caf::expected<std::unique_ptr<safetensors_file>> safetensors_file::load(
    const std::string& path) {
  auto bytes = read_whole_file(path, max_model_file_bytes);
  if (!bytes)
    return std::move(bytes.error());
  std::unique_ptr<safetensors_file> file{new safetensors_file};
  file->bytes_ = std::move(*bytes);
  auto view = parse_safetensors(file->bytes_.data(), file->bytes_.size(), path);
  if (!view)
    return std::move(view.error());
  file->view_ = std::move(*view);
  return file;
}

}  // namespace pool::bert
