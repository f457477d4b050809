// WordPiece tokenizer: id-for-id agreement with Hugging Face `tokenizers` on the
// golden set (tools/fixtures/gen_tokenizer_golden.js), plus load errors and
// robustness against malformed input.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "bert/wordpiece.hpp"
#include "pool/error.hpp"

namespace {

using pool::bert::tokenizer_options;
using pool::bert::wordpiece_tokenizer;

const std::string source_dir = EMBEDPOOL_SOURCE_DIR;
const std::string golden_path = source_dir + "/tests/data/tokenizer/golden.jsonl";

/// The vocabulary the golden sets were generated with (BERT uncased,
/// Apache-2.0; see tests/data/tokenizer/NOTICE).
std::string vocab_path() {
  return source_dir + "/tests/data/tokenizer/bert-base-uncased-vocab.txt";
}

struct golden_record {
  std::string category;
  std::string text;
  size_t max_length = 0;
  bool lower_case = true;
  std::vector<int32_t> ids;
};

std::vector<golden_record> read_golden() {
  std::ifstream in{golden_path};
  REQUIRE(in);
  std::vector<golden_record> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty())
      continue;
    auto j = nlohmann::json::parse(line);
    golden_record rec;
    rec.category = j.at("category").get<std::string>();
    rec.text = j.at("text").get<std::string>();
    rec.max_length = j.at("max_length").get<size_t>();
    rec.lower_case = j.value("lower_case", true);
    rec.ids = j.at("ids").get<std::vector<int32_t>>();
    out.push_back(std::move(rec));
  }
  return out;
}

std::string render(const std::vector<int32_t>& ids) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < ids.size(); ++i)
    os << (i ? "," : "") << ids[i];
  os << ']';
  return os.str();
}

/// Options with the given lowercase and max_length, the rest at defaults.
tokenizer_options opts_of(bool lower_case, size_t max_length) {
  tokenizer_options o;
  o.lower_case = lower_case;
  o.max_length = max_length;
  return o;
}

wordpiece_tokenizer load_or_fail(const std::string& path, tokenizer_options opts) {
  auto tok = wordpiece_tokenizer::load(path, opts);
  if (!tok)
    FAIL("load failed: " << pool::describe(tok.error()));
  return std::move(*tok);
}

/// Writes `content` to a fresh file under the build's working directory.
std::string write_temp(const std::string& name, const std::string& content) {
  const std::string path = "wordpiece_test_" + name;
  std::ofstream out{path, std::ios::binary | std::ios::trunc};
  out << content;
  REQUIRE(out.good());
  return path;
}

std::string read_all(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  REQUIRE(in);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

}  // namespace

TEST_CASE("the tokenizer reproduces Hugging Face ids for every golden record",
          "[wordpiece][golden]") {
  const auto records = read_golden();
  REQUIRE(records.size() >= 2000);
  std::map<std::pair<size_t, bool>, wordpiece_tokenizer> tokenizers;
  size_t mismatches = 0;
  std::map<std::string, size_t> mismatches_by_category;
  std::ostringstream report;
  for (const auto& rec : records) {
    const auto key = std::make_pair(rec.max_length, rec.lower_case);
    auto it = tokenizers.find(key);
    if (it == tokenizers.end())
      it = tokenizers
               .emplace(key, load_or_fail(vocab_path(),
                                          opts_of(rec.lower_case, rec.max_length)))
               .first;
    const auto got = it->second.encode(rec.text);
    if (got == rec.ids)
      continue;
    ++mismatches_by_category[rec.category];
    if (mismatches++ < 5) {
      const auto diff =
          std::mismatch(got.begin(), got.end(), rec.ids.begin(), rec.ids.end());
      report << "[" << rec.category << "] max_length=" << rec.max_length
             << " lower_case=" << rec.lower_case
             << " text=" << nlohmann::json(rec.text).dump()
             << "\n  first difference at index " << (diff.first - got.begin())
             << "\n  expected " << render(rec.ids) << "\n  got      " << render(got)
             << "\n";
    }
  }
  for (const auto& [category, n] : mismatches_by_category)
    report << category << ": " << n << " mismatching records\n";
  INFO(report.str());
  CHECK(mismatches == 0);
}

TEST_CASE("the golden set covers every input category it was designed for",
          "[wordpiece][golden]") {
  const auto records = read_golden();
  std::map<std::string, size_t> counts;
  for (const auto& rec : records)
    ++counts[rec.category];
  for (const char* category :
       {"ascii", "accents", "cjk", "emoji", "control", "scripts", "long_word",
        "url_email", "numbers", "punct_runs", "whitespace", "specials", "codepoint_sweep",
        "truncation", "cased"}) {
    INFO(category);
    CHECK(counts[category] > 0);
  }
}

