// The stored Hub metadata: which requests are stored and in what canonical form, the LRU budget, and
// the origin rules that decide where credentials may go.
#include <gtest/gtest.h>

#include <filesystem>

#include "hub/metadata_query.hpp"
#include "hub/metadata_store.hpp"
#include "inferllama/index.hpp"
#include "test_support.hpp"
#include "util/url.hpp"

namespace inferllama {
namespace {

using hub::canonical_info_query;
using hub::canonical_paths_query;
using hub::canonical_tree_query;
using hub::MetadataStore;

TEST(MetadataQueryTest, InfoQueriesOfRealClientsHaveOneCanonicalForm) {
  EXPECT_EQ(canonical_info_query(""), "");
  EXPECT_EQ(canonical_info_query("expand=siblings&expand=sha"), "expand=sha&expand=siblings");
  EXPECT_EQ(canonical_info_query("expand%5B%5D=sha&expand=siblings&expand=sha"), "expand=sha&expand=siblings");
  EXPECT_EQ(canonical_info_query("securityStatus=True&blobs=true"), "blobs=true&securityStatus=true");
  EXPECT_EQ(canonical_info_query("blobs=False"), "");
  EXPECT_EQ(canonical_info_query("expand=model-index&expand=library_name"), "expand=library_name&expand=model-index");
}

TEST(MetadataQueryTest, AnythingElseIsNotStored) {
  EXPECT_FALSE(canonical_info_query("junk=1"));
  EXPECT_FALSE(canonical_info_query("expand=junk"));
  EXPECT_FALSE(canonical_info_query("blobs=maybe"));
  EXPECT_FALSE(canonical_info_query("blobs=true&blobs=false"));
  EXPECT_FALSE(canonical_info_query("expand=%zz"));
  EXPECT_FALSE(canonical_tree_query("recursive=true&page=2"));
  EXPECT_FALSE(canonical_tree_query("limit=0"));
  EXPECT_FALSE(canonical_tree_query("cursor=a%0Ab"));
  EXPECT_FALSE(canonical_paths_query("application/json", R"({"paths": ["a"], "other": 1})"));
  EXPECT_FALSE(canonical_paths_query("application/json", R"({"paths": ["../etc/passwd"]})"));
  EXPECT_FALSE(canonical_paths_query("text/plain", "paths=a"));
  EXPECT_FALSE(canonical_paths_query("", "paths=a&junk=1"));
  EXPECT_FALSE(canonical_paths_query("", ""));
}

TEST(MetadataQueryTest, TreeAndPathsInfoQueriesOfBothClientsMeet) {
  auto python = canonical_tree_query("recursive=True&expand=False");
  auto js = canonical_tree_query("recursive=true&expand=false");
  ASSERT_TRUE(python && js);
  EXPECT_EQ(python->canonical, "recursive=true");
  EXPECT_EQ(python->canonical, js->canonical);
  auto page = canonical_tree_query("recursive=true&expand=false&cursor=ZXlK%3D%3D");
  ASSERT_TRUE(page);
  EXPECT_TRUE(page->has_cursor);
  EXPECT_EQ(page->canonical, "cursor=ZXlK%3D%3D&recursive=true");

  auto form = canonical_paths_query("application/x-www-form-urlencoded", "paths=b.txt&paths=a.json&expand=False");
  auto json = canonical_paths_query("application/json; charset=utf-8", R"({"paths": ["a.json", "b.txt", "a.json"]})");
  ASSERT_TRUE(form && json);
  EXPECT_EQ(form->body, "paths=a.json&paths=b.txt");
  EXPECT_EQ(form->body, json->body);
  EXPECT_TRUE(hub::describes_every_path(R"([{"path": "a.json"}, {"path": "b.txt"}])", form->paths));
  EXPECT_FALSE(hub::describes_every_path(R"([{"path": "a.json"}])", form->paths));
}

TEST(UrlOriginTest, OriginsAreSchemeHostAndPort) {
  EXPECT_EQ(url::http_origin("https://huggingface.co/api/x"), "https://huggingface.co:443");
  EXPECT_EQ(url::http_origin("HTTP://Hub.Example:080/x?y"), "http://hub.example:80");
  EXPECT_EQ(url::http_origin("http://[::1]:8080"), "http://[::1]:8080");
  EXPECT_NE(url::http_origin("http://127.0.0.1:1/x"), url::http_origin("http://127.0.0.1:2/x"));
  EXPECT_NE(url::http_origin("http://h/x"), url::http_origin("https://h/x"));
  EXPECT_FALSE(url::http_origin("file:///etc/passwd"));
  EXPECT_FALSE(url::http_origin("ftp://h/x"));
  EXPECT_FALSE(url::http_origin("/relative"));
  EXPECT_FALSE(url::http_origin("http://user:pw@h/x"));
  EXPECT_FALSE(url::http_origin("http://h:80x/"));
}

TEST(UrlOriginTest, RedactedUrlsKeepNoQueryOrUserInfo) {
  EXPECT_EQ(url::redact("https://cdn.example/blobs/abc?expires=1&sig=secret#f"), "https://cdn.example/blobs/abc");
  EXPECT_EQ(url::redact("http://user:pw@h:1/p?q"), "http://h:1/p");
  EXPECT_EQ(url::redact("http://h/a@b"), "http://h/a@b");
  // The signed URLs of S3, CloudFront and the Hub's CDN: the credential is in the query.
  EXPECT_EQ(url::redact("https://bucket.s3.amazonaws.com/repos/ab/cd?X-Amz-Algorithm=AWS4-HMAC-SHA256&"
                        "X-Amz-Credential=AKIA%2F20260101&X-Amz-Signature=0123abcd"),
            "https://bucket.s3.amazonaws.com/repos/ab/cd");
  EXPECT_EQ(url::redact("https://cdn-lfs.hf.co/repos/ab/cd/e?response-content-disposition=x&Expires=1&"
                        "Policy=eyJ&Signature=abc~def&Key-Pair-Id=K2"),
            "https://cdn-lfs.hf.co/repos/ab/cd/e");
  EXPECT_EQ(url::redact("/_fake/expired/abc?token=t"), "/_fake/expired/abc");
  // Whatever an upstream wrote in a Location cannot start a log line of its own.
  EXPECT_EQ(url::redact("http://h/a\r\nforged line\x7f?q"), "http://h/a??forged line?");
}

class MetadataStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::fresh_test_dir("metadata"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(MetadataStoreTest, KeepsTheMostRecentlyUsedUnderItsBudget) {
  auto index = open_rocksdb_index(dir_);
  const std::string answer(1000, 'x');
  MetadataStore store(*index, 10 * (answer.size() + MetadataStore::kEntryOverhead + 64));  // room for 10
  store.put("a", answer);
  for (int i = 0; i < 100; ++i) {
    store.put("k" + std::to_string(i), answer);
    ASSERT_EQ(store.get("a"), answer) << i;  // used after every put: never the oldest
    ASSERT_LE(store.bytes(), store.budget());
  }
  EXPECT_LE(store.entries(), 10u);
  EXPECT_GT(store.evictions(), 80u);
  EXPECT_FALSE(store.get("k0"));
  EXPECT_EQ(store.get("k99"), answer);
  std::size_t records = 0;
  index->list_meta("mcache|", [&](const std::string&, std::size_t) { ++records; });
  EXPECT_EQ(records, store.entries());  // evicted entries are gone from the index too
}

TEST_F(MetadataStoreTest, ARestartCountsWhatIsStoredAndDropsUnboundedOldRecords) {
  std::uint64_t entries = 0, bytes = 0;
  {
    auto index = open_rocksdb_index(dir_);
    index->put_meta("info|model/a@c|junk=1", "old");
    index->put_meta("visibility|model/a", "public");
    MetadataStore store(*index, 1 << 20);
    store.put("x", "1");
    store.put("y", "2");
    entries = store.entries();
    bytes = store.bytes();
  }
  auto index = open_rocksdb_index(dir_);
  MetadataStore store(*index, 1 << 20);
  EXPECT_EQ(store.entries(), entries);
  EXPECT_EQ(store.bytes(), bytes);
  EXPECT_EQ(store.get("x"), "1");
  EXPECT_FALSE(index->get_meta("info|model/a@c|junk=1"));
  EXPECT_EQ(index->get_meta("visibility|model/a"), "public");  // not an answer: untouched

  MetadataStore smaller(*index, MetadataStore::kEntryOverhead + 100);
  EXPECT_LE(smaller.bytes(), smaller.budget());
  EXPECT_EQ(smaller.entries(), 1u);
}

TEST_F(MetadataStoreTest, AnAnswerLargerThanTheBudgetIsNotKept) {
  auto index = open_rocksdb_index(dir_);
  MetadataStore store(*index, 4096);
  store.put("big", std::string(8192, 'x'));
  EXPECT_FALSE(store.get("big"));
  EXPECT_EQ(store.entries(), 0u);
  MetadataStore none(*index, 0);
  none.put("k", "v");
  EXPECT_FALSE(none.get("k"));
}

}  // namespace
}  // namespace inferllama
