#include "cli/accounts.hpp"

#include "console/console_api.hpp"

#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <variant>

#include "cli/node_http.hpp"
#include "cli/text.hpp"
#include "console/account_data.hpp"
#include "console/console_api.hpp"
#include "console/rights_api.hpp"
#include "hosting/namespaces.hpp"
#include "hosting/org_admin.hpp"
#include "inferllama/config.hpp"
#include "inferllama/index.hpp"
#include "inferllama/usage.hpp"
#include "node/data_dir_lock.hpp"
#include "usage/accounts_api.hpp"
#include "usage/identities.hpp"
#include "usage/secret_box.hpp"
#include "usage/usage_log.hpp"
#include "util/url.hpp"

namespace inferllama::cli {
namespace {

using Json = nlohmann::json;

// A secret typed at a terminal is not echoed (`prompt` goes to stderr); a piped one is the first line of
// stdin. Either way it stays out of the shell's history. The line, without its newline.
std::string read_unechoed_line(const std::string& prompt) {
  const bool terminal = ::isatty(STDIN_FILENO);
  termios saved{};
  if (terminal && ::tcgetattr(STDIN_FILENO, &saved) == 0) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    std::fprintf(stderr, "%s", prompt.c_str());
  }
  std::string line;
  std::getline(std::cin, line);
  if (terminal) {
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    std::fprintf(stderr, "\n");
  }
  return line;
}

// A token: spaces around it are a copying mistake.
std::string read_secret_line(const std::string& prompt) {
  const std::string line = read_unechoed_line(prompt);
  const auto first = line.find_first_not_of(" \t\r");
  if (first == std::string::npos) return "";
  return line.substr(first, line.find_last_not_of(" \t\r") - first + 1);
}

// A new password, exactly as given (spaces are part of it). Typed at a terminal, twice: it is not seen.
std::string read_new_password(const std::string& name) {
  std::string password = read_unechoed_line("New password for " + name + ": ");
  if (::isatty(STDIN_FILENO) && read_unechoed_line("The same again: ") != password) {
    throw std::runtime_error("the two passwords differ: nothing changed");
  }
  return password;
}

// The data-directory way: the node's records opened here, answered by the node's own API functions. A
// command that only reads never creates a data directory (run in the wrong folder, it would make an
// empty one with a new secret key).
usage::ApiAnswer answer_locally(const AccountCommands::Call& call, const Config& config) {
  if (const auto pid = node::DataDirLock::holder(config.data_dir)) {
    throw std::runtime_error("a node " + (*pid ? "(pid " + std::to_string(*pid) + ") " : std::string()) + "runs on " +
                             config.data_dir.string() +
                             " without an admin socket (admin_socket is off): ask it over HTTP(S) with --node URL "
                             "and its admin key (INFERLLAMA_ADMIN_KEY or --admin-key-file)");
  }
  const bool reads = call.method == "GET";
  std::error_code ec;
  if (reads && !std::filesystem::exists(config.data_dir / "index", ec)) {
    throw std::runtime_error("no node data in " + config.data_dir.string() +
                             ": run this in the folder the node runs in, or give its --data-dir or --config");
  }
  // What the records log (a key file created, say) is no answer: it goes to stderr, as the node's does.
  spdlog::set_default_logger(spdlog::stderr_color_mt("inferllama"));
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  if (!std::filesystem::exists(config.data_dir / "index", ec)) {
    spdlog::info("no node data in {} yet: creating it", config.data_dir.string());
  }
  ::umask(077);  // an index this command creates holds keys: the owner's only, as the node's
  auto index = open_rocksdb_index(config.data_dir / "index");
  SystemClock clock;
  const auto box = usage::SecretBox::from_file(usage::secret_key_path(config));
  usage::Identities identities(index->records(), clock, box);
  usage::UsageLog usage_log(index->records(), clock);
  usage::AuditLog audit(index->records(), clock);
  usage::Accounts accounts{identities, usage_log, config.token_size};
  accounts.audit = &audit;
  hosting::Namespaces namespaces(index->records(), clock);
  const auto cached_upstream = [&index](std::string_view ns) { return hosting::namespace_cached(*index, ns); };
  accounts.namespace_refusal = [&](std::string_view name, bool force) {
    return hosting::user_namespace_refusal(namespaces, cached_upstream, name, force);
  };
  if (call.api == AccountCommands::Api::usage) return usage::answer_usage(accounts, std::nullopt, call.query);
  // Sessions where the node keeps them (RocksDB here, or Redis): read for an export, closed by a deletion, a
  // rename, a disabled user or a password set.
  const auto sessions_of = [&] {
    return console::Sessions(console::make_session_store(config, index->records()), clock, box);
  };
  if (call.api == AccountCommands::Api::rights) {
    console::Sessions sessions = sessions_of();
    console::MailTokens mail_tokens(index->records(), clock);
    console::AccountData data{clock,    index->records(), identities, usage_log,        audit,
                              sessions, mail_tokens,      namespaces, config.token_size};
    data.index = index.get();
    data.name_refusal = [&](std::string_view name) { return accounts.namespace_refusal(name, /*force=*/false); };
    auto answer = console::answer_rights_admin(data, call.method, call.path, call.body);
    if (!answer) throw std::logic_error("no rights route " + call.method + " " + call.path);
    return *answer;
  }
  if (call.api == AccountCommands::Api::operator_actions) {
    console::Sessions sessions = sessions_of();
    console::SignInGuard guard(clock);
    console::MailTokens tokens(index->records(), clock);
    console::SmtpMailer mailer({config.smtp_url, config.smtp_from, config.smtp_credentials_file});
    console::ConsoleDeps deps{identities, usage_log, sessions, guard, tokens, mailer, config.token_size};
    deps.public_url = config.public_url;
    deps.name_refusal = [&](std::string_view name) { return accounts.namespace_refusal(name, /*force=*/false); };
    auto answer = console::answer_operator(deps, call.method, call.path, call.body);
    if (!answer) throw std::logic_error("no operator route " + call.method + " " + call.path);
    return usage::ApiAnswer{answer->status, answer->content_type, std::move(answer->body)};
  }
  if (call.api == AccountCommands::Api::orgs) {
    const hosting::OrgAdminContext context{
        [&identities](std::string_view name) { return identities.user(std::string(name)).has_value(); },
        cached_upstream,
        [&identities](std::string_view name) { return identities.former_owner(std::string(name)).has_value(); }};
    auto reply =
        hosting::answer_org_admin(namespaces, context, call.method,
                                  std::string_view(call.path).substr(std::string_view("orgs").size()), call.body);
    return usage::ApiAnswer{reply.status, reply.content_type, std::move(reply.body)};
  }
  auto answer = usage::answer_admin(accounts, call.method, call.path, call.query, call.body);
  if (!answer) throw std::logic_error("no accounts route " + call.method + " " + call.path);
  // A disabled user, or one whose password was set, has no console session left when the node starts.
  if (answer->status == 200 && call.path.starts_with("users/") &&
      (call.path.ends_with("/disable") || call.path.ends_with("/password"))) {
    console::Sessions sessions = sessions_of();
    console::SignInGuard guard(clock);
    console::MailTokens tokens(index->records(), clock);
    console::SmtpMailer mailer({});
    console::ConsoleDeps deps{identities, usage_log, sessions, guard, tokens, mailer, config.token_size};
    const std::string_view rest = std::string_view(call.path).substr(std::string_view("users/").size());
    console::end_sessions(deps, url::decode(rest.substr(0, rest.find('/'))).value_or(""));
  }
  return *answer;
}

std::variant<usage::ApiAnswer, std::string> answer_remotely(const AccountCommands::Call& call, const NodeTarget& node) {
  std::string path = call.api == AccountCommands::Api::usage ? "/api/usage" : "/api/inferllama/" + call.path;
  if (!call.query.empty()) path += "?" + call.query;
  auto called = call_node(node, call.method, path, call.body);
  if (auto* why = std::get_if<std::string>(&called)) return *why;
  auto& answer = std::get<NodeAnswer>(called);
  return usage::ApiAnswer{static_cast<unsigned>(answer.status), answer.content_type, std::move(answer.body)};
}

Json parse_answer(const std::string& body) {
  auto json = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) throw std::runtime_error("the node answered what is not a JSON object: " + body);
  return json;
}

