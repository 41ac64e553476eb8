#include "inferllama/metrics.hpp"

#include <charconv>
#include <cstdio>

namespace inferllama::metrics {

void Histogram::observe(double seconds) {
  std::size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_micros_.fetch_add(static_cast<std::uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

void Histogram::render(std::string& out, const std::string& name, const std::string& labels) const {
  const std::string prefix = labels.empty() ? "" : labels + ",";
  std::uint64_t cumulative = 0;
  char bound[32];
  for (std::size_t i = 0; i < kBounds.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    std::snprintf(bound, sizeof bound, "%g", kBounds[i]);
    write_sample(out, name + "_bucket", prefix + "le=\"" + bound + "\"", static_cast<double>(cumulative));
  }
  cumulative += buckets_[kBounds.size()].load(std::memory_order_relaxed);
  write_sample(out, name + "_bucket", prefix + "le=\"+Inf\"", static_cast<double>(cumulative));
  write_sample(out, name + "_sum", labels, static_cast<double>(sum_micros_.load(std::memory_order_relaxed)) / 1e6);
  write_sample(out, name + "_count", labels, static_cast<double>(count_.load(std::memory_order_relaxed)));
}

void write_header(std::string& out, const std::string& name, const std::string& type, const std::string& help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void write_sample(std::string& out, const std::string& name, const std::string& labels, double value) {
  char number[40];
  std::size_t length = 0;
  // Counters print as integers; sums, fractions and timestamps in the shortest form that reads back as
  // the same double (a Unix time in seconds with milliseconds needs 13 digits).
  if (value == static_cast<double>(static_cast<std::uint64_t>(value)) && value >= 0 && value < 1e18) {
    length =
        static_cast<std::size_t>(std::snprintf(number, sizeof number, "%llu", static_cast<unsigned long long>(value)));
  } else {
    length = static_cast<std::size_t>(std::to_chars(number, number + sizeof number, value).ptr - number);
  }
  out += name;
  if (!labels.empty()) out += "{" + labels + "}";
  out += " ";
  out.append(number, length);
  out += "\n";
}

void write_header(std::string& out, const FamilySpec& family) {
  out += "# HELP ";
  out += family.name;
  out += " ";
  out += family.help;
  out += "\n# TYPE ";
  out += family.name;
  out += " ";
  out += family.type;
  out += "\n";
}

void write_sample(std::string& out, const FamilySpec& family, const std::string& labels, double value) {
  write_sample(out, std::string(family.name), labels, value);
}

void write_family(std::string& out, const FamilySpec& family, double value) {
  write_header(out, family);
  write_sample(out, family, "", value);
}

void Registry::add(Render render) {
  sources_.push_back(std::move(render));
}

void Registry::render(std::string& out) const {
  for (const auto& render : sources_) render(out);
}

}  // namespace inferllama::metrics
