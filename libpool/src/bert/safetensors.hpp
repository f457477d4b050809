// safetensors parsing: validates a whole file (header and offsets) before any
// tensor data is touched, and converts F32/F16/BF16 tensors to float32.
//
// Format: 8-byte little-endian header length N, N bytes of JSON
// {"__metadata__": {...}?, name: {"dtype", "shape", "data_offsets"}, ...}, then
// the data buffer; data_offsets are relative to the start of that buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <caf/expected.hpp>

namespace pool::bert {

/// Every dtype the safetensors format defines (byte-sized or larger).
enum class st_dtype {
  boolean,
  u8,
  i8,
  f8_e5m2,
  f8_e4m3,
  i16,
  u16,
  f16,
  bf16,
  i32,
  u32,
  f32,
  f64,
  i64,
  u64
};

/// Size of one element in bytes.
size_t dtype_size(st_dtype type);

/// The dtype's name as the format spells it ("F32", "BF16", ...).
const char* dtype_name(st_dtype type);

/// True for the dtypes `to_float32` converts: F32, F16, BF16.
bool is_float_dtype(st_dtype type);

/// One validated tensor. `data` borrows the buffer given to `parse_safetensors`.
struct tensor_view {
  st_dtype dtype = st_dtype::f32;
  std::vector<uint64_t> shape;
  uint64_t element_count = 0;
  const uint8_t* data = nullptr;  // byte_size bytes, not aligned
  size_t byte_size = 0;
};

/// A validated safetensors file: every view lies inside the buffer, has
/// exactly element_count × dtype_size bytes, and no two views overlap.
/// Borrows the parsed buffer, which must outlive this object.
struct safetensors_view {
  std::map<std::string, tensor_view> tensors;
  std::map<std::string, std::string> metadata;  // string values of __metadata__
};

/// Upper bound on the JSON header (100 MB).
constexpr uint64_t max_header_bytes = 100u * 1000u * 1000u;

/// Parses and validates `size` bytes at `data` (may be null when size is 0).
/// Never reads outside [data, data + size). Errors are `invalid_input` with a
/// message "<label>: <what>", naming the tensor where one is at fault.
caf::expected<safetensors_view> parse_safetensors(const uint8_t* data, size_t size,
                                                  const std::string& label);

/// Exact IEEE binary16 -> binary32 (subnormals, infinities, NaN payloads).
float f16_to_f32(uint16_t bits);

/// Exact bfloat16 -> binary32.
float bf16_to_f32(uint16_t bits);

/// Converts a tensor of an `is_float_dtype` dtype to row-major float32;
/// returns an empty vector for other dtypes.
std::vector<float> to_float32(const tensor_view& tensor);

/// Upper bound on a model file read into memory (4 GiB).
constexpr uint64_t max_model_file_bytes = uint64_t{4} << 30;

/// A safetensors file read into memory with its validated view. Not copyable
/// or movable (the view points into `bytes()`); hold it by unique_ptr.
class safetensors_file {
 public:
  safetensors_file(const safetensors_file&) = delete;
  safetensors_file& operator=(const safetensors_file&) = delete;

  /// Reads `path` with one read and validates it. Errors name `path`.
  static caf::expected<std::unique_ptr<safetensors_file>> load(const std::string& path);

  const safetensors_view& view() const { return view_; }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  safetensors_file() = default;
  std::vector<uint8_t> bytes_;
  safetensors_view view_;
};

/// Reads a whole regular file of at most `max_bytes` bytes. Errors
/// (`invalid_input`) name `path`: missing, not a regular file, too large,
/// unreadable.
caf::expected<std::vector<uint8_t>> read_whole_file(const std::string& path,
                                                    uint64_t max_bytes);

}  // namespace pool::bert
