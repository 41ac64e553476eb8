// The namespaces a node owns and the repos it hosts in them. Each node user owns the namespace of their
// name; admins create organisations, whose members read, write or administer its repos. A hosted repo is
// public or private: private ones are readable by the namespace's owner and members only.
#pragma once
#include <cstdint>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "inferllama/clock.hpp"
#include "inferllama/records.hpp"
#include "inferllama/repo.hpp"

namespace inferllama::hosting {

enum class Role { read, write, admin };
std::string_view role_name(Role role);
std::optional<Role> parse_role(std::string_view text);

struct Member {
  std::string user;
  Role role = Role::read;
};

struct HostedRepo {
  RepoId repo;
  bool is_private = false;
  std::string id;            // 24 hex digits, as the Hub's repo ids
  std::int64_t created = 0;  // seconds since the epoch
};

class Namespaces {
 public:
  Namespaces(RecordStore& records, const Clock& clock);

  // Organisations. Names follow the user name rule and may not be a user's (the caller checks users).
  enum class Outcome { done, exists, missing, invalid };
  Outcome add_org(std::string_view name);
  Outcome remove_org(std::string_view name);  // only when it hosts no repo
  bool is_org(std::string_view name) const;   // from memory: the request path asks it
  std::vector<std::string> orgs();
  Outcome set_member(std::string_view org, std::string_view user, Role role);
  Outcome remove_member(std::string_view org, std::string_view user);
  std::vector<Member> members(std::string_view org);
  // The organisations `user` belongs to, with their roles.
  std::vector<std::pair<std::string, Role>> orgs_of(std::string_view user);

  // What `user` may do in `ns`: everything in their own, their role in an organisation, nothing else.
  std::optional<Role> role_in(std::string_view user, std::string_view ns);

  // Repos.
  std::optional<HostedRepo> repo(const RepoId& repo);
  // The repo as it was created, or as it already was (`created` false).
  struct Created {
    HostedRepo repo;
    bool created = false;
  };
  Created create_repo(const RepoId& repo, bool is_private);
  Outcome delete_repo(const RepoId& repo);
  Outcome set_private(const RepoId& repo, bool is_private);
  // The repo's record under another name, with its id, visibility and creation time (a namespace renamed);
  // exists when `to` has a record already.
  Outcome move_repo(const RepoId& from, const RepoId& to);
  std::vector<HostedRepo> repos_in(std::string_view ns);

 private:
  RecordStore& records_;
  const Clock& clock_;
  std::mutex change_mutex_;  // one organisation added or removed at a time
  mutable std::shared_mutex orgs_mutex_;
  std::unordered_set<std::string> org_names_;
};

// "acme" of "acme/model".
std::string_view namespace_of(const RepoId& repo);

}  // namespace inferllama::hosting
