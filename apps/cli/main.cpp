// embedpool-cli: a command-line peer of an embedpool node.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "command_line.hpp"
#include "pool/client.hpp"
#include "pool/config.hpp"
#include "pool/error.hpp"
#include "pool/node_version.hpp"

namespace {

constexpr const char* usage_text = R"(usage: embedpool-cli [OPTIONS] COMMAND [ARGS]

Commands:
  embed TEXT...   embed each TEXT (one request each); prints one JSON line
                  {"dim":N,"embedding":[...]} per text, in order
  batch           read texts from stdin, one per line, send them as ONE batch
                  message; prints one JSON line per text, in order
  status          print the node's pool status as one JSON object
  metrics         print the node's metrics (Prometheus text exposition)

Options:
  --host=H             node address (default 127.0.0.1, or node.host of --config-file)
  --port=P             node port (default 4242, or node.port of --config-file)
  --config-file=PATH   read node.host, node.port and [tls] from a node configuration file
  --fallback=H:P       another node to try when the first cannot be reached or does
                       not complete its handshake in time (repeatable)
  --tls.certificate=F  PEM certificate of this client (turns mutual TLS on)
  --tls.key=F          its PEM private key
  --tls.ca-file=F      PEM CA that signed the node's certificate
  --tls.passphrase=S   passphrase of an encrypted key
  --task=T             the model's prompt for embed/batch (e.g. query, passage)
  --model=NAME         model to use (default: the node's default model); for
                       status, the model whose status to print
  --request-id=ID      name the request in the node's log lines about it (1 to
                       128 letters, digits, . _ : -); embed with several TEXTs
                       sends ID.1, ID.2, ...; default: the node makes one
  --timeout=SECONDS    per-request timeout (default 60); also bounds the
                       connection to each node (at most 5 s, then the next
                       --fallback is tried)
  -h, --help           show this help
  --version            print the versions (embedpool, git revision, protocol,
                       CAF, OpenBLAS) and exit
  --                   what follows is COMMAND and ARGS, even when it starts
                       with "-" (e.g. a TEXT "-v")

Every option also takes its value as the next argument (--port 4242).

On an error the CLI prints "error: CODE: MESSAGE" on stderr and exits 1
(2 for usage errors).
)";

struct cli_args {
  pool::client_options client;
  std::string command;
  std::vector<std::string> operands;
  std::string task;
  std::string model;
  std::string request_id;
  bool help = false;
};

/// Parses the command line; returns an error message or "". Every option
/// takes `--key=value` or `--key value`; the last of a repeated option wins
/// (--fallback accumulates). A TEXT that starts with "-" follows "--".
std::string parse(int argc, char** argv, cli_args& out) {
  std::string host, port, config_file, timeout;
  pool::tls_section tls_args;
  CLI::App app{"", "embedpool-cli"};
  app.set_help_flag();  // usage_text is the help
  app.allow_extras();   // reported below, in this program's words
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_flag("-h,--help", out.help);
  app.add_option("--host", host);
  app.add_option("--port", port);
  app.add_option("--config-file", config_file);
  app.add_option("--fallback", out.client.fallbacks)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->allow_extra_args(false);
  app.add_option("--tls.certificate", tls_args.certificate);
  app.add_option("--tls.key", tls_args.key);
  app.add_option("--tls.ca-file", tls_args.ca_file);
  app.add_option("--tls.passphrase", tls_args.passphrase);
  app.add_option("--task", out.task);
  app.add_option("--model", out.model);
  app.add_option("--request-id", out.request_id);
  auto* timeout_option = app.add_option("--timeout", timeout);
  app.add_option("command", out.command);
  app.add_option("operands", out.operands)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  if (auto err = pool::command_line::parse(app, argc, argv); !err.empty())
    return err;
  if (auto extras = pool::command_line::not_taken(app); !extras.empty())
    return "unknown option " + extras.front();
  if (timeout_option->count() > 0) {
    try {
      auto seconds = std::stod(timeout);
      if (!(seconds > 0))
        return "--timeout must be a positive number of seconds";
      out.client.timeout = std::chrono::duration_cast<caf::timespan>(
          std::chrono::duration<double>(seconds));
      // It bounds the connection to each node too (5 s at most).
      out.client.connect_timeout =
          std::min(out.client.timeout, caf::timespan{std::chrono::seconds(5)});
    } catch (const std::exception&) {
      return "--timeout: expected a number of seconds, got \"" + timeout + "\"";
    }
  }
  if (!config_file.empty()) {
    auto parsed = pool::parse_node_args({"--config-file=" + config_file});
    if (!parsed)
      return pool::describe(parsed.error());
    out.client.host = parsed->config.node.host;
    out.client.port = parsed->config.node.port;
    out.client.tls = parsed->config.tls;
  }
  if (!tls_args.certificate.empty())
    out.client.tls.certificate = tls_args.certificate;
  if (!tls_args.key.empty())
    out.client.tls.key = tls_args.key;
  if (!tls_args.ca_file.empty())
    out.client.tls.ca_file = tls_args.ca_file;
  if (!tls_args.passphrase.empty())
    out.client.tls.passphrase = tls_args.passphrase;
  if (!host.empty())
    out.client.host = host;
  if (!port.empty()) {
    char* end = nullptr;
    auto p = std::strtoul(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p == 0 || p > 65535)
      return "--port: expected a port number in [1, 65535], got \"" + port + "\"";
    out.client.port = static_cast<uint16_t>(p);
  }
  return {};
}

