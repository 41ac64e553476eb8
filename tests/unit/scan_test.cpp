// The model-file scanners on files made here: pickles as Python's pickle writes them (protocols 0 to 5, with
// memo and stack tricks), PyTorch's zip layout, safetensors and GGUF headers, fed whole and a byte at a time.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cache/download.hpp"
#include "fake_upstreams.hpp"
#include "inferllama/index.hpp"
#include "scan/allowlist.hpp"
#include "scan/file_scanner.hpp"
#include "scan/pickle_scanner.hpp"
#include "scan/scan_service.hpp"
#include "test_support.hpp"

namespace inferllama::scan {
namespace {

using Bytes = std::vector<std::uint8_t>;

// Builds a pickle opcode by opcode, as Python's pickle module lays one out.
class Pickle {
 public:
  Pickle& op(std::uint8_t o) {
    bytes.push_back(o);
    return *this;
  }
  Pickle& raw(std::string_view s) {
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  Pickle& le(std::uint64_t v, int width) {
    for (int k = 0; k < width; ++k) op(static_cast<std::uint8_t>(v >> (8 * k)));
    return *this;
  }
  Pickle& proto(int p) { return op(0x80).op(static_cast<std::uint8_t>(p)); }
  Pickle& text(std::string_view s) {
    return op(0x8c).op(static_cast<std::uint8_t>(s.size())).raw(s);
  }  // SHORT_BINUNICODE
  Pickle& memoize() { return op(0x94); }
  Pickle& global(std::string_view module, std::string_view name) {
    return op('c').raw(module).op('\n').raw(name).op('\n');
  }
  Pickle& stack_global() { return op(0x93); }
  Pickle& tuple1() { return op(0x85); }
  Pickle& reduce() { return op('R'); }
  Pickle& stop() { return op('.'); }
  Bytes bytes;
};

// os.system("id") as `pickle.dumps` writes it with protocol 4 on Linux: os.system is posix.system.
Bytes reduce_system(int protocol = 4) {
  Pickle p;
  p.proto(protocol);
  if (protocol >= 4) {
    p.op(0x95).le(40, 8);  // FRAME
    p.text("posix").memoize().text("system").memoize().stack_global().memoize();
  } else {
    p.global("posix", "system").op('q').op(0);
  }
  p.text("id").memoize().tuple1().memoize().reduce().memoize().stop();
  return p.bytes;
}

// An OrderedDict of a tensor as torch.save writes data.pkl (protocol 2, storages by persistent id).
Bytes clean_state_dict() {
  Pickle p;
  p.proto(2).global("collections", "OrderedDict").op('q').op(0).op(')').op('R').op('q').op(1);
  p.op('X').le(6, 4).raw("weight").op('q').op(2);
  p.global("torch._utils", "_rebuild_tensor_v2").op('q').op(3);
  p.op('(').op('(').op('X').le(7, 4).raw("storage").op('q').op(4);
  p.global("torch", "FloatStorage").op('q').op(5).op('X').le(1, 4).raw("0").op('X').le(3, 4).raw("cpu").op('K').op(4);
  p.op('t').op('Q');  // BINPERSID
  p.op('K').op(0).op('K').op(2).op('K').op(2).op(0x86).op('K').op(2).op('K').op(1).op(0x86).op(0x89);
  p.global("collections", "OrderedDict").op(')').op('R').op('t').op('R').op('s').stop();
  return p.bytes;
}

ScanVerdict scan_bytes(std::string_view path, const Bytes& data, std::size_t piece = SIZE_MAX) {
  FileScanner scanner(path, data.size());
  for (std::size_t at = 0; at < data.size(); at += std::min(piece, data.size() - at)) {
    scanner.update(std::span<const std::uint8_t>(data).subspan(at, std::min(piece, data.size() - at)));
  }
  return scanner.finish();
}

std::string joined(const ScanVerdict& v) {
  std::string out;
  for (const auto& f : v.findings) out += f + "\n";
  return out + v.error;
}

// Every verdict is the same fed whole or a byte at a time.
ScanVerdict scan_both_ways(std::string_view path, const Bytes& data) {
  const ScanVerdict whole = scan_bytes(path, data);
  const ScanVerdict bytewise = scan_bytes(path, data, 1);
  EXPECT_EQ(whole.result, bytewise.result) << joined(whole) << "\n--\n" << joined(bytewise);
  EXPECT_EQ(whole.findings, bytewise.findings);
  EXPECT_EQ(whole.error, bytewise.error);
  return whole;
}

// ---- pickle --------------------------------------------------------------------------------------------------

TEST(PickleScan, ReduceOfOsSystemIsAFindingInEveryProtocol) {
  for (int protocol : {2, 3, 4, 5}) {
    SCOPED_TRACE(protocol);
    const ScanVerdict v = scan_both_ways("evil.pkl", reduce_system(protocol));
    EXPECT_EQ(v.kind, "pickle");
    ASSERT_EQ(v.result, ScanResult::findings) << joined(v);
    ASSERT_EQ(v.findings.size(), 1u);
    EXPECT_EQ(v.findings[0],
              std::string("posix.system (") + (protocol >= 4 ? "STACK_GLOBAL" : "GLOBAL") + ", called by REDUCE)");
    EXPECT_EQ(v.findings_total, 1u);
    EXPECT_EQ(v.scanner_version, kScannerVersion);
  }
}

TEST(PickleScan, ProtocolZeroInstAndGlobal) {
  Pickle inst;
  inst.op('(').op('S').raw("'id'\n").op('i').raw("os\nsystem\n").stop();
  EXPECT_EQ(joined(scan_both_ways("a.pkl", inst.bytes)), "os.system (INST)\n");
  Pickle global;
  global.global("builtins", "eval").op('(').op('V').raw("1+1\n").op('t').reduce().stop();
  EXPECT_EQ(joined(scan_both_ways("a.pkl", global.bytes)), "builtins.eval (GLOBAL, called by REDUCE)\n");
}

TEST(PickleScan, TorchAndNumpyGlobalsAreClean) {
  const ScanVerdict v = scan_both_ways("pytorch_model.bin", clean_state_dict());
  EXPECT_EQ(v.result, ScanResult::clean) << joined(v);
  Pickle np;
  np.proto(4).text("numpy.core.multiarray").memoize().text("_reconstruct").memoize().stack_global().memoize();
  np.text("numpy").memoize().text("ndarray").memoize().stack_global().memoize().op('K').op(0).tuple1();
  np.op('C').op(1).raw("b").op(0x87).reduce().stop();
  EXPECT_EQ(scan_both_ways("arrays.pkl", np.bytes).result, ScanResult::clean);
  // Python 2 names are Python 3's.
  Pickle py2;
  py2.global("__builtin__", "set").op(']').op(0x85).reduce().stop();
  EXPECT_EQ(scan_both_ways("a.pkl", py2.bytes).result, ScanResult::clean);
}

TEST(PickleScan, StackGlobalIsFollowedThroughTheMemoPopsAndEscapes) {
  // "os" and "system" memoized, junk pushed and popped, both fetched back from the memo.
  Pickle memo;
  memo.proto(4).text("os").memoize().text("system").memoize().op('0').op('0').text("junk").op('0');
  memo.op('h').op(0).op('h').op(1).stack_global().op(')').reduce().stop();
  EXPECT_EQ(joined(scan_both_ways("a.pkl", memo.bytes)), "os.system (STACK_GLOBAL, called by REDUCE)\n");
  // A junk string on top, popped: the names below are the ones taken.
  Pickle popped;
  popped.proto(4).text("os").text("system").text("innocent").op('0').stack_global().stop();
  EXPECT_EQ(joined(scan_both_ways("a.pkl", popped.bytes)), "os.system (STACK_GLOBAL)\n");
  // Protocol 0 strings, escaped: 'os' as '\x6fs', 'system' as raw-unicode-escape.
  Pickle escaped;
  escaped.op('S').raw("'\\x6fs'\n").op('V').raw("\\u0073ystem\n").stack_global().stop();
  EXPECT_EQ(joined(scan_both_ways("a.pkl", escaped.bytes)), "os.system (STACK_GLOBAL)\n");
  // DUP of a memoized name, PUT and GET in text form.
  Pickle text_memo;
  text_memo.op('V').raw("subprocess\n").op('p').raw("7\n").op('0').op('g').raw("7\n").op('V').raw("run\n");
  text_memo.stack_global().stop();
  EXPECT_EQ(joined(scan_both_ways("a.pkl", text_memo.bytes)), "subprocess.run (STACK_GLOBAL)\n");
}

TEST(PickleScan, NamesItCannotFollowAreFindings) {
  // STACK_GLOBAL of a string an allowed callable returned (builtins.str("os")).
  Pickle computed;
  computed.proto(4).global("builtins", "str").text("os").tuple1().reduce().text("system").stack_global().stop();
  EXPECT_EQ(joined(scan_both_ways("a.pkl", computed.bytes)), "a name computed by the pickle (STACK_GLOBAL)\n");
  // An import through copyreg's extension registry.
  Pickle ext;
  ext.proto(2).op(0x82).op(7).op(')').reduce().stop();
  EXPECT_EQ(joined(scan_both_ways("a.pkl", ext.bytes)), "extension code 7 (EXT1, called by REDUCE)\n");
  // A name longer than the scanner keeps is never one it allows.
  Pickle long_name;
  long_name.global("torch", std::string(5000, 'a')).stop();
  const ScanVerdict v = scan_both_ways("a.pkl", long_name.bytes);
  EXPECT_EQ(v.result, ScanResult::findings);
  EXPECT_LE(v.findings.at(0).size(), kMaxFindingLength);
}

TEST(PickleScan, MalformedStreamsAreErrors) {
  Pickle cut;
  cut.proto(2).global("collections", "OrderedDict").op(')');
  ScanVerdict v = scan_both_ways("a.pkl", cut.bytes);
  EXPECT_EQ(v.result, ScanResult::error);
  EXPECT_NE(v.error.find("ends before its STOP"), std::string::npos) << v.error;
  Pickle unknown;
  unknown.proto(2).op(0xff);
  v = scan_both_ways("a.pkl", unknown.bytes);
  EXPECT_EQ(v.result, ScanResult::error);
  EXPECT_NE(v.error.find("unknown opcode 0xff"), std::string::npos) << v.error;
  EXPECT_EQ(scan_both_ways("empty.pkl", {}).result, ScanResult::error);
  Pickle underflow;
  underflow.proto(2).reduce().stop();
  EXPECT_EQ(scan_both_ways("a.pkl", underflow.bytes).result, ScanResult::error);
  // A finding before the stream breaks still counts: an unpickler has run it by then.
  Bytes evil = reduce_system(2);
  evil.pop_back();
  evil.push_back(0xfe);
  v = scan_both_ways("a.pkl", evil);
  EXPECT_EQ(v.result, ScanResult::findings);
  EXPECT_NE(v.error.find("unknown opcode"), std::string::npos);
}

TEST(PickleScan, HostileStreamsCostBoundedMemory) {
  // Nesting past the bound, a string claiming 2^62 bytes, ten thousand memo entries: errors or findings,
  // never an allocation of what the stream claims.
  Pickle deep;
  deep.proto(2);
  for (std::size_t i = 0; i <= PickleScanner::kMaxMarks; ++i) deep.op('(');
  EXPECT_NE(scan_bytes("a.pkl", deep.bytes).error.find("nesting deeper"), std::string::npos);
  Pickle huge;
  huge.proto(4).op(0x8d).le(std::uint64_t{1} << 62, 8).raw("os");
  EXPECT_EQ(scan_bytes("a.pkl", huge.bytes).result, ScanResult::error);
  Pickle memo;
  memo.proto(4);
  for (int i = 0; i < 100000; ++i) memo.text("x").memoize().op('0');
  memo.op(0x88).stop();
  EXPECT_EQ(scan_bytes("a.pkl", memo.bytes).result, ScanResult::clean);
  Pickle wide;  // a stack far wider than the window the scanner keeps
  wide.proto(4).text("os").text("system");
  for (int i = 0; i < 1000; ++i) wide.op(0x88);
  for (int i = 0; i < 1000; ++i) wide.op('0');
  wide.stack_global().stop();
  EXPECT_EQ(joined(scan_bytes("a.pkl", wide.bytes)), "a name computed by the pickle (STACK_GLOBAL)\n");
}

TEST(PickleScan, ConsecutivePicklesAndTorchLegacyFiles) {
  // A clean pickle, then a malicious one: both are read (an unpickler called twice runs both).
  Bytes two = clean_state_dict();
  const Bytes evil = reduce_system(4);
  two.insert(two.end(), evil.begin(), evil.end());
  EXPECT_EQ(scan_both_ways("a.pkl", two).result, ScanResult::findings);
  // torch's legacy format: its magic number, then four pickles, then tensor bytes that happen to start like
  // one: those are data, not read.
  Pickle legacy;
  legacy.proto(2).op(0x8a).op(10).raw("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19").stop();
  legacy.proto(2).op('M').le(1001, 2).stop();
  legacy.proto(2).op('}').stop();
  const Bytes main_pickle = clean_state_dict();
  legacy.raw(std::string(main_pickle.begin(), main_pickle.end()));
  legacy.proto(2).op(']').stop();
  legacy.proto(2).global("os", "system").stop();  // bytes of a tensor
  EXPECT_EQ(scan_both_ways("pytorch_model.bin", legacy.bytes).result, ScanResult::clean);
  // Bytes after the pickle that do not start like one are not read either.
  Bytes trailing = clean_state_dict();
  trailing.insert(trailing.end(), {'c', 'o', 's', '\n'});
  EXPECT_EQ(scan_both_ways("a.pkl", trailing).result, ScanResult::clean);
}

TEST(Allowlist, ExactNamesAndStorageClasses) {
  EXPECT_TRUE(allowed_global("torch._utils._rebuild_tensor_v2"));
  EXPECT_TRUE(allowed_global("torch.BFloat16Storage"));
  EXPECT_TRUE(allowed_global("numpy.dtypes.Float32DType"));
  EXPECT_TRUE(allowed_global(global_name("copy_reg", "_reconstructor")));
  EXPECT_FALSE(allowed_global("torch.load"));
  EXPECT_FALSE(allowed_global("torch.storage._load_from_bytes"));
  EXPECT_FALSE(allowed_global("torch.hub.Storage"));
  EXPECT_FALSE(allowed_global("torch.Storage.__init__"));
  EXPECT_FALSE(allowed_global("collections.OrderedDict.__init__"));
  EXPECT_FALSE(allowed_global("builtins.getattr"));
}

// ---- zip (PyTorch's format) ----------------------------------------------------------------------------------

struct ZipEntry {
  std::string name;
  Bytes data;
  bool deflate = false;
};

Bytes raw_deflate(const Bytes& data) {
  z_stream z{};
  deflateInit2(&z, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  Bytes out(deflateBound(&z, data.size()));
  z.next_in = const_cast<Bytef*>(data.data());
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

void put(Bytes& out, std::uint64_t v, int width) {
  for (int k = 0; k < width; ++k) out.push_back(static_cast<std::uint8_t>(v >> (8 * k)));
}

Bytes local_header(const ZipEntry& e, const Bytes& stored) {
  Bytes out;
  put(out, 0x04034b50, 4);
  put(out, 20, 2);
  put(out, 0, 2);
  put(out, e.deflate ? 8 : 0, 2);
  put(out, 0, 4);
  put(out, crc32(0, e.data.data(), static_cast<uInt>(e.data.size())), 4);
  put(out, stored.size(), 4);
  put(out, e.data.size(), 4);
  put(out, e.name.size(), 2);
  put(out, 0, 2);
  out.insert(out.end(), e.name.begin(), e.name.end());
  return out;
}

// A zip as Python's zipfile writes one; `extra_central` names entries at offsets of its own choosing.
Bytes make_zip(const std::vector<ZipEntry>& entries,
               const std::vector<std::pair<ZipEntry, std::uint64_t>>& extra_central = {}) {
  Bytes out, central;
  auto central_entry = [&](const ZipEntry& e, std::uint64_t stored_size, std::uint64_t offset) {
    put(central, 0x02014b50, 4);
    put(central, 20, 2);
    put(central, 20, 2);
    put(central, 0, 2);
    put(central, e.deflate ? 8 : 0, 2);
    put(central, 0, 4);
    put(central, crc32(0, e.data.data(), static_cast<uInt>(e.data.size())), 4);
    put(central, stored_size, 4);
    put(central, e.data.size(), 4);
    put(central, e.name.size(), 2);
    put(central, 0, 2);
    put(central, 0, 2);
    put(central, 0, 2);
    put(central, 0, 2);
    put(central, 0, 4);
    put(central, offset, 4);
    central.insert(central.end(), e.name.begin(), e.name.end());
  };
  for (const auto& e : entries) {
    const Bytes stored = e.deflate ? raw_deflate(e.data) : e.data;
    const std::uint64_t offset = out.size();
    const Bytes head = local_header(e, stored);
    out.insert(out.end(), head.begin(), head.end());
    out.insert(out.end(), stored.begin(), stored.end());
    central_entry(e, stored.size(), offset);
  }
  for (const auto& [e, offset] : extra_central) central_entry(e, e.data.size(), offset);
  const std::uint64_t central_at = out.size();
  out.insert(out.end(), central.begin(), central.end());
  put(out, 0x06054b50, 4);
  put(out, 0, 4);
  const std::size_t count = entries.size() + extra_central.size();
  put(out, count, 2);
  put(out, count, 2);
  put(out, central.size(), 4);
  put(out, central_at, 4);
  put(out, 0, 2);
  return out;
}

Bytes tensor_bytes(std::size_t n) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(i * 31 + 7);
  return b;
}

TEST(ZipScan, TorchLayoutWithAMaliciousDataPkl) {
  const Bytes zip = make_zip({{"archive/data.pkl", reduce_system(2)},
                              {"archive/byteorder", {'l', 'i', 't', 't', 'l', 'e'}},
                              {"archive/data/0", tensor_bytes(100000)},
                              {"archive/version", {'3', '\n'}}});
  const ScanVerdict v = scan_both_ways("pytorch_model.bin", zip);
  EXPECT_EQ(v.kind, "zip");
  EXPECT_EQ(joined(v), "archive/data.pkl: posix.system (GLOBAL, called by REDUCE)\n");
}

TEST(ZipScan, CleanTorchLayoutAndDeflatedEntries) {
  const Bytes clean = make_zip({{"archive/data.pkl", clean_state_dict()},
                                {"archive/data/0", tensor_bytes(70000), true},
                                {"archive/version", {'3', '\n'}}});
  EXPECT_EQ(scan_both_ways("model.pt", clean).result, ScanResult::clean);
  const Bytes deflated = make_zip({{"archive/data.pkl", reduce_system(4), true}, {"archive/data/0", tensor_bytes(10)}});
  EXPECT_EQ(joined(scan_both_ways("model.pth", deflated)),
            "archive/data.pkl: posix.system (STACK_GLOBAL, called by REDUCE)\n");
}

TEST(ZipScan, AnEntryHiddenInsideAnotherIsAFinding) {
  // The directory names archive/data.pkl inside archive/data/0's bytes, where unzipping finds it and a front
  // to back reading does not.
  const ZipEntry hidden{"archive/data.pkl", reduce_system(2)};
  Bytes carrier = local_header(hidden, hidden.data);
  carrier.insert(carrier.end(), hidden.data.begin(), hidden.data.end());
  const ZipEntry outer{"archive/data/0", carrier};
  const std::uint64_t hidden_at = 30 + outer.name.size();
  const ScanVerdict v = scan_both_ways("pytorch_model.bin", make_zip({outer}, {{hidden, hidden_at}}));
  EXPECT_EQ(v.result, ScanResult::findings);
  EXPECT_NE(joined(v).find("names archive/data.pkl at byte " + std::to_string(hidden_at)), std::string::npos)
      << joined(v);
}

TEST(ZipScan, CutAndCorruptArchivesAreErrors) {
  Bytes zip = make_zip({{"archive/data.pkl", clean_state_dict()}, {"archive/data/0", tensor_bytes(1000)}});
  zip.resize(zip.size() - 30);
  EXPECT_EQ(scan_both_ways("pytorch_model.bin", zip).result, ScanResult::error);
  Bytes garbage = make_zip({{"archive/data.pkl", clean_state_dict()}});
  garbage.insert(garbage.begin() + 40, {'x', 'y', 'z'});
  EXPECT_NE(scan_bytes("pytorch_model.bin", garbage).result, ScanResult::clean);
}

// ---- safetensors ---------------------------------------------------------------------------------------------

Bytes safetensors(const nlohmann::json& header, std::size_t data_size) {
  std::string text = header.dump();
  while (text.size() % 8) text += ' ';
  Bytes out;
  put(out, text.size(), 8);
  out.insert(out.end(), text.begin(), text.end());
  const Bytes data = tensor_bytes(data_size);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

nlohmann::json tensor(const char* dtype, std::vector<int> shape, std::uint64_t begin, std::uint64_t end) {
  return {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, end}}};
}

TEST(SafetensorsScan, CleanFileIsDecidedByItsHeader) {
  const nlohmann::json header{
      {"__metadata__", {{"format", "pt"}}}, {"b", tensor("F32", {2, 3}, 16, 40)}, {"a", tensor("BF16", {8}, 0, 16)}};
  const Bytes file = safetensors(header, 40);
  EXPECT_EQ(scan_both_ways("model.safetensors", file).result, ScanResult::clean);
  // The verdict is known once the header is in: the data is not read.
  FileScanner scanner("model.safetensors", file.size());
  const std::size_t header_end = file.size() - 40;
  scanner.update(std::span<const std::uint8_t>(file).first(header_end - 1));
  EXPECT_FALSE(scanner.decided());
  scanner.update(std::span<const std::uint8_t>(file).subspan(header_end - 1, 1));
  EXPECT_TRUE(scanner.decided());
  EXPECT_EQ(scanner.finish().result, ScanResult::clean);
  // Told by its bytes alone (an upload has no name).
  EXPECT_EQ(scan_bytes("", file).kind, "safetensors");
}

TEST(SafetensorsScan, TruncatedOverlappingAndLyingHeadersAreFindings) {
  const nlohmann::json two{{"a", tensor("F32", {4}, 0, 16)}, {"b", tensor("F32", {4}, 16, 32)}};
  Bytes cut = safetensors(two, 32);
  cut.resize(cut.size() - 10);
  EXPECT_NE(joined(scan_both_ways("m.safetensors", cut)).find("reach byte 32 of a data section of 22"),
            std::string::npos);
  const nlohmann::json overlap{{"a", tensor("F32", {4}, 0, 16)}, {"b", tensor("F32", {4}, 8, 24)}};
  EXPECT_NE(joined(scan_both_ways("m.safetensors", safetensors(overlap, 24))).find("overlap"), std::string::npos);
  const nlohmann::json gap{{"a", tensor("F32", {4}, 0, 16)}, {"b", tensor("F32", {4}, 20, 36)}};
  EXPECT_NE(joined(scan_both_ways("m.safetensors", safetensors(gap, 36))).find("gap"), std::string::npos);
  const nlohmann::json wrong_size{{"a", tensor("F16", {4}, 0, 16)}};
  EXPECT_NE(joined(scan_both_ways("m.safetensors", safetensors(wrong_size, 16))).find("need 8"), std::string::npos);
  const nlohmann::json dtype{{"a", tensor("F33", {4}, 0, 16)}};
  EXPECT_NE(joined(scan_both_ways("m.safetensors", safetensors(dtype, 16))).find("unknown dtype"), std::string::npos);
  const nlohmann::json tail{{"a", tensor("F32", {4}, 0, 16)}};
  EXPECT_NE(joined(scan_both_ways("m.safetensors", safetensors(tail, 20))).find("after the last"), std::string::npos);
  const nlohmann::json extra_field{{"a", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 16}}, {"x", 1}}}};
  EXPECT_EQ(scan_both_ways("m.safetensors", safetensors(extra_field, 16)).result, ScanResult::findings);
  const nlohmann::json huge_shape{{"a", tensor("F32", {1 << 30, 1 << 30, 1 << 30, 1 << 30}, 0, 16)}};
  EXPECT_EQ(scan_both_ways("m.safetensors", safetensors(huge_shape, 16)).result, ScanResult::findings);
}

