#include "bert/wordpiece.hpp"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <limits>
#include <unordered_map>
#include <utility>

#include <utf8proc.h>

#include "pool/error.hpp"

namespace pool::bert {

/// Immutable vocabulary shared by all copies of a tokenizer. The string_view keys
/// point into `text`, which is never modified after construction.
struct wordpiece_tokenizer::vocab {
  std::vector<char> text;                                      // the file's bytes
  std::unordered_map<std::string_view, int32_t> initial;       // token -> id
  std::unordered_map<std::string_view, int32_t> continuation;  // "##x" stored as "x"
  size_t max_initial_bytes = 0;
  size_t max_continuation_bytes = 0;
  size_t lines = 0;
  std::vector<std::string_view> by_id;  // line i
  int32_t cls = -1;
  int32_t sep = -1;
  int32_t pad = -1;
  int32_t unk = -1;
  /// Special tokens matched literally in raw text (HF added special tokens).
  std::vector<std::pair<std::string_view, int32_t>> specials;
};

namespace {

constexpr size_t max_chars_per_word = 100;
constexpr std::string_view continuation_prefix = "##";
constexpr char32_t replacement_char = 0xFFFD;

/// Decodes the code point at `s[i]` (i < n) into `cp` and returns its length in
/// bytes. Invalid or truncated sequences (utf8proc's rules: no overlongs, no
/// surrogates, nothing above U+10FFFF) yield U+FFFD and consume one byte, so
/// every byte of a malformed sequence ends up dropped.
inline size_t decode_utf8(const unsigned char* s, size_t n, size_t i, char32_t& cp) {
  if (s[i] < 0x80) {
    cp = s[i];
    return 1;
  }
  utf8proc_int32_t decoded = 0;
  auto len = utf8proc_iterate(s + i, static_cast<utf8proc_ssize_t>(n - i), &decoded);
  if (len <= 0) {
    cp = replacement_char;
    return 1;
  }
  cp = static_cast<char32_t>(decoded);
  return static_cast<size_t>(len);
}

/// Appends `c` (a valid code point) in UTF-8.
inline void append_utf8(std::string& out, char32_t c) {
  utf8proc_uint8_t bytes[4];
  auto len = utf8proc_encode_char(static_cast<utf8proc_int32_t>(c), bytes);
  out.append(reinterpret_cast<const char*>(bytes), static_cast<size_t>(len));
}

inline bool is_utf8_continuation(char b) {
  return (static_cast<unsigned char>(b) & 0xC0) == 0x80;
}

/// Hugging Face's character classes (see wordpiece_hf_overrides.inc).
enum hf_flag : uint8_t { hf_other = 1, hf_mn = 2, hf_punct = 4 };

struct hf_override {
  char32_t first;
  char32_t last;
  uint8_t flags;
};

/// Code points whose class in HF (Unicode 8.0 tables) differs from current
/// Unicode, sorted and disjoint; generated from the reference implementation.
constexpr hf_override hf_overrides[] = {
#include "bert/wordpiece_hf_overrides.inc"
};

/// What the normalizer and pre-tokenizer need to know about one code point.
struct char_class {
  utf8proc_propval_t category;
  int ccc;     // canonical combining class
  bool other;  // dropped by clean_text (Cc, Cf, Co)
  bool mn;     // dropped by accent stripping (Mn)
  bool punct;  // isolated by the pre-tokenizer (P*)
};

inline char_class classify(char32_t c) {
  const auto* p = utf8proc_get_property(static_cast<utf8proc_int32_t>(c));
  const auto cat = p->category;
  char_class r{cat, p->combining_class,
               cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF ||
                   cat == UTF8PROC_CATEGORY_CO,
               cat == UTF8PROC_CATEGORY_MN,
               cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO};
  if (c >= hf_overrides[0].first) {
    const auto* end = std::end(hf_overrides);
    const auto* it =
        std::lower_bound(std::begin(hf_overrides), end, c,
                         [](const hf_override& o, char32_t x) { return o.last < x; });
    if (it != end && it->first <= c) {
      r.other = (it->flags & hf_other) != 0;
      r.mn = (it->flags & hf_mn) != 0;
      r.punct = (it->flags & hf_punct) != 0;
    }
  }
  return r;
}

/// HF's BertNormalizer ranges ("Chinese characters"), including its choice to
/// start the Extension E range at U+2B920.
inline bool is_cjk_ideograph(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

inline bool is_ascii_punct(char32_t c) {
  return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
         (c >= 123 && c <= 126);
}

inline char32_t to_lower(char32_t c) {
  if (c < 0x80)
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
  return static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
}

/// One call of `encode`: streams code points through normalization, splitting and
/// WordPiece without materializing intermediate strings. Buffers grow per call,
/// not per character.
class encoder {
 public:
  encoder(const wordpiece_tokenizer::vocab& v, const tokenizer_options& opts,
          size_t limit, std::vector<int32_t>& ids)
      : v_(v),
        lower_case_(opts.lower_case),
        strip_(opts.strips_accents()),
        chinese_(opts.chinese_chars),
        limit_(limit),
        ids_(ids) {
    word_.reserve(64);
  }

  /// True once `limit` ids have been produced; later input cannot change them.
  bool full() const { return ids_.size() >= limit_; }

  void run(std::string_view text) {
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    size_t i = 0;
    while (i < n && !full()) {
      if (s[i] == '[' && match_special(text, i))
        continue;
      char32_t c;
      i += decode_utf8(s, n, i, c);
      clean(c);
    }
    finish();
  }

 private:
  /// Consumes a literal special token at text[i] and emits its id.
  bool match_special(std::string_view text, size_t& i) {
    for (const auto& [token, id] : v_.specials) {
      if (text.compare(i, token.size(), token) == 0) {
        flush_marks();
        end_word();
        push_id(id);
        i += token.size();
        return true;
      }
    }
    return false;
  }

  /// BertNormalizer clean_text + handle_chinese_chars for one input code point.
  void clean(char32_t c) {
    if (c < 0x80) {
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
        return space();
      if (c < 0x20 || c == 0x7F)
        return;  // Cc
      if (!strip_) {
        flush_marks();
        return emit(lower_case_ ? to_lower(c) : c, is_ascii_punct(c));
      }
      return decomposed(c, 0, false, is_ascii_punct(c));
    }
    if (c == replacement_char)
      return;
    const auto cls = classify(c);
    if (cls.other)
      return;
    if (cls.category == UTF8PROC_CATEGORY_ZS || cls.category == UTF8PROC_CATEGORY_ZL ||
        cls.category == UTF8PROC_CATEGORY_ZP)
      return space();  // White_Space apart from the Cc ones dropped above
    const bool cjk = chinese_ && is_cjk_ideograph(c);
    if (cjk)
      space();
    if (strip_)
      decompose(c, cls);
    else if (lower_case_)
      emit_lowered(c, cls.punct);
    else
      emit(c, cls.punct);
    if (cjk)
      space();
  }

  /// Canonical decomposition (NFD) of one code point.
  void decompose(char32_t c, const char_class& cls) {
    utf8proc_int32_t buf[8];
    int boundclass = 0;
    auto len = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(c), buf, 8,
                                       UTF8PROC_DECOMPOSE, &boundclass);
    if (len == 1 && static_cast<char32_t>(buf[0]) == c)
      return decomposed(c, cls.ccc, cls.mn, cls.punct);
    if (len <= 0 || len > 8)  // cannot happen for valid scalars; keep c as is
      return decomposed(c, cls.ccc, cls.mn, cls.punct);
    for (utf8proc_ssize_t k = 0; k < len; ++k) {
      const auto d = static_cast<char32_t>(buf[k]);
      if (d < 0x80) {
        decomposed(d, 0, false, is_ascii_punct(d));
      } else {
        const auto dcls = classify(d);
        decomposed(d, dcls.ccc, dcls.mn, dcls.punct);
      }
    }
  }

  /// One NFD code point (strip_ only): combining marks are buffered for
  /// canonical reordering, nonspacing marks (Mn) are dropped, the rest is
  /// lowercased with lower_case. Lowercasing never changes whether a character
  /// is punctuation.
  void decomposed(char32_t d, int ccc, bool nonspacing, bool punct) {
    if (ccc != 0) {
      if (!nonspacing)
        marks_.push_back({ccc, d, punct});
      return;
    }
    flush_marks();
    if (!nonspacing)
      emit(lower_case_ ? to_lower(d) : d, punct);
  }

  /// Lowercase without accent stripping: Rust's char::to_lowercase, whose
  /// only multi-character mapping is U+0130 -> "i\u0307".
  void emit_lowered(char32_t c, bool punct) {
    if (c == 0x130) {
      emit('i', false);
      emit(0x307, false);
      return;
    }
    emit(to_lower(c), punct);
  }

  /// Emits buffered non-Mn combining marks in canonical order (stable by class).
  void flush_marks() {
    if (marks_.empty())
      return;
    std::stable_sort(marks_.begin(), marks_.end(),
                     [](const mark& a, const mark& b) { return a.ccc < b.ccc; });
    for (const auto& m : marks_)
      emit(lower_case_ ? to_lower(m.c) : m.c, m.punct);
    marks_.clear();
  }

  void space() {
    flush_marks();
    end_word();
  }

  /// BertPreTokenizer: punctuation is a word of its own.
  void emit(char32_t c, bool punct) {
    if (punct) {
      end_word();
      append_utf8(word_, c);
      word_chars_ = 1;
      end_word();
      return;
    }
    append_utf8(word_, c);
    ++word_chars_;
  }

  void finish() {
    flush_marks();
    end_word();
  }

  void push_id(int32_t id) {
    if (!full())
      ids_.push_back(id);
  }

  /// Greedy longest-match-first WordPiece of the current word.
  void end_word() {
    if (word_.empty())
      return;
    if (!full())
      wordpiece();
    word_.clear();
    word_chars_ = 0;
  }

  void wordpiece() {
    if (word_chars_ > max_chars_per_word)
      return ids_.push_back(v_.unk);
    const size_t first = ids_.size();
    const size_t len = word_.size();
    const std::string_view word{word_};
    size_t start = 0;
    while (start < len) {
      const auto& table = start == 0 ? v_.initial : v_.continuation;
      const size_t max_bytes =
          start == 0 ? v_.max_initial_bytes : v_.max_continuation_bytes;
      size_t end = len - start > max_bytes ? start + max_bytes : len;
      while (end < len && is_utf8_continuation(word_[end]))
        --end;
      int32_t found = -1;
      while (end > start) {
        auto it = table.find(word.substr(start, end - start));
        if (it != table.end()) {
          found = it->second;
          break;
        }
        do {
          --end;
        } while (end > start && is_utf8_continuation(word_[end]));
      }
      if (found < 0) {
        ids_.resize(first);
        ids_.push_back(v_.unk);
        return;
      }
      ids_.push_back(found);
      start = end;
    }
  }

  const wordpiece_tokenizer::vocab& v_;
  const bool lower_case_;
  const bool strip_;
  const bool chinese_;
  const size_t limit_;
  std::vector<int32_t>& ids_;
  std::string word_;
  size_t word_chars_ = 0;
  struct mark {
    int ccc;
    char32_t c;
    bool punct;
  };
  std::vector<mark> marks_;
};

/// Strips the trailing whitespace Rust's trim_end() would (ASCII subset).
std::string_view trim_end(std::string_view line) {
  while (!line.empty() &&
         (line.back() == ' ' || line.back() == '\t' || line.back() == '\r' ||
          line.back() == '\n' || line.back() == '\v' || line.back() == '\f'))
    line.remove_suffix(1);
  return line;
}

}  // namespace

caf::expected<wordpiece_tokenizer> wordpiece_tokenizer::load(
    const std::string& vocab_path, tokenizer_options opts) {
  auto fail = [&](const std::string& what) {
    return make_error(pool_errc::invalid_input,
                      "vocab file '" + vocab_path + "': " + what);
  };
  if (opts.max_length < 2)
    return fail("max_length must be at least 2 to hold [CLS] and [SEP]");
  std::ifstream in{vocab_path, std::ios::binary};
  if (!in)
    return fail("cannot open");
  auto v = std::make_shared<vocab>();
  v->text.assign(std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{});
  if (in.bad())
    return fail("read error");
  const std::string_view all{v->text.data(), v->text.size()};
  size_t pos = 0;
  while (pos < all.size()) {
    size_t nl = all.find('\n', pos);
    if (nl == std::string_view::npos)
      nl = all.size();
    if (v->lines >= static_cast<size_t>(std::numeric_limits<int32_t>::max()))
      return fail("too many lines");
    const auto token = trim_end(all.substr(pos, nl - pos));
    const auto id = static_cast<int32_t>(v->lines++);
    v->by_id.push_back(token);
    v->initial[token] = id;
    v->max_initial_bytes = std::max(v->max_initial_bytes, token.size());
    if (token.size() > continuation_prefix.size() &&
        token.compare(0, continuation_prefix.size(), continuation_prefix) == 0) {
      const auto rest = token.substr(continuation_prefix.size());
      v->continuation[rest] = id;
      v->max_continuation_bytes = std::max(v->max_continuation_bytes, rest.size());
    }
    pos = nl + 1;
  }
  if (v->lines == 0)
    return fail("is empty");
  auto lookup = [&](std::string_view token) -> int32_t {
    auto it = v->initial.find(token);
    return it == v->initial.end() ? -1 : it->second;
  };
  struct required {
    std::string_view token;
    int32_t* id;
  };
  for (auto [token, id] : {required{"[CLS]", &v->cls}, required{"[SEP]", &v->sep},
                           required{"[PAD]", &v->pad}, required{"[UNK]", &v->unk}}) {
    *id = lookup(token);
    if (*id < 0)
      return fail("has no " + std::string{token} + " token");
  }
  // HF's bert tokenizer.json registers these as special added tokens; they are
  // matched case-sensitively in the raw text. Longest first: none is a prefix of
  // another, but keep the order robust.
  for (std::string_view token : {"[MASK]", "[CLS]", "[SEP]", "[PAD]", "[UNK]"}) {
    auto it = v->initial.find(token);
    if (it != v->initial.end())
      v->specials.emplace_back(it->first, it->second);
  }
  return wordpiece_tokenizer{std::move(v), opts};
}

namespace {

/// Cased letters for Python's final-sigma rule (approximated by category and
/// case mappings).
bool is_cased(char32_t c) {
  const auto* p = utf8proc_get_property(static_cast<utf8proc_int32_t>(c));
  const auto cat = p->category;
  if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL ||
      cat == UTF8PROC_CATEGORY_LT)
    return true;
  const auto ci = static_cast<utf8proc_int32_t>(c);
  return utf8proc_tolower(ci) != ci || utf8proc_toupper(ci) != ci;
}

/// Unicode Case_Ignorable (Mn, Me, Cf, Lm, Sk and the word-internal
/// punctuation of Word_Break MidLetter/MidNumLet/Single_Quote).
bool is_case_ignorable(char32_t c) {
  switch (c) {
    case '\'':
    case '.':
    case ':':
    case '^':
    case '`':
    case 0xB7:
    case 0x387:
    case 0x5F4:
    case 0x2018:
    case 0x2019:
    case 0x2024:
    case 0x2027:
    case 0xFE13:
    case 0xFE52:
    case 0xFE55:
    case 0xFF07:
    case 0xFF0E:
    case 0xFF1A:
      return true;
    default:
      break;
  }
  const auto cat = utf8proc_get_property(static_cast<utf8proc_int32_t>(c))->category;
  return cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_ME ||
         cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_LM ||
         cat == UTF8PROC_CATEGORY_SK;
}

}  // namespace

