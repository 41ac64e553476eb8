#include "cli/commands.hpp"

int main(int argc, char** argv) {
  return inferllama::cli::run(argc, argv);
}
