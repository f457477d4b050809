// The BERT encoder against PyTorch reference outputs (tests/data/bert, made by
// tools/fixtures/gen_bert_fixtures.py with an independent torch model).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bert/bert_embedder.hpp"
#include "bert/encoder.hpp"
#include "bert/kernels.hpp"
#include "bert/linear.hpp"
#include "bert/model_loader.hpp"
#include "pool/config.hpp"
#include "pool/embedder.hpp"
#include "pool/error.hpp"
#include "pool/make_embedder.hpp"

namespace {

using pool::bert::bert_model;
using pool::bert::encoder;

const char* const fixture_names[] = {"mini-mean", "mini-mean-norm-prefixed",
                                     "small-cls-prefixed", "small-cls-norm-f16"};

std::string fixture_dir(const std::string& name) {
  return std::string(EMBEDPOOL_SOURCE_DIR) + "/tests/data/bert/" + name;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

std::shared_ptr<const bert_model> load_fixture(const std::string& name,
                                               size_t panel_width = 0) {
  auto model = pool::bert::load_bert_model(fixture_dir(name), panel_width);
  REQUIRE(model);
  return std::make_shared<const bert_model>(std::move(*model));
}

struct comparison {
  double cosine = 0.0;
  double max_abs_diff = 0.0;
};

comparison compare(const float* got, const std::vector<float>& want) {
  double dot = 0.0, ng = 0.0, nw = 0.0, worst = 0.0;
  for (size_t k = 0; k < want.size(); ++k) {
    dot += static_cast<double>(got[k]) * want[k];
    ng += static_cast<double>(got[k]) * got[k];
    nw += static_cast<double>(want[k]) * want[k];
    worst = std::max(worst, std::abs(static_cast<double>(got[k]) - want[k]));
  }
  return {dot / std::sqrt(ng * nw), worst};
}

// Largest |a - b| over all components, each row's difference divided by the
// L2 norm of b's row (so 1e-6 means "equal to 1e-6 of the embedding's length":
// float32 sums in a different order, amplified by the LayerNorms, differ by a
// few ulps of the largest components).
double max_scaled_diff(const std::vector<float>& a, const std::vector<float>& b,
                       size_t dim) {
  REQUIRE(a.size() == b.size());
  double worst = 0.0;
  for (size_t r = 0; r * dim < b.size(); ++r) {
    double norm = 0.0, diff = 0.0;
    for (size_t k = r * dim; k < (r + 1) * dim; ++k) {
      norm += static_cast<double>(b[k]) * b[k];
      diff = std::max(diff, std::abs(static_cast<double>(a[k]) - b[k]));
    }
    worst = std::max(worst, diff / std::sqrt(norm));
  }
  return worst;
}

}  // namespace

TEST_CASE("the encoder matches PyTorch's BertModel and pooling on every fixture",
          "[bert][encoder]") {
  // One panel (OpenBLAS's own blocking), the small-matrix panels, and panels
  // that leave a narrower last one.
  const size_t panel = GENERATE(size_t{0}, pool::bert::small_kernel_panel, size_t{24});
  INFO("panel width " << panel);
  for (const char* name : fixture_names) {
    SECTION(name) {
      auto model = load_fixture(name, panel);
      const encoder enc(model);
      const auto ref = read_json(fixture_dir(name) + "/reference.json");
      const auto inputs = ref.at("inputs").get<std::vector<std::vector<int32_t>>>();
      const auto want = ref.at("embeddings").get<std::vector<std::vector<float>>>();
      REQUIRE(inputs.size() == want.size());
      REQUIRE(inputs.size() >= 10);
      // The fixture covers lengths 1 and 2 and the model's max_seq_length.
      auto has_len = [&](size_t n) {
        return std::any_of(inputs.begin(), inputs.end(),
                           [n](const auto& s) { return s.size() == n; });
      };
      CHECK(has_len(1));
      CHECK(has_len(2));
      CHECK(has_len(model->config.max_seq_length));

      std::vector<float> out(inputs.size() * enc.dim(),
                             std::numeric_limits<float>::quiet_NaN());
      enc.encode(inputs, out.data());
      for (size_t r = 0; r < inputs.size(); ++r) {
        INFO("input " << r << " of length " << inputs[r].size());
        REQUIRE(want[r].size() == enc.dim());
        const auto cmp = compare(out.data() + r * enc.dim(), want[r]);
        CHECK(cmp.cosine >= 0.99999);
        CHECK(cmp.max_abs_diff <= 1e-4);
      }
    }
  }
}

TEST_CASE("a batch encodes every sequence as if it were alone", "[bert][encoder]") {
  for (const char* name : fixture_names) {
    SECTION(name) {
      const encoder enc(load_fixture(name));
      const auto inputs = read_json(fixture_dir(name) + "/reference.json")
                              .at("inputs")
                              .get<std::vector<std::vector<int32_t>>>();
      std::vector<float> batched(inputs.size() * enc.dim());
      enc.encode(inputs, batched.data());
      std::vector<float> single(inputs.size() * enc.dim());
      for (size_t r = 0; r < inputs.size(); ++r) {
        enc.encode({inputs[r]}, single.data() + r * enc.dim());
      }
      CHECK(max_scaled_diff(batched, single, enc.dim()) <= 1e-6);
    }
  }
}

TEST_CASE("a batch cut into token-budget chunks gives the same rows", "[bert][encoder]") {
  auto model = load_fixture("mini-mean-norm-prefixed");
  const auto inputs =
      read_json(fixture_dir("mini-mean-norm-prefixed") + "/reference.json")
          .at("inputs")
          .get<std::vector<std::vector<int32_t>>>();
  const encoder whole(model);
  const encoder chunked(model, 10);  // below the longest sequence: some run alone
  std::vector<float> a(inputs.size() * whole.dim());
  std::vector<float> b(inputs.size() * whole.dim());
  whole.encode(inputs, a.data());
  chunked.encode(inputs, b.data());
  CHECK(max_scaled_diff(a, b, whole.dim()) <= 1e-6);
}

TEST_CASE("bad token sequences are refused before anything is written",
          "[bert][encoder]") {
  auto model = load_fixture("mini-mean");
  const encoder enc(model);
  const auto vocab = model->config.vocab_size;
  std::vector<float> out(2 * enc.dim(), 7.0f);
  auto untouched = [&] {
    return std::all_of(out.begin(), out.end(), [](float v) { return v == 7.0f; });
  };
  SECTION("an empty sequence") {
    CHECK_THROWS_AS(enc.encode({{2, 3}, {}}, out.data()), std::invalid_argument);
  }
  SECTION("a token id past the vocabulary") {
    CHECK_THROWS_AS(enc.encode({{2, 3}, {2, vocab, 3}}, out.data()),
                    std::invalid_argument);
  }
  SECTION("a negative token id") {
    CHECK_THROWS_AS(enc.encode({{2, -1, 3}, {2, 3}}, out.data()), std::invalid_argument);
  }
  SECTION("a sequence longer than the position table") {
    std::vector<int32_t> longer(enc.max_tokens() + 1, 5);
    CHECK_THROWS_AS(enc.encode({{2, 3}, longer}, out.data()), std::invalid_argument);
  }
  CHECK(untouched());
  SECTION("an empty batch writes nothing") {
    enc.encode({}, out.data());
    CHECK(untouched());
  }
}

TEST_CASE("an encoder refuses weights that do not fit the config", "[bert][encoder]") {
  const auto good = load_fixture("mini-mean");
  SECTION("a truncated fused QKV matrix") {
    auto bad = std::make_shared<bert_model>(*good);
    bad->weights.layers[1].qkv_w.values.pop_back();
    CHECK_THROWS_WITH(encoder(bad), Catch::Contains("layer.1.qkv.weight"));
  }
  SECTION("fewer layers than the config") {
    auto bad = std::make_shared<bert_model>(*good);
    bad->weights.layers.pop_back();
    CHECK_THROWS_AS(encoder(bad), std::invalid_argument);
  }
  SECTION("heads that do not divide the hidden size") {
    auto bad = std::make_shared<bert_model>(*good);
    bad->config.num_heads = 5;
    CHECK_THROWS_WITH(encoder(bad), Catch::Contains("num_attention_heads"));
  }
  SECTION("no model at all") {
    CHECK_THROWS_AS(encoder(nullptr), std::invalid_argument);
  }
}

TEST_CASE("packed Linear weights give x * W^T in every panel layout", "[bert][linear]") {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  // (out, in): panels with a narrower last one; a depth that the small
  // products must cut into chunks. Rows: partial row blocks, and more rows
  // than one pass of the panels takes.
  for (const auto& [out, in] :
       {std::pair<size_t, size_t>{200, 300}, {40, 1536}, {3, 5}}) {
    std::vector<float> torch_weight(out * in);
    for (auto& v : torch_weight) {
      v = uniform(rng);
    }
    for (size_t panel : {size_t{0}, size_t{1}, size_t{64}, out, out + 100}) {
      const auto w = pool::bert::pack_linear(torch_weight.data(), out, in, panel);
      INFO("out " << out << " in " << in << " panel " << panel);
      CHECK(w.panel == (panel == 0 || panel > out ? out : panel));
      CHECK(pool::bert::unpack_linear(w) == torch_weight);
      for (size_t rows : {size_t{0}, size_t{1}, size_t{16}, size_t{130}, size_t{600}}) {
        for (float beta : {0.0f, 1.0f}) {
          INFO("rows " << rows << " beta " << beta);
          const size_t ldx = in + 3, ldy = out + 5;
          std::vector<float> x(rows * ldx), y(rows * ldy);
          for (auto& v : x) {
            v = uniform(rng);
          }
          for (auto& v : y) {
            v = uniform(rng);
          }
          std::vector<float> got = y;
          pool::bert::apply_linear(w, x.data(), rows, ldx, beta, got.data(), ldy);
          double worst = 0.0;
          for (size_t r = 0; r < rows; ++r) {
            for (size_t c = 0; c < ldy; ++c) {
              if (c >= out) {  // padding between rows stays untouched
                worst = std::max(worst,
                                 static_cast<double>(got[r * ldy + c] != y[r * ldy + c]));
                continue;
              }
              double want = beta * static_cast<double>(y[r * ldy + c]), scale = 1.0;
              for (size_t k = 0; k < in; ++k) {
                const double term =
                    static_cast<double>(x[r * ldx + k]) * torch_weight[c * in + k];
                want += term;
                scale += std::abs(term);
              }
              worst = std::max(worst, std::abs(got[r * ldy + c] - want) / scale);
            }
          }
          CHECK(worst <= 1e-6);
        }
      }
    }
  }
}

TEST_CASE("the kernels' erf and exp agree with the C library", "[bert][kernels]") {
  std::vector<float> x;
  for (int k = -600000; k <= 600000; ++k) {
    x.push_back(static_cast<float>(k) * 1e-5f);  // [-6, 6], tail of 1 element
  }
  std::vector<float> y(x.size());
  pool::bert::detail::erf_n(x.data(), y.data(), x.size());
  double worst_erf = 0.0;
  for (size_t k = 0; k < x.size(); ++k) {
    worst_erf = std::max(worst_erf, std::abs(y[k] - std::erf(static_cast<double>(x[k]))));
  }
  CHECK(worst_erf <= 5e-7);

  x.clear();
  for (int k = -1000000; k <= 100000; ++k) {
    x.push_back(static_cast<float>(k) * 1e-4f);  // [-100, 10]
  }
  y.resize(x.size());
  pool::bert::detail::exp_n(x.data(), y.data(), x.size());
  double worst_rel = 0.0, worst_abs_below = 0.0;
  for (size_t k = 0; k < x.size(); ++k) {
    const double want = std::exp(static_cast<double>(x[k]));
    if (x[k] >= -87.0f) {
      worst_rel = std::max(worst_rel, std::abs(y[k] - want) / want);
    } else {
      worst_abs_below = std::max(worst_abs_below, std::abs(y[k] - want));
    }
  }
  CHECK(worst_rel <= 4e-7);
  CHECK(worst_abs_below <= 2e-38);
}

TEST_CASE("softmax, LayerNorm and bias+GELU kernels match double-precision formulas",
          "[bert][kernels]") {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (size_t cols : {1u, 2u, 15u, 16u, 17u, 37u, 128u}) {
    INFO("width " << cols);
    const size_t rows = 3;
    std::vector<float> m(rows * cols), bias(cols), g(cols), b(cols);
    for (auto* v : {&m, &bias, &g, &b}) {
      for (auto& e : *v) {
        e = normal(rng);
      }
    }
    std::vector<float> s = m;
    pool::bert::detail::softmax_rows(s.data(), rows, cols);
    std::vector<float> ln = m;
    pool::bert::detail::bias_layer_norm(ln.data(), rows, cols, bias.data(), g.data(),
                                        b.data(), 1e-5f);
    std::vector<float> gl = m;
    pool::bert::detail::bias_gelu(gl.data(), rows, cols, bias.data());
    double ws = 0.0, wl = 0.0, wg = 0.0;
    for (size_t r = 0; r < rows; ++r) {
      const float* row = m.data() + r * cols;
      double mx = row[0], sum = 0.0, mean = 0.0, var = 0.0;
      for (size_t c = 0; c < cols; ++c) {
        mx = std::max<double>(mx, row[c]);
        mean += static_cast<double>(row[c]) + bias[c];
      }
      mean /= static_cast<double>(cols);
      for (size_t c = 0; c < cols; ++c) {
        sum += std::exp(row[c] - mx);
        const double d = static_cast<double>(row[c]) + bias[c] - mean;
        var += d * d;
      }
      var /= static_cast<double>(cols);
      for (size_t c = 0; c < cols; ++c) {
        const size_t k = r * cols + c;
        ws = std::max(ws, std::abs(s[k] - std::exp(row[c] - mx) / sum));
        const double v = static_cast<double>(row[c]) + bias[c];
        wl = std::max(
            wl, std::abs(ln[k] - ((v - mean) / std::sqrt(var + 1e-5) * g[c] + b[c])));
        wg = std::max(wg,
                      std::abs(gl[k] - 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)))));
      }
    }
    CHECK(ws <= 1e-6);
    CHECK(wl <= 1e-5);
    CHECK(wg <= 2e-6);
  }
}

