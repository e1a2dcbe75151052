// outq command-line entry point: builds the subcommands from the table in command.h, parses,
// loads the configuration and runs. Any error becomes one line on stderr and an exit code:
// 1 = bad input or failed work, 2 = bad command line, 3 = internal error (a bug).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <c10/util/Exception.h>
#include <cstdlib>
#include <exception>
#include <string>

#include "app_config.h"
#include "command.h"
#include "outq/core/error.h"
#include "outq/core/log.h"

// Generated from configs/study.toml (cmake/OutqEmbed.cmake).
const std::vector<std::pair<std::string, std::string>>& outq_builtin_configs();

namespace outq::app {

OutqConfig config_load(const std::string& file, const std::vector<std::string>& overrides,
                       const std::string& default_toml) {
  ConfigValues values;
  if (!file.empty()) {
    values = config_read_toml(file);
  } else if (!default_toml.empty()) {
    values = config_parse_toml(default_toml, "(built-in default config)");
  }
  for (const auto& assignment : overrides) {
    auto [key, value] = config_parse_override(assignment);
    values[key] = value;
  }
  OutqConfig config;
  config_apply(config, values);
  return config;
}

void print_effective_config(OutqConfig& config) {
  std::fprintf(stderr, "effective configuration:\n%s\n", config_table(config_entries(config)).c_str());
}

std::string builtin_config(const std::string& name) {
  for (const auto& [stem, text] : outq_builtin_configs())
    if (stem == name) return text;
  OUTQ_ASSERT(false, "no built-in config ", name);
  return {};
}

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {command_data(),     command_train(), command_import(), command_analyze(),
                                              command_quantize(), command_eval(),  command_generate(),
                                              command_sensitivity(), command_export(), command_bench(), command_study()};
  return table;
}

namespace {

// The keys with their defaults; for a command with a built-in config (study), its values.
std::string config_keys_help(const std::string& default_toml) {
  OutqConfig defaults;
  if (!default_toml.empty()) defaults = config_load("", {}, default_toml);
  std::string out = "\nConfiguration keys (TOML [section] key = value, or --set section.key=value):\n";
  for (const auto& e : config_entries(defaults)) {
    out += fmt::format("  {:<28} {:<12} {}\n", e.key, e.value.to_string(), e.help);
  }
  return out;
}

std::vector<std::string> g_arguments;

int run(int argc, char** argv) {
  g_arguments.assign(argv, argv + argc);
  CLI::App app{"outq: train, analyse, quantize (W4A4 / W8A8) and run LLaMA-style models while "
               "taming outlier channels"};
  app.set_version_flag("--version", "outq 0.1.0");
  app.require_subcommand(1);
  app.footer("\nRun `outq COMMAND --help` for a command's options, defaults and an example.");
  CommonOptions common;
  const Command* chosen = nullptr;
  for (const Command& cmd : commands()) {
    CLI::App* sub = app.add_subcommand(cmd.name, cmd.summary);
    sub->add_option("-c,--config", common.config_file, "TOML configuration file")
        ->check(CLI::ExistingFile);
    sub->add_option("--set", common.overrides, "override a config value: section.key=value (repeatable)")
        ->take_all();
    sub->add_flag("--json", common.json, "print results as JSON on stdout instead of a table");
    cmd.add_options(*sub);
    // Built only when help is shown (the study's lists the built-in config, parsed for it).
    sub->footer([&cmd] { return fmt::format("\nExample:\n  {}\n{}", cmd.example, config_keys_help(cmd.default_config)); });
    sub->callback([&chosen, &cmd] { chosen = &cmd; });
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  OUTQ_ASSERT(chosen != nullptr, "no subcommand chosen");
  OutqConfig config = config_load(common.config_file, common.overrides, chosen->default_config);
  return chosen->run(common, config);
}

}  // namespace

const std::vector<std::string>& process_arguments() { return g_arguments; }

}  // namespace outq::app

int main(int argc, char** argv) {
  try {
    return outq::app::run(argc, argv);
  } catch (const outq::InternalError& e) {
    std::fprintf(stderr, "outq: %s\n", e.what());
    return 3;
  } catch (const outq::Error& e) {
    outq::log_line("error", e.what());  // tagged with the rank when there are several
    return 1;
  } catch (const c10::Error& e) {
    // LibTorch's message: its first line only (its trace with OUTQ_TRACE=1).
    const std::string msg = e.what_without_backtrace();
    std::fprintf(stderr, "outq: error: LibTorch: %s (OUTQ_TRACE=1 prints its trace)\n", msg.substr(0, msg.find('\n')).c_str());
    if (const char* trace = std::getenv("OUTQ_TRACE"); trace && std::string(trace) == "1") std::fprintf(stderr, "%s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "outq: error: %s\n", e.what());
    return 1;
  }
}
