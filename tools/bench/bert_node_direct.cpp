// The "direct" half of tools/bench/bert_node.sh: the bert embedder (tokenizer
// + encoder) loaded from a model directory and called in this process on the
// sentences of a text file, `group` sentences per call in file order, at each
// OpenBLAS thread count. Prints one JSON line per thread count:
// {"threads":T,"panel_width":P,"group":G,"sentences_per_s":...}.
//
// usage: bert_node_direct --model-path=DIR --texts-file=FILE [--threads=1,2]
//                         [--group=16] [--seconds=5]
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "../loadgen/texts.hpp"
#include "bert/linear.hpp"
#include "embed_rate.hpp"
#include "pool/config.hpp"
#include "pool/embedder.hpp"
#include "pool/make_embedder.hpp"
#include "pool/error.hpp"

int main(int argc, char** argv) {
  std::string model_path, texts_file;
  std::vector<int> threads{1, 2};
  size_t group = 16;
  double seconds = 5;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = arg.substr(arg.find('=') + 1);
    if (arg.rfind("--model-path=", 0) == 0) {
      model_path = value;
    } else if (arg.rfind("--texts-file=", 0) == 0) {
      texts_file = value;
    } else if (arg.rfind("--threads=", 0) == 0) {
      threads.clear();
      std::stringstream ss(value);
      for (std::string item; std::getline(ss, item, ',');)
        threads.push_back(std::max(1, std::atoi(item.c_str())));
    } else if (arg.rfind("--group=", 0) == 0) {
      group = std::strtoul(value.c_str(), nullptr, 10);
    } else if (arg.rfind("--seconds=", 0) == 0) {
      seconds = std::strtod(value.c_str(), nullptr);
    } else {
      std::fprintf(stderr,
                   "usage: bert_node_direct --model-path=DIR --texts-file=FILE "
                   "[--threads=1,2] [--group=16] [--seconds=5]\n");
      return 2;
    }
  }
  const auto texts = pool::loadgen::read_texts(texts_file);
  if (model_path.empty() || texts.empty() || threads.empty() || group == 0 ||
      !(seconds > 0)) {
    std::fprintf(stderr,
                 "bert_node_direct: need --model-path, a non-empty --texts-file, "
                 "--threads, --group >= 1 and --seconds > 0\n");
    return 2;
  }
  float checksum = 0;
  for (int t : threads) {
    pool::model_config cfg;
    cfg.kind = "bert";
    cfg.path = model_path;
    cfg.blas_threads = static_cast<uint32_t>(t);
    auto model = pool::make_embedder(cfg);  // the layout the node loads at t threads
    if (!model) {
      std::fprintf(stderr, "bert_node_direct: %s\n",
                   pool::describe(model.error()).c_str());
      return 1;
    }
    pool::set_blas_threads(t);
    const double rate =
        pool::bench::calls_per_second(**model, texts, group, seconds, checksum) *
        static_cast<double>(group);
    std::printf(
        "{\"threads\":%d,\"panel_width\":%zu,\"group\":%zu,\"texts\":%zu,"
        "\"sentences_per_s\":%.1f,\"checksum\":%.3f}\n",
        t, pool::bert::preferred_panel_width(t), group, texts.size(), rate,
        static_cast<double>(checksum));
    std::fflush(stdout);
  }
  return 0;
}