TEST_CASE("the bert embedder tokenizes, prefixes and embeds texts like the reference",
          "[bert][embedder]") {
  for (const char* name : fixture_names) {
    SECTION(name) {
      pool::model_config cfg;
      cfg.kind = "bert";
      cfg.path = fixture_dir(name);
      auto made = pool::bert::make_bert_embedder(cfg);
      REQUIRE(made);
      const auto& emb = **made;
      CHECK(emb.name() == name);
      const auto ref = read_json(fixture_dir(name) + "/reference.json");
      CHECK(emb.dim() == ref.at("embeddings").at(0).size());
      const auto* bert = dynamic_cast<const pool::bert::bert_embedder*>(&emb);
      REQUIRE(bert != nullptr);
      const auto& texts = ref.at("texts");
      REQUIRE(!texts.empty());
      for (const auto& t : texts) {
        const auto text = t.at("text").get<std::string>();
        const auto task = t.at("task").get<std::string>();
        INFO("text \"" << text << "\" task \"" << task << "\"");
        CHECK(bert->token_ids(text, task) == t.at("ids").get<std::vector<int32_t>>());
        std::vector<float> out(emb.dim());
        emb.embed({text}, task, out.data());
        const auto cmp = compare(out.data(), t.at("embedding").get<std::vector<float>>());
        CHECK(cmp.cosine >= 0.99999);
        CHECK(cmp.max_abs_diff <= 1e-4);
      }
    }
  }
}