int fail(const caf::error& err) {
  std::fprintf(stderr, "error: %s\n", pool::describe(err).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string{argv[1]} == "--version") {
    std::fputs(pool::node_version_text("embedpool-cli").c_str(), stdout);
    return 0;
  }
  cli_args args;
  if (auto err = parse(argc, argv, args); !err.empty()) {
    std::fprintf(stderr, "embedpool-cli: %s\n%s", err.c_str(), usage_text);
    return 2;
  }
  if (args.help) {
    std::fputs(usage_text, stdout);
    return 0;
  }
  if (args.command != "embed" && args.command != "batch" && args.command != "status" &&
      args.command != "metrics") {
    std::fprintf(stderr, "embedpool-cli: %s\n%s",
                 args.command.empty() ? "missing command"
                                      : ("unknown command " + args.command).c_str(),
                 usage_text);
    return 2;
  }
  if (args.command == "embed" && args.operands.empty()) {
    std::fprintf(stderr, "embedpool-cli: embed needs at least one TEXT\n");
    return 2;
  }
  auto conn = pool::client::connect(args.client);
  if (!conn)
    return fail(conn.error());
  auto& cl = **conn;
  if (args.command == "embed") {
    for (size_t i = 0; i < args.operands.size(); ++i) {
      auto id = args.request_id;
      if (!id.empty() && args.operands.size() > 1)
        id += "." + std::to_string(i + 1);
      auto vec = cl.embed(args.operands[i], args.task, args.model, id);
      if (!vec)
        return fail(vec.error());
      std::cout << pool::embedding_to_json(vec->data(), vec->size()) << '\n';
    }
  } else if (args.command == "batch") {
    std::vector<std::string> texts;
    std::string line;
    while (std::getline(std::cin, line)) {
      if (!line.empty() && line.back() == '\r')
        line.pop_back();
      texts.push_back(std::move(line));
    }
    auto result = cl.embed_batch(texts, args.task, args.model, args.request_id);
    if (!result)
      return fail(result.error());
    for (uint32_t row = 0; row < result->rows; ++row)
      std::cout << pool::embedding_to_json(
                       result->values.data() + static_cast<size_t>(row) * result->dim,
                       result->dim)
                << '\n';
  } else if (args.command == "metrics") {
    auto text = cl.metrics();
    if (!text)
      return fail(text.error());
    std::cout << *text;
  } else {
    auto st = cl.status(args.model);
    if (!st)
      return fail(st.error());
    std::cout << pool::to_json(*st) << '\n';
  }
  std::cout.flush();
  return 0;
}
