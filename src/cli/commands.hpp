#pragma once
#include <string>
#include <vector>

#include "cli/node_http.hpp"
#include "inferllama/config.hpp"
#include "prefetch/prefetch_table.hpp"

namespace inferllama::cli {

// Entry point of the `inferllama` binary: parses the command line and runs a command.
int run(int argc, char** argv);

// `serve`: runs the node until SIGTERM/SIGINT, then drains and returns 0.
int serve(const Config& config);

struct PullOptions {
  std::string node;  // base URL of a running node; "" = INFERLLAMA_NODE, HF_ENDPOINT, http://127.0.0.1:8080
  std::string repo;  // [datasets/|spaces/]REPO[@REV]
  std::string revision = "main";
  std::string repo_type;   // "" = from the repo's prefix, else model
  std::string token_file;  // the token sent as Bearer; else HF_TOKEN
  std::string token_flag;  // --token T: refused, argv is public
  bool quiet = false;
};
// `pull`: warms the node's cache with every file of a snapshot. Progress (the node's, per file) goes to
// stderr, the result to stdout.
int pull(const PullOptions& options);

struct AdminOptions {
  std::string action;  // pin, unpin, gc, mirror
  NodeOptions target;
  std::string repo;       // [models/|datasets/|spaces/]REPO[@REV]
  std::string repo_type;  // model, dataset or space; "" = from the repo's prefix, else model
  std::string from;       // mirror: the node whose swarm fills this one
};
// `pin`, `unpin`, `gc`, `mirror`: ask a running node, through its admin socket when run beside it, else
// at --node with the admin key.
int admin(const AdminOptions& options);

struct ClusterOptions {
  NodeOptions target;
  bool json = false;  // the node's answer as it is
};
// `cluster status`: the node's upstreams and their health, the parents' swarms it downloads, and its
// bytes by source (from the Hub, from parents, from peers, to peers).
int cluster_status(const ClusterOptions& options);

struct PrefetchOptions {
  std::string action;  // add, list, remove
  NodeOptions target;
  std::string repo;                  // [models/|datasets/|spaces/]REPO[@REV]
  std::string repo_type;             // model, dataset or space; "" = from the repo's prefix, else model
  std::vector<std::string> include;  // add: the patterns of the files wanted; none = every file
  bool json = false;                 // list: the node's answer as it is
};
// `prefetch add|list|remove`: the snapshots the node keeps current from the Hub, through its admin API.
int prefetch(const PrefetchOptions& options);
// The entries as a table (the one `running` names is being fetched), then each entry's last error.
void print_prefetch_entries(const std::vector<prefetch::Entry>& entries, const std::string& running = {});

struct RefreshOptions {
  NodeOptions target;
  std::string repo;  // [models/|datasets/|spaces/]REPO[@REV]
  std::string repo_type;
  bool no_resolve = false;  // only forget; the next request asks the Hub
};
// `refresh`: the node forgets what a branch resolved to (after a force-push) and asks the Hub again.
int refresh(const RefreshOptions& options);
struct RulesOptions {
  std::string action;  // show, reload
  NodeOptions target;
  bool json = false;  // the node's answer as it is
};
// `rules show`: the repo rules a running node has in force, where each comes from, and how its reloads went;
// `rules reload`: the node reads them again (as on SIGHUP), and a rule that does not load keeps them.
int rules(const RulesOptions& options);

// `ls`: lists cached repos, revisions, files and sizes from the data directory's index.
int list_cache(const Config& config);

struct BackupOptions {
  NodeOptions target;
  std::string backup_dir;       // "" = the node's backup_dir
  std::string backup_key_file;  // "" = the node's backup_key_file
  std::string new_key;          // --new-key FILE: create a backup key there, nothing else
};
// `backup`: an encrypted backup of the index and the secret key, made by the node that runs on the data
// directory (its admin API), else by this process.
int backup(const BackupOptions& options);

struct RestoreOptions {
  std::string file;
  std::string data_dir;
  std::string config_file;
  std::string backup_key_file;  // "" = backup_key_file of the configuration
  bool force = false;           // an index there is moved aside
};
// `restore`: a backup into a data directory no node runs on.
int restore(const RestoreOptions& options);

}  // namespace inferllama::cli
