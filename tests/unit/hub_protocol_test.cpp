#include "hub/hub_protocol.hpp"

#include <gtest/gtest.h>

namespace inferllama::hub {
namespace {

TEST(HubProtocol, StripsEveryXetMarker) {
  std::string body = R"([{"path":"a","xetHash":"ff","lfs":{"oid":"1","xetHash":"ee"}},{"path":"b"}])";
  std::string out = strip_xet(body);
  EXPECT_EQ(out.find("xet"), std::string::npos);
  EXPECT_NE(out.find("\"oid\":\"1\""), std::string::npos);
  EXPECT_EQ(strip_xet(R"({"id":"x","xetEnabled":true})"), R"({"id":"x"})");
  EXPECT_EQ(strip_xet("not json \"xet"), "not json \"xet");
  EXPECT_EQ(strip_xet(R"({"id":"x"})"), R"({"id":"x"})");
}

TEST(HubProtocol, NextLinkBecomesANodePath) {
  EXPECT_EQ(next_link_path(R"(<https://huggingface.co/api/models/a/b/tree/main?cursor=xyz>; rel="next")"),
            "/api/models/a/b/tree/main?cursor=xyz");
  EXPECT_EQ(next_link_path(R"(<https://h/x>; rel="xet-auth", <https://h/api/datasets/d/tree/s?c=1>; rel="next")"),
            "/api/datasets/d/tree/s?c=1");
  EXPECT_FALSE(next_link_path(R"(<https://h/api/x>; rel="prev")"));
  EXPECT_FALSE(next_link_path("garbage"));
}

TEST(HubProtocol, Etags) {
  EXPECT_EQ(unquote_etag("\"ABC\""), "abc");
  EXPECT_EQ(unquote_etag("W/\"abc\""), "abc");
  EXPECT_EQ(unquote_etag("abc"), "abc");
}

}  // namespace
}  // namespace inferllama::hub
