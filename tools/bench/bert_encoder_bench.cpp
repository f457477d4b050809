// Throughput and latency of pool::bert::encoder on a random-weight model of the
// all-MiniLM-L6-v2 shape (vocab 30522, H 384, 6 layers, 12 heads, I 1536),
// at several OpenBLAS thread counts; prints one JSON object on stdout.
//
//   bert_encoder_bench [--threads=1,2] [--batch=32] [--seq=128] [--single=16]
//                      [--seconds=3] [--seed=1]
//
// "batch": `batch` sequences of exactly `seq` tokens; "mixed": `batch`
// sequences of seeded random lengths in [8, seq] (a padded engine pays for
// `seq` on each); "single": one sequence of `single` tokens (latency).
// "peak_gflops" is cblas_sgemm on a 2048^3 square product at the same thread
// count; "fraction_of_peak" relates the encoder's matrix-product FLOPs per
// second to it.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <cblas.h>

#include "bert/encoder.hpp"
#include "bert/linear.hpp"
#include "bert/model_loader.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
using pool::bert::bert_model;

struct options {
  std::vector<int> threads{1, 2};
  size_t batch = 32;
  size_t seq = 128;
  size_t single = 16;
  double seconds = 3.0;
  unsigned seed = 1;
};

bool parse_args(int argc, char** argv, options& opt) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* key) -> const char* {
      const std::string k = std::string(key) + "=";
      return arg.rfind(k, 0) == 0 ? arg.c_str() + k.size() : nullptr;
    };
    if (const char* v = value("--threads")) {
      opt.threads.clear();
      std::stringstream ss(v);
      std::string item;
      while (std::getline(ss, item, ',')) {
        opt.threads.push_back(std::max(1, std::atoi(item.c_str())));
      }
    } else if (const char* b = value("--batch")) {
      opt.batch = std::strtoul(b, nullptr, 10);
    } else if (const char* s = value("--seq")) {
      opt.seq = std::strtoul(s, nullptr, 10);
    } else if (const char* one = value("--single")) {
      opt.single = std::strtoul(one, nullptr, 10);
    } else if (const char* secs = value("--seconds")) {
      opt.seconds = std::atof(secs);
    } else if (const char* seed = value("--seed")) {
      opt.seed = static_cast<unsigned>(std::strtoul(seed, nullptr, 10));
    } else {
      std::cerr << "unknown argument: " << arg << "\n";
      return false;
    }
  }
  if (opt.threads.empty() || opt.batch == 0 || opt.seq < 8 || opt.seq > 512 ||
      opt.single == 0 || opt.single > 512) {
    std::cerr
        << "need --threads, --batch >= 1, 8 <= --seq <= 512, 1 <= --single <= 512\n";
    return false;
  }
  return true;
}

void fill(std::vector<float>& v, size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  v.resize(n);
  for (auto& x : v) {
    x = dist(rng);
  }
}

pool::bert::linear_weight random_linear(size_t out, size_t in, std::mt19937& rng,
                                        float lo, float hi, size_t panel) {
  std::vector<float> torch_weight;
  fill(torch_weight, out * in, rng, lo, hi);
  return pool::bert::pack_linear(torch_weight.data(), out, in, panel);
}

// The same weights for the same seed, whatever the panel width.
std::shared_ptr<const bert_model> minilm_shape_model(unsigned seed, size_t panel) {
  auto m = std::make_shared<bert_model>();
  auto& c = m->config;
  c.vocab_size = 30522;
  c.hidden_size = 384;
  c.num_layers = 6;
  c.num_heads = 12;
  c.intermediate_size = 1536;
  c.max_position_embeddings = 512;
  c.type_vocab_size = 2;
  c.pooling = pool::bert::pooling_mode::mean;
  c.normalize = true;
  c.max_seq_length = 512;
  m->name = "random-minilm-l6-shape";
  const size_t h = 384, i = 1536;
  const float w_h = 1.0f / std::sqrt(static_cast<float>(h));
  const float w_i = 1.0f / std::sqrt(static_cast<float>(i));
  std::mt19937 rng(seed);
  auto& w = m->weights;
  fill(w.word_emb, 30522 * h, rng, -1.0f, 1.0f);
  fill(w.pos_emb, 512 * h, rng, -1.0f, 1.0f);
  fill(w.type_emb, 2 * h, rng, -1.0f, 1.0f);
  fill(w.emb_ln_g, h, rng, 0.8f, 1.2f);
  fill(w.emb_ln_b, h, rng, -0.1f, 0.1f);
  w.layers.resize(6);
  for (auto& l : w.layers) {
    l.qkv_w = random_linear(3 * h, h, rng, -w_h, w_h, panel);
    fill(l.qkv_b, 3 * h, rng, -0.1f, 0.1f);
    l.attn_out_w = random_linear(h, h, rng, -w_h, w_h, panel);
    fill(l.attn_out_b, h, rng, -0.1f, 0.1f);
    fill(l.attn_ln_g, h, rng, 0.8f, 1.2f);
    fill(l.attn_ln_b, h, rng, -0.1f, 0.1f);
    l.ffn_in_w = random_linear(i, h, rng, -w_h, w_h, panel);
    fill(l.ffn_in_b, i, rng, -0.1f, 0.1f);
    l.ffn_out_w = random_linear(h, i, rng, -w_i, w_i, panel);
    fill(l.ffn_out_b, h, rng, -0.1f, 0.1f);
    fill(l.ffn_ln_g, h, rng, 0.8f, 1.2f);
    fill(l.ffn_ln_b, h, rng, -0.1f, 0.1f);
  }
  return m;
}

