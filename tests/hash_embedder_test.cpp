#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "pool/config.hpp"
#include "pool/embedder.hpp"
#include "pool/error.hpp"
#include "pool/make_embedder.hpp"

#include "hash_embedder.hpp"

namespace {

using pool::detail::hash_embedder;

std::vector<float> embed_all(const pool::embedder& e,
                             const std::vector<std::string>& texts) {
  std::vector<std::string_view> views(texts.begin(), texts.end());
  std::vector<float> out(texts.size() * e.dim(), std::nanf(""));
  e.embed(views, "", out.data());
  return out;
}

std::vector<float> embed_one(const pool::embedder& e, std::string_view text) {
  std::vector<float> out(e.dim(), std::nanf(""));
  e.embed({text}, "", out.data());
  return out;
}

double dot(const float* a, const float* b, size_t n) {
  double sum = 0;
  for (size_t i = 0; i < n; ++i)
    sum += static_cast<double>(a[i]) * b[i];
  return sum;
}

double cosine(const std::vector<float>& a, const std::vector<float>& b) {
  return dot(a.data(), b.data(), a.size()) /
         std::sqrt(dot(a.data(), a.data(), a.size()) * dot(b.data(), b.data(), b.size()));
}

bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x))
      return false;
  return true;
}

double norm(const float* v, size_t n) {
  return std::sqrt(dot(v, v, n));
}

std::string error_text(const caf::error& err) {
  return pool::describe(err);
}

}  // namespace

TEST_CASE("the hash embedder is named after its dimension and fills dim floats per text",
          "[hash]") {
  hash_embedder e{384, 4096};
  CHECK(e.name() == "hash-384");
  CHECK(e.dim() == 384);
  hash_embedder small{7, 16};
  CHECK(small.name() == "hash-7");
  auto out = embed_all(small, {"one", "two words", "three small words"});
  REQUIRE(out.size() == 21);
  CHECK(all_finite(out));  // every slot was written (the buffer started as NaN)
}

TEST_CASE("the same text gives bit-identical vectors across calls, instances and batches",
          "[hash]") {
  hash_embedder a{384, 4096};
  hash_embedder b{384, 4096};
  const std::vector<std::string> texts = {
      "The quick brown fox jumps over the lazy dog.",
      "Embedding workers answer within their deadline.",
      "Straße, café, naïve — ünïcödé",
      "短い日本語の文です。",
      "!!!",
  };
  auto batch = embed_all(a, texts);
  for (size_t i = 0; i < texts.size(); ++i) {
    INFO("text " << i << ": " << texts[i]);
    auto alone_a = embed_one(a, texts[i]);
    auto again_a = embed_one(a, texts[i]);
    auto alone_b = embed_one(b, texts[i]);
    std::vector<float> in_batch(batch.begin() + i * 384, batch.begin() + (i + 1) * 384);
    CHECK(alone_a == again_a);
    CHECK(alone_a == alone_b);
    CHECK(alone_a == in_batch);
  }
}

TEST_CASE("embed_counted gives embed's rows and count_tokens' counts, text by text",
          "[hash]") {
  // 2^19 buckets: 8 rows per internal call, so the 11 texts take two calls.
  hash_embedder e{8, 1u << 19};
  const std::vector<std::string> texts = {
      "The quick brown fox",
      "  leading and trailing spaces  ",
      "tabs\tand\nnew\r\nlines\vand\fform feeds",
      "",
      " \t\n ",
      "Straße, café, naïve — ünïcödé",
      "no\xC2\xA0"
      "break space counts as one word",
      "invalid \xFF\xFE bytes",
      "短い日本語の文です。 二つ",
      "x",
      "UPPER lower MiXeD 123",
  };
  std::vector<std::string_view> views(texts.begin(), texts.end());
  std::vector<float> counted(texts.size() * e.dim(), std::nanf(""));
  pool::embed_report report;
  report.tokens.assign(3, 99);  // resized, not appended to
  e.embed_counted(views, "", counted.data(), report);
  CHECK(counted == embed_all(e, texts));
  REQUIRE(report.tokens.size() == texts.size());
  REQUIRE(report.refused.size() == texts.size());
  const std::vector<uint32_t> expected = {4, 4, 7, 0, 0, 5, 6, 3, 2, 1, 4};
  for (size_t i = 0; i < texts.size(); ++i) {
    INFO("text " << i << ": " << texts[i]);
    CHECK(report.tokens[i] == e.count_tokens({views[i]}));
    CHECK(report.tokens[i] == expected[i]);
    CHECK(!report.refused[i]);
  }
}

