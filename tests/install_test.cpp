// `cmake --install` and the exported package, as a user outside this build
// sees them: install into a temporary prefix, then build tests/consumer (a
// separate CMake project: find_package(embedpool), embedpool::client, and
// embedpool::pool as a component) and the same peer with the plain compiler
// line from embedpool-client.pc, and run both against a node.
#include <filesystem>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "process_helpers.hpp"

namespace {

using namespace std::chrono_literals;
using pool::test::node_process;
using pool::test::run_command;
using pool::test::run_result;
using pool::test::temp_dir;
namespace fs = std::filesystem;

const std::string source_dir = EMBEDPOOL_SOURCE_DIR;
const std::string binary_dir = EMBEDPOOL_BINARY_DIR;
const std::string cmake = EMBEDPOOL_CMAKE_COMMAND;
const std::string cxx = EMBEDPOOL_CXX_COMPILER;
/// The sanitizer flags of this build: the consumer links its instrumented
/// static libraries, so it needs them too.
const std::string sanitize_flags = EMBEDPOOL_SANITIZE_FLAGS;

run_result must_run(const std::vector<std::string>& argv,
                    std::chrono::milliseconds timeout) {
  auto result = run_command(argv, timeout);
  std::string line;
  for (auto& arg : argv)
    line += arg + " ";
  INFO("command: " << line);
  INFO("stdout: " << result.out);
  INFO("stderr: " << result.err);
  REQUIRE(result.status.exited);
  REQUIRE(result.status.code == 0);
  return result;
}

/// The one file named `name` below `root`, or "" if none.
std::string find_file(const fs::path& root, const std::string& name) {
  for (auto& entry : fs::recursive_directory_iterator(root))
    if (entry.path().filename() == name)
      return entry.path().string();
  return {};
}

}  // namespace

TEST_CASE(
    "An installed embedpool builds and runs a separate CMake project and a "
    "pkg-config peer against a node",
    "[install][package]") {
  temp_dir work;
  auto prefix = (work.path() / "prefix").string();
  SECTION("cmake --install puts every piece under the prefix and nothing outside") {
    must_run({cmake, "--install", binary_dir, "--prefix", prefix}, 120s);
    for (auto name : {"embedpool-node", "embedpool-cli", "libembedpool-client.a",
                      "libembedpool-pool.a", "client.hpp", "protocol.hpp", "version.hpp",
                      "embedpoolConfig.cmake", "embedpoolConfigVersion.cmake",
                      "embedpoolClientTargets.cmake", "FindCAF.cmake",
                      "embedpool-client.pc", "embedpool.ini", "LICENSE"}) {
      INFO("installed file " << name);
      CHECK_FALSE(find_file(prefix, name).empty());
    }
    // The systemd unit and /etc belong to the Debian package only.
    CHECK(find_file(prefix, "embedpool.service").empty());
    auto manifest = pool::test::split_lines(
        pool::test::slurp(fs::path{binary_dir} / "install_manifest.txt"));
    REQUIRE_FALSE(manifest.empty());
    for (auto& file : manifest) {
      INFO("installed " << file);
      CHECK(file.rfind(prefix + "/", 0) == 0);
    }
    auto installed_node = find_file(prefix, "embedpool-node");
    auto version = must_run({installed_node, "--version"}, 30s);
    CHECK(version.out.rfind("embedpool-node 0.", 0) == 0);
    CHECK(version.out.find("\nprotocol 1\n") != std::string::npos);

    // -- the separate CMake project ------------------------------------------
    auto build = (work.path() / "consumer-build").string();
    std::vector<std::string> configure = {cmake,
                                          "-S",
                                          source_dir + "/tests/consumer",
                                          "-B",
                                          build,
                                          "-DCMAKE_PREFIX_PATH=" + prefix,
                                          "-DCMAKE_BUILD_TYPE=Release",
                                          "-DCMAKE_CXX_COMPILER=" + cxx};
    if (!sanitize_flags.empty()) {
      configure.push_back("-DCMAKE_CXX_FLAGS=" + sanitize_flags);
      configure.push_back("-DCMAKE_EXE_LINKER_FLAGS=" + sanitize_flags);
    }
    must_run(configure, 120s);
    must_run({cmake, "--build", build}, 400s);

    node_process node{{}};
    auto port = std::to_string(node.port());
    auto out =
        must_run({build + "/embedpool-consumer", port, "hello world", "second text"}, 60s)
            .out;
    CHECK(out.find("protocol 1; node 0.") != std::string::npos);
    CHECK(out.find("model hash-384") != std::string::npos);
    CHECK(pool::test::split_lines(out).size() == 3);
    CHECK(out.find("dim=384 first=") != std::string::npos);
    // embedpool::pool as a component: its --version text, OpenBLAS included.
    auto full = must_run({build + "/embedpool-consumer-pool"}, 30s).out;
    CHECK(full.find("\nOpenBLAS ") != std::string::npos);

    // -- the same peer with the compiler line of embedpool-client.pc ----------
    auto pc_dir =
        fs::path{find_file(prefix, "embedpool-client.pc")}.parent_path().string();
    auto peer = (work.path() / "peer").string();
    auto line = "PKG_CONFIG_PATH='" + pc_dir + "' && " + cxx + " -std=c++17 " +
                sanitize_flags + " '" + source_dir +
                "/tests/consumer/consumer.cpp' -o '" + peer +
                "' $(pkg-config --cflags --libs embedpool-client)";
    INFO("compile line: " << line);
    must_run({"/bin/sh", "-c", "export " + line}, 400s);
    auto pc_out = must_run({peer, port, "hello world"}, 60s).out;
    CHECK(pc_out.find("dim=384 first=") != std::string::npos);
    // Both peers computed the same first value for "hello world".
    CHECK(pc_out.substr(pc_out.find("dim=")) ==
          out.substr(out.find("dim="), pc_out.size() - pc_out.find("dim=")));
  }
}