/// The bert embedder of fixture `name`, loaded through make_bert_embedder.
caf::expected<std::shared_ptr<const pool::embedder>> fixture_embedder(
    const std::string& name) {
  pool::model_config cfg;
  cfg.kind = "bert";
  cfg.path = fixture_dir(name);
  return pool::bert::make_bert_embedder(cfg);
}

TEST_CASE("a model without prompts embeds every task's text unchanged",
          "[bert][embedder]") {
  auto made = fixture_embedder("mini-mean");
  REQUIRE(made);
  const auto& emb = **made;
  std::vector<float> plain(2 * emb.dim()), query(2 * emb.dim());
  const std::vector<std::string_view> texts{"hello , world !", "the first world"};
  emb.embed(texts, "", plain.data());
  emb.embed(texts, "query", query.data());
  CHECK(plain == query);
}

TEST_CASE("the bert embedder counts the WordPiece tokens it encodes",
          "[bert][embedder]") {
  auto made = fixture_embedder("mini-mean");
  REQUIRE(made);
  const auto* bert = dynamic_cast<const pool::bert::bert_embedder*>(made->get());
  REQUIRE(bert != nullptr);
  const std::vector<std::string_view> texts{"hello, world!", "the first world"};
  size_t expected = 0;
  for (auto t : texts)
    expected += bert->token_ids(t, "").size();
  CHECK(bert->count_tokens(texts) == expected);
  // Punctuation and [CLS]/[SEP] are tokens, unlike the default word count.
  CHECK(bert->count_tokens({texts[0]}) >= 6);
  CHECK(bert->pool::embedder::count_tokens({texts[0]}) == 2);
}

