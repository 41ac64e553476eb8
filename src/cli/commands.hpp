#pragma once
#include <string>

#include "inferllama/config.hpp"

namespace inferllama::cli {

// Entry point of the `inferllama` binary: parses the command line and runs a command.
int run(int argc, char** argv);

// `serve`: runs the node until SIGTERM/SIGINT, then drains and returns 0.
int serve(const Config& config);

struct PullOptions {
  std::string node;  // base URL of a running node
  std::string repo;
  std::string revision = "main";
  std::string repo_type = "model";
  std::string token;  // sent as Bearer; HF_TOKEN by default
  bool quiet = false;
};
// `pull`: warms the node's cache with every file of a snapshot, one progress bar per file.
int pull(const PullOptions& options);

struct AdminOptions {
  std::string action;  // pin, unpin, gc, mirror
  std::string node;    // base URL over HTTP(S); "" = the admin socket beside the node
  std::string admin_key;
  std::string data_dir;     // where the node beside runs (its admin socket), with config_file
  std::string config_file;
  std::string repo;  // REPO[@REV]
  std::string repo_type = "model";
  std::string from;  // mirror: the node whose swarm fills this one
};
// `pin`, `unpin`, `gc`, `mirror`: ask a running node, through its admin socket when run beside it, else
// at --node with the admin key.
int admin(const AdminOptions& options);

// `ls`: lists cached repos, revisions, files and sizes from the data directory's index.
int list_cache(const Config& config);

}  // namespace inferllama::cli
