#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cli/accounts.hpp"
#include "cli/commands.hpp"
#include "inferllama/version.hpp"

extern char** environ;

namespace inferllama::cli {
namespace {

// Adds every configuration key as a flag of `command`; what the user sets lands in `flags`.
void add_config_flags(CLI::App& command, std::map<std::string, std::string>& flags,
                      std::map<std::string, std::string>& given) {
  for (const auto& key : config_keys()) {
    std::string help(key.help);
    if (!key.default_text.empty()) help += " [default: " + std::string(key.default_text) + "]";
    help += " (env " + std::string(key.env) + ")";
    auto* option = command.add_option(std::string(key.flag), given[std::string(key.name)], help);
    if (key.is_switch) option->expected(0, 1)->type_name("");  // `--offline` alone, or `--offline false`
  }
  (void)flags;
}

Config config_from(const std::map<std::string, std::string>& given, CLI::App& command, const std::string& config_file) {
  ConfigSources sources;
  for (const auto& key : config_keys()) {
    if (command.count(std::string(key.flag)) > 0)
      sources.flags[std::string(key.name)] = given.at(std::string(key.name));
  }
  if (!config_file.empty()) sources.file = config_file;
  sources.env = environment_map(environ);
  return load_config(sources);
}

// "unknown command pul (did you mean pull?)" before CLI11 says only that a subcommand is required.
std::optional<std::string> unknown_command(CLI::App& app, int argc, char** argv) {
  CLI::App* current = &app;
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    const auto subcommands = current->get_subcommands([](CLI::App*) { return true; });
    if (word.starts_with("-") || subcommands.empty()) return std::nullopt;
    std::vector<std::string> names;
    CLI::App* next = nullptr;
    for (auto* sub : subcommands) {
      names.push_back(sub->get_name());
      if (sub->get_name() == word) next = sub;
    }
    if (!next) {
      const auto best = closest_spelling(word, names);
      std::string known;
      for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
      return "unknown command " + word + (best ? " (did you mean " + *best + "?)" : " (commands: " + known + ")");
    }
    current = next;
  }
  return std::nullopt;
}

// "unknown option --ofline for serve (did you mean --offline?)" for what CLI11 found no place for.
std::string unknown_options(CLI::App& app, const CLI::ExtrasError& error) {
  CLI::App* command = &app;
  for (bool deeper = true; deeper;) {
    deeper = false;
    for (auto* sub : command->get_subcommands()) {
      command = sub;
      deeper = true;
    }
  }
  std::vector<std::string> flags;
  for (const auto* option : command->get_options()) {
    for (const auto& name : option->get_lnames()) flags.push_back("--" + name);
  }
  std::string message = error.what();
  const auto colon = message.find(": ");
  std::istringstream extras(colon == std::string::npos ? "" : message.substr(colon + 2));
  std::string out;
  for (std::string extra; extras >> extra;) {
    const std::string name = extra.substr(0, extra.find('='));
    const auto best = name.starts_with("--") ? closest_spelling(name, flags) : std::nullopt;
    out += (out.empty() ? "" : "; ") + std::string(name.starts_with("-") ? "unknown option " : "unexpected argument ") +
           name + (best ? " (did you mean " + *best + "?)" : "");
  }
  const std::string path = command == &app ? "inferllama" : "inferllama " + command->get_name();
  return out + "; see `" + path + " --help`";
}

}  // namespace