// A string field of an answer's object; "" when it is missing or not a string (a key's "revoked": null).
std::string text_of(const Json& object, const char* field) {
  const auto it = object.find(field);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

void print_users(const std::string& body) {
  const auto users = parse_answer(body).value("users", Json::array());
  if (users.empty()) {
    std::printf("no users\n");
    return;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& user : users) {
    const std::string status = !text_of(user, "deleted").empty() ? "deleted"
                               : user.value("disabled", false)   ? "disabled"
                                                                 : "enabled";
    rows.push_back({text_of(user, "name"), text_of(user, "email"), text_of(user, "created"), status,
                    user.value("has_hub_token", false) ? "own" : "node's",
                    user.value("has_password", false) ? "set" : "-", text_of(user, "passkey")});
  }
  print_table({{"NAME"}, {"EMAIL"}, {"CREATED"}, {"STATUS"}, {"HUB TOKEN"}, {"PASSWORD"}, {"PASSKEY"}}, rows);
}

void print_keys(const std::string& body, const std::string& user) {
  const auto keys = parse_answer(body).value("keys", Json::array());
  if (keys.empty()) {
    std::printf("%s has no keys\n", user.c_str());
    return;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& key : keys) {
    const std::string revoked = text_of(key, "revoked");
    rows.push_back({text_of(key, "id"), text_of(key, "label"), text_of(key, "hint") + "...", text_of(key, "created"),
                    revoked.empty() ? "-" : revoked});
  }
  print_table({{"ID"}, {"LABEL"}, {"HINT"}, {"CREATED"}, {"REVOKED"}}, rows);
}

void print_orgs(const std::string& body) {
  const auto orgs = parse_answer(body).value("orgs", Json::array());
  if (orgs.empty()) {
    std::printf("no organisations\n");
    return;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& org : orgs) {
    rows.push_back({text_of(org, "name"), std::to_string(org.value("members", Json::array()).size())});
  }
  print_table({{"NAME"}, {"MEMBERS", true}}, rows);
}

void print_members(const std::string& body, const std::string& org) {
  const auto members = parse_answer(body).value("members", Json::array());
  if (members.empty()) {
    std::printf("%s has no members\n", org.c_str());
    return;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& member : members) rows.push_back({text_of(member, "user"), text_of(member, "role")});
  print_table({{"USER"}, {"ROLE"}}, rows);
}

void print_usage(const std::string& body) {
  const auto answer = parse_answer(body);
  const auto rows_json = answer.value("usage", Json::array());
  if (rows_json.empty()) {
    std::printf("no usage recorded\n");
    return;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& row : rows_json) {
    const std::string repo = text_of(row, "repo");
    rows.push_back({text_of(row, "day"), text_of(row, "user"), repo.empty() ? "-" : repo,
                    std::to_string(row.value("requests", 0ULL)), std::to_string(row.value("tokens", 0ULL)),
                    human_bytes(row.value("bytes_from_cache", 0ULL)),
                    human_bytes(row.value("bytes_from_upstream", 0ULL))});
  }
  print_table({{"DAY"},
               {"USER"},
               {"REPO"},
               {"REQUESTS", true},
               {"TOKENS", true},
               {"FROM CACHE", true},
               {"FROM UPSTREAM", true}},
              rows);
  std::printf("a token is %s of file content\n", human_bytes(answer.value("token_size", 0ULL)).c_str());
}

}  // namespace

