// The formats whose header describes every byte of the file: a verdict comes from the header alone, so it is
// known once the header has arrived (a download can be refused before its body streams). The rest of the
// file is only counted.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "scan/findings.hpp"

namespace inferllama::scan {

// safetensors: an 8-byte little-endian header length, a JSON header (tensor name -> dtype, shape,
// data_offsets; an optional "__metadata__" of strings), then the tensors' bytes. Findings: a header length
// past the file or the bound, a header that is not such JSON, an unknown dtype, offsets that do not match
// shape x dtype, overlap, leave a gap, or do not end where the file does.
class SafetensorsScanner {
 public:
  SafetensorsScanner(Findings& findings, std::uint64_t file_size);
  void update(std::span<const std::uint8_t> bytes);
  void finish();
  bool decided() const { return decided_; }  // the header was read (or refused): the verdict is known
  const std::string& error() const { return error_; }

  // The format's own bound (the reference implementation refuses larger headers).
  static constexpr std::uint64_t kMaxHeader = 100'000'000;

 private:
  void check_header();

  Findings& findings_;
  const std::uint64_t file_size_;
  std::uint64_t seen_ = 0;
  std::uint8_t length_bytes_[8] = {};
  std::uint64_t header_length_ = 0;
  std::string header_;
  bool decided_ = false;
  std::string error_;
};

// GGUF: magic, version (2 or 3), tensor and key-value counts, the key-value pairs, then each tensor's name,
// dimensions, type and offset into the data section that starts at the next multiple of the alignment.
// Findings: counts no file of this size can hold, strings or arrays longer than the file, more than four
// dimensions, an unknown tensor type, a tensor offset unaligned or whose data ends past the file. Memory is
// a few fields however many tensors or values the header lists.
class GgufScanner {
 public:
  GgufScanner(Findings& findings, std::uint64_t file_size);
  void update(std::span<const std::uint8_t> bytes);
  void finish();
  bool decided() const { return decided_; }
  const std::string& error() const { return error_; }

  static constexpr std::uint64_t kMaxString = 16u << 20;  // a key, a value, a tensor's name
  static constexpr unsigned kMaxDims = 4;                 // GGML_MAX_DIMS
  static constexpr unsigned kMaxArrayDepth = 8;

 private:
  enum class Field : std::uint8_t {
    magic,
    version,
    tensor_count,
    kv_count,
    key_length,
    key,
    value_type,
    value,  // a scalar of value_size_ bytes
    string_length,
    string_bytes,
    array_type,
    array_count,
    tensor_name_length,
    tensor_name,
    dims_count,
    dim,
    tensor_type,
    tensor_offset,
  };
  struct Array {
    std::uint32_t type = 0;
    std::uint64_t left = 0;
  };

  void want(Field field, std::size_t bytes);
  void on_field();
  void begin_value(std::uint32_t type);
  void value_done();
  void next_kv();
  void next_tensor();
  void tensor_done();
  void headers_done();
  void finding(std::string text);
  std::uint64_t field_value() const;
  std::uint64_t remaining() const { return file_size_ - std::min(file_size_, seen_); }

  Findings& findings_;
  const std::uint64_t file_size_;
  std::uint64_t seen_ = 0;
  bool decided_ = false;
  std::string error_;

  Field field_ = Field::magic;
  std::uint8_t buffer_[8] = {};
  std::size_t need_ = 0;
  std::size_t have_ = 0;
  std::uint64_t skip_left_ = 0;  // string bytes being skipped
  bool skipping_ = false;

  std::uint32_t version_ = 0;
  std::uint64_t tensors_ = 0;
  std::uint64_t kvs_ = 0;
  std::uint64_t kv_index_ = 0;
  std::uint64_t tensor_index_ = 0;
  std::string key_;  // kept only when short: general.alignment is looked for
  bool alignment_key_ = false;
  std::uint64_t alignment_ = 32;
  std::vector<Array> arrays_;  // nested arrays being read, at most kMaxArrayDepth
  std::size_t value_size_ = 0;

  // The tensor being read, and what all of them need of the data section.
  std::uint32_t dims_ = 0;
  std::uint32_t dim_index_ = 0;
  std::uint64_t elements_ = 1;
  std::uint64_t row_ = 0;  // the first dimension: a whole number of the type's blocks
  bool elements_overflow_ = false;
  std::uint32_t tensor_type_ = 0;
  std::uint64_t data_needed_ = 0;  // the end of the furthest tensor in the data section
  bool misaligned_ = false;
};

}  // namespace inferllama::scan
