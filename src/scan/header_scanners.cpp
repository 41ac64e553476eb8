#include "scan/header_scanners.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <optional>
#include <utility>

namespace inferllama::scan {
namespace {

__extension__ typedef unsigned __int128 u128;  // sizes computed without overflow

// ---- safetensors ------------------------------------------------------------------------------------------

struct Dtype {
  std::string_view name;
  unsigned bits;
};
constexpr std::array kDtypes = std::to_array<Dtype>({
    {"BOOL", 8},    {"F4", 4},      {"F6_E2M3", 6}, {"F6_E3M2", 6},     {"U8", 8},          {"I8", 8},
    {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"I16", 16},
    {"U16", 16},    {"F16", 16},    {"BF16", 16},   {"I32", 32},        {"U32", 32},        {"F32", 32},
    {"C64", 64},    {"F64", 64},    {"I64", 64},    {"U64", 64},
});

std::optional<unsigned> dtype_bits(std::string_view name) {
  for (const auto& d : kDtypes) {
    if (d.name == name) return d.bits;
  }
  return std::nullopt;
}

// Reads the header's JSON as events, keeping only each tensor's offsets: a document object model of a header
// near the bound would take several times its size.
class HeaderReader : public nlohmann::json_sax<nlohmann::json> {
 public:
  HeaderReader(Findings& findings, std::vector<std::pair<std::uint64_t, std::uint64_t>>& spans)
      : findings_(findings), spans_(spans) {}