CLI::App* AccountCommands::add(CLI::App& parent, const std::string& name, const std::string& help) {
  auto* command = parent.add_subcommand(name, help);
  add_node_options(*command, target_,
                   "the node's admin key (for `usage`, a user's own node key shows their own usage)");
  return command;
}

AccountCommands::AccountCommands(CLI::App& app) {
  auto* user = app.add_subcommand(
      "user", "Node users: add, list, disable, enable, set their own Hub token or password; export, delete, restore");
  user->require_subcommand(1);
  auto* key = app.add_subcommand("key", "Users' API keys: create, list, revoke");
  key->require_subcommand(1);

  auto* user_add = add(*user, "add", "Add a user");
  user_add->add_option("name", name_, "1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit")->required();
  user_add->add_option("--email", email_, "The user's email address");
  user_add->add_flag("--force", force_,
                     "Also when the node has cached repos of the Hub's namespace of that name: the user's name "
                     "becomes their own namespace, and the cached repos of it are no longer served");
  commands_.push_back(
      {user_add,
       [this] {
         Json body{{"name", name_}, {"email", email_}};
         if (force_) body["force"] = true;
         return Call{Api::accounts, "POST", "users", "", body.dump()};
       },
       [](const std::string& body) { std::printf("added user %s\n", text_of(parse_answer(body), "name").c_str()); }});

  auto* user_list = add(*user, "list", "List the users");
  commands_.push_back({user_list, [] { return Call{Api::accounts, "GET", "users", "", ""}; }, print_users});

  auto* user_disable = add(*user, "disable", "Disable a user: their keys are refused from the next request on");
  user_disable->add_option("name", name_, "User name")->required();
  commands_.push_back({user_disable,
                       [this] {
                         return Call{Api::accounts, "POST", "users/" + url::encode(name_) + "/disable", "", ""};
                       },
                       [this](const std::string&) {
                         std::printf("disabled user %s: their keys are refused from now on\n", name_.c_str());
                       }});

  auto* user_enable = add(*user, "enable", "Enable a disabled user again");
  user_enable->add_option("name", name_, "User name")->required();
  commands_.push_back({user_enable,
                       [this] {
                         return Call{Api::accounts, "POST", "users/" + url::encode(name_) + "/enable", "", ""};
                       },
                       [this](const std::string&) { std::printf("enabled user %s\n", name_.c_str()); }});

  auto* user_passkey =
      add(*user, "passkey", "Give a user a new passkey (private tracker, web seeds); the old one stops working");
  user_passkey->add_option("name", name_, "User name")->required();
  commands_.push_back({user_passkey,
                       [this] {
                         return Call{Api::accounts, "POST", "users/" + url::encode(name_) + "/passkey", "", ""};
                       },
                       [this](const std::string& body) {
                         std::printf("new passkey of %s: %s (torrents with the old one must be fetched again)\n",
                                     name_.c_str(), text_of(parse_answer(body), "passkey").c_str());
                       }});

  auto* reset_link = add(*user, "reset-link",
                         "A link that sets a user's password: mailed to their confirmed address when the node sends "
                         "mail, else printed for you to hand on");
  reset_link->add_option("name", name_, "User name")->required();
  commands_.push_back(
      {reset_link,
       [this] {
         return Call{Api::operator_actions, "POST", "users/" + url::encode(name_) + "/reset-link", "", ""};
       },
       [this](const std::string& body) {
         const Json answer = parse_answer(body);
         if (answer.value("sent", false)) {
           std::printf("mailed a reset link to %s\n", name_.c_str());
         } else {
           std::printf("reset link for %s (valid 24 hours, once): %s\n", name_.c_str(), text_of(answer, "url").c_str());
         }
       }});

  auto* invite = add(*user, "invite", "Add a user and mail them a link to choose their password (or print it)");
  invite->add_option("name", name_, "User name")->required();
  invite->add_option("email", email_, "Their email address")->required();
  commands_.push_back(
      {invite,
       [this] {
         return Call{Api::operator_actions, "POST", "invite", "", Json{{"name", name_}, {"email", email_}}.dump()};
       },
       [this](const std::string& body) {
         const Json answer = parse_answer(body);
         if (answer.value("sent", false)) {
           std::printf("invited %s: the link is mailed to %s\n", name_.c_str(), email_.c_str());
         } else {
           std::printf(
               "invited %s; this node sends no mail, so hand on the link (valid 7 days, "
               "once): %s\n",
               name_.c_str(), text_of(answer, "url").c_str());
         }
       }});

  auto* make_admin = add(*user, "admin", "Let a user see the web console's operator pages (--off: no longer)");
  make_admin->add_option("name", name_, "User name")->required();
  make_admin->add_flag("--off", off_, "Take the operator pages away again");
  commands_.push_back({make_admin,
                       [this] {
                         return Call{Api::accounts, "POST", "users/" + url::encode(name_) + "/admin", "",
                                     Json{{"admin", !off_}}.dump()};
                       },
                       [this](const std::string&) {
                         std::printf(off_ ? "%s no longer sees the operator pages\n" : "%s sees the operator pages\n",
                                     name_.c_str());
                       }});

  auto* hub_token = add(*user, "hub-token",
                        "Set the Hub token the node uses upstream for a user's requests, read from stdin (typed "
                        "unechoed, or piped), so it stays out of argv and the shell's history; empty removes it");
  hub_token->add_option("name", name_, "User name")->required();
  // Accepted only to say what to do instead: argv is public.
  token_option_ = hub_token->add_option("token", token_)->group("");
  commands_.push_back({hub_token,
                       [this] {
                         if (token_option_->count() > 0) {
                           throw UsageError(
                               "a token on the command line is shown to every user of the machine (ps): leave it out "
                               "and give it on stdin (typed, or piped from a file)");
                         }
                         const std::string token = read_secret_line("Hub token for " + name_ + " (empty removes it): ");
                         return Call{Api::accounts, "POST", "users/" + url::encode(name_) + "/hub-token", "",
                                     Json{{"token", token}}.dump()};
                       },
                       [this](const std::string& body) {
                         const bool own = parse_answer(body).value("has_hub_token", false);
                         std::printf("requests of %s now use %s Hub token\n", name_.c_str(),
                                     own ? "their own" : "the node's");
                       }});

  auto* user_password = add(*user, "password",
                            "Set a user's password, read from stdin (typed unechoed twice, or the first line piped), "
                            "so it stays out of argv and the shell's history");
  user_password->add_option("name", name_, "User name")->required();
  commands_.push_back({user_password,
                       [this] {
                         return Call{Api::accounts, "POST", "users/" + url::encode(name_) + "/password", "",
                                     Json{{"password", read_new_password(name_)}}.dump()};
                       },
                       [this](const std::string&) { std::printf("password set for %s\n", name_.c_str()); }});

  add_rights_commands(*user);

  auto* key_create = add(*key, "create", "Create an API key for a user; its secret is shown this once");
  key_create->add_option("user", name_, "User name")->required();
  key_create->add_option("--label", label_, "What the key is for, to tell keys apart");
  commands_.push_back(
      {key_create,
       [this] {
         return Call{Api::accounts, "POST", "keys", "", Json{{"user", name_}, {"label", label_}}.dump()};
       },
       [](const std::string& body) {
         const auto created = parse_answer(body);
         std::printf("created key %s for %s\n%s\nthe key will not be shown again: store it now\n",
                     text_of(created, "id").c_str(), text_of(created, "user").c_str(), text_of(created, "key").c_str());
       }});

  auto* key_list = add(*key, "list", "List a user's API keys");
  key_list->add_option("user", name_, "User name")->required();
  commands_.push_back({key_list,
                       [this] {
                         return Call{Api::accounts, "GET", "keys", "user=" + url::encode(name_), ""};
                       },
                       [this](const std::string& body) { print_keys(body, name_); }});

  auto* key_revoke = add(*key, "revoke", "Revoke an API key: it is refused from the next request on");
  key_revoke->add_option("id", key_id_, "The key's id (key_...), as `key list` shows it")->required();
  commands_.push_back({key_revoke,
                       [this] {
                         return Call{Api::accounts, "POST", "keys/" + url::encode(key_id_) + "/revoke", "", ""};
                       },
                       [](const std::string& body) {
                         const auto revoked = parse_answer(body);
                         std::printf("revoked key %s of %s\n", text_of(revoked, "id").c_str(),
                                     text_of(revoked, "user").c_str());
                       }});

  add_org_commands(app);

  auto* usage = add(app, "usage", "Requests, tokens and bytes per day, user and repo");
  usage->add_option("user", name_, "Only this user's usage (or anon:ADDRESS)");
  usage->add_option("--since", since_, "From this day on (YYYY-MM-DD, UTC)");
  usage->add_option("--format", format_, "table, json or csv")
      ->check(CLI::IsMember({"table", "json", "csv"}))
      ->capture_default_str();
  commands_.push_back({usage,
                       [this] {
                         std::string query = format_ == "csv" ? "format=csv" : "format=json";
                         if (!name_.empty()) query += "&user=" + url::encode(name_);
                         if (!since_.empty()) query += "&since=" + url::encode(since_);
                         return Call{Api::usage, "GET", "", query, ""};
                       },
                       [this](const std::string& body) {
                         if (format_ == "table") {
                           print_usage(body);
                         } else if (format_ == "json") {
                           std::printf("%s\n", parse_answer(body).dump(2).c_str());
                         } else {
                           std::fwrite(body.data(), 1, body.size(), stdout);
                         }
                       }});
}