TEST(SafetensorsScan, HeaderLengthAndJsonAreChecked) {
  Bytes past;
  put(past, 1000, 8);
  past.push_back('{');
  past.push_back('}');
  EXPECT_NE(joined(scan_both_ways("m.safetensors", past)).find("past the end"), std::string::npos);
  Bytes bound;
  put(bound, std::uint64_t{1} << 40, 8);
  EXPECT_NE(joined(scan_bytes("m.safetensors", bound)).find("bound"), std::string::npos);
  Bytes not_json;
  put(not_json, 8, 8);
  for (char c : std::string("{\"a\": ]}")) not_json.push_back(static_cast<std::uint8_t>(c));
  EXPECT_NE(joined(scan_both_ways("m.safetensors", not_json)).find("not JSON"), std::string::npos);
  EXPECT_EQ(scan_both_ways("m.safetensors", Bytes{1, 2, 3}).result, ScanResult::error);
}

// ---- GGUF ----------------------------------------------------------------------------------------------------

class Gguf {
 public:
  Gguf(std::uint64_t tensors, std::uint64_t kvs) {
    raw("GGUF");
    put(bytes, 3, 4);
    put(bytes, tensors, 8);
    put(bytes, kvs, 8);
  }
  Gguf& raw(std::string_view s) {
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  Gguf& string(std::string_view s) {
    put(bytes, s.size(), 8);
    return raw(s);
  }
  Gguf& kv_u32(std::string_view key, std::uint32_t v) {
    string(key);
    put(bytes, 4, 4);
    put(bytes, v, 4);
    return *this;
  }
  Gguf& kv_strings(std::string_view key, const std::vector<std::string>& values) {
    string(key);
    put(bytes, 9, 4);
    put(bytes, 8, 4);
    put(bytes, values.size(), 8);
    for (const auto& v : values) string(v);
    return *this;
  }
  Gguf& tensor(std::string_view name, std::vector<std::uint64_t> dims, std::uint32_t type, std::uint64_t offset) {
    string(name);
    put(bytes, dims.size(), 4);
    for (auto d : dims) put(bytes, d, 8);
    put(bytes, type, 4);
    put(bytes, offset, 8);
    return *this;
  }
  Bytes with_data(std::size_t data) {
    Bytes out = bytes;
    while (out.size() % 32) out.push_back(0);
    const Bytes d = tensor_bytes(data);
    out.insert(out.end(), d.begin(), d.end());
    return out;
  }
  Bytes bytes;
};

TEST(GgufScan, CleanHeaderIsDecidedBeforeTheData) {
  Gguf g(2, 2);
  g.kv_u32("general.alignment", 32).kv_strings("tokenizer.ggml.tokens", {"a", "b", "<s>"});
  g.tensor("tok_embd.weight", {64, 2}, 0, 0).tensor("blk.0.attn_q.weight", {64}, 8, 512);  // F32 then Q8_0
  const Bytes file = g.with_data(512 + 68);
  EXPECT_EQ(scan_both_ways("model.gguf", file).result, ScanResult::clean);
  FileScanner scanner("model.gguf", file.size());
  scanner.update(std::span<const std::uint8_t>(file).first(g.bytes.size()));
  EXPECT_TRUE(scanner.decided());
}

TEST(GgufScan, CountsAndSizesThatDoNotFitAreFindings) {
  Gguf many(std::uint64_t{1} << 40, 0);
  EXPECT_NE(joined(scan_both_ways("m.gguf", many.with_data(64))).find("tensors, more than"), std::string::npos);
  Gguf past(1, 0);
  past.tensor("w", {1024, 1024}, 0, 0);  // 4 MiB of F32 in a file of a few bytes
  EXPECT_NE(joined(scan_both_ways("m.gguf", past.with_data(64))).find("past the end"), std::string::npos);
  Gguf long_string(0, 1);
  long_string.string("k");
  put(long_string.bytes, 8, 4);
  put(long_string.bytes, std::uint64_t{1} << 50, 8);
  EXPECT_NE(joined(scan_both_ways("m.gguf", long_string.with_data(0))).find("past the file"), std::string::npos);
  Gguf dims(1, 0);
  dims.tensor("w", {1, 1, 1, 1, 1}, 0, 0);
  EXPECT_NE(joined(scan_both_ways("m.gguf", dims.with_data(64))).find("dimensions"), std::string::npos);
  Gguf type(1, 0);
  type.tensor("w", {32}, 4, 0);  // a type ggml removed
  EXPECT_NE(joined(scan_both_ways("m.gguf", type.with_data(64))).find("unknown type 4"), std::string::npos);
  Gguf cut(1, 1);
  cut.kv_u32("general.alignment", 32);
  EXPECT_EQ(scan_both_ways("m.gguf", cut.bytes).result, ScanResult::error);
}

// ---- formats by name, the policy, the verdicts in the index ----------------------------------------------------

TEST(FileScan, FormatComesFromTheNameThenTheBytes) {
  EXPECT_EQ(scan_bytes("README.md", reduce_system()).result, ScanResult::skipped);
  EXPECT_EQ(scan_bytes("tokenizer.bin", tensor_bytes(100)).result, ScanResult::skipped);
  EXPECT_EQ(scan_bytes("weights.bin", reduce_system()).kind, "pickle");
  EXPECT_EQ(scan_bytes("WEIGHTS.PT", make_zip({{"a/data.pkl", clean_state_dict()}})).kind, "zip");
  EXPECT_EQ(scan_bytes("", reduce_system()).kind, "pickle");
  EXPECT_EQ(scan_bytes("", tensor_bytes(100)).kind, "none");
  EXPECT_EQ(scan_header_value(scan_bytes("evil.pkl", reduce_system())), "findings=1");
}

TEST(ScanPolicy, TheRulesActionOverridesTheNodes) {
  EXPECT_EQ(effective_scan_action(std::nullopt, ScanAction::warn), ScanAction::warn);
  EXPECT_EQ(effective_scan_action(ScanAction::deny, ScanAction::warn), ScanAction::deny);
  EXPECT_EQ(effective_scan_action(ScanAction::off, ScanAction::deny), ScanAction::off);
  EXPECT_EQ(parse_scan_action("deny"), ScanAction::deny);
  EXPECT_FALSE(parse_scan_action("block"));

  struct Rules final : RepoPolicy {
    RepoDecision decide(const RepoId& repo) const override {
      RepoDecision d;
      if (repo.name.starts_with("trusted/")) d.scan = ScanAction::off;
      return d;
    }
  } rules;
  const auto dir = testing::fresh_test_dir("scan-policy");
  auto index = open_rocksdb_index(dir / "index");
  ScanService service(*index, ScanAction::deny, &rules);
  EXPECT_EQ(service.action_for({RepoType::model, "trusted/x"}), ScanAction::off);
  EXPECT_EQ(service.action_for({RepoType::model, "acme/x"}), ScanAction::deny);
  ScanVerdict clean;
  clean.result = ScanResult::clean;
  EXPECT_FALSE(refused_under_deny(clean));
  clean.result = ScanResult::error;
  EXPECT_TRUE(refused_under_deny(clean));
  index.reset();
  std::filesystem::remove_all(dir);
}

TEST(ScanVerdicts, KeptInTheIndexAndDroppedWithTheirBlob) {
  const auto dir = testing::fresh_test_dir("scan-index");
  auto index = open_rocksdb_index(dir / "index");
  const ScanVerdict verdict = scan_bytes("evil.pkl", reduce_system());
  const std::string etag(64, 'e');
  {
    ScanService service(*index, ScanAction::warn);
    EXPECT_EQ(service.load(etag), nullptr);
    service.record(etag, verdict);
    ASSERT_NE(service.cached(etag), nullptr);
  }
  ScanService fresh(*index, ScanAction::warn);
  EXPECT_EQ(fresh.cached(etag), nullptr);
  const auto loaded = fresh.load(etag);
  ASSERT_NE(loaded, nullptr);
  EXPECT_EQ(loaded->findings, verdict.findings);
  EXPECT_EQ(loaded->result, ScanResult::findings);
  EXPECT_EQ(loaded->kind, "pickle");

  BlobEntry blob;
  blob.etag = etag;
  index->commit_blob(blob, {}, BlobScope{true, {}});
  index->remove_blob(etag);
  EXPECT_FALSE(index->get_scan(etag));
  index.reset();
  std::filesystem::remove_all(dir);
}

// A download feeds the scanner from its in-order hash, and the verdict is stored with the blob: chunks arriving out
// of order over several connections, one of them cut and resumed, are scanned whole and in order.
TEST(ScanDownloads, AVerdictIsRecordedWithTheBlobAndShownOnTheDownload) {
  const auto dir = testing::fresh_test_dir("scan-download");
  ChunkStore store(dir);
  auto index = open_rocksdb_index(dir / "index");
  const Bytes data = make_zip({{"archive/data.pkl", reduce_system(2)}, {"archive/data/0", tensor_bytes(300000)}});
  testing::MemoryUpstream upstream(data);
  upstream.cut_after = 100000;
  asio::thread_pool workers(2);
  cache::DownloadSettings settings = cache::DownloadSettings::from(Config{});
  settings.chunk_size = 64 * 1024;
  settings.parallel_threshold = 64 * 1024;
  ScanService scanning(*index, ScanAction::warn);
  {
    cache::Downloads downloads(store, *index, upstream, workers, settings);
    downloads.set_scanning(&scanning);
    const std::string etag = cache::sha256(data).hex();
    auto download = downloads.get_or_start(
        cache::BlobSource{"mem://f", {}, etag, true, data.size(), nullptr},
        cache::FileClaim{{RepoType::model, "acme/x"}, std::string(40, 'a'), "pytorch_model.bin", true});
    ASSERT_NE(download, nullptr);
    EXPECT_TRUE(download->scanning());
    auto waiter = std::make_shared<testing::Waiter>();
    download->subscribe(waiter);
    waiter->until_done(*download);
    ASSERT_EQ(download->state(), cache::Download::State::complete) << download->error();
    EXPECT_GT(upstream.requests.load(), 1);
    ASSERT_NE(download->verdict(), nullptr);
    EXPECT_EQ(download->verdict()->result, ScanResult::findings);
    const auto stored = index->get_scan(etag);
    ASSERT_TRUE(stored);
    EXPECT_EQ(stored->findings, download->verdict()->findings);
    // The same bytes, scanned again from the store, get the same verdict.
    const auto again = downloads.scan_stored(etag, "pytorch_model.bin");
    ASSERT_NE(again, nullptr);
    EXPECT_EQ(again->findings, stored->findings);
    downloads.shutdown();
  }
  std::string metrics;
  scanning.render_metrics(metrics);
  EXPECT_NE(metrics.find("inferllama_scan_files_total{kind=\"zip\",verdict=\"findings\"} 2"), std::string::npos)
      << metrics;
  workers.join();
  index.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace inferllama::scan
