// Tests of the safetensors parser: round trips, exact F16/BF16 conversion and
// refusal of every kind of malformed or lying file.
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "bert/safetensors.hpp"
#include "pool/error.hpp"
#include "safetensors_writer.hpp"

using namespace pool::bert;
using st_test::f32_bytes;
using st_test::raw_file;
using st_test::serialize;
using st_test::u16_bytes;

namespace {

/// Parses a copy of `bytes` in a heap block of exactly that size, so that
/// AddressSanitizer catches any read past its end.
caf::expected<safetensors_view> parse_exact(const std::vector<uint8_t>& bytes,
                                            std::unique_ptr<uint8_t[]>& holder) {
  holder.reset(new uint8_t[bytes.size() == 0 ? 1 : bytes.size()]);
  if (!bytes.empty())
    std::memcpy(holder.get(), bytes.data(), bytes.size());
  return parse_safetensors(holder.get(), bytes.size(), "weights.safetensors");
}

/// The error message of a parse expected to fail.
std::string parse_error(const std::vector<uint8_t>& bytes) {
  std::unique_ptr<uint8_t[]> holder;
  auto result = parse_exact(bytes, holder);
  if (result)
    return "<parsed successfully>";
  CHECK(pool::pool_code(result.error()) == pool::pool_errc::invalid_input);
  return pool::error_message(result.error());
}

std::vector<uint8_t> zeros(size_t n) {
  return std::vector<uint8_t>(n, 0);
}

}  // namespace

TEST_CASE("a well-formed file round-trips names, dtypes, shapes and values",
          "[safetensors]") {
  auto file = serialize({{"a", "F32", {2, 3}, f32_bytes({1, 2, 3, 4, 5, -6.5f})},
                         {"b", "F16", {2}, u16_bytes({0x3c00, 0xc000})},
                         {"c", "BF16", {1, 1, 1}, u16_bytes({0x3f80})},
                         {"ids", "I64", {1, 2}, zeros(16)},
                         {"scalar", "F32", {}, f32_bytes({7})},
                         {"empty", "F32", {0, 4}, {}}},
                        {{"format", "pt"}});
  std::unique_ptr<uint8_t[]> holder;
  auto view = parse_exact(file, holder);
  REQUIRE(view);
  REQUIRE(view->tensors.size() == 6);
  CHECK(view->metadata.at("format") == "pt");
  const auto& a = view->tensors.at("a");
  CHECK(a.dtype == st_dtype::f32);
  CHECK(a.shape == std::vector<uint64_t>{2, 3});
  CHECK(a.element_count == 6);
  CHECK(to_float32(a) == std::vector<float>{1, 2, 3, 4, 5, -6.5f});
  CHECK(to_float32(view->tensors.at("b")) == std::vector<float>{1.0f, -2.0f});
  CHECK(to_float32(view->tensors.at("c")) == std::vector<float>{1.0f});
  CHECK(view->tensors.at("ids").dtype == st_dtype::i64);
  CHECK(to_float32(view->tensors.at("ids")).empty());
  CHECK(view->tensors.at("scalar").element_count == 1);
  CHECK(to_float32(view->tensors.at("scalar")) == std::vector<float>{7});
  CHECK(view->tensors.at("empty").element_count == 0);
}

TEST_CASE("tensor data at unaligned offsets converts correctly", "[safetensors]") {
  // Without header padding and after a 2-byte tensor, the F32 data starts at
  // an odd address relative to any alignment the header gives.
  auto file = serialize(
      {{"h", "F16", {1}, u16_bytes({0x4000})}, {"f", "F32", {2}, f32_bytes({0.25f, -3})}},
      nullptr, /*pad=*/false);
  std::unique_ptr<uint8_t[]> holder;
  auto view = parse_exact(file, holder);
  REQUIRE(view);
  CHECK(to_float32(view->tensors.at("h")) == std::vector<float>{2.0f});
  CHECK(to_float32(view->tensors.at("f")) == std::vector<float>{0.25f, -3.0f});
}

TEST_CASE("F16 converts exactly for all 65536 bit patterns", "[safetensors][f16]") {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    float got = f16_to_f32(static_cast<uint16_t>(bits));
    float want = st_test::reference_f16(static_cast<uint16_t>(bits));
    if (std::isnan(want)) {
      REQUIRE(std::isnan(got));
    } else {
      INFO("bits 0x" << std::hex << bits);
      REQUIRE(got == want);
      REQUIRE(std::signbit(got) == std::signbit(want));
    }
  }
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(f16_to_f32(0x7bff) == 65504.0f);               // largest finite
  CHECK(std::isinf(f16_to_f32(0xfc00)));
  CHECK(f16_to_f32(0xfc00) < 0);
}