TEST_CASE("a missing or empty model path is a clear invalid_input error",
          "[bert][embedder]") {
  pool::model_config cfg;
  cfg.kind = "bert";
  auto empty = pool::bert::make_bert_embedder(cfg);
  REQUIRE_FALSE(empty);
  CHECK(pool::pool_code(empty.error()) == pool::pool_errc::invalid_input);
  CHECK_THAT(pool::error_message(empty.error()), Catch::Contains("model.path"));
  cfg.path = fixture_dir("no-such-model");
  auto missing = pool::bert::make_bert_embedder(cfg);
  REQUIRE_FALSE(missing);
  CHECK(pool::pool_code(missing.error()) == pool::pool_errc::invalid_input);
  CHECK_THAT(pool::error_message(missing.error()), Catch::Contains("no-such-model"));
}

TEST_CASE("make_embedder builds the bert embedder for model.kind = bert",
          "[bert][embedder]") {
  pool::model_config cfg;
  cfg.kind = "bert";
  cfg.path = fixture_dir("small-cls-norm-f16");
  auto made = pool::make_embedder(cfg);
  REQUIRE(made);
  CHECK((*made)->name() == "small-cls-norm-f16");
  CHECK((*made)->dim() == 48);
  CHECK(dynamic_cast<const pool::bert::bert_embedder*>(made->get()) != nullptr);
}

