// The commit payload of the upload API (NDJSON), as both clients send it, and what is refused.
#include "hosting/commit_payload.hpp"

#include <gtest/gtest.h>

namespace inferllama::hosting {
namespace {

const std::string kOid(64, 'a');

CommitPayload parsed(std::string_view ndjson) {
  auto result = parse_commit_payload(ndjson);
  if (auto* error = std::get_if<std::string>(&result)) ADD_FAILURE() << *error;
  return std::get_if<CommitPayload>(&result) ? std::get<CommitPayload>(result) : CommitPayload{};
}

std::string refusal(std::string_view ndjson, const CommitLimits& limits = {}) {
  auto result = parse_commit_payload(ndjson, limits);
  return std::get_if<std::string>(&result) ? std::get<std::string>(result) : "(taken)";
}

TEST(CommitPayload, PythonsLinesEachEndingInANewline) {
  const auto payload =
      parsed("{\"key\":\"header\",\"value\":{\"summary\":\"Upload\",\"description\":\"d\",\"parentCommit\":\"" +
             std::string(40, '1') +
             "\"}}\n"
             "{\"key\":\"file\",\"value\":{\"path\":\"README.md\",\"content\":\"aGVsbG8K\",\"encoding\":\"base64\"}}\n"
             "{\"key\":\"lfsFile\",\"value\":{\"path\":\"w/model.safetensors\",\"algo\":\"sha256\",\"oid\":\"" +
             kOid +
             "\",\"size\":42}}\n"
             "{\"key\":\"deletedFile\",\"value\":{\"path\":\"old.txt\"}}\n"
             "{\"key\":\"deletedFolder\",\"value\":{\"path\":\"logs/\"}}\n");
  EXPECT_EQ(payload.header.summary, "Upload");
  EXPECT_EQ(payload.header.parent_commit, std::string(40, '1'));
  ASSERT_EQ(payload.operations.size(), 4u);
  EXPECT_EQ(std::get<AddFile>(payload.operations[0]).content, "hello\n");
  const auto& lfs = std::get<AddLfsFile>(payload.operations[1]);
  EXPECT_EQ(lfs.oid.hex(), kOid);
  EXPECT_EQ(lfs.size, 42u);
  EXPECT_EQ(std::get<DeleteFile>(payload.operations[2]).path, "old.txt");
  EXPECT_EQ(std::get<DeleteFolder>(payload.operations[3]).path, "logs") << "the trailing '/' is the client's";
}

TEST(CommitPayload, JsLinesWithoutTheLastNewlineAndACopyWithoutSize) {
  const auto payload = parsed(
      "{\"key\":\"header\",\"value\":{\"summary\":\"s\"}}\n"
      "{\"key\":\"lfsFile\",\"value\":{\"path\":\"copy.bin\",\"algo\":\"sha256\",\"oid\":\"" +
      kOid + "\"}}");
  EXPECT_FALSE(payload.header.parent_commit);
  ASSERT_EQ(payload.operations.size(), 1u);
  EXPECT_FALSE(std::get<AddLfsFile>(payload.operations[0]).size);
}

TEST(CommitPayload, RefusesWhatIsNotACommit) {
  const std::string header = "{\"key\":\"header\",\"value\":{\"summary\":\"s\"}}\n";
  EXPECT_EQ(refusal(""), "the commit has no header line");
  EXPECT_NE(refusal("{\"key\":\"deletedFile\",\"value\":{\"path\":\"a\"}}\n" + header).find("header must come first"),
            std::string::npos);
  EXPECT_NE(refusal(header + header).find("a second header"), std::string::npos);
  EXPECT_NE(refusal(header + "not json\n").find("line 2: not a JSON object"), std::string::npos);
  EXPECT_NE(refusal(header + "{\"key\":\"deletedFile\",\"value\":{\"path\":\"../etc/passwd\"}}").find("invalid path"),
            std::string::npos);
  EXPECT_NE(refusal(header + "{\"key\":\"deletedFile\",\"value\":{\"path\":\"/abs\"}}").find("invalid path"),
            std::string::npos);
  EXPECT_NE(
      refusal(header + "{\"key\":\"file\",\"value\":{\"path\":\"a\",\"content\":\"!!!!\",\"encoding\":\"base64\"}}")
          .find("not base64"),
      std::string::npos);
  EXPECT_NE(refusal(header + "{\"key\":\"file\",\"value\":{\"path\":\"a\",\"content\":\"YQ==\"}}").find("base64"),
            std::string::npos)
      << "no encoding";
  EXPECT_NE(refusal(header + "{\"key\":\"lfsFile\",\"value\":{\"path\":\"a\",\"oid\":\"xyz\"}}").find("sha256"),
            std::string::npos);
  EXPECT_NE(refusal(header + "{\"key\":\"lfsFile\",\"value\":{\"path\":\"a\",\"oid\":\"" + kOid + "\",\"size\":-1}}")
                .find("size"),
            std::string::npos);
  EXPECT_NE(refusal(header + "{\"key\":\"deletedFile\",\"value\":{\"path\":\"a\"}}\n"
                             "{\"key\":\"deletedFile\",\"value\":{\"path\":\"a\"}}")
                .find("appears twice"),
            std::string::npos);
  EXPECT_NE(refusal(header + "{\"key\":\"copy\",\"value\":{\"path\":\"a\"}}").find("unknown key"), std::string::npos);
}

TEST(CommitPayload, ItsBoundsHold) {
  const std::string header = "{\"key\":\"header\",\"value\":{\"summary\":\"s\"}}\n";
  const std::string two = header + "{\"key\":\"deletedFile\",\"value\":{\"path\":\"a\"}}\n" +
                          "{\"key\":\"deletedFile\",\"value\":{\"path\":\"b\"}}\n";
  EXPECT_NE(refusal(two, CommitLimits{1, 1 << 20}).find("more than 1 operations"), std::string::npos);
  const std::string inline_file =
      header + "{\"key\":\"file\",\"value\":{\"path\":\"a\",\"content\":\"aGVsbG8K\",\"encoding\":\"base64\"}}";
  EXPECT_NE(refusal(inline_file, CommitLimits{10, 5}).find("LFS"), std::string::npos);
}

TEST(Base64, StrictDecoding) {
  EXPECT_EQ(decode_base64(""), "");
  EXPECT_EQ(decode_base64("YQ=="), "a");
  EXPECT_EQ(decode_base64("YWI="), "ab");
  EXPECT_EQ(decode_base64("YWJj"), "abc");
  EXPECT_EQ(decode_base64("AP8A"), std::string("\0\xff\0", 3));
  EXPECT_FALSE(decode_base64("YQ"));        // no padding
  EXPECT_FALSE(decode_base64("Y==="));      // too much padding
  EXPECT_FALSE(decode_base64("YQ==YQ=="));  // data after the padding
  EXPECT_FALSE(decode_base64("YW J"));      // a space
}

}  // namespace
}  // namespace inferllama::hosting
