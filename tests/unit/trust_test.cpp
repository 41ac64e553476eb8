// What a hostile request target, header or upstream answer cannot do: split a response, pose as another
// client through headers nobody trusted, or guess credentials without end.
#include <gtest/gtest.h>

#include <boost/beast/http.hpp>
#include <sstream>

#include "http/forwarded.hpp"
#include "http/response.hpp"
#include "http/router.hpp"
#include "hub/reply.hpp"
#include "inferllama/network.hpp"
#include "test_support.hpp"
#include "usage/failed_attempts.hpp"

namespace inferllama::http {
namespace {

TEST(Router, ControlCharactersInAnyDecodedSegmentAreBadRequests) {
  for (const char* target : {
           "/acme/x/resolve/main%0d%0aSet-Cookie:x=1/config.json",
           "/acme/x/resolve/main%0a/config.json",
           "/acme/x/resolve/main%7f/config.json",
           "/acme/x/resolve/main/conf%0dig.json",
           "/api/models/acme/x/revision/main%0d%0aSet-Cookie:x=1",
           "/api/models/acme/x/revision/refs/pr/1%0a",
           "/api/models/acme/x/tree/main%09",
           "/api/models/acme/x/tree/main/a%0ab",
           "/api/models/acme/x/paths-info/main%1b",
           "/api/models/acme/x/torrent/main%0d",
           "/api/models/acme/x/tree/main?cursor=a%0d%0aSet-Cookie:x=1",
           "/api/models/acme/x/tree/main?a%0a=1",
           "/api/models/acme/x?expand=sha%00",
           "/api/models/acme/x/tree/main?cursor=%zz",
       }) {
    EXPECT_TRUE(std::holds_alternative<BadRequest>(route_target(target))) << target;
  }
  EXPECT_TRUE(std::holds_alternative<ResolveRoute>(route_target("/acme/x/resolve/refs%2Fpr%2F1/a%20b.json?x=1")));
  EXPECT_TRUE(
      std::holds_alternative<ApiRoute>(route_target("/api/models/acme/x/tree/main?recursive=true&cursor=ab%3D")));
  // A tracker's binary info_hash is its own parser's to read.
  EXPECT_TRUE(std::holds_alternative<TrackerRoute>(route_target("/announce?info_hash=%00%0d%0a%7f&port=1")));
}

TEST(Response, EveryHeaderValueLosesItsControlCharacters) {
  hub::Reply reply = hub::error_reply(504, "revision main\r\nSet-Cookie: x=1 of acme/x is not cached");
  reply.headers.emplace_back("Location", "/a\r\n\r\n<html>");
  reply.headers.emplace_back("Bad Name\r\n", "x");
  StringResponse res = reply_response(reply, 11, true);
  res.set("X-Repo-Commit", std::string("abc\0def\x7f", 8));
  clean_fields(res);
  res.prepare_payload();
  std::ostringstream wire;
  wire << res;
  const std::string text = wire.str();
  const std::string head = text.substr(0, text.find("\r\n\r\n"));
  EXPECT_EQ(head.find("\r\nSet-Cookie"), std::string::npos) << head;
  EXPECT_EQ(head.find("\r\n<html>"), std::string::npos);
  EXPECT_EQ(res["X-Error-Message"], "revision mainSet-Cookie: x=1 of acme/x is not cached");
  EXPECT_EQ(res["Location"], "/a<html>");
  EXPECT_EQ(res["X-Repo-Commit"], "abcdef");
  EXPECT_EQ(res.find("Bad Name\r\n"), res.end());
  // The JSON body escapes what the header lost.
  EXPECT_NE(res.body().find("main\\r\\nSet-Cookie"), std::string::npos);
}

TEST(Response, HeadsWrittenFieldByFieldPassTheSameSanitiser) {
  std::string out;
  HeadWriter head(out, 206, 11);
  head.field("X-InferLlama-Stale", "branch main\r\nSet-Cookie: x=1");
  head.field("Bad Name", "dropped");
  head.quoted_field("ETag", "abc\r\nSet-Cookie: x=1");
  head.field("X-Tabbed", std::string("\x01"
                                     "a\tb\x7f\0",
                                     6));
  head.field("Content-Length", std::uint64_t{18446744073709551615u});
  head.finish(11, false);
  EXPECT_EQ(out,
            "HTTP/1.1 206 Partial Content\r\nX-InferLlama-Stale: branch mainSet-Cookie: x=1\r\n"
            "ETag: \"abcSet-Cookie: x=1\"\r\nX-Tabbed: a\tb\r\nContent-Length: 18446744073709551615\r\nConnection: "
            "close\r\n\r\n");
  HeadWriter keep(out, 200, 10);
  keep.finish(10, true);
  EXPECT_EQ(out, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n");
}

TEST(Response, ErrorBodiesSurviveInvalidUtf8) {
  const hub::Reply reply = hub::error_reply(404, std::string("no file \xff\xfe here"));
  EXPECT_EQ(reply.status, 404u);
  EXPECT_NE(reply.body.find("no file"), std::string::npos);
}

Address16 addr(const char* text) {
  return *parse_address(text);
}

TEST(Forwarded, HeadersAreBelievedOnlyFromTrustedProxies) {
  const std::vector<Network> trusted = *parse_networks("127.0.0.1/32, 10.0.0.0/8 ::1");
  ForwardedHeaders h;
  h.x_forwarded_for = {"203.0.113.9"};
  h.x_forwarded_proto = "https";
  // An untrusted peer's headers say nothing.
  auto o = client_origin(addr("198.51.100.1"), trusted, h);
  EXPECT_EQ(o.address, addr("198.51.100.1"));
  EXPECT_FALSE(o.https);
  // A trusted one names the client.
  o = client_origin(addr("127.0.0.1"), trusted, h);
  EXPECT_EQ(o.address, addr("203.0.113.9"));
  EXPECT_TRUE(o.https);
  // A client's own X-Forwarded-For is left of what the proxy appended: the rightmost untrusted hop wins.
  h.x_forwarded_for = {"6.6.6.6, 203.0.113.9", "10.1.2.3"};
  EXPECT_EQ(client_origin(addr("::ffff:127.0.0.1"), trusted, h).address, addr("203.0.113.9"));
  // Garbage stops the walk at the last trusted proxy.
  h.x_forwarded_for = {"203.0.113.9, garbage, 10.1.2.3"};
  EXPECT_EQ(client_origin(addr("127.0.0.1"), trusted, h).address, addr("10.1.2.3"));
  // Forwarded (RFC 7239) wins over X-Forwarded-For; ports, brackets and quotes are read.
  h.forwarded = {R"(for=6.6.6.6;proto=http, for="[2001:db8::7]:4711";proto=https, for=10.0.0.2)"};
  o = client_origin(addr("127.0.0.1"), trusted, h);
  EXPECT_EQ(o.address, addr("2001:db8::7"));
  EXPECT_TRUE(o.https);
  h.forwarded = {"for=192.0.2.60:8080;proto=http"};
  o = client_origin(addr("127.0.0.1"), trusted, h);
  EXPECT_EQ(o.address, addr("192.0.2.60"));
  EXPECT_FALSE(o.https);
  // Nobody trusted: the peer, whatever it sends.
  EXPECT_EQ(client_origin(addr("127.0.0.1"), {}, h).address, addr("127.0.0.1"));
}

TEST(HostPort, ParsesWhatListenSettingsTake) {
  EXPECT_EQ(HostPort::parse("0.0.0.0:8080"), (HostPort{"0.0.0.0", 8080}));
  EXPECT_EQ(HostPort::parse("localhost:0"), (HostPort{"localhost", 0}));
  EXPECT_EQ(HostPort::parse("[::1]:65535"), (HostPort{"::1", 65535}));
  EXPECT_EQ(HostPort::parse("[fe80::1%eth0]:1"), (HostPort{"fe80::1%eth0", 1}));
  EXPECT_EQ((HostPort{"::1", 80}.str()), "[::1]:80");
  EXPECT_EQ((HostPort{"127.0.0.1", 0}.str()), "127.0.0.1:0");
  std::string why;
  for (const char* bad : {"", "8080", ":8080", "::1:80", "[::1]", "[::1]80", "[127.0.0.1]:80", "a b:1", "h:65536",
                          "h:-1", "h:", "h:123456", "[::1:80"}) {
    why.clear();
    EXPECT_FALSE(HostPort::parse(bad, &why)) << bad;
    EXPECT_NE(why.find("expected HOST:PORT"), std::string::npos) << bad;
  }
  HostPort::parse("::1:80", &why);
  EXPECT_EQ(why.find("an IPv6 address needs brackets"), 0u);
}

TEST(Forwarded, NetworksParse) {
  EXPECT_FALSE(parse_networks("10.0.0.0/33"));
  EXPECT_FALSE(parse_networks("::1/129"));
  EXPECT_FALSE(parse_networks("example.com"));
  std::string bad;
  EXPECT_FALSE(parse_networks("10.0.0.0/8, 1.2.3", &bad));
  EXPECT_EQ(bad, "1.2.3");
  const auto nets = *parse_networks("10.0.0.0/8,2001:db8::/32");
  EXPECT_TRUE(nets[0].contains(addr("10.200.0.1")));
  EXPECT_FALSE(nets[0].contains(addr("11.0.0.1")));
  EXPECT_TRUE(nets[1].contains(addr("2001:db8:1::1")));
  EXPECT_FALSE(nets[1].contains(addr("2001:db9::1")));
}

TEST(FailedAttempts, BlocksAnAddressPastItsPolicyUntilItRecovers) {
  inferllama::testing::ManualClock clock;
  LimitPolicy policy;
  policy.requests = 3;
  policy.request_window = std::chrono::seconds(30);  // one failure back every 10 s
  usage::FailedAttempts attempts(clock, policy, 2);
  std::chrono::milliseconds retry{0};
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(attempts.blocked("203.0.113.9", retry));
    attempts.failed("203.0.113.9");
  }
  EXPECT_TRUE(attempts.blocked("203.0.113.9", retry));
  EXPECT_GT(retry.count(), 9000);
  EXPECT_LE(retry.count(), 10000);
  EXPECT_FALSE(attempts.blocked("198.51.100.1", retry));  // another address is untouched
  clock.advance(std::chrono::seconds(10));
  EXPECT_FALSE(attempts.blocked("203.0.113.9", retry));
  // The table is bounded: a third address is not remembered while two still fail...
  attempts.failed("198.51.100.1");
  attempts.failed("192.0.2.1");
  EXPECT_EQ(attempts.tracked(), 2u);
  // ...and recovered addresses make room.
  clock.advance(std::chrono::minutes(1));
  attempts.failed("192.0.2.1");
  EXPECT_EQ(attempts.tracked(), 1u);
  EXPECT_EQ(attempts.failures(), 6u);
}

}  // namespace
}  // namespace inferllama::http