TEST_CASE(
    "a dense batch (one sgemm) and its texts alone (a saxpy per bucket) give the "
    "same bits",
    "[hash]") {
  hash_embedder e{384, 4096};
  // Texts that share most of their words: the batch's bag is dense over the
  // few buckets it uses, so the batch takes the sgemm path.
  std::vector<std::string> texts;
  for (int i = 0; i < 64; ++i)
    texts.push_back("the quick brown fox jumps over the lazy dog " +
                    std::string(1, static_cast<char>('a' + i % 26)));
  auto batch = embed_all(e, texts);
  for (size_t i = 0; i < texts.size(); ++i) {
    INFO("text " << i << ": " << texts[i]);
    std::vector<float> in_batch(batch.begin() + i * 384, batch.begin() + (i + 1) * 384);
    CHECK(embed_one(e, texts[i]) == in_batch);
  }
}

TEST_CASE("embeddings are finite unit vectors even for odd input", "[hash]") {
  hash_embedder e{384, 4096};
  std::string big;
  while (big.size() < 64 * 1024)
    big += "lorem ipsum dolor sit amet, consectetur adipiscing elit 0123456789 ";
  big.resize(64 * 1024);
  std::string one_word(64 * 1024, 'a');
  const std::vector<std::string> texts = {
      "...!?;:--",                                     // punctuation only
      "\xF0\x9F\x98\x80\xF0\x9F\x8E\x89",              // emoji only
      "\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x92\xBB",  // emoji ZWJ sequence
      "東京は日本の首都です",                          // CJK without spaces
      "a",
      " ",
      std::string("nul\0inside", 10),
      "\xFF\xFE invalid \xC3 utf8 \xED\xA0\x80",  // invalid bytes and a surrogate
      "\xE2\x80\x8B",                             // only a zero-width space (ignorable)
      big,
      one_word,
  };
  auto out = embed_all(e, texts);
  REQUIRE(all_finite(out));
  for (size_t i = 0; i < texts.size(); ++i) {
    INFO("text " << i);
    CHECK(norm(out.data() + i * 384, 384) == Approx(1.0).margin(1e-5));
  }
  SECTION("different punctuation-only texts differ") {
    CHECK(embed_one(e, "!!!") != embed_one(e, "???"));
  }
}

TEST_CASE("tiny dimensions and bucket counts still give unit vectors", "[hash]") {
  for (uint32_t dim : {1u, 2u, 3u}) {
    hash_embedder e{dim, 16};
    auto out = embed_all(e, {"a b", "b a", "x", "hello world again", "?"});
    REQUIRE(all_finite(out));
    for (size_t i = 0; i < 5; ++i)
      CHECK(norm(out.data() + i * dim, dim) == Approx(1.0).margin(1e-5));
  }
}