  bool null() override { return scalar(); }
  bool boolean(bool) override { return scalar(); }
  bool number_integer(number_integer_t value) override {
    if (value < 0) return scalar();
    return number(static_cast<std::uint64_t>(value));
  }
  bool number_unsigned(number_unsigned_t value) override { return number(value); }
  bool number_float(number_float_t, const string_t&) override { return scalar(); }
  bool binary(binary_t&) override { return scalar(); }
  bool string(string_t& value) override {
    if (depth_ == 2 && in_tensor_ && field_ == Field::dtype) {
      dtype_ = value;
      has_dtype_ = true;
      return true;
    }
    if (depth_ == 2 && !in_tensor_) return true;  // a __metadata__ value: strings are what it holds
    return scalar();
  }
  bool start_object(std::size_t) override {
    ++depth_;
    if (depth_ == 1) return true;
    if (depth_ == 2) {
      in_tensor_ = key_ != "__metadata__";
      if (in_tensor_) begin_tensor();
      return true;
    }
    return malformed("nested objects");
  }
  bool key(string_t& name) override {
    if (depth_ == 1) {
      key_ = name;
      return true;
    }
    if (depth_ == 2 && in_tensor_) {
      field_ = name == "dtype"          ? Field::dtype
               : name == "shape"        ? Field::shape
               : name == "data_offsets" ? Field::offsets
                                        : Field::other;
      if (field_ == Field::other)
        return malformed("tensor " + name_of_key() + " has a field \"" + std::string(name) + "\"");
    }
    return true;
  }
  bool end_object() override {
    if (depth_ == 2 && in_tensor_) end_tensor();
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override {
    if (depth_ == 2 && in_tensor_ && (field_ == Field::shape || field_ == Field::offsets) && !in_array_) {
      in_array_ = true;
      array_.clear();
      return true;
    }
    return malformed("an array where the format has none");
  }
  bool end_array() override {
    in_array_ = false;
    if (field_ == Field::shape) {
      shape_ = array_;
      has_shape_ = true;
    } else if (field_ == Field::offsets) {
      if (array_.size() != 2)
        return malformed("tensor " + name_of_key() + " has data_offsets that are not two numbers");
      offsets_ = {array_[0], array_[1]};
      has_offsets_ = true;
    }
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception&) override {
    findings_.add("the header is not JSON (at byte " + std::to_string(position) + " of it)");
    return false;
  }

  bool refused() const { return refused_; }

 private:
  enum class Field : std::uint8_t { other, dtype, shape, offsets };

  std::string name_of_key() const { return "\"" + printable(key_, 64) + "\""; }
  bool malformed(const std::string& what) {
    findings_.add("the header is not safetensors': " + what);
    refused_ = true;
    return false;
  }
  bool scalar() {
    if (depth_ == 2 && !in_tensor_) return malformed("__metadata__ holds a value that is not a string");
    return malformed("a value where the format has none");
  }
  bool number(std::uint64_t value) {
    if (!in_array_ || depth_ != 2 || !in_tensor_) return scalar();
    if (array_.size() >= 64) return malformed("tensor " + name_of_key() + " has more than 64 dimensions");
    array_.push_back(value);
    return true;
  }
  void begin_tensor() {
    has_dtype_ = has_shape_ = has_offsets_ = false;
    shape_.clear();
  }
  void end_tensor() {
    in_tensor_ = false;
    const std::string name = name_of_key();
    if (!has_dtype_ || !has_shape_ || !has_offsets_) {
      findings_.add("tensor " + name + " lacks its dtype, shape or data_offsets");
      return;
    }
    const auto bits = dtype_bits(dtype_);
    if (!bits) {
      findings_.add("tensor " + name + " has the unknown dtype \"" + printable(dtype_, 32) + "\"");
    }
    const auto [begin, end] = offsets_;
    if (begin > end) {
      findings_.add("tensor " + name + " ends before it begins");
      return;
    }
    if (bits) {
      // elements x bits / 8, in 128 bits so no shape overflows it unseen.
      u128 total = *bits;
      bool overflow = false;
      for (const auto d : shape_) {
        total *= d;
        overflow = overflow || total > (static_cast<u128>(1) << 100);
      }
      if (overflow || total % 8 != 0 || total / 8 != end - begin) {
        findings_.add(
            "tensor " + name + ": data_offsets span " + std::to_string(end - begin) +
            " bytes, its shape and dtype need " +
            (overflow ? std::string("more than 2^97") : std::to_string(static_cast<std::uint64_t>(total / 8))));
      }
    }
    spans_.emplace_back(begin, end);
  }

  Findings& findings_;
  std::vector<std::pair<std::uint64_t, std::uint64_t>>& spans_;
  int depth_ = 0;
  bool in_tensor_ = false;
  bool in_array_ = false;
  bool refused_ = false;
  std::string key_;
  Field field_ = Field::other;
  std::vector<std::uint64_t> array_;
  std::string dtype_;
  std::vector<std::uint64_t> shape_;
  std::pair<std::uint64_t, std::uint64_t> offsets_;
  bool has_dtype_ = false, has_shape_ = false, has_offsets_ = false;
};

// ---- GGUF ---------------------------------------------------------------------------------------------------

constexpr std::uint32_t kGgufMagic = 0x46554747;  // "GGUF", little-endian
enum ValueType : std::uint32_t {
  kU8,
  kI8,
  kU16,
  kI16,
  kU32,
  kI32,
  kF32,
  kBool,
  kString,
  kArray,
  kU64,
  kI64,
  kF64,
  kValueTypes
};
constexpr std::size_t kValueSize[kValueTypes] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

// ggml's tensor types: elements per block and bytes per block; ids ggml removed stay unknown.
struct TensorType {
  std::uint32_t block;
  std::uint32_t bytes;
};
constexpr std::array<TensorType, 40> kTensorTypes = [] {
  std::array<TensorType, 40> t{};
  const std::pair<std::uint32_t, TensorType> known[] = {
      {0, {1, 4}},      {1, {1, 2}},      {2, {32, 18}},   {3, {32, 20}},    {6, {32, 22}},    {7, {32, 24}},
      {8, {32, 34}},    {9, {32, 36}},    {10, {256, 84}}, {11, {256, 110}}, {12, {256, 144}}, {13, {256, 176}},
      {14, {256, 210}}, {15, {256, 292}}, {16, {256, 66}}, {17, {256, 74}},  {18, {256, 98}},  {19, {256, 50}},
      {20, {32, 18}},   {21, {256, 110}}, {22, {256, 82}}, {23, {256, 136}}, {24, {1, 1}},     {25, {1, 2}},
      {26, {1, 4}},     {27, {1, 8}},     {28, {1, 8}},    {29, {256, 56}},  {30, {1, 2}},     {34, {256, 54}},
      {35, {256, 66}},  {39, {32, 17}},
  };
  for (const auto& [id, type] : known) t[id] = type;
  return t;
}();

}  // namespace

// ---- SafetensorsScanner --------------------------------------------------------------------------------------

SafetensorsScanner::SafetensorsScanner(Findings& findings, std::uint64_t file_size)
    : findings_(findings), file_size_(file_size) {}

void SafetensorsScanner::update(std::span<const std::uint8_t> bytes) {
  while (!bytes.empty() && !decided_) {
    if (seen_ < 8) {
      const std::size_t n = std::min<std::size_t>(8 - seen_, bytes.size());
      std::copy_n(bytes.begin(), n, length_bytes_ + seen_);
      seen_ += n;
      bytes = bytes.subspan(n);
      if (seen_ < 8) return;
      for (int k = 7; k >= 0; --k) header_length_ = (header_length_ << 8) | length_bytes_[k];
      if (header_length_ > kMaxHeader) {
        findings_.add("the header length " + std::to_string(header_length_) + " is over the format's bound of " +
                      std::to_string(kMaxHeader) + " bytes");
        decided_ = true;
        return;
      }
      if (header_length_ > file_size_ - 8) {
        findings_.add("the header length " + std::to_string(header_length_) + " runs past the end of the file (" +
                      std::to_string(file_size_) + " bytes)");
        decided_ = true;
        return;
      }
      continue;
    }
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(header_length_ - header_.size(), bytes.size()));
    header_.append(reinterpret_cast<const char*>(bytes.data()), n);
    seen_ += n;
    bytes = bytes.subspan(n);
    if (header_.size() == header_length_) check_header();
  }
}

void SafetensorsScanner::check_header() {
  decided_ = true;
  if (header_.empty() || header_.front() != '{') {
    findings_.add("the header does not start with '{'");
    return;
  }
  // The format pads the header with spaces to an alignment; anything else after the JSON is not JSON.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;
  HeaderReader reader(findings_, spans);
  const bool parsed = nlohmann::json::sax_parse(header_, &reader, nlohmann::json::input_format_t::json, true);
  header_.clear();
  header_.shrink_to_fit();
  if (!parsed || reader.refused()) return;
  // Sorted by where they start, the tensors must tile the data section: each begins where the last ended, the
  // last ends where the file does.
  std::sort(spans.begin(), spans.end());
  const std::uint64_t data_size = file_size_ - 8 - header_length_;
  std::uint64_t at = 0;
  for (const auto& [begin, end] : spans) {
    if (begin < at) {
      findings_.add("tensors overlap at bytes " + std::to_string(begin) + ".." + std::to_string(at) + " of the data");
    } else if (begin > at) {
      findings_.add("the data has a gap at bytes " + std::to_string(at) + ".." + std::to_string(begin));
    }
    at = std::max(at, end);
  }
  if (at > data_size) {
    findings_.add("tensors reach byte " + std::to_string(at) + " of a data section of " + std::to_string(data_size) +
                  " bytes (the file is cut short, or the header lies)");
  } else if (at < data_size) {
    findings_.add("the data section has " + std::to_string(data_size - at) + " bytes after the last tensor");
  }
}

void SafetensorsScanner::finish() {
  if (decided_) return;
  // Shorter than the length field, or than the header it announced: the length was checked against the size,
  // so only a stream shorter than its size gets here.
  error_ = "the file ends inside its header";
  decided_ = true;
}

// ---- GgufScanner ---------------------------------------------------------------------------------------------

GgufScanner::GgufScanner(Findings& findings, std::uint64_t file_size) : findings_(findings), file_size_(file_size) {
  want(Field::magic, 4);
}

void GgufScanner::want(Field field, std::size_t bytes) {
  field_ = field;
  need_ = bytes;
  have_ = 0;
}

std::uint64_t GgufScanner::field_value() const {
  std::uint64_t value = 0;
  for (std::size_t k = need_; k-- > 0;) value = (value << 8) | buffer_[k];
  return value;
}

void GgufScanner::finding(std::string text) {
  findings_.add(text);
  decided_ = true;  // the rest of the header cannot be followed past a lie
}

void GgufScanner::update(std::span<const std::uint8_t> bytes) {
  while (!bytes.empty() && !decided_) {
    if (skipping_) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(skip_left_, bytes.size()));
      // A key is kept when short: general.alignment changes where the data starts.
      if (field_ == Field::key && key_.size() < 64) {
        key_.append(reinterpret_cast<const char*>(bytes.data()), std::min<std::size_t>(n, 64 - key_.size()));
      }
      skip_left_ -= n;
      seen_ += n;
      bytes = bytes.subspan(n);
      if (skip_left_ == 0) {
        skipping_ = false;
        on_field();
      }
      continue;
    }
    const std::size_t n = std::min(need_ - have_, bytes.size());
    std::copy_n(bytes.begin(), n, buffer_ + have_);
    have_ += n;
    seen_ += n;
    bytes = bytes.subspan(n);
    if (have_ == need_) on_field();
  }
}