std::string python_lower(std::string_view utf8_text) {
  const auto* s = reinterpret_cast<const unsigned char*>(utf8_text.data());
  const size_t n = utf8_text.size();
  // Decode once; invalid bytes are kept as raw bytes (cp < 0 marks them).
  std::vector<std::pair<int64_t, size_t>> cps;  // code point (or -byte-1), offset
  cps.reserve(n);
  for (size_t i = 0; i < n;) {
    char32_t c;
    size_t len = decode_utf8(s, n, i, c);
    if (c == replacement_char && !(len == 3 && s[i] == 0xEF))
      cps.emplace_back(-static_cast<int64_t>(s[i]) - 1, i);
    else
      cps.emplace_back(static_cast<int64_t>(c), i);
    i += len;
  }
  std::string out;
  out.reserve(n + 8);
  for (size_t k = 0; k < cps.size(); ++k) {
    const int64_t v = cps[k].first;
    if (v < 0) {
      out.push_back(static_cast<char>(-(v + 1)));
      continue;
    }
    const auto c = static_cast<char32_t>(v);
    if (c == 0x130) {
      append_utf8(out, 'i');
      append_utf8(out, 0x307);
      continue;
    }
    if (c == 0x3A3) {
      // Final_Sigma: a cased letter before (skipping case-ignorables) and none
      // after.
      bool before = false;
      for (size_t j = k; j-- > 0;) {
        if (cps[j].first < 0)
          break;
        const auto b = static_cast<char32_t>(cps[j].first);
        if (is_case_ignorable(b))
          continue;
        before = is_cased(b);
        break;
      }
      bool after = false;
      for (size_t j = k + 1; before && j < cps.size(); ++j) {
        if (cps[j].first < 0)
          break;
        const auto a = static_cast<char32_t>(cps[j].first);
        if (is_case_ignorable(a))
          continue;
        after = is_cased(a);
        break;
      }
      append_utf8(out, before && !after ? 0x3C2 : 0x3C3);
      continue;
    }
    append_utf8(out, to_lower(c));
  }
  return out;
}

