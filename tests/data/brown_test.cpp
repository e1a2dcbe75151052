// Brown corpus text: part-of-speech tag stripping and detokenisation on real lines of the
// corpus format, headlines as their own paragraphs.
#include <gtest/gtest.h>

#include "outq/data/brown.h"

namespace outq {
namespace {

TEST(Brown, StripsTagsAndDetokenizes) {
  EXPECT_EQ(brown_detokenize("\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd "
                             "Friday/nr an/at investigation/nn of/in Atlanta's/np$ recent/jj "
                             "primary/nn election/nn produced/vbd ``/`` no/at evidence/nn ''/'' "
                             "that/cs any/dti irregularities/nns took/vbd place/nn ./."),
            "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary "
            "election produced \"no evidence\" that any irregularities took place.");
}

TEST(Brown, PunctuationSpacingAndBrackets) {
  EXPECT_EQ(brown_detokenize("recommended/vbd that/cs :/: (/( 1/cd )/) Four/cd ,/, maybe/rb ;/. "
                             "yes/rb ?/. no/rb !/. `/` it/pps '/' ok/jj"),
            "recommended that: (1) Four, maybe; yes? no! 'it' ok");
}

TEST(Brown, KeepsSlashesInsideWordsAndDashes) {
  EXPECT_EQ(brown_detokenize("and/or/cc 1/2/cd --/-- but/cc"), "and/or 1/2 -- but");
}

TEST(Brown, ParagraphsAndHeadlines) {
  const std::string file =
      "\n\n\tThe/at jury/nn said/vbd ./.\nIt/pps agreed/vbd ./.\n\n\n"
      "Merger/nn-hl proposed/vbn-hl \nHowever/wrb ,/, it/pps did/dod ./.\n\n";
  EXPECT_EQ(brown_document(file), "The jury said. It agreed.\nMerger proposed\nHowever, it did.");
}

}  // namespace
}  // namespace outq