TEST_CASE("BF16 converts exactly for all 65536 bit patterns", "[safetensors][bf16]") {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    float got = bf16_to_f32(static_cast<uint16_t>(bits));
    float want = st_test::reference_bf16(static_cast<uint16_t>(bits));
    if (std::isnan(want)) {
      REQUIRE(std::isnan(got));
    } else {
      INFO("bits 0x" << std::hex << bits);
      REQUIRE(got == want);
      REQUIRE(std::signbit(got) == std::signbit(want));
    }
  }
}

TEST_CASE("every proper prefix of a valid file is refused without reading past it",
          "[safetensors][truncated]") {
  auto file = serialize({{"w", "F32", {2, 2}, f32_bytes({1, 2, 3, 4})},
                         {"b", "BF16", {3}, u16_bytes({1, 2, 3})}});
  std::unique_ptr<uint8_t[]> holder;
  REQUIRE(parse_exact(file, holder));
  for (size_t n = 0; n < file.size(); ++n) {
    std::vector<uint8_t> prefix(file.begin(), file.begin() + static_cast<ptrdiff_t>(n));
    auto message = parse_error(prefix);
    INFO("prefix of " << n << " bytes: " << message);
    CHECK(message.rfind("weights.safetensors: ", 0) == 0);
  }
}

TEST_CASE("a header length beyond the file or the 100 MB limit is refused",
          "[safetensors][header]") {
  std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  CHECK_THAT(parse_error(raw_file(header, f32_bytes({1}), header.size() + 5)),
             Catch::Contains("exceeds the file size"));
  CHECK_THAT(parse_error(raw_file(header, f32_bytes({1}), ~uint64_t{0})),
             Catch::Contains("exceeds the file size"));
  // A file big enough to hold a header over the limit.
  std::vector<uint8_t> big(8 + max_header_bytes + 1, ' ');
  uint64_t length = max_header_bytes + 1;
  for (int b = 0; b < 8; ++b)
    big[b] = static_cast<uint8_t>(length >> (8 * b));
  CHECK_THAT(parse_error(big), Catch::Contains("exceeds the limit"));
}

TEST_CASE("a header that is not a JSON object is refused", "[safetensors][header]") {
  CHECK_THAT(parse_error(raw_file("{\"a\": ", {})), Catch::Contains("not valid JSON"));
  CHECK_THAT(parse_error(raw_file("", {})), Catch::Contains("not valid JSON"));
  CHECK_THAT(parse_error(raw_file("[1, 2]", {})), Catch::Contains("not an object"));
  CHECK_THAT(parse_error(raw_file(R"({"a": 5})", {})), Catch::Contains("'a'"));
  CHECK_THAT(parse_error(raw_file(R"({"__metadata__": [1]})", {})),
             Catch::Contains("__metadata__"));
  CHECK_THAT(
      parse_error(raw_file(R"({"a":{"dtype":"F32","shape":[1]}})", f32_bytes({1}))),
      Catch::Contains("data_offsets"));
}

TEST_CASE("a tensor listed twice in the header is refused", "[safetensors][header]") {
  std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                       R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  CHECK_THAT(parse_error(raw_file(header, f32_bytes({1, 2}))),
             Catch::Contains("'a' twice"));
}

TEST_CASE("an unknown dtype is refused naming the tensor and the dtype",
          "[safetensors][dtype]") {
  std::string header = R"({"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})";
  auto message = parse_error(raw_file(header, zeros(16)));
  CHECK_THAT(message, Catch::Contains("'w'") && Catch::Contains("F128"));
  CHECK_THAT(parse_error(raw_file(R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})",
                                  zeros(4))),
             Catch::Contains("dtype"));
}

