// `user`, `key`, `org` and `usage`: a node's users, API keys, organisations and usage records, through a
// running node's admin API (--node) or straight from a data directory no node is running on. Both ways
// answer alike: the data-directory way calls the functions the node's API calls.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cli/node_http.hpp"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace inferllama::cli {

class AccountCommands {
 public:
  explicit AccountCommands(CLI::App& app);           // adds the commands to `app`
  AccountCommands(const AccountCommands&) = delete;  // the commands' options write into this object
  AccountCommands& operator=(const AccountCommands&) = delete;

  // After parsing: the exit code of the account command given, or nullopt when none was.
  std::optional<int> run();

  // One request of the accounts API: an admin route under /api/inferllama/ (users/, keys/: the accounts';
  // orgs: the hosted namespaces'; operator: the console's reset links and invitations; rights: a user's
  // export, deletion, restore and rename), or GET /api/usage.
  enum class Api { accounts, orgs, usage, operator_actions, rights };
  struct Call {
    Api api = Api::accounts;
    std::string method;
    std::string path;  // after /api/inferllama/
    std::string query;
    std::string body;
  };

 private:
  struct Command {
    CLI::App* app;
    std::function<Call()> call;
    std::function<void(const std::string& body)> print;  // a successful answer's body
  };
  CLI::App* add(CLI::App& parent, const std::string& name, const std::string& help);
  void add_rights_commands(CLI::App& user);
  void add_org_commands(CLI::App& app);

  NodeOptions target_;
  std::string name_, email_, token_, label_, key_id_, since_, format_ = "table";
  std::string member_, role_ = "read", new_name_;
  bool force_ = false;
  bool off_ = false;
  CLI::Option* token_option_ = nullptr;  // hub-token's TOKEN: read from stdin when not given
  std::vector<Command> commands_;
};

}  // namespace inferllama::cli
