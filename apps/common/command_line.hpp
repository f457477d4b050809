// Command-line parsing shared by embedpool-cli and embedpool-loadgen: CLI11
// with `--key=value` and `--key value` alike.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace pool::command_line {

/// Parses `argc`/`argv` with `app`; returns CLI11's message on a parse error
/// and "" otherwise. An empty `--key=` gives `--key` the empty value (CLI11
/// alone would take the next argument as its value); after "--" every
/// argument is an operand.
inline std::string parse(CLI::App& app, int argc, char** argv) {
  std::vector<std::string> args;
  bool options_end = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    options_end = options_end || arg == "--";
    bool empty_value =
        !options_end && arg.rfind("--", 0) == 0 && arg.find('=') == arg.size() - 1;
    if (empty_value)
      arg.pop_back();
    args.push_back(std::move(arg));
    if (empty_value)
      args.emplace_back();
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes the last one first
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return e.what();
  }
  return {};
}

/// The arguments `app` (parsed, with allow_extras) did not take, in order:
/// its unknown options and surplus operands. The "--" that ends the options
/// is no such argument (CLI11 2.1 lists it among them).
inline std::vector<std::string> not_taken(const CLI::App& app) {
  auto rest = app.remaining();
  rest.erase(std::remove(rest.begin(), rest.end(), "--"), rest.end());
  return rest;
}

}  // namespace pool::command_line