TEST_CASE("shapes must be non-negative integers whose byte size does not overflow",
          "[safetensors][shape]") {
  auto with_shape = [](const std::string& shape, const std::string& offsets) {
    return parse_error(raw_file(R"({"w":{"dtype":"F32","shape":)" + shape +
                                    R"(,"data_offsets":)" + offsets + "}}",
                                zeros(16)));
  };
  CHECK_THAT(with_shape("[-1]", "[0,4]"), Catch::Contains("non-negative integer"));
  CHECK_THAT(with_shape("[1.5]", "[0,4]"), Catch::Contains("non-negative integer"));
  CHECK_THAT(with_shape("[\"2\"]", "[0,8]"), Catch::Contains("non-negative integer"));
  CHECK_THAT(with_shape("2", "[0,8]"), Catch::Contains("'shape'"));
  CHECK_THAT(with_shape("[4294967296, 4294967296]", "[0,0]"),
             Catch::Contains("overflow"));
  CHECK_THAT(with_shape("[4611686018427387904]", "[0,0]"), Catch::Contains("overflow"));
  CHECK_THAT(with_shape("[18446744073709551616]", "[0,0]"),
             Catch::Contains("non-negative integer"));
}

TEST_CASE("lying data_offsets are refused", "[safetensors][offsets]") {
  auto one = [](const std::string& offsets, size_t data_bytes) {
    return parse_error(
        raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":)" + offsets + "}}",
                 zeros(data_bytes)));
  };
  SECTION("past the end of the data buffer") {
    CHECK_THAT(one("[0,8]", 7),
               Catch::Contains("'w'") && Catch::Contains("past the data"));
    CHECK_THAT(one("[18446744073709551608,18446744073709551615]", 8),
               Catch::Contains("past the data") || Catch::Contains("need 8"));
  }
  SECTION("begin after end") {
    CHECK_THAT(one("[8,0]", 8), Catch::Contains("after end"));
  }
  SECTION("a span that does not match shape and dtype") {
    CHECK_THAT(one("[0,12]", 12), Catch::Contains("'w'") && Catch::Contains("need 8"));
    CHECK_THAT(one("[0,4]", 8), Catch::Contains("need 8"));
  }
  SECTION("not a pair of non-negative integers") {
    CHECK_THAT(one("[0]", 8), Catch::Contains("data_offsets"));
    CHECK_THAT(one("[0,8,8]", 8), Catch::Contains("data_offsets"));
    CHECK_THAT(one("[-8,0]", 8), Catch::Contains("data_offsets"));
    CHECK_THAT(one("{\"a\":1}", 8), Catch::Contains("data_offsets"));
  }
  SECTION("overlapping tensors") {
    auto message =
        parse_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                             zeros(12)));
    CHECK_THAT(message, Catch::Contains("overlap") && Catch::Contains("'a'") &&
                            Catch::Contains("'b'"));
    // The same range twice under two names.
    CHECK_THAT(
        parse_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
                             zeros(8))),
        Catch::Contains("overlap"));
  }
}

TEST_CASE("a file shorter than the length field is refused", "[safetensors][truncated]") {
  CHECK_THAT(parse_error({}), Catch::Contains("too short"));
  CHECK_THAT(parse_error(zeros(7)), Catch::Contains("too short"));
  CHECK(parse_safetensors(nullptr, 0, "x").error());
}

TEST_CASE("loading a file from disk names the path on every failure",
          "[safetensors][file]") {
  st_test::temp_dir dir;
  auto good = dir.path() / "good.safetensors";
  st_test::write_file(good, serialize({{"w", "F32", {1}, f32_bytes({3})}}));
  auto loaded = safetensors_file::load(good.string());
  REQUIRE(loaded);
  CHECK(to_float32((*loaded)->view().tensors.at("w")) == std::vector<float>{3});

  auto missing = (dir.path() / "missing.safetensors").string();
  auto not_found = safetensors_file::load(missing);
  REQUIRE_FALSE(not_found);
  CHECK_THAT(pool::error_message(not_found.error()),
             Catch::StartsWith(missing) && Catch::Contains("not found"));

  auto not_regular = safetensors_file::load(dir.path().string());
  REQUIRE_FALSE(not_regular);
  CHECK_THAT(pool::error_message(not_regular.error()),
             Catch::Contains("not a regular file"));

  auto bad = dir.path() / "bad.safetensors";
  st_test::write_file(bad, std::string("\x10\0\0\0\0\0\0\0{}", 10));
  auto truncated = safetensors_file::load(bad.string());
  REQUIRE_FALSE(truncated);
  CHECK_THAT(pool::error_message(truncated.error()),
             Catch::StartsWith(bad.string()) && Catch::Contains("exceeds the file size"));
}
