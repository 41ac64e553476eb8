#include "hosting/namespaces.hpp"

#include <openssl/rand.h>

#include <array>
#include <chrono>
#include <stdexcept>

#include "inferllama/digest.hpp"
#include "inferllama/user_name.hpp"

namespace inferllama::hosting {
namespace {

// Keys of RecordTable::hosting. A member is written twice, by organisation and by user, in one batch.
constexpr std::string_view kOrg = "org|";             // org|{org} -> created
constexpr std::string_view kMember = "member|";       // member|{org}|{user} -> role
constexpr std::string_view kMemberOf = "member-of|";  // member-of|{user}|{org} -> role
constexpr std::string_view kRepo = "repo|";           // repo|{ns}/{name}|{type} -> private|id|created

std::string org_key(std::string_view org) {
  return std::string(kOrg) + std::string(org);
}
std::string member_key(std::string_view org, std::string_view user) {
  return std::string(kMember) + std::string(org) + '|' + std::string(user);
}
std::string member_of_key(std::string_view user, std::string_view org) {
  return std::string(kMemberOf) + std::string(user) + '|' + std::string(org);
}
std::string repo_key(const RepoId& repo) {
  return std::string(kRepo) + repo.name + '|' + std::string(repo.type_name());
}

std::string encode(const HostedRepo& repo) {
  return std::string(repo.is_private ? "1" : "0") + '|' + repo.id + '|' + std::to_string(repo.created);
}

HostedRepo decode(const RepoId& id, std::string_view value) {
  const auto first = value.find('|');
  const auto second = value.find('|', first + 1);
  if (first == std::string_view::npos || second == std::string_view::npos)
    throw std::runtime_error("a hosted repo record of " + id.key() + " is damaged");
  return HostedRepo{id, value.substr(0, first) == "1", std::string(value.substr(first + 1, second - first - 1)),
                    std::stoll(std::string(value.substr(second + 1)))};
}

std::int64_t seconds_since_epoch(const Clock& clock) {
  return std::chrono::duration_cast<std::chrono::seconds>(clock.now().time_since_epoch()).count();
}

std::string new_repo_id() {
  std::array<std::uint8_t, 12> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) throw std::runtime_error("no random bytes");
  return hex(bytes);
}

}  // namespace

std::string_view role_name(Role role) {
  switch (role) {
    case Role::read:
      return "read";
    case Role::write:
      return "write";
    case Role::admin:
      return "admin";
  }
  return "read";
}

std::optional<Role> parse_role(std::string_view text) {
  for (Role role : {Role::read, Role::write, Role::admin}) {
    if (text == role_name(role)) return role;
  }
  return std::nullopt;
}

std::string_view namespace_of(const RepoId& repo) {
  return std::string_view(repo.name).substr(0, repo.name.find('/'));
}

Namespaces::Namespaces(RecordStore& records, const Clock& clock) : records_(records), clock_(clock) {
  records_.scan(RecordTable::hosting, kOrg, [&](std::string_view key, std::string_view) {
    org_names_.emplace(key.substr(kOrg.size()));
    return true;
  });
}

Namespaces::Outcome Namespaces::add_org(std::string_view name) {
  if (!is_valid_user_name(name)) return Outcome::invalid;
  std::lock_guard changing(change_mutex_);
  if (is_org(name)) return Outcome::exists;
  records_.write(RecordTable::hosting, {{org_key(name), std::to_string(seconds_since_epoch(clock_))}}, true);
  std::unique_lock lock(orgs_mutex_);
  org_names_.emplace(name);
  return Outcome::done;
}

Namespaces::Outcome Namespaces::remove_org(std::string_view name) {
  std::lock_guard changing(change_mutex_);
  if (!is_org(name)) return Outcome::missing;
  if (!repos_in(name).empty()) return Outcome::exists;
  std::vector<RecordStore::Write> writes{{org_key(name), std::nullopt}};
  for (const Member& member : members(name)) {
    writes.push_back({member_key(name, member.user), std::nullopt});
    writes.push_back({member_of_key(member.user, name), std::nullopt});
  }
  records_.write(RecordTable::hosting, writes, true);
  std::unique_lock lock(orgs_mutex_);
  org_names_.erase(std::string(name));
  return Outcome::done;
}

bool Namespaces::is_org(std::string_view name) const {
  std::shared_lock lock(orgs_mutex_);
  return org_names_.contains(std::string(name));
}

