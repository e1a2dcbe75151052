// The subcommand table: every `outq` subcommand is one row (name, one-line summary, example,
// option setup, run function). main.cpp builds the CLI and --help from this table alone, and adds
// the options every subcommand shares (--config, --set) in one place.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "app_config.h"

namespace outq::app {

/// Options shared by all subcommands.
struct CommonOptions {
  std::string config_file;
  std::vector<std::string> overrides;
  bool json = false;  ///< results as JSON on stdout instead of a table
};

struct Command {
  const char* name;
  const char* summary;
  const char* example;
  /// Adds the subcommand's own options; values are stored in statics of the command's file.
  void (*add_options)(CLI::App& app);
  /// Runs with the loaded configuration; returns the process exit code.
  int (*run)(const CommonOptions& common, OutqConfig& config);
  /// TOML applied before the overrides when no --config is given (the study's embedded default).
  std::string default_config = {};
};

/// A config built into the binary (configs/<name>.toml); an unknown name is an internal error.
std::string builtin_config(const std::string& name);

/// This process's command line, argv[0] first (for re-launching it as data-parallel ranks).
const std::vector<std::string>& process_arguments();

/// All subcommands, in the order `outq --help` lists them.
const std::vector<Command>& commands();

/// Prints the effective configuration table (stderr keeps stdout clean for --json).
void print_effective_config(OutqConfig& config);

// One declaration per subcommand file.
Command command_data();
Command command_train();
Command command_eval();
Command command_generate();
Command command_import();
Command command_export();
Command command_quantize();
Command command_analyze();
Command command_bench();
Command command_sensitivity();
Command command_study();

}  // namespace outq::app