TEST_CASE("loading names the file when it is missing or lacks a special token",
          "[wordpiece][load]") {
  SECTION("missing file") {
    auto tok = wordpiece_tokenizer::load("/nonexistent/vocab.txt", {});
    REQUIRE_FALSE(tok);
    CHECK(pool::pool_code(tok.error()) == pool::pool_errc::invalid_input);
    CHECK(pool::error_message(tok.error()).find("/nonexistent/vocab.txt") !=
          std::string::npos);
  }
  SECTION("vocabulary without [SEP]") {
    auto path = write_temp("no_sep.txt", "[PAD]\n[UNK]\n[CLS]\nhello\n");
    auto tok = wordpiece_tokenizer::load(path, {});
    REQUIRE_FALSE(tok);
    const auto msg = pool::error_message(tok.error());
    CHECK(msg.find(path) != std::string::npos);
    CHECK(msg.find("[SEP]") != std::string::npos);
    std::remove(path.c_str());
  }
  SECTION("empty vocabulary") {
    auto path = write_temp("empty.txt", "");
    CHECK_FALSE(wordpiece_tokenizer::load(path, {}));
    std::remove(path.c_str());
  }
  SECTION("max_length too small for [CLS] and [SEP]") {
    auto tok = wordpiece_tokenizer::load(vocab_path(), opts_of(true, 1));
    REQUIRE_FALSE(tok);
    CHECK(pool::error_message(tok.error()).find("max_length") != std::string::npos);
  }
}

TEST_CASE("special ids and vocabulary size come from the vocabulary file",
          "[wordpiece][load]") {
  auto tok = load_or_fail(vocab_path(), {});
  const auto text = read_all(vocab_path());
  std::vector<std::string> lines;
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);)
    lines.push_back(line);
  CHECK(tok.vocab_size() == lines.size());
  auto index_of = [&](const std::string& token) {
    return static_cast<int32_t>(std::find(lines.begin(), lines.end(), token) -
                                lines.begin());
  };
  CHECK(tok.cls_id() == index_of("[CLS]"));
  CHECK(tok.sep_id() == index_of("[SEP]"));
  CHECK(tok.pad_id() == index_of("[PAD]"));
  CHECK(tok.unk_id() == index_of("[UNK]"));
}

TEST_CASE("a vocabulary with CRLF line endings yields the same ids",
          "[wordpiece][load]") {
  std::string crlf;
  for (char c : read_all(vocab_path())) {
    if (c == '\n')
      crlf += '\r';
    crlf += c;
  }
  auto path = write_temp("crlf.txt", crlf);
  auto lf = load_or_fail(vocab_path(), {});
  auto dos = load_or_fail(path, {});
  std::remove(path.c_str());
  CHECK(dos.vocab_size() == lf.vocab_size());
  size_t compared = 0;
  for (const auto& rec : read_golden()) {
    if (rec.category == "codepoint_sweep" || !rec.lower_case)
      continue;
    REQUIRE(dos.encode(rec.text) == lf.encode(rec.text));
    if (++compared == 300)
      break;
  }
  CHECK(compared == 300);
}

TEST_CASE("invalid UTF-8 bytes are dropped like U+FFFD", "[wordpiece][robustness]") {
  auto tok = load_or_fail(vocab_path(), {});
  // Each pair: malformed input and the same text with the bad bytes removed.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"hel\xfflo", "hello"},
      {"wo\xc3rld", "world"},                  // truncated 2-byte sequence
      {"a\xe4\xbd b", "a b"},                  // truncated 3-byte sequence
      {"\xed\xa0\x80surrogate", "surrogate"},  // encoded surrogate
      {"\xf4\x90\x80\x80"
       "big",
       "big"},  // above U+10FFFF
      {"\xc0\xafover\xe0\x80\xaflong", "overlong"},
      {"\x80\xbf\xfe\xff", ""},
      {"end\xf0\x9f\x98", "end"},  // truncated at end of input
      {"caf\xc3\xa9 \xc3", "caf\xc3\xa9 "},
      {"four\xf0\x80\x80\xaf"
       "bytes",
       "fourbytes"},  // overlong, 4 bytes
      {"lead\xf5\x80\x80\x80"
       "f5",
       "leadf5"},  // lead byte above F4
  };
  for (const auto& [bad, clean] : cases) {
    INFO(nlohmann::json(clean).dump());
    CHECK(tok.encode(bad) == tok.encode(clean));
  }
}

TEST_CASE("random bytes never produce out-of-range ids or overlong output",
          "[wordpiece][robustness]") {
  for (size_t max_length : {2, 7, 64, 512}) {
    auto tok = load_or_fail(vocab_path(), opts_of(true, max_length));
    std::mt19937 rng{static_cast<uint32_t>(max_length)};
    std::uniform_int_distribution<int> len_dist{0, 600};
    std::uniform_int_distribution<int> byte_dist{0, 255};
    for (int round = 0; round < 300; ++round) {
      std::string text(static_cast<size_t>(len_dist(rng)), '\0');
      for (auto& ch : text)
        ch = static_cast<char>(byte_dist(rng));
      const auto ids = tok.encode(text);
      REQUIRE(ids.size() >= 2);
      REQUIRE(ids.size() <= max_length);
      REQUIRE(ids.front() == tok.cls_id());
      REQUIRE(ids.back() == tok.sep_id());
      for (auto id : ids)
        REQUIRE((id >= 0 && static_cast<size_t>(id) < tok.vocab_size()));
    }
  }
}