TEST_CASE("embed_counted counts the tokens it encoded, prompt included",
          "[bert][embedder]") {
  auto made = fixture_embedder("mini-mean-norm-prefixed");
  REQUIRE(made);
  const auto* bert = dynamic_cast<const pool::bert::bert_embedder*>(made->get());
  REQUIRE(bert != nullptr);
  const std::vector<std::string_view> texts{"hello , world !", "the first world"};
  for (const std::string task : {"", "query", "passage"}) {
    INFO("task " << task);
    std::vector<float> counted(texts.size() * bert->dim()), plain(counted.size());
    pool::embed_report report;
    bert->embed_counted(texts, task, counted.data(), report);
    bert->embed(texts, task, plain.data());
    CHECK(counted == plain);
    REQUIRE(report.tokens.size() == texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      CHECK(report.tokens[i] == bert->token_ids(texts[i], task).size());
      CHECK_FALSE(report.refused[i]);
    }
  }
  // The prompt's tokens are counted: "query: " adds two ("query", ":").
  pool::embed_report plain, query;
  std::vector<float> out(bert->dim());
  bert->embed_counted({texts[0]}, "", out.data(), plain);
  bert->embed_counted({texts[0]}, "query", out.data(), query);
  CHECK(query.tokens[0] == plain.tokens[0] + 2);
}

