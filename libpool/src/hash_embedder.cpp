#include "hash_embedder.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <stdexcept>

#include <cblas.h>
#include <utf8proc.h>

#include "pool/config.hpp"
#include "pool/error.hpp"
#include "whitespace_words.hpp"

namespace pool::detail {

namespace {

// -- portable hashing and random numbers -------------------------------------

// murmur3's 64-bit finaliser: spreads every input bit over the whole word.
constexpr uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

// Incremental FNV-1a 64 over bytes with a seeded offset basis, finalised with
// fmix64 so that the low bits (bucket) and the top bit (sign) are well mixed.
class fnv1a {
 public:
  explicit fnv1a(uint64_t seed) : h_(0xcbf29ce484222325ULL ^ fmix64(seed)) {}

  void add(const char* data, size_t size) {
    for (size_t i = 0; i < size; ++i) {
      h_ ^= static_cast<unsigned char>(data[i]);
      h_ *= 0x100000001b3ULL;
    }
  }

  void add(std::string_view bytes) { add(bytes.data(), bytes.size()); }

  void add_byte(unsigned char byte) {
    h_ ^= byte;
    h_ *= 0x100000001b3ULL;
  }

  uint64_t finish() const { return fmix64(h_); }

 private:
  uint64_t h_;
};

// splitmix64 (Steele, Lea, Flood 2014): a tiny portable PRNG.
class splitmix64 {
 public:
  explicit splitmix64(uint64_t seed) : state_(seed) {}

  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

constexpr uint64_t projection_seed = 0x656d626564706f6fULL;  // "embedpoo"

// -- features -----------------------------------------------------------------

// Feature kinds; each hashes with its own seed and has its own weight. The kind
// is stored in the two low bits of a feature key.
enum feature_kind : uint64_t { unigram = 0, bigram = 1, trigram = 2, raw_bytes = 3 };

constexpr double kind_weight[4] = {
    1.0,   // unigram: a word match is the strongest evidence
    0.5,   // bigram: word order / phrases
    0.25,  // character trigram: morphology, typos, scripts without spaces
    1.0,   // raw bytes: the only feature of a text without words
};

constexpr unsigned char word_begin_marker = 0x02;
constexpr unsigned char word_end_marker = 0x03;
constexpr unsigned char bigram_separator = 0x1f;

uint64_t make_key(uint64_t hash, feature_kind kind) {
  return (hash & ~uint64_t{3}) | kind;
}

// Sum of |row| must stay below 2^24 for exact float sums; rows are scaled so
// that it is at most 2^23 before rounding, which adds at most 0.5 per bucket
// (<= 2^19 in total for 2^20 buckets).
constexpr int quantised_l1_exponent = 23;

// Rows of one sgemm call are capped so that the bag matrix stays below 16 MiB
// (1024 texts at the default 4096 buckets).
constexpr size_t max_bag_floats = size_t{1} << 22;

// Largest gathered projection (16 MiB) an embed call builds.
constexpr size_t max_gather_floats = size_t{1} << 22;

// A chunk whose bag matrix (over the buckets it uses) has at most one
// non-zero in this many entries is summed row by row instead of multiplied.
constexpr size_t sparse_density_divisor = 4;

bool is_word_codepoint(utf8proc_int32_t cp) {
  switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:  // marks belong to their letter (Devanagari
    case UTF8PROC_CATEGORY_MC:  // vowel signs, accents left uncomposed)
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

struct free_deleter {
  void operator()(utf8proc_uint8_t* p) const { std::free(p); }
};

using utf8proc_buffer = std::unique_ptr<utf8proc_uint8_t, free_deleter>;

constexpr utf8proc_option_t normalise_options =
    static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT |
                                   UTF8PROC_CASEFOLD | UTF8PROC_IGNORE);

// NFKC + case folding + removal of default-ignorable code points. Returns an
// empty buffer on failure (out of memory).
utf8proc_buffer normalise(const char* data, size_t size, size_t& out_size) {
  utf8proc_uint8_t* result = nullptr;
  auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(data),
                        static_cast<utf8proc_ssize_t>(size), &result, normalise_options);
  if (n < 0) {
    std::free(result);
    return nullptr;
  }
  out_size = static_cast<size_t>(n);
  return utf8proc_buffer{result};
}

// Replaces every byte that does not start a valid UTF-8 sequence by U+FFFD.
std::string sanitise_utf8(std::string_view text) {
  std::string result;
  result.reserve(text.size() + 8);
  auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    utf8proc_int32_t cp = 0;
    auto n = utf8proc_iterate(p + i, static_cast<utf8proc_ssize_t>(text.size() - i), &cp);
    if (n <= 0) {
      result += "\xEF\xBF\xBD";
      ++i;
    } else {
      result.append(text.data() + i, static_cast<size_t>(n));
      i += static_cast<size_t>(n);
    }
  }
  return result;
}

}  // namespace

