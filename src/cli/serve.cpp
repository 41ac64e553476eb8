#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <atomic>
#include <boost/asio/signal_set.hpp>
#include <chrono>
#include <csignal>
#include <functional>

#include "cli/commands.hpp"
#include "node/node.hpp"
#include "util/periodic_task.hpp"

namespace inferllama::cli {
namespace {

// Downloads keep one descriptor per staged chunk: allow as many as the hard limit.
void raise_fd_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

int serve(const Config& config) {
  // Logs go to stderr: stdout carries only the "listening on" line that scripts read.
  spdlog::set_default_logger(spdlog::stderr_color_mt("inferllama"));
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  raise_fd_limit();
  // Everything the node creates is its own only: the index holds users' keys and passkeys.
  ::umask(077);
  // sendfile(2) to a client that reset its connection raises SIGPIPE: a client must never stop the node
  // (the write fails with EPIPE instead, and that response ends).
  std::signal(SIGPIPE, SIG_IGN);
  // SIGHUP reopens the access log (below); until that handler is in place one must not stop the node.
  std::signal(SIGHUP, SIG_IGN);
  if (const unsigned open_bits = make_private_dir(config.data_dir)) {
    spdlog::warn(
        "the data directory {} is open to others (group/other mode bits {:03o}) and holds users' keys: "
        "chmod 700 it (the node leaves its modes as they are)",
        config.data_dir.string(), open_bits);
  }

  node::Node node(config);
  node.start();

  // SIGINT or SIGTERM: stop accepting, then stop once the responses in flight are done, or after 30 s;
  // the same signal again stops at once. Downloads cut short resume from their chunks at the next start.
  constexpr auto kDrainLimit = std::chrono::seconds(30);
  asio::signal_set signals(node.io(), SIGINT, SIGTERM);
  PeriodicTask drain_check(node.io().get_executor(), node.io().get_executor());
  std::chrono::steady_clock::time_point deadline, next_report;
  // Once: the node's shutdown runs the I/O context again to let responses unwind, and a later stop()
  // (the drain check firing again, another signal) would cut that short.
  std::atomic<bool> stopping{false};
  auto stop_once = [&] {
    if (stopping.exchange(true)) return;
    boost::system::error_code ignored;
    signals.cancel(ignored);
    node.stop();
  };
  std::function<void(const boost::system::error_code&, int)> on_signal = [&](const boost::system::error_code& ec,
                                                                             int signal) {
    if (ec) return;
    const auto [connections, downloads] = node.in_flight();
    if (deadline != std::chrono::steady_clock::time_point{}) {
      spdlog::warn("signal {} again: stopping now; {} downloads cut short resume at the next start", signal, downloads);
      stop_once();
      return;
    }
    spdlog::info(
        "signal {}: no new connections; waiting up to {} s for {} responses in flight ({} downloads from the "
        "upstream, which resume at the next start if cut short); signal again to stop now",
        signal, kDrainLimit.count(), connections, downloads);
    deadline = std::chrono::steady_clock::now() + kDrainLimit;
    next_report = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    node.begin_drain();
    signals.async_wait(on_signal);
    drain_check.start(
        "drain", std::chrono::milliseconds(50),
        [&] {
          const auto now = std::chrono::steady_clock::now();
          if (stopping) return;
          if (node.drained() || now >= deadline) {
            if (!node.drained()) spdlog::warn("{} s passed: stopping with responses in flight", kDrainLimit.count());
            stop_once();
          } else if (now >= next_report) {
            next_report = now + std::chrono::seconds(5);
            const auto left = node.in_flight();
            spdlog::info("still waiting for {} responses ({} downloads), {} s left", left.connections, left.downloads,
                         std::chrono::ceil<std::chrono::seconds>(deadline - now).count());
          }
        },
        PeriodicTask::First::now);
  };
  signals.async_wait(on_signal);
  // SIGHUP: the access log file is opened again at its path, so logrotate can move it away (postrotate
  // `kill -HUP`), and the repo rules are read again; the node goes on serving.
  asio::signal_set hangups(node.io(), SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_hangup = [&](const boost::system::error_code& ec, int) {
    if (ec) return;
    node.reopen_logs();
    node.reload_repo_rules();
    hangups.async_wait(on_hangup);
  };
  hangups.async_wait(on_hangup);
  node.run();
  return 0;
}

}  // namespace inferllama::cli