TEST_CASE("the prompts of config_sentence_transformers.json are the model's tasks",
          "[bert][embedder][tasks]") {
  auto made = fixture_embedder("mini-mean-norm-prefixed");
  REQUIRE(made);
  CHECK((*made)->tasks() == std::vector<std::string>{"passage", "query"});
  CHECK_FALSE(pool::check_task("", (*made)->tasks(), "m"));
  CHECK_FALSE(pool::check_task("query", (*made)->tasks(), "m"));
  auto err = pool::check_task("document", (*made)->tasks(), "m");
  REQUIRE(err);
  CHECK(pool::pool_code(err) == pool::pool_errc::invalid_input);
  CHECK_THAT(pool::error_message(err),
             Catch::Contains("document") && Catch::Contains("passage, query"));
  auto plain = fixture_embedder("mini-mean");
  REQUIRE(plain);
  CHECK((*plain)->tasks().empty());
  CHECK(pool::check_task("query", (*plain)->tasks(), "m"));
}

TEST_CASE("default_prompt_name applies its prompt to requests without a task",
          "[bert][embedder][tasks]") {
  namespace fs = std::filesystem;
  const auto src = fs::path{fixture_dir("mini-mean-norm-prefixed")};
  const auto dir =
      fs::temp_directory_path() / ("bert_default_prompt_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::copy(src, dir, fs::copy_options::recursive);
  {
    std::ofstream out{dir / "config_sentence_transformers.json"};
    out << R"({"prompts": {"query": "query: ", "passage": "passage: "},
               "default_prompt_name": "query"})";
  }
  pool::model_config cfg;
  cfg.kind = "bert";
  cfg.path = dir.string();
  auto with_default = pool::bert::make_bert_embedder(cfg);
  REQUIRE(with_default);
  auto reference = fixture_embedder("mini-mean-norm-prefixed");
  REQUIRE(reference);
  const std::vector<std::string_view> texts{"he was one of the first"};
  std::vector<float> a((*reference)->dim()), b(a.size());
  (*with_default)->embed(texts, "", a.data());
  (*reference)->embed(texts, "query", b.data());
  CHECK(a == b);
  fs::remove_all(dir);
}

TEST_CASE(
    "with model.truncate = false a text over max_seq_length is refused naming its "
    "token count and the limit",
    "[bert][embedder][truncate]") {
  pool::model_config cfg;
  cfg.kind = "bert";
  cfg.path = fixture_dir("mini-mean");
  cfg.truncate = false;
  auto strict = pool::bert::make_bert_embedder(cfg);
  REQUIRE(strict);
  cfg.truncate = true;
  auto lenient = pool::bert::make_bert_embedder(cfg);
  REQUIRE(lenient);
  const size_t limit = (*strict)->max_input_tokens();
  REQUIRE(limit > 2);
  std::string long_text;
  for (size_t i = 0; i < limit; ++i)
    long_text += "world ";
  const std::vector<std::string_view> texts{"the first world", long_text};
  std::vector<float> out(2 * (*strict)->dim()), ref(out.size());
  pool::embed_report report;
  (*strict)->embed_counted(texts, "", out.data(), report);
  CHECK_FALSE(report.refused[0]);
  REQUIRE(report.refused[1]);
  CHECK(pool::pool_code(report.refused[1]) == pool::pool_errc::too_large);
  const auto msg = pool::error_message(report.refused[1]);
  CHECK_THAT(msg, Catch::Contains(std::to_string(limit + 2) + " tokens") &&
                      Catch::Contains(std::to_string(limit)));
  // The accepted text's row is what the lenient model computes.
  (*lenient)->embed({texts[0]}, "", ref.data());
  CHECK(std::equal(ref.begin(), ref.begin() + static_cast<ptrdiff_t>((*strict)->dim()),
                   out.begin()));
  // With truncation the long text is cut to the limit and counted so.
  pool::embed_report cut;
  (*lenient)->embed_counted(texts, "", out.data(), cut);
  CHECK_FALSE(cut.refused[1]);
  CHECK(cut.tokens[1] == limit);
}