void AccountCommands::add_rights_commands(CLI::App& user) {
  auto* user_export = add(user, "export",
                          "Print everything the node holds about a user as one JSON document (their right of "
                          "access and portability): account, keys, sessions, usage, hosted repos, organisations, "
                          "audit events; no secrets");
  user_export->add_option("name", name_, "User name")->required();
  commands_.push_back({user_export,
                       [this] {
                         return Call{Api::rights, "GET", "users/" + url::encode(name_) + "/export", "", ""};
                       },
                       [](const std::string& body) { std::printf("%s\n", parse_answer(body).dump(2).c_str()); }});

  auto* user_delete = add(user, "delete",
                          "Delete a user (their right to erasure): signed out everywhere, keys revoked, refused "
                          "everywhere, hosted repos no longer served; restorable for 30 days, then purged");
  user_delete->add_option("name", name_, "User name")->required();
  commands_.push_back({user_delete,
                       [this] {
                         return Call{Api::rights, "DELETE", "users/" + url::encode(name_), "", ""};
                       },
                       [this](const std::string& body) {
                         std::printf(
                             "deleted user %s: restorable with `inferllama user restore %s` until %s, "
                             "purged then\n",
                             name_.c_str(), name_.c_str(), text_of(parse_answer(body), "purge_after").c_str());
                       }});

  auto* user_rename = add(user, "rename",
                          "Rename a user (their right to rectification): their keys, usage, audit events, "
                          "memberships and hosted repos follow; the old name stays theirs, its repos answer 404; "
                          "their console sessions end");
  user_rename->add_option("name", name_, "The user's name now")->required();
  user_rename->add_option("new_name", new_name_, "1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit")
      ->required();
  commands_.push_back({user_rename,
                       [this] {
                         return Call{Api::rights, "POST", "users/" + url::encode(name_) + "/rename", "",
                                     Json{{"name", new_name_}}.dump()};
                       },
                       [this](const std::string&) {
                         std::printf("renamed user %s to %s: %s is reserved for them, their repos are under %s/\n",
                                     name_.c_str(), new_name_.c_str(), name_.c_str(), new_name_.c_str());
                       }});

  auto* user_restore = add(user, "restore", "Restore a user deleted less than 30 days ago; their keys stay revoked");
  user_restore->add_option("name", name_, "User name")->required();
  commands_.push_back({user_restore,
                       [this] {
                         return Call{Api::rights, "POST", "users/" + url::encode(name_) + "/restore", "", ""};
                       },
                       [this](const std::string&) {
                         std::printf("restored user %s: they sign in again; their old keys stay revoked\n",
                                     name_.c_str());
                       }});
}