TEST_CASE("case and Unicode variants of a text embed identically", "[hash]") {
  hash_embedder e{384, 4096};
  CHECK(embed_one(e, "Café au lait") == embed_one(e, "CAFÉ AU LAIT"));
  // Decomposed e + U+0301 composes to é.
  CHECK(embed_one(e, "cafe\xCC\x81") == embed_one(e, "café"));
  // Full case folding: ß folds to ss.
  CHECK(embed_one(e, "Straße") == embed_one(e, "STRASSE"));
  // Compatibility forms: fullwidth letters and the fi ligature.
  CHECK(embed_one(e, "\xEF\xBC\xA8\xEF\xBD\x85llo") == embed_one(e, "hello"));
  CHECK(embed_one(e, "\xEF\xAC\x81ne") == embed_one(e, "fine"));
  // Separators do not matter, only the word sequence.
  CHECK(embed_one(e, "hello,   world!") == embed_one(e, "hello world"));
  // But word order does (bigrams), and accents are kept.
  CHECK(embed_one(e, "world hello") != embed_one(e, "hello world"));
  CHECK(embed_one(e, "cafe") != embed_one(e, "café"));
}

TEST_CASE("ASCII texts embed as if normalised by utf8proc", "[hash]") {
  // A trailing em dash is a word separator, so it changes no feature, but it
  // sends the text through utf8proc instead of the ASCII fast path.
  hash_embedder e{64, 256};
  std::string all_ascii;
  for (int ch = 1; ch < 128; ++ch)
    all_ascii += static_cast<char>(ch);
  const std::vector<std::string> texts = {all_ascii,
                                          "Hello World",
                                          "MiXeD CaSe 123abc",
                                          "snake_case and kebab-case",
                                          "tabs\tand\nnewlines",
                                          "a$b^c`d|e~f",
                                          std::string("nul\0byte", 9)};
  for (const auto& text : texts) {
    INFO(text);
    CHECK(embed_one(e, text) == embed_one(e, text + "\xE2\x80\x94"));
  }
}

TEST_CASE("texts sharing words are clearly closer than unrelated texts", "[hash]") {
  struct triple {
    const char* anchor;
    const char* related;
    const char* unrelated;
  };
  const triple cases[] = {
      {"the cat sat on the mat", "a cat sat on a mat", "stock prices fell sharply today"},
      {"how do I reset my password", "reset password instructions",
       "best hiking trails near denver"},
      {"machine learning models need training data", "training data for learning models",
       "my grandmother bakes apple pie"},
      {"the weather is sunny and warm", "sunny warm weather expected",
       "database index rebuild failed"},
      {"install python on ubuntu", "how to install python packages on ubuntu",
       "recipe for chocolate chip cookies"},
      {"football world cup final", "the world cup final in football",
       "quarterly earnings report released"},
      {"electric cars battery range", "battery range of electric cars",
       "medieval castles of scotland"},
      {"coffee shop opening hours", "opening hours of the coffee shop",
       "quantum entanglement experiment"},
      {"learn to play guitar chords", "guitar chords for beginners to learn",
       "tax deadline for small businesses"},
      {"symptoms of the flu", "flu symptoms and treatment", "cheap flights to lisbon"},
      {"rust borrow checker errors", "fixing borrow checker errors in rust",
       "garden tomatoes need sunlight"},
      {"the river flooded the village", "village flooded after the river rose",
       "new smartphone camera review"},
      {"solar panels on the roof", "roof solar panels installation",
       "ancient greek philosophy lecture"},
      {"train delays this morning", "morning train delays reported",
       "knitting patterns for scarves"},
      {"vegetarian lasagna recipe", "easy vegetarian lasagna", "kernel panic on boot"},
      {"the museum opens at nine", "museum opens nine tomorrow",
       "interest rates rise again"},
      {"dog training tips for puppies", "puppies dog training",
       "volcano eruption in iceland"},
      {"café prices in paris", "paris café prices are high", "linux memory allocator"},
      {"Straße nach Berlin gesperrt", "die Straße nach Berlin", "Wetter morgen sonnig"},
      {"東京の天気は晴れ", "東京の天気", "銀行の金利が上がる"},
      {"gradient descent converges slowly", "slowly converging gradient descent",
       "wedding dress shopping"},
      {"the server returned error 503", "error 503 from the server",
       "birds migrate south in winter"},
      {"how tall is mount everest", "mount everest height", "best pizza in naples"},
      {"red wine pairs with steak", "steak and red wine", "javascript async await"},
      {"the library closes early on sunday", "sunday library hours close early",
       "marathon training schedule"},
      {"upgrade postgres to version 16", "postgres version 16 upgrade guide",
       "children's birthday party ideas"},
      {"ocean waves and tides", "tides and ocean waves explained",
       "spreadsheet formulas"},
      {"bicycle tire puncture repair", "repair a bicycle tire puncture",
       "stock options vesting"},
      {"the violin concerto in d major", "violin concerto d major recording",
       "airport security lines"},
      {"budget travel in vietnam", "vietnam travel on a budget",
       "protein folding simulation"},
      {"heart rate during exercise", "exercise raises heart rate",
       "cloud storage pricing"},
      {"photosynthesis in green plants", "green plants and photosynthesis",
       "used car loan rates"},
  };
  hash_embedder e{384, 4096};
  size_t n = 0;
  for (const auto& c : cases) {
    auto anchor = embed_one(e, c.anchor);
    double related = cosine(anchor, embed_one(e, c.related));
    double unrelated = cosine(anchor, embed_one(e, c.unrelated));
    INFO(c.anchor << " | related " << related << " | unrelated " << unrelated);
    CHECK(related >= unrelated + 0.1);
    ++n;
  }
  CHECK(n >= 30);
}