TEST_CASE("token ids round-trip through the vocabulary and foreign ids are refused",
          "[bert][embedder][token_ids]") {
  auto made = fixture_embedder("mini-mean");
  REQUIRE(made);
  const auto* bert = dynamic_cast<const pool::bert::bert_embedder*>(made->get());
  REQUIRE(bert != nullptr);
  for (const std::string text : {"hello , world !", "the first world"}) {
    const auto ids = bert->token_ids(text, "");
    std::vector<int64_t> inner(ids.begin() + 1, ids.end() - 1);
    auto back = bert->detokenize(inner);
    REQUIRE(back);
    CHECK(bert->token_ids(*back, "") == ids);
    std::vector<int64_t> with_specials(ids.begin(), ids.end());
    CHECK(bert->detokenize(with_specials).value() == *back);
  }
  auto out_of_range =
      bert->detokenize({static_cast<int64_t>(bert->tokenizer().vocab_size())});
  REQUIRE_FALSE(out_of_range);
  CHECK(pool::pool_code(out_of_range.error()) == pool::pool_errc::invalid_input);
  CHECK_FALSE(bert->detokenize({-1}));
  auto hash = pool::make_embedder(pool::model_config{});
  REQUIRE(hash);
  auto refused = (*hash)->detokenize({1, 2});
  REQUIRE_FALSE(refused);
  CHECK_THAT(pool::error_message(refused.error()), Catch::Contains("no vocabulary"));
}

TEST_CASE("a model directory's tokenizer settings give Hugging Face's ids end to end",
          "[bert][embedder][golden][settings]") {
  // tools/fixtures/gen_tokenizer_settings.js: the mini-mean fixture with
  // tokenizer_config.json and sentence_bert_config.json replaced, and the ids
  // sentence-transformers feeds the model (HF tokenizers, str.lower(),
  // truncation at max_seq_length or min(positions, model_max_length)).
  namespace fs = std::filesystem;
  std::ifstream in{std::string{EMBEDPOOL_SOURCE_DIR} +
                   "/tests/data/tokenizer/model_settings.jsonl"};
  REQUIRE(in);
  const auto dir =
      fs::temp_directory_path() / ("bert_model_settings_" + std::to_string(::getpid()));
  std::string current;  // the settings the directory holds
  std::shared_ptr<const pool::embedder> made;
  size_t records = 0;
  size_t mismatches = 0;
  std::ostringstream report;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty())
      continue;
    auto j = nlohmann::json::parse(line);
    const auto settings =
        j.at("tokenizer_config").dump() + " " + j.at("sentence_bert_config").dump();
    if (settings != current) {
      fs::remove_all(dir);
      fs::copy(fixture_dir("mini-mean"), dir, fs::copy_options::recursive);
      std::ofstream{dir / "tokenizer_config.json"} << j.at("tokenizer_config").dump();
      std::ofstream{dir / "sentence_bert_config.json"}
          << j.at("sentence_bert_config").dump();
      pool::model_config cfg;
      cfg.kind = "bert";
      cfg.path = dir.string();
      auto e = pool::bert::make_bert_embedder(cfg);
      REQUIRE(e);
      made = *e;
      current = settings;
    }
    const auto* bert = dynamic_cast<const pool::bert::bert_embedder*>(made.get());
    REQUIRE(bert != nullptr);
    const auto text = j.at("text").get<std::string>();
    const auto want = j.at("ids").get<std::vector<int32_t>>();
    const auto got = bert->token_ids(text, "");
    ++records;
    if (got != want && mismatches++ < 8) {
      report << settings << " text=" << nlohmann::json(text).dump() << "\n  expected";
      for (auto id : want)
        report << ' ' << id;
      report << "\n  got     ";
      for (auto id : got)
        report << ' ' << id;
      report << '\n';
    }
  }
  fs::remove_all(dir);
  INFO(report.str());
  CHECK(records == 128);
  CHECK(mismatches == 0);
}
