// Helpers for tests that run real processes: a temporary directory, a child
// process that is always killed and reaped, a bounded "run and capture" for
// short-lived commands, and an embedpool node started on a free loopback port.
//
// Nothing here uses Catch2: failures throw std::runtime_error with a message
// that says what was expected (Catch2 reports it as the test's failure).
// Thread-safety: each object is used by one thread; distinct objects are
// independent.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace pool::test {

/// A fresh directory under the system temp dir, removed with its contents on
/// destruction.
class temp_dir {
 public:
  temp_dir() {
    auto pattern =
        (std::filesystem::temp_directory_path() / "embedpool-it-XXXXXX").string();
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) == nullptr)
      throw std::runtime_error("mkdtemp failed: " + std::string{std::strerror(errno)});
    path_ = buf.data();
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::filesystem::path& path() const { return path_; }

  /// Writes `content` to `name` inside the directory; returns the full path.
  std::string write(const std::string& name, const std::string& content) const {
    auto file = path_ / name;
    std::ofstream out{file, std::ios::binary};
    out << content;
    if (!out)
      throw std::runtime_error("cannot write " + file.string());
    return file.string();
  }

 private:
  std::filesystem::path path_;
};

/// Whole content of a file, or "" if it cannot be read.
inline std::string slurp(const std::filesystem::path& file) {
  std::ifstream in{file, std::ios::binary};
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

/// Decoded result of waitpid: exit code, or the signal that ended the process.
struct exit_status {
  bool exited = false;  // true: `code` is the exit code; false: killed by `signal`
  int code = -1;
  int signal = 0;

  static exit_status from_wait(int status) {
    exit_status result;
    if (WIFEXITED(status)) {
      result.exited = true;
      result.code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      result.signal = WTERMSIG(status);
    }
    return result;
  }

  std::string describe() const {
    return exited ? "exit code " + std::to_string(code)
                  : "killed by signal " + std::to_string(signal);
  }
};

/// Redirections of a spawned process; an empty path leaves the stream as is.
struct redirections {
  std::string stdin_file = "/dev/null";
  std::string stdout_file;
  std::string stderr_file;
};

/// A child process started with fork + execv. Owns the pid: the destructor
/// SIGKILLs the process if it is still running and reaps it, so a failing
/// test never leaves a process behind. The child also gets SIGKILL when the
/// thread that started it ends (PR_SET_PDEATHSIG), which covers a test
/// process that is itself killed: start children from the test's main thread.
class child_process {
 public:
  child_process(const std::vector<std::string>& argv, const redirections& io) {
    spawn(argv, io, -1, -1);
  }

  /// Spawns with stdout and stderr connected to pipes the caller reads via
  /// `stdout_fd()` / `stderr_fd()` (owned by this object).
  child_process(const std::vector<std::string>& argv, const std::string& stdin_file,
                bool capture) {
    redirections io;
    io.stdin_file = stdin_file;
    if (!capture) {
      spawn(argv, io, -1, -1);
      return;
    }
    int out_pipe[2] = {-1, -1};
    int err_pipe[2] = {-1, -1};
    auto close_all = [&] {
      for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]})
        if (fd >= 0)
          close(fd);
    };
    if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
      auto err = std::string{std::strerror(errno)};
      close_all();
      throw std::runtime_error("pipe2 failed: " + err);
    }
    try {
      spawn(argv, io, out_pipe[1], err_pipe[1]);
    } catch (...) {
      close_all();
      throw;
    }
    close(out_pipe[1]);
    close(err_pipe[1]);
    out_fd_ = out_pipe[0];
    err_fd_ = err_pipe[0];
  }

  ~child_process() {
    if (pid_ > 0 && !status_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
    for (int fd : {out_fd_, err_fd_})
      if (fd >= 0)
        close(fd);
  }

  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  pid_t pid() const { return pid_; }
  int stdout_fd() const { return out_fd_; }
  int stderr_fd() const { return err_fd_; }

  /// Sends `sig` unless the process was already reaped.
  void signal(int sig) {
    if (!status_)
      ::kill(pid_, sig);
  }

  /// Reaps the process if it has exited; never blocks.
  std::optional<exit_status> poll_exit() {
    if (!status_) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_)
        status_ = exit_status::from_wait(status);
    }
    return status_;
  }

  /// Waits up to `timeout` for the process to exit; none if it is still running.
  std::optional<exit_status> wait_exit(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!poll_exit() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return poll_exit();
  }

 private:
  /// Forks and execs `argv`. Redirects stdin/stdout/stderr to the files of
  /// `io` (empty: inherit), or stdout/stderr to `out_fd`/`err_fd` if >= 0.
  /// Throws if fork or exec fails.
  void spawn(const std::vector<std::string>& argv, const redirections& io, int out_fd,
             int err_fd) {
    // Everything the child touches is prepared before fork: after it, the
    // child may only make async-signal-safe calls.
    std::vector<char*> args;
    for (const auto& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const char* in_file = io.stdin_file.empty() ? nullptr : io.stdin_file.c_str();
    const char* out_file = io.stdout_file.empty() ? nullptr : io.stdout_file.c_str();
    const char* err_file = io.stderr_file.empty() ? nullptr : io.stderr_file.c_str();
    int exec_pipe[2];  // the child reports a failed exec through it
    if (pipe2(exec_pipe, O_CLOEXEC) != 0)
      throw std::runtime_error("pipe2 failed: " + std::string{std::strerror(errno)});
    pid_t parent = getpid();
    pid_ = fork();
    if (pid_ < 0) {
      auto err = std::string{std::strerror(errno)};
      close(exec_pipe[0]);
      close(exec_pipe[1]);
      throw std::runtime_error("fork failed: " + err);
    }
    if (pid_ == 0) {
      auto fail = [&] {
        int e = errno;
        (void)!write(exec_pipe[1], &e, sizeof(e));
        _exit(127);
      };
      if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(127);  // the parent is already gone
      auto redirect_file = [&](const char* file, int target, int flags) {
        if (file == nullptr)
          return;
        int fd = open(file, flags, 0644);
        if (fd < 0 || dup2(fd, target) < 0)
          fail();
        close(fd);
      };
      redirect_file(in_file, STDIN_FILENO, O_RDONLY);
      redirect_file(out_file, STDOUT_FILENO, O_WRONLY | O_CREAT | O_TRUNC);
      redirect_file(err_file, STDERR_FILENO, O_WRONLY | O_CREAT | O_TRUNC);
      if ((out_fd >= 0 && dup2(out_fd, STDOUT_FILENO) < 0) ||
          (err_fd >= 0 && dup2(err_fd, STDERR_FILENO) < 0))
        fail();
      execv(args[0], args.data());
      fail();
    }
    close(exec_pipe[1]);
    int child_errno = 0;
    ssize_t n;
    while ((n = read(exec_pipe[0], &child_errno, sizeof(child_errno))) < 0 &&
           errno == EINTR) {
    }
    close(exec_pipe[0]);
    if (n > 0) {
      int status = 0;
      while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      status_ = exit_status::from_wait(status);
      throw std::runtime_error("cannot start " + argv[0] + ": " +
                               std::strerror(child_errno));
    }
  }

  pid_t pid_ = -1;
  std::optional<exit_status> status_;
  int out_fd_ = -1;
  int err_fd_ = -1;
};

