// The wire format of the protocol types: what one process serializes, another
// reads back unchanged, and a malformed payload is refused, not trusted.
#include <cstring>
#include <limits>
#include <vector>

#include <caf/all.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "pool/protocol.hpp"

namespace {

struct system_fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  system_fixture() {
    pool::add_message_types(cfg);
    sys = std::make_unique<caf::actor_system>(cfg);
  }
};

std::vector<char> serialize(caf::actor_system& sys, pool::matrix m) {
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  REQUIRE(!sink(m));
  return buf;
}

caf::error deserialize(caf::actor_system& sys, const std::vector<char>& buf,
                       pool::matrix& out) {
  caf::binary_deserializer source{sys, buf};
  return source(out);
}

}  // namespace

TEST_CASE_METHOD(system_fixture, "a matrix survives the wire bit for bit", "[protocol]") {
  pool::matrix m;
  m.rows = 3;
  m.dim = 5;
  for (int i = 0; i < 15; ++i)
    m.values.push_back(static_cast<float>(i) * 0.37f - 2.0f);
  m.values[4] = std::numeric_limits<float>::denorm_min();
  m.values[7] = -0.0f;
  m.values[11] = std::numeric_limits<float>::max();
  m.tokens = 42;
  m.compute_us = 1234567;
  auto buf = serialize(*sys, m);
  // rows + dim + sequence length + the floats in one block + tokens + compute_us
  CHECK(buf.size() < 8 + 9 + 15 * sizeof(float) + 16 + 1);
  pool::matrix back;
  REQUIRE(!deserialize(*sys, buf, back));
  CHECK(back.rows == 3);
  CHECK(back.dim == 5);
  CHECK(back.tokens == 42);
  CHECK(back.compute_us == 1234567);
  REQUIRE(back.values.size() == 15);
  CHECK(std::memcmp(back.values.data(), m.values.data(), 15 * sizeof(float)) == 0);
}

TEST_CASE_METHOD(system_fixture, "an empty matrix round-trips", "[protocol]") {
  pool::matrix m;
  m.dim = 384;
  auto buf = serialize(*sys, m);
  pool::matrix back;
  back.values = {1.0f};
  REQUIRE(!deserialize(*sys, buf, back));
  CHECK(back.rows == 0);
  CHECK(back.dim == 384);
  CHECK(back.values.empty());
}

TEST_CASE_METHOD(system_fixture,
                 "a matrix whose shape disagrees with its values is refused",
                 "[protocol]") {
  pool::matrix m;
  m.rows = 2;
  m.dim = 2;
  m.values = {1, 2, 3};  // should be 4 values
  auto buf = serialize(*sys, m);
  pool::matrix back;
  auto err = deserialize(*sys, buf, back);
  REQUIRE(err);
  CHECK(pool::pool_code(err) == pool::pool_errc::invalid_input);
}

TEST_CASE_METHOD(system_fixture, "a truncated matrix payload is an error, not a crash",
                 "[protocol]") {
  pool::matrix m;
  m.rows = 4;
  m.dim = 8;
  m.values.assign(32, 1.5f);
  auto buf = serialize(*sys, m);
  for (size_t cut : {buf.size() - 1, buf.size() / 2, size_t{9}, size_t{3}}) {
    std::vector<char> truncated(buf.begin(),
                                buf.begin() + static_cast<std::ptrdiff_t>(cut));
    pool::matrix back;
    CHECK(deserialize(*sys, truncated, back));
  }
}

TEST_CASE_METHOD(system_fixture,
                 "a matrix announcing a huge size is refused before allocating",
                 "[protocol]") {
  pool::matrix m;
  m.rows = 1u << 16;
  m.dim = 1u << 12;  // 2^28 floats: over the wire limit
  // Serialize only the header by hand: rows, dim, then a sequence length.
  std::vector<char> buf;
  caf::binary_serializer sink{*sys, buf};
  size_t count = size_t{1} << 28;
  REQUIRE(!sink(m.rows, m.dim));
  REQUIRE(!sink.begin_sequence(count));
  pool::matrix back;
  auto err = deserialize(*sys, buf, back);
  REQUIRE(err);
  CHECK(pool::pool_code(err) == pool::pool_errc::invalid_input);
  CHECK(back.values.capacity() < 1024);
}

TEST_CASE_METHOD(system_fixture, "the answers to a list of embeds round-trip",
                 "[protocol]") {
  pool::embed_answers a;
  a.rows.rows = 2;
  a.rows.dim = 3;
  a.rows.values = {1, 2, 3, 4, 5, 6};
  a.errors.resize(3);
  a.errors[1] = pool::make_error(pool::pool_errc::too_large, "texts[1] has 9 bytes");
  std::vector<char> buf;
  {
    caf::binary_serializer sink{*sys, buf};
    REQUIRE(!sink(a));
  }
  pool::embed_answers back;
  caf::binary_deserializer source{*sys, buf};
  REQUIRE(!source(back));
  CHECK(back.rows.rows == 2);
  CHECK(back.rows.values == a.rows.values);
  REQUIRE(back.errors.size() == 3);
  CHECK_FALSE(back.errors[0]);
  CHECK(pool::pool_code(back.errors[1]) == pool::pool_errc::too_large);
  CHECK(pool::error_message(back.errors[1]) == "texts[1] has 9 bytes");
  CHECK_FALSE(back.errors[2]);
}

TEST_CASE("the status JSON carries the scaling and memory fields", "[protocol]") {
  pool::pool_status st;
  st.model = "hash";
  st.workers_spawned = 3;
  st.workers_evicted = 1;
  st.min_workers = 1;
  st.max_workers = 4;
  st.memory_budget_bytes = 1024;
  st.memory_used_bytes = 512;
  st.memory_pressure = 0.5;
  st.models = {"hash", "other"};
  auto j = nlohmann::json::parse(pool::to_json(st));
  CHECK(j.at("workers_spawned") == 3);
  CHECK(j.at("workers_evicted") == 1);
  CHECK(j.at("min_workers") == 1);
  CHECK(j.at("max_workers") == 4);
  CHECK(j.at("memory").at("budget_bytes") == 1024);
  CHECK(j.at("memory").at("used_bytes") == 512);
  CHECK(j.at("memory").at("pressure") == 0.5);
  CHECK(j.at("models") == nlohmann::json::array({"hash", "other"}));
}
