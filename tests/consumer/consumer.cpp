// A peer of an embedpool node built against the installed client library
// only (embedpool::client / embedpool-client.pc).
//
// usage: embedpool-consumer PORT TEXT...
// Prints the node's version, then "dim=N first=X" per text; exit 0 on success,
// 1 with "error: CODE: MESSAGE" on stderr otherwise.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <pool/client.hpp>
#include <pool/version.hpp>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: embedpool-consumer PORT TEXT...\n");
    return 2;
  }
  pool::client_options opts;
  opts.host = "127.0.0.1";
  opts.port = static_cast<uint16_t>(std::strtoul(argv[1], nullptr, 10));
  opts.timeout = std::chrono::seconds(30);
  auto client = pool::client::connect(opts);
  if (!client) {
    std::fprintf(stderr, "error: %s\n", pool::describe(client.error()).c_str());
    return 1;
  }
  auto status = (*client)->status();
  if (!status) {
    std::fprintf(stderr, "error: %s\n", pool::describe(status.error()).c_str());
    return 1;
  }
  std::printf("client %s protocol %u; node %s protocol %u model %s\n",
              pool::version_string().c_str(), pool::protocol_version,
              status->version.c_str(), status->protocol, status->model.c_str());
  std::vector<std::string> texts(argv + 2, argv + argc);
  auto result = (*client)->embed_batch(texts);
  if (!result) {
    std::fprintf(stderr, "error: %s\n", pool::describe(result.error()).c_str());
    return 1;
  }
  for (uint32_t row = 0; row < result->rows; ++row)
    std::printf("dim=%u first=%.6f\n", result->dim,
                static_cast<double>(result->values[size_t{row} * result->dim]));
  return 0;
}
