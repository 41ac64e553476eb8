// A redis-server of a test's own on a free loopback port, and a plain connection to look at (and tamper
// with) what the code under test stored there: for the rate limiter's and the console sessions' tests.
#pragma once
#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace inferllama::testing {

using namespace std::chrono_literals;

// Polls `done` until it holds or `limit` passes: for what happens on other threads or in Redis.
inline bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = 15s) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

inline std::uint16_t free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(fd);
    return 0;
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

inline std::string find_on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string_view dirs = path ? path : "/usr/bin:/bin";
  while (!dirs.empty()) {
    const auto colon = dirs.find(':');
    const std::filesystem::path candidate = std::filesystem::path(std::string(dirs.substr(0, colon))) / program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    dirs.remove_prefix(colon == std::string_view::npos ? dirs.size() : colon + 1);
  }
  return {};
}

// A synchronous connection for looking at (and tampering with) what the limiter stored.
class Inspector {
 public:
  explicit Inspector(std::uint16_t port) {
    timeval timeout{1, 0};
    context_ = redisConnectWithTimeout("127.0.0.1", port, timeout);
  }
  ~Inspector() {
    if (context_) redisFree(context_);
  }
  bool connected() const { return context_ && !context_->err; }
  // The reply as text: integers and strings as they are, errors prefixed with "ERR:", nil as "(nil)".
  std::string command(const std::vector<std::string>& args) {
    if (!connected()) return "ERR:not connected";
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const auto& arg : args) {
      argv.push_back(arg.data());
      lengths.push_back(arg.size());
    }
    auto* reply = static_cast<redisReply*>(
        redisCommandArgv(context_, static_cast<int>(args.size()), argv.data(), lengths.data()));
    if (!reply) return "ERR:" + std::string(context_->errstr);
    std::string out;
    switch (reply->type) {
      case REDIS_REPLY_INTEGER:
        out = std::to_string(reply->integer);
        break;
      case REDIS_REPLY_ERROR:
        out = "ERR:" + std::string(reply->str, reply->len);
        break;
      case REDIS_REPLY_NIL:
        out = "(nil)";
        break;
      case REDIS_REPLY_ARRAY:
        out = "array of " + std::to_string(reply->elements);
        break;
      default:
        out.assign(reply->str, reply->len);
    }
    freeReplyObject(reply);
    return out;
  }

 private:
  redisContext* context_ = nullptr;
};

// A redis-server of the test's own, stopped by its PID.
class RedisServer {
 public:
  ~RedisServer() { stop(); }

  // Starts on `port` and waits until it answers; returns why not, or "" once it does.
  std::string start(std::uint16_t port, std::vector<std::string> options = {}) {
    port_ = port;
    options_ = std::move(options);
    const std::string program = find_on_path("redis-server");
    if (program.empty()) return "redis-server is not installed (scripts/install-deps.sh --test installs it)";
    const std::string port_text = std::to_string(port);
    std::vector<std::string> args{program,        "--port", port_text,     "--bind", "127.0.0.1",  "--save", "",
                                  "--appendonly", "no",     "--daemonize", "no",     "--loglevel", "warning"};
    args.insert(args.end(), options_.begin(), options_.end());
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) return "cannot start redis-server: " + std::string(std::strerror(errno));
    if (pid_ == 0) {
      // Dies with the test, however the test ends. Only async-signal-safe calls from here on.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);
      const int null = ::open("/dev/null", O_WRONLY);
      if (null >= 0) ::dup2(null, STDOUT_FILENO);
      ::execv(program.c_str(), argv.data());
      ::_exit(127);
    }
    std::string exited;
    const bool answers = eventually([&] {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exited = "redis-server exited at start";
        return true;
      }
      Inspector probe(port);
      const std::string answer = probe.command({"PING"});
      return answer == "PONG" || answer.starts_with("ERR:NOAUTH");
    });
    if (!exited.empty()) return exited;
    return answers ? "" : "redis-server did not answer PING within 15 s";
  }
  std::string restart() { return start(port_, options_); }

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGCONT);  // a frozen server cannot act on SIGTERM
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  void freeze() { ::kill(pid_, SIGSTOP); }
  void thaw() { ::kill(pid_, SIGCONT); }
  std::uint16_t port() const { return port_; }

 private:
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::vector<std::string> options_;
};

}  // namespace inferllama::testing