TEST_CASE("the embedding is the normalised product of the bag and the projection",
          "[hash]") {
  // Independent reference for the sgemm call: a naive double-precision product.
  hash_embedder e{48, 64};
  const std::vector<std::string> texts = {"first text here", "second, longer text here!",
                                          "x"};
  auto out = embed_all(e, texts);
  const auto& proj = e.projection();
  REQUIRE(proj.size() == 48u * 64u);
  for (float p : proj)
    REQUIRE((p == 1.0f || p == -1.0f));
  for (size_t t = 0; t < texts.size(); ++t) {
    std::vector<float> row(64);
    e.bag_row(texts[t], row.data());
    double l1 = 0;
    for (float x : row) {
      REQUIRE(x == std::round(x));  // integers, so float sums are exact
      l1 += std::fabs(x);
    }
    CHECK(l1 < 16777216.0);
    CHECK(l1 >= 4194304.0);
    std::vector<double> ref(48, 0.0);
    for (size_t k = 0; k < 64; ++k)
      for (size_t j = 0; j < 48; ++j)
        ref[j] += static_cast<double>(row[k]) * proj[k * 48 + j];
    double ref_norm = 0;
    for (double v : ref)
      ref_norm += v * v;
    ref_norm = std::sqrt(ref_norm);
    for (size_t j = 0; j < 48; ++j)
      CHECK(out[t * 48 + j] == static_cast<float>(ref[j] / ref_norm));
  }
}

TEST_CASE("concurrent calls give the same vectors as serial calls", "[hash]") {
  hash_embedder e{128, 1024};
  std::vector<std::string> texts;
  for (int i = 0; i < 40; ++i)
    texts.push_back("text number " + std::to_string(i) + " with some shared words");
  auto serial = embed_all(e, texts);
  std::vector<float> r1, r2;
  std::thread t1{[&] { r1 = embed_all(e, texts); }};
  std::thread t2{[&] { r2 = embed_all(e, texts); }};
  t1.join();
  t2.join();
  CHECK(r1 == serial);
  CHECK(r2 == serial);
}