// Working memory of `embed`, one per thread (thread_local there) and kept
// from call to call: its large buffers are not allocated, faulted in and
// returned to the kernel on every call (a node gives buffers of 64 KiB and
// more their own pages). Between calls `bag` and `is_touched` are all zero and
// `column` is all -1 (or empty). At most `worker_bytes` large.
struct hash_embedder::scratch {
  std::vector<size_t> cp_offsets;                   // byte offset of each code point
  std::string ascii;                                // lowercased copy of an ASCII text
  std::vector<char> cp_is_word;                     // per code point
  std::vector<std::pair<size_t, size_t>> words;     // [first, last) code point
  std::vector<uint64_t> keys;                       // feature keys of one text
  std::vector<double> bag;                          // per bucket, zero between texts
  std::vector<char> is_touched;                     // per bucket, zero between texts
  std::vector<uint32_t> touched;                    // buckets the text hashed into
  std::vector<std::pair<uint32_t, float>> entries;  // quantised non-zero buckets
  std::vector<int32_t> column;  // per bucket: -1, or its column in the batch
  std::vector<uint32_t> used;   // buckets used by the batch
  std::vector<float> a;         // bag matrix of the batch
  std::vector<float> b;         // gathered projection rows
  std::vector<std::pair<uint32_t, float>> chunk_entries;  // of all rows of a chunk
  std::vector<size_t> row_begin;  // rows' ranges in `chunk_entries`
};

caf::error hash_embedder::validate(const model_config& cfg) {
  if (cfg.dim < min_dim || cfg.dim > max_dim)
    return make_error(pool_errc::invalid_input,
                      "model.dim = " + std::to_string(cfg.dim) + " is out of range [" +
                          std::to_string(min_dim) + ", " + std::to_string(max_dim) + "]");
  if (cfg.hash_buckets < min_buckets || cfg.hash_buckets > max_buckets)
    return make_error(pool_errc::invalid_input,
                      "model.hash-buckets = " + std::to_string(cfg.hash_buckets) +
                          " is out of range [" + std::to_string(min_buckets) + ", " +
                          std::to_string(max_buckets) + "]");
  if (uint64_t{cfg.dim} * cfg.hash_buckets > max_projection_floats)
    return make_error(pool_errc::invalid_input,
                      "model.dim * model.hash-buckets = " +
                          std::to_string(uint64_t{cfg.dim} * cfg.hash_buckets) +
                          " exceeds " + std::to_string(max_projection_floats) +
                          " (projection of 1 GiB)");
  return caf::error{};
}

hash_embedder::hash_embedder(uint32_t dim, uint32_t buckets)
    : dim_(dim), buckets_(buckets) {
  model_config cfg;
  cfg.dim = dim;
  cfg.hash_buckets = buckets;
  if (auto err = validate(cfg))
    throw std::invalid_argument(error_message(err));
  // Rademacher (±1) entries: a Johnson-Lindenstrauss projection whose entries
  // are exact in float, which keeps sgemm exact (see the header). Entry e takes
  // bit e % 64 of the (e / 64)-th draw.
  const size_t count = size_t{dim} * buckets;
  projection_.resize(count);
  splitmix64 rng{projection_seed};
  for (size_t e = 0; e < count; e += 64) {
    uint64_t bits = rng.next();
    size_t end = std::min(count, e + 64);
    for (size_t i = e; i < end; ++i, bits >>= 1)
      projection_[i] = (bits & 1) ? 1.0f : -1.0f;
  }
}

std::string hash_embedder::name() const {
  return "hash-" + std::to_string(dim_);
}