/// Output of a finished short-lived command.
struct run_result {
  exit_status status;
  std::string out;
  std::string err;
};

/// Runs `argv` to completion with stdin from `stdin_file`, capturing stdout
/// and stderr. Throws if it does not finish within `timeout` (the process is
/// killed).
inline run_result run_command(const std::vector<std::string>& argv,
                              std::chrono::milliseconds timeout,
                              const std::string& stdin_file = "/dev/null") {
  child_process proc{argv, stdin_file, true};
  run_result result;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  pollfd fds[2] = {{proc.stdout_fd(), POLLIN, 0}, {proc.stderr_fd(), POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_streams = 2;
  char buf[4096];
  while (open_streams > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      throw std::runtime_error(argv[0] + " did not finish within " +
                               std::to_string(timeout.count()) +
                               " ms; stderr so far: " + result.err);
    int rc = ::poll(fds, 2, static_cast<int>(left.count()));
    if (rc < 0 && errno != EINTR)
      throw std::runtime_error("poll failed: " + std::string{std::strerror(errno)});
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0)
        continue;
      auto n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        fds[i].fd = -1;  // EOF or error: stop polling this stream
        --open_streams;
      }
    }
  }
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  auto status = proc.wait_exit(std::max(left, std::chrono::milliseconds(1000)));
  if (!status)
    throw std::runtime_error(argv[0] + " closed its output but did not exit");
  result.status = *status;
  return result;
}

