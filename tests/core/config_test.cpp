// Config loading: TOML mapping onto typed sections, unknown keys and sections, type and range
// errors, --set overrides, validation, and the JSON / table renderings.
#include <gtest/gtest.h>

#include <cstring>

#include "outq/core/config.h"
#include "test_util.h"

namespace outq {
namespace {

struct ModelSection {
  static constexpr const char* kSection = "model";
  int hidden = 256;
  int64_t steps = 1000;
  double lr = 2e-3;
  bool tied = false;
  std::string name = "tiny";
  std::vector<std::string> recipes = {"a"};
  template <class V>
  void visit(V& v) {
    v("hidden", hidden, "hidden size");
    v("steps", steps, "steps");
    v("lr", lr, "learning rate");
    v("tied", tied, "tie embeddings");
    v("name", name, "name");
    v("recipes", recipes, "recipes");
  }
  void validate() const { OUTQ_CHECK(hidden > 0, "model.hidden: expected > 0, found ", hidden); }
};

struct OtherSection {
  static constexpr const char* kSection = "other";
  std::string path = "x";
  template <class V>
  void visit(V& v) {
    v("path", path, "a path");
  }
};

struct Root {
  ModelSection model;
  OtherSection other;
  template <class F>
  void visit_sections(F&& f) {
    f(model);
    f(other);
  }
};

Root load(const std::string& toml, const std::vector<std::string>& sets = {}) {
  test::TempDir dir;
  test::write_text(dir / "c.toml", toml);
  ConfigValues values = config_read_toml(dir / "c.toml");
  for (const auto& s : sets) {
    auto [k, v] = config_parse_override(s);
    values[k] = v;
  }
  Root root;
  config_apply(root, values);
  return root;
}

std::string error_of(const std::string& toml, const std::vector<std::string>& sets = {}) {
  try {
    load(toml, sets);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, MapsTomlOntoTypedFields) {
  Root r = load("[model]\nhidden = 512\nsteps = 7\nlr = 1\ntied = true\nname = \"big\"\n"
                "recipes = [\"w8a8\", \"w4a4\"]\n[other]\npath = \"/data\"\n");
  EXPECT_EQ(r.model.hidden, 512);
  EXPECT_EQ(r.model.steps, 7);
  EXPECT_DOUBLE_EQ(r.model.lr, 1.0);  // integers are accepted for floats
  EXPECT_TRUE(r.model.tied);
  EXPECT_EQ(r.model.name, "big");
  EXPECT_EQ(r.model.recipes, (std::vector<std::string>{"w8a8", "w4a4"}));
  EXPECT_EQ(r.other.path, "/data");
}

TEST(Config, MissingKeysKeepDefaults) {
  Root r = load("[model]\nhidden = 64\n");
  EXPECT_EQ(r.model.steps, 1000);
  EXPECT_EQ(r.other.path, "x");
}

TEST(Config, UnknownKeyListsValidKeys) {
  const std::string e = error_of("[model]\nhiden = 5\n");
  EXPECT_NE(e.find("unknown config key 'model.hiden'"), std::string::npos) << e;
  EXPECT_NE(e.find("hidden, steps, lr, tied, name, recipes"), std::string::npos) << e;
  EXPECT_NE(e.find("c.toml:2"), std::string::npos) << e;
}

TEST(Config, UnknownSectionListsValidSections) {
  const std::string e = error_of("[modle]\nhidden = 5\n");
  EXPECT_NE(e.find("unknown config section [modle]"), std::string::npos) << e;
  EXPECT_NE(e.find("model, other"), std::string::npos) << e;
}

TEST(Config, TypeMismatchSaysExpectedAndFound) {
  const std::string e = error_of("[model]\nhidden = \"wide\"\n");
  EXPECT_NE(e.find("model.hidden: expected an integer, found string \"wide\""), std::string::npos) << e;
  EXPECT_NE(error_of("[model]\ntied = 1\n").find("expected a boolean"), std::string::npos);
  EXPECT_NE(error_of("[model]\nrecipes = [1, 2]\n").find("list of strings"), std::string::npos);
}

TEST(Config, IntegerRangeIsChecked) {
  const std::string e = error_of("[model]\nhidden = 99999999999\n");
  EXPECT_NE(e.find("an integer in [-2147483648, 2147483647]"), std::string::npos) << e;
}

TEST(Config, TopLevelValueAndBadTomlAreErrors) {
  EXPECT_NE(error_of("hidden = 5\n").find("a [section] table"), std::string::npos);
  EXPECT_NE(error_of("[model\nhidden = 5\n").find("not valid TOML"), std::string::npos);
  EXPECT_NE(error_of("[model]\nsub = { a = 1 }\n").find("nested table"), std::string::npos);
}

TEST(Config, MissingFileIsAnError) {
  EXPECT_THROW(config_read_toml("/nonexistent/outq.toml"), Error);
}

TEST(Config, OverridesWinAndParseTypes) {
  Root r = load("[model]\nhidden = 512\n",
                {"model.hidden=128", "model.tied=true", "model.lr=0.5", "other.path=/tmp/a b/c.txt",
                 "model.name=\"quoted\"", "model.recipes=[\"x\"]"});
  EXPECT_EQ(r.model.hidden, 128);
  EXPECT_TRUE(r.model.tied);
  EXPECT_DOUBLE_EQ(r.model.lr, 0.5);
  EXPECT_EQ(r.other.path, "/tmp/a b/c.txt");  // not TOML: taken verbatim
  EXPECT_EQ(r.model.name, "quoted");
  EXPECT_EQ(r.model.recipes, std::vector<std::string>{"x"});
}

TEST(Config, BadOverridesAreErrors) {
  EXPECT_THROW(config_parse_override("model.hidden"), Error);
  EXPECT_THROW(config_parse_override("hidden=3"), Error);
  const std::string e = error_of("", {"model.hidden=abc"});
  EXPECT_NE(e.find("--set: model.hidden: expected an integer, found string \"abc\""),
            std::string::npos) << e;
  EXPECT_NE(error_of("", {"model.nope=1"}).find("unknown config key 'model.nope'"), std::string::npos);
}

TEST(Config, ValidateRunsAfterAssignment) {
  EXPECT_NE(error_of("[model]\nhidden = 0\n").find("model.hidden: expected > 0, found 0"),
            std::string::npos);
}

TEST(Config, EntriesJsonAndTableRenderEffectiveValues) {
  Root r = load("[model]\nhidden = 8\n");
  const auto entries = config_entries(r);
  ASSERT_EQ(entries.size(), 7u);
  EXPECT_EQ(entries[0].key, "model.hidden");
  const std::string json = config_json(entries);
  EXPECT_NE(json.find("\"hidden\": 8"), std::string::npos) << json;
  EXPECT_NE(json.find("\"recipes\": [\n      \"a\"\n    ]"), std::string::npos) << json;
  const std::string table = config_table(entries);
  EXPECT_NE(table.find("model.hidden"), std::string::npos);
  EXPECT_NE(table.find("learning rate"), std::string::npos);
}

// config_toml writes what config_parse_toml reads back to the same values: floats bit-exactly
// (shortest round-trip forms, values with no short decimal, integral floats that must stay
// floats), strings with quotes, backslashes, newlines and non-ASCII, and lists.
TEST(Config, TomlRenderingReadsBackToTheSameValues) {
  Root r;
  const std::vector<double> floats = {0.1, 1e-5, 3.0, 2.0 / 3.0, -1e300, 5e-324};
  const std::vector<std::string> names = {"a \"quoted\" name", "back\\slash\nnew line", "caf\u00e9 \U0001F600", ""};
  for (size_t i = 0; i < floats.size(); ++i) {
    r.model.lr = floats[i];
    r.model.name = names[i % names.size()];
    r.model.recipes = {names[(i + 1) % names.size()], "x'y"};
    r.other.path = "dir with spaces/'q'";
    const auto entries = config_entries(r);
    const std::string text = config_toml(entries);
    Root back;
    config_apply(back, config_parse_toml(text, "rendered"));
    EXPECT_EQ(std::memcmp(&back.model.lr, &floats[i], sizeof(double)), 0) << text;
    EXPECT_EQ(back.model.name, r.model.name) << text;
    EXPECT_EQ(back.model.recipes, r.model.recipes) << text;
    EXPECT_EQ(back.other.path, r.other.path) << text;
    EXPECT_EQ(config_json(config_entries(back)), config_json(entries)) << text;
  }
  // An integral float stays a float in the text (so a float field cannot turn into an integer key).
  r.model.lr = 3.0;
  EXPECT_EQ(config_parse_toml(config_toml(config_entries(r)), "rendered").at("model.lr").type_name(), "float");
}

}  // namespace
}  // namespace outq