std::vector<int32_t> random_sequence(size_t len, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> tok(1000, 30521);
  std::vector<int32_t> ids(len);
  for (auto& t : ids) {
    t = tok(rng);
  }
  ids.front() = 101;  // [CLS]
  if (len > 1) {
    ids.back() = 102;  // [SEP]
  }
  return ids;
}

// Matrix-product FLOPs of one forward pass over `batch`.
double model_flops(const pool::bert::bert_config& c,
                   const std::vector<std::vector<int32_t>>& batch) {
  const double h = c.hidden_size, i = c.intermediate_size;
  double flops = 0.0;
  for (const auto& s : batch) {
    const double n = static_cast<double>(s.size());
    flops += c.num_layers * (2.0 * n * h * (4.0 * h + 2.0 * i) + 4.0 * n * n * h);
  }
  return flops;
}

struct timing {
  double median_s = 0.0;
  double p90_s = 0.0;
  size_t runs = 0;
};

template <class F>
timing measure(double budget_s, size_t min_runs, F&& run) {
  run();  // warm-up: page in weights, OpenBLAS buffers
  std::vector<double> samples;
  const auto start = clock_type::now();
  while (samples.size() < min_runs ||
         std::chrono::duration<double>(clock_type::now() - start).count() < budget_s) {
    const auto t0 = clock_type::now();
    run();
    samples.push_back(std::chrono::duration<double>(clock_type::now() - t0).count());
    if (samples.size() >= 100000) {
      break;
    }
  }
  std::sort(samples.begin(), samples.end());
  timing t;
  t.runs = samples.size();
  t.median_s = samples[samples.size() / 2];
  t.p90_s = samples[std::min(samples.size() - 1, samples.size() * 9 / 10)];
  return t;
}

double peak_gflops(double budget_s) {
  const size_t n = 2048;
  std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n, 0.0f);
  const auto t = measure(budget_s, 3, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n,
                b.data(), n, 0.0f, c.data(), n);
  });
  return 2.0 * n * n * n / t.median_s / 1e9;
}

std::string loadavg() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

}  // namespace

int main(int argc, char** argv) {
  options opt;
  if (!parse_args(argc, argv, opt)) {
    return 2;
  }
  size_t model_panel = pool::bert::preferred_panel_width(opt.threads.front());
  auto model = minilm_shape_model(opt.seed, model_panel);
  auto enc = std::make_unique<pool::bert::encoder>(model);
  std::mt19937 rng(opt.seed);
  std::vector<std::vector<int32_t>> full, mixed;
  std::uniform_int_distribution<size_t> len(8, opt.seq);
  for (size_t s = 0; s < opt.batch; ++s) {
    full.push_back(random_sequence(opt.seq, rng));
    mixed.push_back(random_sequence(len(rng), rng));
  }
  const std::vector<std::vector<int32_t>> single{random_sequence(opt.single, rng)};
  std::vector<float> out(opt.batch * enc->dim());
  size_t mixed_tokens = 0;
  std::cout << "{\"engine\":\"embedpool-cblas\",\"model\":\"" << model->name
            << "\",\"batch\":" << opt.batch << ",\"seq\":" << opt.seq
            << ",\"single_tokens\":" << opt.single << ",\"mixed_lengths\":[";
  for (size_t s = 0; s < mixed.size(); ++s) {
    mixed_tokens += mixed[s].size();
    std::cout << (s ? "," : "") << mixed[s].size();
  }
  std::cout << "],\"loadavg_start\":\"" << loadavg() << "\",\"results\":[";
  for (size_t ti = 0; ti < opt.threads.size(); ++ti) {
    const int threads = opt.threads[ti];
    openblas_set_num_threads(threads);
    // The layout the node would load for this thread count.
    const size_t panel = pool::bert::preferred_panel_width(threads);
    if (panel != model_panel) {
      enc.reset();
      model_panel = panel;
      model = minilm_shape_model(opt.seed, panel);
      enc = std::make_unique<pool::bert::encoder>(model);
    }
    const double peak = peak_gflops(opt.seconds / 3);
    const auto tb = measure(opt.seconds, 3, [&] { enc->encode(full, out.data()); });
    const auto tm = measure(opt.seconds, 3, [&] { enc->encode(mixed, out.data()); });
    const auto ts =
        measure(opt.seconds / 2, 20, [&] { enc->encode(single, out.data()); });
    const double gflops_b = model_flops(enc->config(), full) / tb.median_s / 1e9;
    const double gflops_m = model_flops(enc->config(), mixed) / tm.median_s / 1e9;
    char buf[1024];
    std::snprintf(
        buf, sizeof buf,
        "%s{\"threads\":%d,\"panel_width\":%zu,\"peak_gflops\":%.1f,"
        "\"batch\":{\"sentences_per_s\":%.1f,\"median_ms\":%.2f,\"p90_ms\":%.2f,"
        "\"runs\":%zu,\"gflops\":%.1f,\"fraction_of_peak\":%.3f},"
        "\"mixed\":{\"sentences_per_s\":%.1f,\"tokens\":%zu,\"median_ms\":%.2f,"
        "\"runs\":%zu,\"gflops\":%.1f,\"fraction_of_peak\":%.3f},"
        "\"single\":{\"median_ms\":%.3f,\"p90_ms\":%.3f,\"runs\":%zu}}",
        ti ? "," : "", threads, panel, peak, opt.batch / tb.median_s, tb.median_s * 1e3,
        tb.p90_s * 1e3, tb.runs, gflops_b, gflops_b / peak, opt.batch / tm.median_s,
        mixed_tokens, tm.median_s * 1e3, tm.runs, gflops_m, gflops_m / peak,
        ts.median_s * 1e3, ts.p90_s * 1e3, ts.runs);
    std::cout << buf << std::flush;
  }
  std::cout << "],\"loadavg_end\":\"" << loadavg() << "\"}\n";
  return 0;
}