std::vector<int32_t> wordpiece_tokenizer::encode(std::string_view utf8_text) const {
  if (opts_.lower_first) {
    const std::string lowered = python_lower(utf8_text);
    auto copy = *this;
    copy.opts_.lower_first = false;
    return copy.encode(lowered);
  }
  // limit counts [CLS] and the content, leaving room for [SEP].
  const size_t limit = opts_.max_length - 1;
  std::vector<int32_t> ids;
  ids.reserve(std::min(opts_.max_length, utf8_text.size() + 2));
  ids.push_back(vocab_->cls);
  encoder{*vocab_, opts_, limit, ids}.run(utf8_text);
  if (ids.size() > limit)
    ids.resize(limit);
  ids.push_back(vocab_->sep);
  return ids;
}

std::vector<int32_t> wordpiece_tokenizer::encode_untruncated(
    std::string_view utf8_text) const {
  auto copy = *this;
  copy.opts_.max_length = std::numeric_limits<size_t>::max() / 2;
  return copy.encode(utf8_text);
}

size_t wordpiece_tokenizer::vocab_size() const {
  return vocab_->lines;
}

int32_t wordpiece_tokenizer::cls_id() const {
  return vocab_->cls;
}

int32_t wordpiece_tokenizer::sep_id() const {
  return vocab_->sep;
}

int32_t wordpiece_tokenizer::pad_id() const {
  return vocab_->pad;
}

int32_t wordpiece_tokenizer::unk_id() const {
  return vocab_->unk;
}

std::string_view wordpiece_tokenizer::token_text(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= vocab_->by_id.size())
    return {};
  return vocab_->by_id[static_cast<size_t>(id)];
}

bool wordpiece_tokenizer::is_special(int32_t id) const {
  for (const auto& [token, sid] : vocab_->specials)
    if (sid == id)
      return true;
  return false;
}

}  // namespace pool::bert