size_t hash_embedder::make_bag(std::string_view text, scratch& s) const {
  s.cp_offsets.clear();
  s.cp_is_word.clear();
  s.words.clear();
  std::string_view normalised;
  utf8proc_buffer norm;
  const bool ascii = std::all_of(text.begin(), text.end(), [](char ch) {
    return static_cast<unsigned char>(ch) < 0x80;
  });
  size_t words_between_spaces = 0;
  if (ascii) {
    // Fast path, identical to the general one: NFKC and case folding map ASCII
    // to itself except A-Z -> a-z, and the only ASCII letters and numbers are
    // [A-Za-z0-9].
    s.ascii.assign(text.data(), text.size());
    bool in_word = false;
    for (size_t i = 0; i < s.ascii.size(); ++i) {
      char& ch = s.ascii[i];
      const bool space = is_ascii_space(ch);
      words_between_spaces += !space && !in_word;
      in_word = !space;
      if (ch >= 'A' && ch <= 'Z')
        ch = static_cast<char>(ch - 'A' + 'a');
      s.cp_offsets.push_back(i);
      s.cp_is_word.push_back((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'));
    }
    normalised = s.ascii;
  } else {
    // Counted on the text as sent, as count_tokens does.
    words_between_spaces = whitespace_words(text);
    // 1. Normalise; invalid UTF-8 is sanitised first.
    size_t norm_size = 0;
    norm = normalise(text.data(), text.size(), norm_size);
    if (!norm) {
      auto clean = sanitise_utf8(text);
      norm = normalise(clean.data(), clean.size(), norm_size);
    }
    if (norm)
      normalised = std::string_view{reinterpret_cast<const char*>(norm.get()), norm_size};
    // 2. Code points.
    auto* p = reinterpret_cast<const utf8proc_uint8_t*>(normalised.data());
    size_t i = 0;
    while (i < normalised.size()) {
      utf8proc_int32_t cp = 0;
      auto n = utf8proc_iterate(
          p + i, static_cast<utf8proc_ssize_t>(normalised.size() - i), &cp);
      size_t step = n > 0 ? static_cast<size_t>(n) : 1;  // never after utf8proc_map
      s.cp_offsets.push_back(i);
      s.cp_is_word.push_back(n > 0 && is_word_codepoint(cp));
      i += step;
    }
  }
  s.cp_offsets.push_back(normalised.size());
  // 3. Words: maximal runs of word code points.
  const size_t cps = s.cp_is_word.size();
  for (size_t c = 0; c < cps;) {
    if (!s.cp_is_word[c]) {
      ++c;
      continue;
    }
    size_t first = c;
    while (c < cps && s.cp_is_word[c])
      ++c;
    s.words.emplace_back(first, c);
  }
  auto cp_bytes = [&](size_t first, size_t last) {
    return normalised.substr(s.cp_offsets[first],
                             s.cp_offsets[last] - s.cp_offsets[first]);
  };

  // 4. Feature keys.
  s.keys.clear();
  for (size_t w = 0; w < s.words.size(); ++w) {
    auto [first, last] = s.words[w];
    auto word = cp_bytes(first, last);
    fnv1a uni{unigram + 1};
    uni.add(word);
    s.keys.push_back(make_key(uni.finish(), unigram));
    if (w + 1 < s.words.size()) {
      fnv1a bi{bigram + 1};
      bi.add(word);
      bi.add_byte(bigram_separator);
      bi.add(cp_bytes(s.words[w + 1].first, s.words[w + 1].second));
      s.keys.push_back(make_key(bi.finish(), bigram));
    }
    // Padded word: [begin marker, code points..., end marker]; one trigram
    // starts at each padded position p in [0, len).
    const size_t len = last - first;
    for (size_t p = 0; p < len; ++p) {
      fnv1a tri{trigram + 1};
      for (size_t q = p; q < p + 3; ++q) {
        if (q == 0)
          tri.add_byte(word_begin_marker);
        else if (q == len + 1)
          tri.add_byte(word_end_marker);
        else
          tri.add(cp_bytes(first + q - 1, first + q));
      }
      s.keys.push_back(make_key(tri.finish(), trigram));
    }
  }
  auto add_raw_bytes_feature = [&] {
    fnv1a raw{raw_bytes + 1};
    raw.add(normalised.empty() ? text : normalised);
    s.keys.push_back(make_key(raw.finish(), raw_bytes));
  };
  if (s.keys.empty())
    add_raw_bytes_feature();

  // 5. Signed hashing with sublinear term frequency, in key order (which
  // fixes the order of every floating-point sum below).
  s.bag.resize(buckets_, 0.0);  // all zero between texts
  s.is_touched.resize(buckets_, 0);
  s.touched.clear();
  auto accumulate = [&] {
    std::sort(s.keys.begin(), s.keys.end());
    for (size_t i = 0; i < s.keys.size();) {
      size_t j = i + 1;
      while (j < s.keys.size() && s.keys[j] == s.keys[i])
        ++j;
      const uint64_t key = s.keys[i];
      const double weight = kind_weight[key & 3] * std::sqrt(static_cast<double>(j - i));
      const auto bucket = static_cast<uint32_t>((key >> 2) % buckets_);
      if (!s.is_touched[bucket]) {
        s.is_touched[bucket] = 1;
        s.touched.push_back(bucket);
      }
      s.bag[bucket] += (key >> 63) ? -weight : weight;
      i = j;
    }
  };
  accumulate();
  double l1 = 0.0;
  for (uint32_t bucket : s.touched)
    l1 += std::fabs(s.bag[bucket]);
  if (l1 == 0.0) {  // every feature cancelled out in its bucket
    s.keys.clear();
    add_raw_bytes_feature();
    accumulate();
    l1 = kind_weight[raw_bytes];
  }

  // 6. Quantise: scale by a power of two (exact) so that l1 lands in
  // [2^22, 2^23), then round to integers. Resets the accumulators.
  int exponent = 0;
  std::frexp(l1, &exponent);
  const double scale = std::ldexp(1.0, quantised_l1_exponent - exponent);
  s.entries.clear();
  for (uint32_t bucket : s.touched) {
    const double q = std::round(s.bag[bucket] * scale);
    s.bag[bucket] = 0.0;
    s.is_touched[bucket] = 0;
    if (q != 0.0)
      s.entries.emplace_back(bucket, static_cast<float>(q));
  }
  return words_between_spaces;
}

void hash_embedder::bag_row(std::string_view text, float* row) const {
  scratch s;
  make_bag(text, s);
  std::fill(row, row + buckets_, 0.0f);
  for (auto [bucket, value] : s.entries)
    row[bucket] = value;
}

size_t hash_embedder::weights_bytes() const {
  return projection_.size() * sizeof(float);
}

size_t hash_embedder::worker_bytes(uint32_t max_batch_texts) const {
  const size_t texts = std::max<size_t>(max_batch_texts, 1);
  const size_t rows_per_call = std::max<size_t>(1, max_bag_floats / buckets_);
  const size_t bag_floats = std::min(texts, rows_per_call) * buckets_;
  // Gathered only when at most 3/4 of the buckets are used.
  const size_t gathered_floats =
      std::min(size_t{buckets_} * 3 / 4 * dim_, max_gather_floats);
  const size_t index_bytes = size_t{buckets_} * (sizeof(int32_t) + sizeof(uint32_t));
  const size_t output_floats = texts * dim_;
  return (bag_floats + gathered_floats + output_floats) * sizeof(float) + index_bytes;
}

void hash_embedder::embed(const std::vector<std::string_view>& texts,
                          const std::string& /*task*/, float* out) const {
  embed_into(texts, out, nullptr);
}

void hash_embedder::embed_counted(const std::vector<std::string_view>& texts,
                                  const std::string& /*task*/, float* out,
                                  embed_report& report) const {
  report.tokens.resize(texts.size());
  report.refused.assign(texts.size(), caf::error{});
  embed_into(texts, out, report.tokens.data());
}

void hash_embedder::embed_into(const std::vector<std::string_view>& texts, float* out,
                               uint32_t* tokens) const {
  if (texts.empty())
    return;
  const size_t rows_per_call = std::max<size_t>(1, max_bag_floats / buckets_);
  const size_t n_total = texts.size();
  thread_local scratch s;
  if (s.column.size() != buckets_)
    s.column.assign(buckets_, -1);
  try {
    embed_with(texts, s, out, rows_per_call, n_total, tokens);
  } catch (...) {
    s = scratch{};  // its invariants may not hold any more
    throw;
  }
}

void hash_embedder::embed_with(const std::vector<std::string_view>& texts, scratch& s,
                               float* out, size_t rows_per_call, size_t n_total,
                               uint32_t* tokens) const {
  auto& entries = s.chunk_entries;
  auto& row_begin = s.row_begin;
  for (size_t begin = 0; begin < n_total; begin += rows_per_call) {
    const size_t n = std::min(rows_per_call, n_total - begin);
    entries.clear();
    row_begin.clear();
    s.used.clear();
    for (size_t i = 0; i < n; ++i) {
      row_begin.push_back(entries.size());
      const auto words = make_bag(texts[begin + i], s);
      if (tokens != nullptr)
        tokens[begin + i] = static_cast<uint32_t>(words);
      for (const auto& entry : s.entries) {
        entries.push_back(entry);
        if (s.column[entry.first] < 0) {
          s.column[entry.first] = 0;
          s.used.push_back(entry.first);
        }
      }
    }
    row_begin.push_back(entries.size());
    float* c = out + begin * dim_;
    const size_t k = s.used.size();
    // A sparse chunk (a single text, or texts that share few buckets) is the
    // sum of the projection rows of each text's buckets, scaled by its bag
    // values: one saxpy per non-zero instead of a product with mostly zeros,
    // and no gathered copy of the rows. Same exact integer sums (see above),
    // so the same bits as the sgemm below.
    if (n == 1 || entries.size() * sparse_density_divisor <= n * k) {
      std::fill(c, c + n * dim_, 0.0f);
      for (size_t i = 0; i < n; ++i)
        for (size_t e = row_begin[i]; e < row_begin[i + 1]; ++e) {
          const auto [bucket, value] = entries[e];
          cblas_saxpy(static_cast<blasint>(dim_), value,
                      projection_.data() + size_t{bucket} * dim_, 1, c + i * dim_, 1);
        }
      for (uint32_t bucket : s.used)
        s.column[bucket] = -1;
      normalize_rows(c, n);
      continue;
    }
    // Buckets no text of the chunk uses contribute nothing: when they are
    // many, multiply by the gathered projection rows of the used ones instead
    // (same products, still exact, far less memory traffic).
    const bool gather =
        k > 0 && k * 4 <= size_t{buckets_} * 3 && k * dim_ <= max_gather_floats;
    const float* b = projection_.data();
    size_t depth = buckets_;
    if (gather) {
      std::sort(s.used.begin(), s.used.end());
      s.b.resize(k * dim_);
      for (size_t col = 0; col < k; ++col) {
        s.column[s.used[col]] = static_cast<int32_t>(col);
        std::copy_n(projection_.data() + size_t{s.used[col]} * dim_, dim_,
                    s.b.data() + col * dim_);
      }
      b = s.b.data();
      depth = k;
    }
    s.a.assign(n * depth, 0.0f);
    for (size_t i = 0; i < n; ++i)
      for (size_t e = row_begin[i]; e < row_begin[i + 1]; ++e) {
        const auto [bucket, value] = entries[e];
        const size_t col = gather ? static_cast<size_t>(s.column[bucket]) : bucket;
        s.a[i * depth + col] = value;
      }
    for (uint32_t bucket : s.used)
      s.column[bucket] = -1;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(n),
                static_cast<blasint>(dim_), static_cast<blasint>(depth), 1.0f, s.a.data(),
                static_cast<blasint>(depth), b, static_cast<blasint>(dim_), 0.0f, c,
                static_cast<blasint>(dim_));
    normalize_rows(c, n);
  }
}

void hash_embedder::normalize_rows(float* rows, size_t n) const {
  for (size_t i = 0; i < n; ++i) {
    float* v = rows + i * dim_;
    double sum_sq = 0.0;
    for (size_t j = 0; j < dim_; ++j)
      sum_sq += static_cast<double>(v[j]) * v[j];
    if (sum_sq == 0.0) {  // the projection cancelled the bag (tiny dims only)
      const float u = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim_)));
      std::fill(v, v + dim_, u);
      continue;
    }
    const double norm = std::sqrt(sum_sq);
    for (size_t j = 0; j < dim_; ++j)
      v[j] = static_cast<float>(v[j] / norm);
  }
}

}  // namespace pool::detail