std::vector<std::string> Namespaces::orgs() {
  std::vector<std::string> out;
  records_.scan(RecordTable::hosting, kOrg, [&](std::string_view key, std::string_view) {
    out.emplace_back(key.substr(kOrg.size()));
    return true;
  });
  return out;
}

Namespaces::Outcome Namespaces::set_member(std::string_view org, std::string_view user, Role role) {
  if (!is_valid_user_name(user)) return Outcome::invalid;
  if (!is_org(org)) return Outcome::missing;
  const std::string name(role_name(role));
  records_.write(RecordTable::hosting, {{member_key(org, user), name}, {member_of_key(user, org), name}}, true);
  return Outcome::done;
}

Namespaces::Outcome Namespaces::remove_member(std::string_view org, std::string_view user) {
  if (!records_.get(RecordTable::hosting, member_key(org, user))) return Outcome::missing;
  records_.write(RecordTable::hosting,
                 {{member_key(org, user), std::nullopt}, {member_of_key(user, org), std::nullopt}}, true);
  return Outcome::done;
}

std::vector<Member> Namespaces::members(std::string_view org) {
  std::vector<Member> out;
  const std::string prefix = member_key(org, "");
  records_.scan(RecordTable::hosting, prefix, [&](std::string_view key, std::string_view value) {
    if (auto role = parse_role(value)) out.push_back({std::string(key.substr(prefix.size())), *role});
    return true;
  });
  return out;
}

std::vector<std::pair<std::string, Role>> Namespaces::orgs_of(std::string_view user) {
  std::vector<std::pair<std::string, Role>> out;
  const std::string prefix = member_of_key(user, "");
  records_.scan(RecordTable::hosting, prefix, [&](std::string_view key, std::string_view value) {
    if (auto role = parse_role(value)) out.emplace_back(std::string(key.substr(prefix.size())), *role);
    return true;
  });
  return out;
}

std::optional<Role> Namespaces::role_in(std::string_view user, std::string_view ns) {
  if (user.empty()) return std::nullopt;
  if (user == ns) return Role::admin;
  if (auto role = records_.get(RecordTable::hosting, member_key(ns, user))) return parse_role(*role);
  return std::nullopt;
}

std::optional<HostedRepo> Namespaces::repo(const RepoId& repo) {
  auto value = records_.get(RecordTable::hosting, repo_key(repo));
  if (!value) return std::nullopt;
  return decode(repo, *value);
}

Namespaces::Created Namespaces::create_repo(const RepoId& id, bool is_private) {
  if (auto existing = repo(id)) return {*existing, false};
  HostedRepo created{id, is_private, new_repo_id(), seconds_since_epoch(clock_)};
  records_.write(RecordTable::hosting, {{repo_key(id), encode(created)}}, true);
  return {created, true};
}

Namespaces::Outcome Namespaces::delete_repo(const RepoId& id) {
  if (!repo(id)) return Outcome::missing;
  records_.write(RecordTable::hosting, {{repo_key(id), std::nullopt}}, true);
  return Outcome::done;
}

Namespaces::Outcome Namespaces::set_private(const RepoId& id, bool is_private) {
  auto existing = repo(id);
  if (!existing) return Outcome::missing;
  existing->is_private = is_private;
  records_.write(RecordTable::hosting, {{repo_key(id), encode(*existing)}}, true);
  return Outcome::done;
}

Namespaces::Outcome Namespaces::move_repo(const RepoId& from, const RepoId& to) {
  const auto value = records_.get(RecordTable::hosting, repo_key(from));
  if (!value) return Outcome::missing;
  if (records_.get(RecordTable::hosting, repo_key(to))) return Outcome::exists;
  records_.write(RecordTable::hosting, {{repo_key(to), *value}, {repo_key(from), std::nullopt}}, true);
  return Outcome::done;
}

std::vector<HostedRepo> Namespaces::repos_in(std::string_view ns) {
  std::vector<HostedRepo> out;
  const std::string prefix = std::string(kRepo) + std::string(ns) + '/';
  records_.scan(RecordTable::hosting, prefix, [&](std::string_view key, std::string_view value) {
    const std::string_view rest = key.substr(kRepo.size());
    const auto bar = rest.rfind('|');
    if (bar == std::string_view::npos) return true;
    const auto type = parse_repo_type(rest.substr(bar + 1));
    if (!type) return true;
    const RepoId id{*type, std::string(rest.substr(0, bar))};
    out.push_back(decode(id, value));
    return true;
  });
  return out;
}

}  // namespace inferllama::hosting