void GgufScanner::on_field() {
  const std::uint64_t v = field_value();
  switch (field_) {
    case Field::magic:
      if (v != kGgufMagic) return finding("not GGUF: the magic is not \"GGUF\"");
      return want(Field::version, 4);
    case Field::version:
      version_ = static_cast<std::uint32_t>(v);
      if (version_ != 2 && version_ != 3) {
        return finding("GGUF version " + std::to_string(version_) +
                       " (2 and 3 are read; a big-endian file shows as another)");
      }
      return want(Field::tensor_count, 8);
    case Field::tensor_count:
      tensors_ = v;
      // Each tensor's description takes at least 24 bytes, each key-value pair 13.
      if (tensors_ > file_size_ / 24)
        return finding("the header lists " + std::to_string(tensors_) +
                       " tensors, more than a file of this size holds");
      return want(Field::kv_count, 8);
    case Field::kv_count:
      kvs_ = v;
      if (kvs_ > file_size_ / 13)
        return finding("the header lists " + std::to_string(kvs_) +
                       " key-value pairs, more than a file of this size holds");
      return next_kv();
    case Field::key_length:
      if (v > kMaxString || v > remaining())
        return finding("key " + std::to_string(kv_index_) + " is " + std::to_string(v) +
                       " bytes long, past the file or the bound");
      key_.clear();
      field_ = Field::key;
      skip_left_ = v;
      skipping_ = v > 0;
      if (!skipping_) on_field();
      return;
    case Field::key:
      alignment_key_ = key_ == "general.alignment";
      return want(Field::value_type, 4);
    case Field::value_type:
      return begin_value(static_cast<std::uint32_t>(v));
    case Field::value:
      if (alignment_key_ && arrays_.empty()) {
        if (v == 0 || (v & (v - 1)) != 0)
          return finding("general.alignment " + std::to_string(v) + " is not a power of two");
        alignment_ = v;
      }
      return value_done();
    case Field::string_length:
      if (v > kMaxString || v > remaining())
        return finding("a string value is " + std::to_string(v) + " bytes long, past the file or the bound");
      field_ = Field::string_bytes;
      skip_left_ = v;
      skipping_ = v > 0;
      if (!skipping_) value_done();
      return;
    case Field::string_bytes:
      return value_done();
    case Field::array_type:
      if (v >= kValueTypes) return finding("an array of the unknown value type " + std::to_string(v));
      arrays_.back().type = static_cast<std::uint32_t>(v);
      return want(Field::array_count, 8);
    case Field::array_count: {
      const std::uint32_t type = arrays_.back().type;
      const std::uint64_t least = type == kString ? 8 : type == kArray ? 12 : kValueSize[type];
      if (v > remaining() / least) return finding("an array of " + std::to_string(v) + " values runs past the file");
      arrays_.back().left = v;
      // An array of fixed-size values is skipped at once.
      if (type != kString && type != kArray && v > 0) {
        arrays_.back().left = 0;
        field_ = Field::string_bytes;  // bytes to pass over, then the array is done
        skip_left_ = v * kValueSize[type];
        skipping_ = true;
        return;
      }
      return value_done();
    }
    case Field::tensor_name_length:
      if (v > kMaxString || v > remaining())
        return finding("tensor " + std::to_string(tensor_index_) + "'s name is " + std::to_string(v) +
                       " bytes long, past the file or the bound");
      field_ = Field::tensor_name;
      skip_left_ = v;
      skipping_ = v > 0;
      if (!skipping_) on_field();
      return;
    case Field::tensor_name:
      return want(Field::dims_count, 4);
    case Field::dims_count:
      dims_ = static_cast<std::uint32_t>(v);
      if (dims_ > kMaxDims)
        return finding("tensor " + std::to_string(tensor_index_) + " has " + std::to_string(dims_) +
                       " dimensions (at most 4)");
      dim_index_ = 0;
      elements_ = 1;
      elements_overflow_ = false;
      row_ = 0;
      return dims_ == 0 ? want(Field::tensor_type, 4) : want(Field::dim, 8);
    case Field::dim:
      if (dim_index_ == 0) row_ = v;
      if (v != 0 && elements_ > UINT64_MAX / v) elements_overflow_ = true;
      elements_ *= v;
      return ++dim_index_ < dims_ ? want(Field::dim, 8) : want(Field::tensor_type, 4);
    case Field::tensor_type:
      tensor_type_ = static_cast<std::uint32_t>(v);
      return want(Field::tensor_offset, 8);
    case Field::tensor_offset: {
      const std::string which = "tensor " + std::to_string(tensor_index_);
      if (tensor_type_ >= kTensorTypes.size() || kTensorTypes[tensor_type_].block == 0) {
        return finding(which + " has the unknown type " + std::to_string(tensor_type_));
      }
      const TensorType type = kTensorTypes[tensor_type_];
      if (elements_overflow_ || (dims_ > 0 && row_ % type.block != 0)) {
        return finding(which + " has a shape its type cannot hold");
      }
      const u128 bytes = static_cast<u128>(elements_ / type.block) * type.bytes;
      if (v % alignment_ != 0) misaligned_ = true;
      const u128 end = bytes + v;
      if (end > file_size_) return finding(which + "'s data ends past the end of the file");
      data_needed_ = std::max(data_needed_, static_cast<std::uint64_t>(end));
      return tensor_done();
    }
  }
}

