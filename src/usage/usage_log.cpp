#include "usage/usage_log.hpp"

#include <nlohmann/json.hpp>
#include <stdexcept>

namespace inferllama::usage {
namespace {

using nlohmann::json;

// A row: "d|<day>|<identity>|<repo>" -> {"requests":..,"bytes_from_cache":..,"bytes_from_upstream":..,
// "token_bytes":..}. JSON so that a counter added later reads as 0 in older rows. Identities never
// contain '|' (user names are [A-Za-z0-9._-], addresses "anon:<ip>"), so the key splits unambiguously.
constexpr std::string_view kRowPrefix = "d|";
constexpr std::size_t kDaySize = 10;  // "2026-12-01"

std::string row_key(const std::string& day, const std::string& identity, const std::string& repo) {
  return std::string(kRowPrefix) + day + '|' + identity + '|' + repo;
}

std::string encode(const UsageCounts& c) {
  return json{{"requests", c.requests},
              {"bytes_from_cache", c.bytes_from_cache},
              {"bytes_from_upstream", c.bytes_from_upstream},
              {"token_bytes", c.token_bytes}}
      .dump();
}

UsageCounts decode(std::string_view key, std::string_view value) {
  try {
    const json row = json::parse(value);
    UsageCounts c;
    c.requests = row.value("requests", std::uint64_t{0});
    c.bytes_from_cache = row.value("bytes_from_cache", std::uint64_t{0});
    c.bytes_from_upstream = row.value("bytes_from_upstream", std::uint64_t{0});
    c.token_bytes = row.value("token_bytes", std::uint64_t{0});
    return c;
  } catch (const json::exception& e) {
    throw std::runtime_error("corrupt usage row " + std::string(key) + ": " + e.what());
  }
}

// (day, identity, repo) of a row's key; nullopt for a key not in that form.
std::optional<std::tuple<std::string, std::string, std::string>> split_key(std::string_view key) {
  if (!key.starts_with(kRowPrefix)) return std::nullopt;
  key.remove_prefix(kRowPrefix.size());
  if (key.size() <= kDaySize || key[kDaySize] != '|') return std::nullopt;
  const auto day = key.substr(0, kDaySize);
  key.remove_prefix(kDaySize + 1);
  const auto bar = key.find('|');
  if (bar == std::string_view::npos) return std::nullopt;
  return std::make_tuple(std::string(day), std::string(key.substr(0, bar)), std::string(key.substr(bar + 1)));
}

}  // namespace

UsageCounts& UsageCounts::operator+=(const UsageCounts& o) {
  requests += o.requests;
  bytes_from_cache += o.bytes_from_cache;
  bytes_from_upstream += o.bytes_from_upstream;
  token_bytes += o.token_bytes;
  return *this;
}

std::string day_of(SystemTime t) {
  // Once per request: digits by hand, no printf.
  const std::chrono::year_month_day date{std::chrono::floor<std::chrono::days>(t)};
  int year = static_cast<int>(date.year());
  const auto month = static_cast<unsigned>(date.month());
  const auto day = static_cast<unsigned>(date.day());
  std::string text = "0000-00-00";
  for (std::size_t i = 4; i-- > 0; year /= 10) text[i] = static_cast<char>('0' + year % 10);
  text[5] = static_cast<char>('0' + month / 10);
  text[6] = static_cast<char>('0' + month % 10);
  text[8] = static_cast<char>('0' + day / 10);
  text[9] = static_cast<char>('0' + day % 10);
  return text;
}

std::optional<SystemTime> parse_day(std::string_view day) {
  if (day.size() != kDaySize || day[4] != '-' || day[7] != '-') return std::nullopt;
  auto number = [&](std::size_t from, std::size_t count) -> std::optional<int> {
    int value = 0;
    for (std::size_t i = from; i < from + count; ++i) {
      if (day[i] < '0' || day[i] > '9') return std::nullopt;
      value = value * 10 + (day[i] - '0');
    }
    return value;
  };
  const auto year = number(0, 4);
  const auto month = number(5, 2);
  const auto day_of_month = number(8, 2);
  if (!year || !month || !day_of_month) return std::nullopt;
  const std::chrono::year_month_day date{std::chrono::year(*year), std::chrono::month(static_cast<unsigned>(*month)),
                                         std::chrono::day(static_cast<unsigned>(*day_of_month))};
  if (!date.ok()) return std::nullopt;
  return std::chrono::time_point_cast<SystemTime::duration>(std::chrono::sys_days(date));
}

UsageLog::UsageLog(RecordStore& records, const Clock& clock) : records_(records), clock_(clock) {}

UsageLog::~UsageLog() = default;

void UsageLog::add(const UserId& who, const std::string& repo, const UsageCounts& delta) {
  Key key{day_of(clock_.now()), who.str(), repo};
  std::lock_guard lock(mutex_);
  pending_[std::move(key)] += delta;
}

// One synced batch per flush: the rows are read, added to and written back together. Should the write
// fail, the counts go back to pending for the next flush, and the error goes to the caller.
void UsageLog::flush() {
  std::lock_guard flushing(flush_mutex_);
  std::map<Key, UsageCounts> batch;
  {
    std::lock_guard lock(mutex_);
    batch.swap(pending_);
  }
  if (batch.empty()) return;
  try {
    std::vector<RecordStore::Write> writes;
    writes.reserve(batch.size());
    for (const auto& [key, delta] : batch) {
      const auto& [day, identity, repo] = key;
      std::string stored_key = row_key(day, identity, repo);
      UsageCounts total = delta;
      if (auto stored = records_.get(RecordTable::usage, stored_key)) total += decode(stored_key, *stored);
      writes.push_back({std::move(stored_key), encode(total)});
    }
    records_.write(RecordTable::usage, writes, /*sync=*/true);
  } catch (...) {
    std::lock_guard lock(mutex_);
    for (const auto& [key, delta] : batch) pending_[key] += delta;
    throw;
  }
}

std::vector<UsageRow> UsageLog::query(const std::optional<UserId>& who, const std::optional<std::string>& since) {
  // No flush in progress: its rows are then either still pending or already stored, never in between.
  std::lock_guard flushing(flush_mutex_);
  std::map<Key, UsageCounts> rows;
  auto wanted = [&](const std::string& day, const std::string& identity) {
    return (!who || identity == who->str()) && (!since || day >= *since);
  };
  auto collect = [&](std::string_view key, std::string_view value) {
    if (auto parts = split_key(key)) {
      const auto& [day, identity, repo] = *parts;
      if (wanted(day, identity)) rows[*parts] += decode(key, value);
    }
    return true;
  };
  auto since_time = since ? parse_day(*since) : std::nullopt;
  if (since_time) {
    // Rows are keyed day first: read the days asked for (from the oldest kept) rather than every day.
    std::optional<SystemTime> oldest;
    records_.scan(RecordTable::usage, kRowPrefix, [&](std::string_view key, std::string_view) {
      if (auto parts = split_key(key)) oldest = parse_day(std::get<0>(*parts));
      return false;
    });
    const auto today = std::chrono::floor<std::chrono::days>(clock_.now());
    auto day = std::chrono::floor<std::chrono::days>(std::max(*since_time, oldest.value_or(*since_time)));
    for (; oldest && day <= today; day += std::chrono::days(1)) {
      records_.scan(RecordTable::usage, std::string(kRowPrefix) + day_of(day) + '|', collect);
    }
  } else {
    records_.scan(RecordTable::usage, kRowPrefix, collect);
  }
  {
    std::lock_guard lock(mutex_);
    for (const auto& [key, counts] : pending_) {
      if (wanted(std::get<0>(key), std::get<1>(key))) rows[key] += counts;
    }
  }
  std::vector<UsageRow> out;
  out.reserve(rows.size());
  for (auto& [key, counts] : rows) {
    auto& [day, identity, repo] = key;
    out.push_back(UsageRow{day, UserId::parse(identity), repo, counts});
  }
  return out;
}

// The cutoff is the day of (now - retention): rows of that day stay, rows of every earlier day go. With
// 90 days on 2026-12-01 the cutoff is 2026-09-02, so 2026-09-01 is the newest day deleted.
std::uint64_t UsageLog::expire(std::chrono::seconds retention) {
  const std::string end = std::string(kRowPrefix) + day_of(clock_.now() - retention);
  std::uint64_t doomed = 0;
  records_.scan(RecordTable::usage, kRowPrefix, [&](std::string_view key, std::string_view) {
    if (key >= end) return false;
    ++doomed;
    return true;
  });
  if (doomed > 0) records_.erase_range(RecordTable::usage, std::string(kRowPrefix), end);
  return doomed;
}

// Rows are keyed day first: each kept day is one seek for the identity's rows, from the oldest day stored.
void UsageLog::scan_rows_of(const UserId& who,
                            const std::function<void(std::string_view key, std::string_view value)>& visit) {
  std::optional<SystemTime> oldest;
  records_.scan(RecordTable::usage, kRowPrefix, [&](std::string_view key, std::string_view) {
    if (auto parts = split_key(key)) oldest = parse_day(std::get<0>(*parts));
    return false;
  });
  if (!oldest) return;
  const auto today = std::chrono::floor<std::chrono::days>(clock_.now());
  for (auto day = std::chrono::floor<std::chrono::days>(*oldest); day <= today; day += std::chrono::days(1)) {
    records_.scan(RecordTable::usage, std::string(kRowPrefix) + day_of(day) + '|' + who.str() + '|',
                  [&](std::string_view key, std::string_view value) {
                    visit(key, value);
                    return true;
                  });
  }
}

std::uint64_t UsageLog::forget(const UserId& who) {
  std::lock_guard flushing(flush_mutex_);
  {
    std::lock_guard lock(mutex_);
    std::erase_if(pending_, [&](const auto& row) { return std::get<1>(row.first) == who.str(); });
  }
  std::vector<RecordStore::Write> doomed;
  scan_rows_of(who, [&](std::string_view key, std::string_view) {
    doomed.push_back({std::string(key), std::nullopt});
  });
  if (!doomed.empty()) records_.write(RecordTable::usage, doomed, /*sync=*/true);
  return doomed.size();
}

std::uint64_t UsageLog::rename(const UserId& from, const UserId& to) {
  std::lock_guard flushing(flush_mutex_);
  {
    std::lock_guard lock(mutex_);
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (std::get<1>(it->first) != from.str()) {
        ++it;
        continue;
      }
      pending_[Key{std::get<0>(it->first), to.str(), std::get<2>(it->first)}] += it->second;
      it = pending_.erase(it);
    }
  }
  // Rows `to` has already (a name taken back) are added to, not replaced.
  std::map<std::string, UsageCounts> moved;
  std::vector<RecordStore::Write> writes;
  scan_rows_of(from, [&](std::string_view key, std::string_view value) {
    const auto parts = split_key(key);
    if (!parts) return;
    moved[row_key(std::get<0>(*parts), to.str(), std::get<2>(*parts))] += decode(key, value);
    writes.push_back({std::string(key), std::nullopt});
  });
  for (auto& [key, counts] : moved) {
    if (auto existing = records_.get(RecordTable::usage, key)) counts += decode(key, *existing);
    writes.push_back({key, encode(counts)});
  }
  if (!writes.empty()) records_.write(RecordTable::usage, writes, /*sync=*/true);
  return moved.size();
}

}  // namespace inferllama::usage