/// Splits text into lines (without the newline characters); a final
/// unterminated line is kept.
inline std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line))
    lines.push_back(line);
  return lines;
}

/// An `embedpool-node` process listening on 127.0.0.1 with a port picked by
/// the OS, logging into its own temporary directory. Killed (SIGKILL) and
/// reaped on destruction unless it exited before.
class node_process {
 public:
  /// Starts the node with `extra_args` and waits (up to `startup_timeout`) for
  /// the `event=listening` line in its log file.
  explicit node_process(
      const std::vector<std::string>& extra_args,
      std::chrono::milliseconds startup_timeout = std::chrono::seconds(10)) {
    log_file_ = (dir_.path() / "supervisor.log").string();
    // Status fresh at every question (no snapshot reuse), so that tests can
    // read counters right after the requests they count.
    std::vector<std::string> argv = {EMBEDPOOL_NODE_BIN, "--node.host=127.0.0.1",
                                     "--node.port=0", "--log.file=" + log_file_,
                                     "--status.max-age=0s"};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    redirections io;
    io.stdout_file = (dir_.path() / "stdout.txt").string();
    io.stderr_file = (dir_.path() / "stderr.txt").string();
    stderr_file_ = io.stderr_file;
    proc_.emplace(argv, io);
    port_ = wait_for_port(startup_timeout);
  }

  uint16_t port() const { return port_; }
  child_process& process() { return *proc_; }
  const temp_dir& dir() const { return dir_; }
  std::string log() const { return slurp(log_file_); }
  std::string stderr_text() const { return slurp(stderr_file_); }

  /// Waits up to `timeout` for a log line containing `needle`.
  bool wait_for_log(const std::string& needle, std::chrono::milliseconds timeout) const {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (log().find(needle) != std::string::npos)
        return true;
      if (std::chrono::steady_clock::now() >= deadline)
        return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

 private:
  /// The N of the first complete `event=listening ... port=N` line, or 0 if
  /// there is none yet.
  static unsigned long listening_port(const std::string& text) {
    auto ev = text.find("event=listening ");
    if (ev == std::string::npos)
      return 0;
    auto eol = text.find('\n', ev);
    if (eol == std::string::npos)
      return 0;  // the line is still being written
    auto line = text.substr(ev, eol - ev);
    auto key = line.find(" port=");
    if (key == std::string::npos)
      return 0;
    auto digits = line.c_str() + key + 6;
    char* end = nullptr;
    auto port = std::strtoul(digits, &end, 10);
    return end != digits ? port : 0;
  }

  uint16_t wait_for_port(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto text = log();
      if (auto port = listening_port(text)) {
        if (port > 65535)
          throw std::runtime_error("node logged an invalid port: " +
                                   std::to_string(port));
        return static_cast<uint16_t>(port);
      }
      if (auto st = proc_->poll_exit())
        throw std::runtime_error("embedpool-node exited (" + st->describe() +
                                 ") before listening; stderr: " + stderr_text());
      if (std::chrono::steady_clock::now() >= deadline)
        throw std::runtime_error(
            "embedpool-node logged no 'event=listening ... port=N' line within " +
            std::to_string(timeout.count()) + " ms; log: " + text +
            "; stderr: " + stderr_text());
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  temp_dir dir_;  // declared first: outlives the process
  std::string log_file_;
  std::string stderr_file_;
  std::optional<child_process> proc_;
  uint16_t port_ = 0;
};

}  // namespace pool::test