TEST_CASE("truncation keeps a prefix of the untruncated ids", "[wordpiece][truncation]") {
  auto full = load_or_fail(vocab_path(), opts_of(true, 100000));
  const std::string text =
      "Embedding servers tokenize text: \xe4\xbd\xa0\xe5\xa5\xbd, caf\xc3\xa9, "
      "antidisestablishmentarianism, [MASK] and https://example.org/a?b=c#d! ";
  std::string long_text;
  for (int i = 0; i < 40; ++i)
    long_text += text;
  const auto all = full.encode(long_text);
  REQUIRE(all.size() > 600);
  for (size_t max_length : {2, 3, 16, 128, 512}) {
    auto tok = load_or_fail(vocab_path(), opts_of(true, max_length));
    const auto ids = tok.encode(long_text);
    REQUIRE(ids.size() == max_length);
    CHECK(std::equal(ids.begin(), ids.end() - 1, all.begin()));
    CHECK(ids.back() == tok.sep_id());
  }
}

TEST_CASE("copies share the vocabulary and outlive the original", "[wordpiece]") {
  auto original = std::make_unique<wordpiece_tokenizer>(load_or_fail(vocab_path(), {}));
  const std::string text =
      "Copies must tokenize identically: na\xc3\xafve r\xc3\xa9sum\xc3\xa9";
  const auto expected = original->encode(text);
  wordpiece_tokenizer copy = *original;
  original.reset();
  CHECK(copy.encode(text) == expected);
}

TEST_CASE("every tokenizer setting of a model directory reproduces Hugging Face ids",
          "[wordpiece][golden][settings]") {
  // tools/fixtures/gen_tokenizer_settings.js: lowercase x strip_accents
  // (unset/true/false) x handle_chinese_chars x sentence-transformers'
  // do_lower_case (Python str.lower() first), each on the same texts.
  std::ifstream in{source_dir + "/tests/data/tokenizer/settings.jsonl"};
  REQUIRE(in);
  std::string line;
  size_t records = 0;
  size_t mismatches = 0;
  std::ostringstream report;
  while (std::getline(in, line)) {
    if (line.empty())
      continue;
    auto j = nlohmann::json::parse(line);
    tokenizer_options opts;
    opts.lower_case = j.at("lowercase").get<bool>();
    opts.max_length = 512;
    if (!j.at("strip_accents").is_null())
      opts.strip_accents = j.at("strip_accents").get<bool>();
    opts.chinese_chars = j.at("chinese_chars").get<bool>();
    opts.lower_first = j.at("lower_first").get<bool>();
    auto tok = load_or_fail(vocab_path(), opts);
    const auto text = j.at("text").get<std::string>();
    const auto want = j.at("ids").get<std::vector<int32_t>>();
    const auto got = tok.encode(text);
    ++records;
    if (got != want && mismatches++ < 8)
      report << "lowercase=" << opts.lower_case
             << " strip_accents=" << j.at("strip_accents").dump()
             << " chinese=" << opts.chinese_chars << " lower_first=" << opts.lower_first
             << " text=" << nlohmann::json(text).dump() << "\n  expected " << render(want)
             << "\n  got      " << render(got) << "\n";
  }
  INFO(report.str());
  CHECK(records == 384);
  CHECK(mismatches == 0);
}

TEST_CASE("python_lower maps like Python's str.lower()", "[wordpiece]") {
  using pool::bert::python_lower;
  CHECK(python_lower("HeLLo") == "hello");
  CHECK(python_lower("\xC4\xB0") == "i\xCC\x87");  // U+0130 -> i + U+0307
  // Final sigma at the end of a word, medial sigma elsewhere.
  CHECK(python_lower("\xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3") ==
        "\xCE\xBF\xCE\xB4\xCE\xBF\xCF\x82");
  CHECK(python_lower("\xCE\xA3\xCE\x91") == "\xCF\x83\xCE\xB1");
  CHECK(python_lower("\xCE\xA3") == "\xCF\x83");
}

TEST_CASE("encode_untruncated counts every token", "[wordpiece][truncation]") {
  auto tok = load_or_fail(vocab_path(), opts_of(true, 8));
  std::string text;
  for (int i = 0; i < 20; ++i)
    text += "word ";
  CHECK(tok.encode(text).size() == 8);
  CHECK(tok.encode_untruncated(text).size() == 22);
}