TEST_CASE("golden values pin the embedding across machines and compilers", "[hash]") {
  // These expected values were produced by this implementation, not by an
  // independent reference: they guard determinism (same vectors on every
  // machine, compiler and BLAS kernel), not correctness. If the algorithm is
  // changed on purpose, regenerate them and say so in the commit message.
  struct golden {
    const char* text;
    float values[8];  // the first 8 components, rounded to 1e-5
    double checksum;  // sum of v[j] * (j % 7 + 1) over all components
  };
  const golden cases[] = {
      {"The quick brown fox jumps over the lazy dog.",
       {0.04560, 0.00444, 0.04611, -0.04611, -0.03304, -0.02589, 0.01997, -0.00444},
       -1.81212},
      {"Straße, café — 東京",
       {0.01862, 0.11791, 0.03103, 0.01862, 0.13032, 0.08067, 0.00621, 0.01862},
       6.81991},
      {"!!!",
       {-0.05103, -0.05103, -0.05103, -0.05103, 0.05103, 0.05103, 0.05103, 0.05103},
       3.41908},
  };
  hash_embedder e{384, 4096};
  for (const auto& g : cases) {
    auto v = embed_one(e, g.text);
    for (size_t j = 0; j < 8; ++j) {
      INFO(g.text << " [" << j << "] = " << v[j]);
      CHECK(std::fabs(v[j] - g.values[j]) <= 1e-5);
    }
    double checksum = 0;
    for (size_t j = 0; j < v.size(); ++j)
      checksum += static_cast<double>(v[j]) * static_cast<double>(j % 7 + 1);
    INFO(g.text << " checksum = " << checksum);
    CHECK(std::fabs(checksum - g.checksum) <= 1e-5);
  }
}

TEST_CASE("make_embedder validates the model section and names the key", "[hash]") {
  pool::model_config cfg;
  SECTION("defaults give hash-384") {
    auto e = pool::make_embedder(cfg);
    REQUIRE(e);
    CHECK((*e)->name() == "hash-384");
    CHECK((*e)->dim() == 384);
  }
  SECTION("dim out of range") {
    for (uint32_t dim : {0u, 4097u}) {
      cfg.dim = dim;
      auto e = pool::make_embedder(cfg);
      REQUIRE_FALSE(e);
      CHECK(pool::pool_code(e.error()) == pool::pool_errc::invalid_input);
      CHECK_THAT(error_text(e.error()), Catch::Contains("model.dim"));
    }
  }
  SECTION("buckets out of range") {
    for (uint32_t buckets : {0u, 15u, (1u << 20) + 1}) {
      cfg.hash_buckets = buckets;
      auto e = pool::make_embedder(cfg);
      REQUIRE_FALSE(e);
      CHECK_THAT(error_text(e.error()), Catch::Contains("model.hash-buckets"));
    }
  }
  SECTION("extreme values at both ends are accepted") {
    cfg.dim = 1;
    cfg.hash_buckets = 1u << 20;
    CHECK(pool::make_embedder(cfg));
    cfg.dim = 4096;
    cfg.hash_buckets = 16;
    CHECK(pool::make_embedder(cfg));
  }
  SECTION("an oversized projection is refused") {
    cfg.dim = 4096;
    cfg.hash_buckets = 1u << 20;
    auto e = pool::make_embedder(cfg);
    REQUIRE_FALSE(e);
    CHECK_THAT(error_text(e.error()), Catch::Contains("model.hash-buckets"));
  }
  SECTION("the constructor refuses what validate refuses") {
    CHECK_THROWS_AS((hash_embedder{0, 4096}), std::invalid_argument);
    CHECK_THROWS_AS((hash_embedder{384, 8}), std::invalid_argument);
  }
  SECTION("bert without a model directory names model.path") {
    cfg.kind = "bert";
    cfg.path.clear();
    auto e = pool::make_embedder(cfg);
    REQUIRE_FALSE(e);
    CHECK_THAT(error_text(e.error()), Catch::Contains("model.path"));
  }
  SECTION("an unknown kind names the key and the value") {
    cfg.kind = "word2vec";
    auto e = pool::make_embedder(cfg);
    REQUIRE_FALSE(e);
    CHECK_THAT(error_text(e.error()),
               Catch::Contains("model.kind") && Catch::Contains("word2vec"));
  }
}