int run(int argc, char** argv) {
  CLI::App app{"InferLlama: a pull-through cache and distribution node for HuggingFace models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("inferllama ") + kVersion);

  std::map<std::string, std::string> flags, serve_given, ls_given;
  std::string serve_config, ls_config;
  auto* serve_cmd = app.add_subcommand("serve", "Run the node (HTTP API compatible with the Hub)");
  serve_cmd->add_option("--config", serve_config, "TOML configuration file (env INFERLLAMA_CONFIG)");
  add_config_flags(*serve_cmd, flags, serve_given);

  PullOptions pull_options;
  auto* pull_cmd = app.add_subcommand("pull", "Warm a running node's cache with a whole snapshot");
  pull_cmd->add_option("repo", pull_options.repo, "Repository id, e.g. acme/tiny-model (datasets/... for a dataset)")
      ->required();
  pull_cmd->add_option("--revision", pull_options.revision, "Branch, tag or commit")->capture_default_str();
  pull_cmd
      ->add_option("--repo-type", pull_options.repo_type,
                   "model, dataset or space [default: from the repo's prefix, else model]")
      ->check(CLI::IsMember({"model", "dataset", "space"}));
  pull_cmd->add_option("--node", pull_options.node,
                       "Base URL of the node (default: INFERLLAMA_NODE, else HF_ENDPOINT, else http://127.0.0.1:8080)");
  pull_cmd->add_option(
      "--token-file", pull_options.token_file,
      "File holding the token sent to the node: a node key (il_...) or a Hub token (default: HF_TOKEN)");
  pull_cmd->add_option("--token", pull_options.token_flag)->group("");  // refused: argv is public
  pull_cmd->add_flag("--quiet,-q", pull_options.quiet, "No progress; only the result and errors");

  AdminOptions pin_options{"pin"}, unpin_options{"unpin"}, gc_options{"gc"};
  auto* pin_cmd =
      app.add_subcommand("pin", "Never evict a cached snapshot ([datasets/|spaces/]REPO[@REV], default main)");
  auto* unpin_cmd = app.add_subcommand("unpin", "Let a pinned snapshot be evicted again");
  for (auto [command, options] : {std::pair{pin_cmd, &pin_options}, std::pair{unpin_cmd, &unpin_options}}) {
    command->add_option("repo", options->repo, "Repository id, optionally @revision")->required();
    command
        ->add_option("--repo-type", options->repo_type,
                     "model, dataset or space [default: from the repo's prefix, else model]")
        ->check(CLI::IsMember({"model", "dataset", "space"}));
    add_node_options(*command, options->target, "the node's admin key");
  }
  AdminOptions mirror_options{"mirror"};
  auto* mirror_cmd = app.add_subcommand(
      "mirror",
      "Fill the node's cache with a snapshot from another node's swarm (peers and web seed), verify it "
      "against the Hub's etags and seed it");
  mirror_cmd->add_option("repo", mirror_options.repo, "Repository id, optionally @revision (default main)")->required();
  mirror_cmd->add_option("--from", mirror_options.from, "Base URL of the node to mirror from")->required();
  mirror_cmd
      ->add_option("--repo-type", mirror_options.repo_type,
                   "model, dataset or space [default: from the repo's prefix, else model]")
      ->check(CLI::IsMember({"model", "dataset", "space"}));
  add_node_options(*mirror_cmd, mirror_options.target, "the node's admin key");
  PrefetchOptions prefetch_add_options{"add"}, prefetch_list_options{"list"}, prefetch_remove_options{"remove"};
  auto* prefetch_cmd =
      app.add_subcommand("prefetch", "Snapshots the node keeps current from the Hub without a client asking");
  auto* prefetch_add_cmd = prefetch_cmd->add_subcommand(
      "add", "Keep a snapshot current: its files are fetched now, and again whenever its revision moves");
  auto* prefetch_list_cmd = prefetch_cmd->add_subcommand(
      "list", "Every entry (configured and added) with its commit, files and bytes held of those wanted, last check");
  auto* prefetch_remove_cmd = prefetch_cmd->add_subcommand(
      "remove",
      "Stop keeping a snapshot added at run time current (its commit is unpinned; entries of the "
      "prefetch setting are removed there)");
  for (auto [command, options] :
       {std::pair{prefetch_add_cmd, &prefetch_add_options}, std::pair{prefetch_remove_cmd, &prefetch_remove_options}}) {
    command->add_option("repo", options->repo, "Repository id, optionally @revision (default main)")->required();
    command
        ->add_option("--repo-type", options->repo_type,
                     "model, dataset or space [default: from the repo's prefix, else model]")
        ->check(CLI::IsMember({"model", "dataset", "space"}));
    add_node_options(*command, options->target, "the node's admin key");
  }
  prefetch_add_cmd->add_option("--include", prefetch_add_options.include,
                               "Only the files matching this glob, as huggingface_hub's allow_patterns (e.g. "
                               "\"*.safetensors\", \"tokenizer/\"); repeat for more [default: every file]");
  prefetch_list_cmd->add_flag("--json", prefetch_list_options.json, "Print the node's JSON answer as it is");
  add_node_options(*prefetch_list_cmd, prefetch_list_options.target, "the node's admin key");
  prefetch_cmd->require_subcommand(1);

  RefreshOptions refresh_options;
  auto* refresh_cmd = app.add_subcommand(
      "refresh", "Forget what a branch resolved to (after a force-push on the Hub) and ask the Hub what it names now");
  refresh_cmd->add_option("repo", refresh_options.repo, "Repository id, optionally @branch (default main)")->required();
  refresh_cmd
      ->add_option("--repo-type", refresh_options.repo_type,
                   "model, dataset or space [default: from the repo's prefix, else model]")
      ->check(CLI::IsMember({"model", "dataset", "space"}));
  refresh_cmd->add_flag("--no-resolve", refresh_options.no_resolve,
                        "Only forget: the next request for the branch asks the Hub");
  add_node_options(*refresh_cmd, refresh_options.target, "the node's admin key");
  auto* gc_cmd = app.add_subcommand("gc", "Delete stored chunks that no file references, and report what was freed");
  add_node_options(*gc_cmd, gc_options.target, "the node's admin key");

  ClusterOptions cluster_options;
  auto* cluster_cmd = app.add_subcommand("cluster", "The node in its cluster");
  auto* cluster_status_cmd = cluster_cmd->add_subcommand(
      "status", "Upstreams and their health, parents' swarms being downloaded, bytes by source");
  cluster_status_cmd->add_flag("--json", cluster_options.json, "Print the node's JSON answer as it is");
  add_node_options(*cluster_status_cmd, cluster_options.target, "the node's admin key");
  cluster_cmd->require_subcommand(1);

  RulesOptions rules_show_options{"show"}, rules_reload_options{"reload"};
  auto* rules_cmd = app.add_subcommand("rules", "The repo rules: which Hub repos the node proxies, refuses or passes");
  auto* rules_show_cmd = rules_cmd->add_subcommand("show", "The rules in force, in the order they are matched");
  auto* rules_reload_cmd = rules_cmd->add_subcommand(
      "reload", "Read the rules again (repo_rules_file), as SIGHUP does; a rule that does not load keeps them");
  for (auto [command, options] :
       {std::pair{rules_show_cmd, &rules_show_options}, std::pair{rules_reload_cmd, &rules_reload_options}}) {
    command->add_flag("--json", options->json, "Print the node's JSON answer as it is");
    add_node_options(*command, options->target, "the node's admin key");
  }
  rules_cmd->require_subcommand(1);

  BackupOptions backup_options;
  auto* backup_cmd = app.add_subcommand(
      "backup",
      "Write an encrypted backup of the index (users, keys, usage, cached metadata, hosted repos' refs) and the "
      "secret key; a running node makes it from its open index");
  backup_cmd->add_option("--backup-dir", backup_options.backup_dir,
                         "Directory to write it into, outside the data directory [default: the node's backup_dir]");
  backup_cmd->add_option("--backup-key-file", backup_options.backup_key_file,
                         "File holding the backup key [default: the node's backup_key_file]");
  backup_cmd->add_option("--new-key", backup_options.new_key,
                         "Only create a new random backup key in this file (mode 0600, never over an existing file)");
  add_node_options(*backup_cmd, backup_options.target, "the node's admin key");

  RestoreOptions restore_options;
  auto* restore_cmd =
      app.add_subcommand("restore", "Restore a backup into a data directory no node runs on (a fresh one, or --force)");
  restore_cmd->add_option("file", restore_options.file, "The backup file (inferllama-backup-*.ilbk)")->required();
  restore_cmd->add_option("--data-dir", restore_options.data_dir, "The data directory to restore into")->required();
  restore_cmd->add_option("--config", restore_options.config_file,
                          "The node's TOML configuration file (secret_key_file, backup_key_file)");
  restore_cmd->add_option("--backup-key-file", restore_options.backup_key_file,
                          "File holding the key the backup was made with [default: backup_key_file]");
  restore_cmd->add_flag("--force", restore_options.force,
                        "Also when the data directory has an index: it is moved aside (kept, renamed), not deleted");

  auto* ls_cmd = app.add_subcommand("ls", "List cached repos, revisions, files and sizes");
  ls_cmd->add_option("--config", ls_config, "TOML configuration file (env INFERLLAMA_CONFIG)");
  ls_cmd->add_option("--data-dir", ls_given["data_dir"], "Data directory [default: ./data] (env INFERLLAMA_DATA_DIR)");

  AccountCommands accounts(app);

  if (auto unknown = unknown_command(app, argc, argv)) {
    std::cerr << "inferllama: " << *unknown << "\n";
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ExtrasError& e) {
    std::cerr << "inferllama: " << unknown_options(app, e) << "\n";
    return 2;
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints the help, the version or what was wrong
    return code == 0 ? 0 : 2;
  }
  try {
    if (*serve_cmd) return serve(config_from(serve_given, *serve_cmd, serve_config));
    if (*pull_cmd) return pull(pull_options);
    if (*pin_cmd) return admin(pin_options);
    if (*unpin_cmd) return admin(unpin_options);
    if (*gc_cmd) return admin(gc_options);
    if (*mirror_cmd) return admin(mirror_options);
    if (*cluster_status_cmd) return cluster_status(cluster_options);
    if (*prefetch_add_cmd) return prefetch(prefetch_add_options);
    if (*prefetch_list_cmd) return prefetch(prefetch_list_options);
    if (*prefetch_remove_cmd) return prefetch(prefetch_remove_options);
    if (*refresh_cmd) return refresh(refresh_options);
    if (*rules_show_cmd) return rules(rules_show_options);
    if (*rules_reload_cmd) return rules(rules_reload_options);
    if (*backup_cmd) return backup(backup_options);
    if (*restore_cmd) return restore(restore_options);
    if (auto code = accounts.run()) return *code;
    if (*ls_cmd) {
      ConfigSources sources;
      if (ls_cmd->count("--data-dir")) sources.flags["data_dir"] = ls_given["data_dir"];
      if (!ls_config.empty()) sources.file = ls_config;
      sources.env = environment_map(environ);
      return list_cache(load_config(sources));
    }
  } catch (const ConfigError& e) {
    std::cerr << "inferllama: configuration error: " << e.what() << "\n";
    return 2;
  } catch (const UsageError& e) {
    std::cerr << "inferllama: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "inferllama: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace inferllama::cli
