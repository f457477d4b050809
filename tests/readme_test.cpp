// The README's quick-start transcript is what the commands print: the same
// requests against a node started with conf/embedpool.ini give a status with
// the same fields (recursively) and the same ledger as the README shows, and
// the embeddings shown are the model's. tools/readme_examples.sh prints the
// transcript to copy into the README.
#include <catch2/catch.hpp>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "process_helpers.hpp"

using namespace std::chrono_literals;
using json = nlohmann::json;
using pool::test::node_process;
using pool::test::run_command;

namespace {

std::string readme() {
  std::ifstream in{std::string{EMBEDPOOL_SOURCE_DIR} + "/README.md"};
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

/// The output lines the README shows after `$ COMMAND`, up to the next blank line.
std::vector<std::string> shown_output(const std::string& text,
                                      const std::string& command) {
  auto at = text.find("$ " + command + "\n");
  REQUIRE(at != std::string::npos);
  std::vector<std::string> lines;
  std::istringstream in{text.substr(at + command.size() + 3)};
  for (std::string line; std::getline(in, line) && !line.empty() && line != "```";)
    lines.push_back(line);
  return lines;
}

/// Every key path of `j` ("ledger.accepted", "workers[].credits.embed", ...).
void key_paths(const json& j, const std::string& prefix, std::set<std::string>& out) {
  if (j.is_object()) {
    for (auto& [key, value] : j.items()) {
      out.insert(prefix + key);
      key_paths(value, prefix + key + ".", out);
    }
  } else if (j.is_array()) {
    for (auto& value : j)
      key_paths(value, prefix.substr(0, prefix.size() - 1) + "[].", out);
  }
}

std::string cli(uint16_t port, const std::vector<std::string>& args,
                const std::string& stdin_file = "/dev/null") {
  std::vector<std::string> argv = {EMBEDPOOL_CLI_BIN, "--port=" + std::to_string(port)};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run_command(argv, 60s, stdin_file);
  INFO(r.err);
  REQUIRE(r.status.exited);
  REQUIRE(r.status.code == 0);
  return r.out;
}

}  // namespace

TEST_CASE("the README's quick-start transcript is what the commands print", "[readme]") {
  auto text = readme();
  node_process node{
      {"--config-file=" + std::string{EMBEDPOOL_SOURCE_DIR} + "/conf/embedpool.ini"}};
  auto embedded = pool::test::split_lines(
      cli(node.port(), {"embed", "the cat sat on the mat", "a dog in the fog"}));
  auto shown = shown_output(text,
                            "build/apps/embedpool-cli embed \"the cat sat on the mat\" "
                            "\"a dog in the fog\" | cut -c1-60");
  REQUIRE(embedded.size() == 2);
  REQUIRE(shown.size() == 2);
  for (size_t i = 0; i < 2; ++i)
    CHECK(embedded[i].substr(0, 60) == shown[i]);

  auto texts = node.dir().path() / "texts.txt";
  std::ofstream{texts} << "first text\nsecond text\n";
  auto batched = pool::test::split_lines(cli(node.port(), {"batch"}, texts.string()));
  shown = shown_output(text, "build/apps/embedpool-cli batch < texts.txt | cut -c1-60");
  REQUIRE(batched.size() == 2);
  REQUIRE(shown.size() == 2);
  for (size_t i = 0; i < 2; ++i)
    CHECK(batched[i].substr(0, 60) == shown[i]);

  auto status = json::parse(cli(node.port(), {"status"}));
  std::string shown_status;
  for (auto& line : shown_output(text, "build/apps/embedpool-cli status | jq ."))
    shown_status += line + "\n";
  auto readme_status = json::parse(shown_status);
  CHECK(readme_status["ledger"] == status["ledger"]);
  std::set<std::string> real_keys, readme_keys;
  key_paths(status, "", real_keys);
  key_paths(readme_status, "", readme_keys);
  CHECK(readme_keys == real_keys);

  auto refused = run_command(
      {EMBEDPOOL_CLI_BIN, "--port=" + std::to_string(node.port()), "embed", ""}, 60s);
  shown = shown_output(text, "build/apps/embedpool-cli embed \"\"");
  REQUIRE(shown.size() == 2);
  CHECK(refused.err == shown[0] + "\n");
  CHECK(shown[1] == "(exit status " + std::to_string(refused.status.code) + ")");
}
