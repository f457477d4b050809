// Test helpers: serialise tensors into the safetensors format, write files
// and model directories into a temporary directory.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace st_test {

/// One tensor to serialise: `bytes` must already be in `dtype`'s little-endian
/// encoding.
struct tensor {
  std::string name;
  std::string dtype;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> bytes;
};

inline std::vector<uint8_t> f32_bytes(const std::vector<float>& values) {
  std::vector<uint8_t> out(values.size() * 4);
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &values[i], 4);
    for (int b = 0; b < 4; ++b)
      out[4 * i + b] = static_cast<uint8_t>(bits >> (8 * b));
  }
  return out;
}

inline std::vector<uint8_t> u16_bytes(const std::vector<uint16_t>& values) {
  std::vector<uint8_t> out(values.size() * 2);
  for (size_t i = 0; i < values.size(); ++i) {
    out[2 * i] = static_cast<uint8_t>(values[i] & 0xff);
    out[2 * i + 1] = static_cast<uint8_t>(values[i] >> 8);
  }
  return out;
}

/// 8-byte little-endian length, the header text verbatim, then `data`.
inline std::vector<uint8_t> raw_file(const std::string& header,
                                     const std::vector<uint8_t>& data,
                                     uint64_t declared_length) {
  std::vector<uint8_t> out(8);
  for (int b = 0; b < 8; ++b)
    out[b] = static_cast<uint8_t>(declared_length >> (8 * b));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

inline std::vector<uint8_t> raw_file(const std::string& header,
                                     const std::vector<uint8_t>& data) {
  return raw_file(header, data, header.size());
}

/// A well-formed file: tensors laid out back to back in the given order, the
/// header padded with spaces to a multiple of 8 bytes (as the reference
/// writer does) unless `pad` is false.
inline std::vector<uint8_t> serialize(const std::vector<tensor>& tensors,
                                      const nlohmann::json& metadata = nullptr,
                                      bool pad = true) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.is_null())
    header["__metadata__"] = metadata;
  std::vector<uint8_t> data;
  for (const auto& t : tensors) {
    uint64_t begin = data.size();
    data.insert(data.end(), t.bytes.begin(), t.bytes.end());
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {begin, static_cast<uint64_t>(data.size())}}};
  }
  std::string text = header.dump();
  while (pad && text.size() % 8 != 0)
    text += ' ';
  return raw_file(text, data);
}

inline void write_file(const std::filesystem::path& path,
                       const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out)
    throw std::runtime_error("cannot write " + path.string());
}

inline void write_file(const std::filesystem::path& path, const std::string& text) {
  write_file(path, std::vector<uint8_t>(text.begin(), text.end()));
}

/// A fresh directory under the system temp directory, removed on destruction.
class temp_dir {
 public:
  temp_dir() {
    auto pattern =
        (std::filesystem::temp_directory_path() / "embedpool-st-XXXXXX").string();
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) == nullptr)
      throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// Reference decoding of IEEE binary16 from its fields, written independently
/// of the library's bit manipulation: (-1)^s × 2^(e-15) × (1 + m/1024), or
/// 2^-14 × m/1024 for subnormals.
inline float reference_f16(uint16_t bits) {
  int sign = (bits >> 15) ? -1 : 1;
  int e = (bits >> 10) & 0x1f;
  int m = bits & 0x3ff;
  if (e == 0x1f)
    return m == 0 ? sign * INFINITY : NAN;
  if (e == 0)
    return static_cast<float>(sign * std::ldexp(m / 1024.0, -14));
  return static_cast<float>(sign * std::ldexp(1.0 + m / 1024.0, e - 15));
}

/// Reference decoding of bfloat16 from its fields (8-bit exponent, bias 127,
/// 7-bit mantissa).
inline float reference_bf16(uint16_t bits) {
  int sign = (bits >> 15) ? -1 : 1;
  int e = (bits >> 7) & 0xff;
  int m = bits & 0x7f;
  if (e == 0xff)
    return m == 0 ? sign * INFINITY : NAN;
  if (e == 0)
    return static_cast<float>(sign * std::ldexp(m / 128.0, -126));
  return static_cast<float>(sign * std::ldexp(1.0 + m / 128.0, e - 127));
}

}  // namespace st_test
