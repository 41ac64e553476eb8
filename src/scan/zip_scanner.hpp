// A zip archive read front to back as its bytes arrive: PyTorch's format (torch.save since 1.6: `NAME/data.pkl`
// and the tensors in `NAME/data/0`, ...). Every entry whose name ends in `.pkl` goes through a PickleScanner
// (stored, or deflated through zlib); other entries are skipped by their size without being looked at. The
// central directory is checked against the entries as they came: an entry it names that is not where the
// sequence of local headers put it (hidden inside another entry's bytes, say) is a finding, since unzipping
// follows the directory, not the sequence.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "scan/findings.hpp"
#include "scan/pickle_scanner.hpp"

namespace inferllama::scan {

class ZipScanner {
 public:
  explicit ZipScanner(Findings& findings);
  ~ZipScanner();
  ZipScanner(const ZipScanner&) = delete;
  ZipScanner& operator=(const ZipScanner&) = delete;

  void update(std::span<const std::uint8_t> bytes);
  void finish();
  // Why the archive could not be read through (the first reason), or "".
  const std::string& error() const { return error_; }
  bool done() const { return step_ == Step::ended || step_ == Step::failed; }

  static constexpr std::size_t kMaxEntries = 1 << 18;
  // A deflated pickle entry whose size is not given ahead of it is inflated at most this far.
  static constexpr std::uint64_t kMaxInflated = std::uint64_t{4} << 30;

 private:
  enum class Step : std::uint8_t { signature, buffered, skip, data, ended, failed };
  enum class Record : std::uint8_t {
    local_fixed,
    local_names,
    central_fixed,
    central_names,
    zip64_end,
    end_fixed,
    size16,
    size32,
    descriptor_head,
    descriptor_signed,
    descriptor_sizes,
  };
  struct Entry {
    std::uint64_t offset = 0;
    std::uint64_t compressed = 0;
    std::uint64_t size = 0;
  };
  struct Inflater;

  void need(std::size_t bytes, Record then);
  void expect_signature();
  void parsed();
  void on_signature(std::uint32_t signature);
  void on_local_names();
  void on_central_names();
  void begin_data();
  // Consumes data bytes of the current entry; returns how many it took.
  std::size_t data(std::span<const std::uint8_t> bytes);
  void data_done();
  void skip(std::uint64_t bytes);
  void fail(std::string why);
  void entry_error(const std::string& why);

  Findings& findings_;
  Step step_ = Step::signature;
  Record record_ = Record::local_fixed;
  std::string error_;
  std::uint64_t offset_ = 0;  // bytes consumed
  std::uint64_t record_offset_ = 0;
  std::vector<std::uint8_t> buffer_;
  std::size_t need_ = 0;
  std::uint64_t skip_left_ = 0;
  bool central_seen_ = false;

  // The local entry being read.
  std::uint16_t flags_ = 0;
  std::uint16_t method_ = 0;
  std::uint64_t compressed_ = 0;
  std::uint64_t size_ = 0;
  bool sized_ = true;  // its sizes come ahead of its data (else a data descriptor follows it)
  bool zip64_ = false;
  std::uint64_t entry_offset_ = 0;
  std::size_t extra_at_ = 0;  // the name's length: where the extra field starts in the buffer
  std::string name_;
  std::uint64_t data_left_ = 0;
  std::uint64_t data_read_ = 0;
  std::unique_ptr<PickleScanner> pickle_;
  std::unique_ptr<Inflater> inflater_;
  std::uint64_t inflate_left_ = 0;  // inflated bytes a pickle entry may still give its scanner
  std::vector<Entry> entries_;      // in the order they came, so by offset

  // The central directory entry being read.
  std::uint64_t central_compressed_ = 0;
  std::uint64_t central_size_ = 0;
  std::uint64_t central_offset_ = 0;
  std::size_t extra_length_ = 0;
};

}  // namespace inferllama::scan