void GgufScanner::begin_value(std::uint32_t type) {
  if (type >= kValueTypes) return finding("a value of the unknown type " + std::to_string(type));
  if (type == kString) return want(Field::string_length, 8);
  if (type == kArray) {
    if (arrays_.size() >= kMaxArrayDepth) return finding("arrays nested deeper than " + std::to_string(kMaxArrayDepth));
    arrays_.push_back({});
    return want(Field::array_type, 4);
  }
  value_size_ = kValueSize[type];
  want(Field::value, value_size_);
}

void GgufScanner::value_done() {
  // A value inside an array: the next element, or the array is done (and is itself a value of its parent).
  while (!arrays_.empty()) {
    Array& array = arrays_.back();
    if (array.left > 0) {
      --array.left;
      return begin_value(array.type);
    }
    arrays_.pop_back();
  }
  ++kv_index_;
  next_kv();
}

void GgufScanner::next_kv() {
  if (kv_index_ < kvs_) return want(Field::key_length, 8);
  next_tensor();
}

void GgufScanner::next_tensor() {
  if (tensor_index_ < tensors_) return want(Field::tensor_name_length, 8);
  headers_done();
}

void GgufScanner::tensor_done() {
  ++tensor_index_;
  next_tensor();
}

void GgufScanner::headers_done() {
  decided_ = true;
  const std::uint64_t data_start = (seen_ + alignment_ - 1) / alignment_ * alignment_;
  if (misaligned_)
    findings_.add("a tensor's offset is not a multiple of the alignment (" + std::to_string(alignment_) + ")");
  if (data_start > file_size_ || data_needed_ > file_size_ - data_start) {
    findings_.add("the tensors need " + std::to_string(data_needed_) + " bytes of data after byte " +
                  std::to_string(data_start) + ", past the end of the file (" + std::to_string(file_size_) + ")");
  }
}

void GgufScanner::finish() {
  if (decided_) return;
  error_ = "the file ends inside its GGUF header";
  decided_ = true;
}

}  // namespace inferllama::scan
