#include "http/rate_limit_headers.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace inferllama::http {
namespace {

const LimitStatus* headline(const Decision& decision) {
  const auto& all = decision.status;
  if (all.empty()) return nullptr;
  if (decision.refused_by) {
    for (const auto& s : all)
      if (s.kind == *decision.refused_by) return &s;
  }
  // The limit with the smallest share left.
  return &*std::min_element(all.begin(), all.end(), [](const LimitStatus& a, const LimitStatus& b) {
    const double share_a = a.quota ? static_cast<double>(a.remaining) / static_cast<double>(a.quota) : 1.0;
    const double share_b = b.quota ? static_cast<double>(b.remaining) / static_cast<double>(b.quota) : 1.0;
    return share_a < share_b;
  });
}

}  // namespace

const char* limit_name(LimitKind kind) {
  switch (kind) {
    case LimitKind::requests:
      return "requests";
    case LimitKind::tokens:
      return "tokens";
    case LimitKind::concurrent:
      return "concurrent";
  }
  return "requests";
}

std::int64_t retry_after_seconds(const Decision& decision) {
  return (std::max<std::int64_t>(decision.retry_after.count(), 1) + 999) / 1000;
}

HeaderList rate_limit_headers(const Decision& decision) {
  HeaderList headers;
  if (decision.status.empty()) return headers;
  // Appended piece by piece: these go on every limited request's answer.
  std::string policy, state;
  policy.reserve(64 * decision.status.size());
  state.reserve(48 * decision.status.size());
  for (const LimitStatus& s : decision.status) {
    if (!policy.empty()) policy += ", ";
    if (!state.empty()) state += ", ";
    ((policy += '"') += limit_name(s.kind)) += "\";q=";
    policy += std::to_string(s.quota);
    if (s.window.count() > 0) (policy += ";w=") += std::to_string(s.window.count());
    if (s.kind == LimitKind::tokens) policy += ";qu=\"content-bytes\"";
    if (s.kind == LimitKind::concurrent) policy += ";qu=\"concurrent-requests\"";
    ((state += '"') += limit_name(s.kind)) += "\";r=";
    state += std::to_string(s.remaining);
    if (s.kind != LimitKind::concurrent) (state += ";t=") += std::to_string(s.reset.count());
  }
  headers.emplace_back("RateLimit-Policy", std::move(policy));
  headers.emplace_back("RateLimit", std::move(state));
  if (const LimitStatus* s = headline(decision)) {
    headers.emplace_back("RateLimit-Limit", std::to_string(s->quota));
    headers.emplace_back("RateLimit-Remaining", std::to_string(s->remaining));
    headers.emplace_back("RateLimit-Reset", std::to_string(s->reset.count()));
  }
  if (!decision.allowed) {
    headers.emplace_back("Retry-After", std::to_string(retry_after_seconds(decision)));
  }
  return headers;
}

std::string rate_limited_body(const Decision& decision, const UserId& who) {
  const LimitStatus* s = headline(decision);
  const std::int64_t retry = retry_after_seconds(decision);
  nlohmann::json body;
  if (!s) {
    body = {{"error", "rate limit exceeded"}, {"retry_after_seconds", retry}};
    return body.dump();
  }
  std::string what;
  switch (s->kind) {
    case LimitKind::requests:
      what = std::to_string(s->quota) + " requests per " + std::to_string(s->window.count()) + " s";
      break;
    case LimitKind::tokens:
      what = std::to_string(s->quota) + " bytes of content per " + std::to_string(s->window.count()) + " s";
      break;
    case LimitKind::concurrent:
      what = std::to_string(s->quota) + " downloads at once";
      break;
  }
  body = {
      {"error", "rate limit exceeded: " + what + " for " + who.str() + "; retry in " + std::to_string(retry) + " s"},
      {"limit", limit_name(s->kind)},
      {"quota", s->quota},
      {"remaining", s->remaining},
      {"retry_after_seconds", retry},
      {"identity", who.str()}};
  if (s->window.count() > 0) body["window_seconds"] = s->window.count();
  if (s->kind == LimitKind::tokens) body["quota_unit"] = "content-bytes";
  return body.dump();
}

}  // namespace inferllama::http