void AccountCommands::add_org_commands(CLI::App& app) {
  auto* org = app.add_subcommand(
      "org", "Organisations: namespaces of hosted repos, whose members read, write or administer them");
  org->require_subcommand(1);
  const auto org_path = [this] { return "orgs/" + url::encode(name_); };

  auto* org_add = add(*org, "add", "Add an organisation");
  org_add->add_option("name", name_, "1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit; no user's name")
      ->required();
  org_add->add_flag("--force", force_,
                    "Also when the node has cached repos of the Hub's namespace of that name: they are no longer "
                    "served, the organisation's own repos are");
  commands_.push_back({org_add,
                       [this] {
                         Json body{{"name", name_}};
                         if (force_) body["force"] = true;
                         return Call{Api::orgs, "POST", "orgs", "", body.dump()};
                       },
                       [](const std::string& body) {
                         std::printf("added organisation %s\n", text_of(parse_answer(body), "name").c_str());
                       }});

  auto* org_remove = add(*org, "remove", "Remove an organisation that hosts no repos, and its memberships");
  org_remove->add_option("name", name_, "Organisation name")->required();
  commands_.push_back({org_remove,
                       [org_path] {
                         return Call{Api::orgs, "DELETE", org_path(), "", ""};
                       },
                       [this](const std::string&) { std::printf("removed organisation %s\n", name_.c_str()); }});

  auto* org_list = add(*org, "list", "List the organisations");
  commands_.push_back({org_list, [] { return Call{Api::orgs, "GET", "orgs", "", ""}; }, print_orgs});

  auto* org_members = add(*org, "members", "List an organisation's members and their roles");
  org_members->add_option("name", name_, "Organisation name")->required();
  commands_.push_back({org_members,
                       [org_path] {
                         return Call{Api::orgs, "GET", org_path() + "/members", "", ""};
                       },
                       [this](const std::string& body) { print_members(body, name_); }});

  auto* member = org->add_subcommand("member", "An organisation's members: add (or change a role), remove");
  member->require_subcommand(1);
  auto* member_add = add(*member, "add", "Make a user a member of an organisation, or change their role");
  member_add->add_option("org", name_, "Organisation name")->required();
  member_add->add_option("user", member_, "User name (a user of the node)")->required();
  member_add
      ->add_option("--role", role_,
                   "read: read its private repos; write: also commit to its repos; admin: also manage its repos")
      ->check(CLI::IsMember({"read", "write", "admin"}))
      ->capture_default_str();
  commands_.push_back({member_add,
                       [this, org_path] {
                         return Call{Api::orgs, "PUT", org_path() + "/members/" + url::encode(member_), "",
                                     Json{{"role", role_}}.dump()};
                       },
                       [this](const std::string& body) {
                         std::printf("%s is a member of %s with the role %s\n", member_.c_str(), name_.c_str(),
                                     text_of(parse_answer(body), "role").c_str());
                       }});

  auto* member_remove = add(*member, "remove", "Remove a user from an organisation");
  member_remove->add_option("org", name_, "Organisation name")->required();
  member_remove->add_option("user", member_, "User name")->required();
  commands_.push_back(
      {member_remove,
       [this, org_path] {
         return Call{Api::orgs, "DELETE", org_path() + "/members/" + url::encode(member_), "", ""};
       },
       [this](const std::string&) { std::printf("removed %s from %s\n", member_.c_str(), name_.c_str()); }});
}

std::optional<int> AccountCommands::run() {
  const Command* given = nullptr;
  for (const auto& command : commands_) {
    if (command.app->parsed()) given = &command;
  }
  if (!given) return std::nullopt;
  const Call call = given->call();
  std::optional<Config> beside;
  const auto node = node_target(target_, beside);
  std::variant<usage::ApiAnswer, std::string> answer;
  // No node runs on the data directory: its records are read (or changed) here.
  const bool over_http = node.has_value();
  answer = node ? answer_remotely(call, *node) : answer_locally(call, *beside);
  if (auto* why = std::get_if<std::string>(&answer)) {
    std::fprintf(stderr, "inferllama: %s\n", why->c_str());
    return 1;
  }
  const auto& done = std::get<usage::ApiAnswer>(answer);
  if (done.status < 200 || done.status >= 300) {
    // The status tells more only when it came over HTTP.
    const std::string status = over_http ? " (HTTP " + std::to_string(done.status) + ")" : "";
    std::fprintf(stderr, "inferllama: %s%s\n", error_of(done.body).c_str(), status.c_str());
    return 1;
  }
  given->print(done.body);
  return 0;
}

}  // namespace inferllama::cli
