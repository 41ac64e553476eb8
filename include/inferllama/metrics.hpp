#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace inferllama::metrics {

// Prometheus text format (version 0.0.4) writers for the few shapes the node needs.

class Counter {
 public:
  void add(std::uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

// A latency histogram with fixed buckets (seconds), lock-free to observe.
class Histogram {
 public:
  static constexpr std::array<double, 12> kBounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                  0.05,   0.1,   0.25,   0.5,   1,     5};
  void observe(double seconds);
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::array<std::atomic<std::uint64_t>, kBounds.size() + 1> buckets_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_micros_{0};
};

// Counters or histograms keyed by a rendered label set ("route=\"resolve\",status=\"200\"").
template <class Metric>
class Family {
 public:
  Metric& with(const std::string& labels) {
    std::lock_guard lock(mutex_);
    return members_[labels];
  }
  template <class Fn>
  void each(Fn&& fn) const {
    std::lock_guard lock(mutex_);
    for (const auto& [labels, metric] : members_) fn(labels, metric);
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, Metric> members_;  // node-based: references stay valid
};

// Appends "# HELP", "# TYPE" and one sample line.
void write_header(std::string& out, const std::string& name, const std::string& type, const std::string& help);
void write_sample(std::string& out, const std::string& name, const std::string& labels, double value);

// One metric family, declared once by the module that owns its numbers (a constant beside the code that
// renders it), so its name, type and help are typed in one place.
struct FamilySpec {
  std::string_view name;
  std::string_view type;  // "counter", "gauge", "histogram"
  std::string_view help;
};
void write_header(std::string& out, const FamilySpec& family);
void write_sample(std::string& out, const FamilySpec& family, const std::string& labels, double value);
// A family of one unlabelled sample: its header and its value.
void write_family(std::string& out, const FamilySpec& family, double value);

// Gathers the families of every module of a node into one /metrics text. Each module adds one function
// that writes its own families (header, then samples); a family belongs to one module only.
class Registry {
 public:
  using Render = std::function<void(std::string& out)>;
  // Before the first render().
  void add(Render render);
  void render(std::string& out) const;

 private:
  std::vector<Render> sources_;
};

}  // namespace inferllama::metrics
