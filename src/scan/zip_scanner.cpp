#include "scan/zip_scanner.hpp"

#include <zlib.h>

#include <algorithm>
#include <array>

namespace inferllama::scan {
namespace {

constexpr std::uint32_t kLocal = 0x04034b50;
constexpr std::uint32_t kCentral = 0x02014b50;
constexpr std::uint32_t kEnd = 0x06054b50;
constexpr std::uint32_t kZip64End = 0x06064b50;
constexpr std::uint32_t kZip64Locator = 0x07064b50;
constexpr std::uint32_t kDescriptor = 0x08074b50;
constexpr std::uint32_t kSignature = 0x05054b50;
constexpr std::uint32_t kExtraData = 0x08064b50;
constexpr std::uint16_t kZip64Extra = 0x0001;
constexpr std::uint16_t kEncrypted = 1;
constexpr std::uint16_t kHasDescriptor = 8;
constexpr std::uint16_t kStored = 0;
constexpr std::uint16_t kDeflated = 8;
constexpr std::size_t kInflateBlock = 64 * 1024;
constexpr std::uint32_t kUnknown32 = 0xffffffff;

std::uint64_t le(std::span<const std::uint8_t> bytes, std::size_t at, std::size_t width) {
  std::uint64_t value = 0;
  for (std::size_t k = width; k-- > 0;) value = (value << 8) | bytes[at + k];
  return value;
}

// The zip64 extended information of an extra field: the 64-bit values of the fields whose 32-bit ones are
// 0xffffffff, in the order the format gives them (size, compressed size, local header offset).
struct Zip64 {
  std::uint64_t size = 0, compressed = 0, offset = 0;
  bool found = false;
};
Zip64 zip64_of(std::span<const std::uint8_t> extra, bool want_size, bool want_compressed, bool want_offset) {
  Zip64 z;
  for (std::size_t at = 0; at + 4 <= extra.size();) {
    const auto id = static_cast<std::uint16_t>(le(extra, at, 2));
    const auto length = static_cast<std::size_t>(le(extra, at + 2, 2));
    if (at + 4 + length > extra.size()) break;
    if (id == kZip64Extra) {
      z.found = true;
      std::size_t field = at + 4;
      const std::size_t end = at + 4 + length;
      auto next = [&](bool wanted, std::uint64_t& out) {
        if (!wanted || field + 8 > end) return;
        out = le(extra, field, 8);
        field += 8;
      };
      next(want_size, z.size);
      next(want_compressed, z.compressed);
      next(want_offset, z.offset);
      return z;
    }
    at += 4 + length;
  }
  return z;
}

bool is_pickle_entry(std::string_view name) {
  return name.ends_with(".pkl");
}

}  // namespace

struct ZipScanner::Inflater {
  Inflater() {
    stream.zalloc = Z_NULL;
    stream.zfree = Z_NULL;
    stream.opaque = Z_NULL;
    ok = inflateInit2(&stream, -MAX_WBITS) == Z_OK;  // raw deflate, as zip stores it
  }
  ~Inflater() {
    if (ok) inflateEnd(&stream);
  }
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;

  z_stream stream{};
  bool ok = false;
  bool ended = false;
  std::uint64_t produced = 0;
  std::array<std::uint8_t, kInflateBlock> out{};
};

ZipScanner::ZipScanner(Findings& findings) : findings_(findings) {
  expect_signature();
}
ZipScanner::~ZipScanner() = default;

void ZipScanner::update(std::span<const std::uint8_t> bytes) {
  std::size_t i = 0;
  while (i < bytes.size() && !done()) {
    const auto rest = bytes.subspan(i);
    std::size_t took = 0;
    switch (step_) {
      case Step::data:
        took = data(rest);
        break;
      case Step::skip:
        took = static_cast<std::size_t>(std::min<std::uint64_t>(skip_left_, rest.size()));
        skip_left_ -= took;
        if (skip_left_ == 0) expect_signature();
        break;
      case Step::signature:
      case Step::buffered: {
        took = std::min(need_ - buffer_.size(), rest.size());
        buffer_.insert(buffer_.end(), rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(took));
        break;
      }
      case Step::ended:
      case Step::failed:
        return;
    }
    i += took;
    offset_ += took;
    if ((step_ == Step::signature || step_ == Step::buffered) && buffer_.size() == need_) {
      if (step_ == Step::signature) {
        on_signature(static_cast<std::uint32_t>(le(buffer_, 0, 4)));
      } else {
        parsed();
      }
    }
  }
}

void ZipScanner::need(std::size_t bytes, Record then) {
  buffer_.clear();
  need_ = bytes;
  record_ = then;
  step_ = Step::buffered;
  if (bytes == 0) parsed();
}

void ZipScanner::expect_signature() {
  buffer_.clear();
  need_ = 4;
  step_ = Step::signature;
}

void ZipScanner::skip(std::uint64_t bytes) {
  if (bytes == 0) return expect_signature();
  skip_left_ = bytes;
  step_ = Step::skip;
}

void ZipScanner::fail(std::string why) {
  if (done()) return;
  if (error_.empty()) error_ = "not a readable zip: " + why;
  step_ = Step::failed;
}

void ZipScanner::entry_error(const std::string& why) {
  if (error_.empty()) error_ = why;
}

void ZipScanner::on_signature(std::uint32_t signature) {
  record_offset_ = offset_ - 4;
  switch (signature) {
    case kLocal:
      if (central_seen_)
        return fail("a local entry after the central directory at byte " + std::to_string(record_offset_));
      return need(26, Record::local_fixed);
    case kCentral:
      central_seen_ = true;
      return need(42, Record::central_fixed);
    case kZip64End:
      return need(8, Record::zip64_end);
    case kZip64Locator:
      return skip(16);
    case kEnd:
      return need(18, Record::end_fixed);
    case kSignature:
      return need(2, Record::size16);
    case kExtraData:
      return need(4, Record::size32);
    default:
      return fail("unexpected bytes at " + std::to_string(record_offset_));
  }
}

void ZipScanner::parsed() {
  const std::span<const std::uint8_t> b(buffer_);
  switch (record_) {
    case Record::local_fixed: {
      flags_ = static_cast<std::uint16_t>(le(b, 2, 2));
      method_ = static_cast<std::uint16_t>(le(b, 4, 2));
      compressed_ = le(b, 14, 4);
      size_ = le(b, 18, 4);
      const std::size_t names = le(b, 22, 2) + le(b, 24, 2);
      extra_at_ = static_cast<std::size_t>(le(b, 22, 2));
      return need(names, Record::local_names);
    }
    case Record::local_names:
      return on_local_names();
    case Record::central_fixed: {
      central_compressed_ = le(b, 16, 4);
      central_size_ = le(b, 20, 4);
      central_offset_ = le(b, 38, 4);
      extra_at_ = static_cast<std::size_t>(le(b, 24, 2));
      extra_length_ = static_cast<std::size_t>(le(b, 26, 2));
      return need(extra_at_ + extra_length_ + le(b, 28, 2), Record::central_names);
    }
    case Record::central_names:
      return on_central_names();
    case Record::zip64_end:
      return skip(le(b, 0, 8));
    case Record::end_fixed:
      // The end of the archive: its comment and anything after it are no part of any entry.
      step_ = Step::ended;
      return;
    case Record::size16:
      return skip(le(b, 0, 2));
    case Record::size32:
      return skip(le(b, 0, 4));
    case Record::descriptor_head:
      // [signature] crc, compressed size, size: 4-byte sizes, or 8-byte ones for a zip64 entry.
      if (le(b, 0, 4) == kDescriptor) return need(zip64_ ? 20 : 12, Record::descriptor_signed);
      return need(zip64_ ? 16 : 8, Record::descriptor_sizes);  // those four bytes were the crc
    case Record::descriptor_signed:
    case Record::descriptor_sizes: {
      const std::size_t at = record_ == Record::descriptor_signed ? 4 : 0;
      const std::size_t width = zip64_ ? 8 : 4;
      const std::uint64_t compressed = le(b, at, width);
      const std::uint64_t size = le(b, at + width, width);
      if (compressed != data_read_ || (sized_ && size != size_)) {
        return fail("the data descriptor of " + printable(name_) + " gives other sizes than its entry");
      }
      entries_.push_back({entry_offset_, compressed, size});
      return skip(0);
    }
  }
}

void ZipScanner::on_local_names() {
  const std::span<const std::uint8_t> b(buffer_);
  name_.assign(reinterpret_cast<const char*>(b.data()), extra_at_);
  const auto extra = b.subspan(extra_at_);
  sized_ = !(flags_ & kHasDescriptor) || compressed_ != 0 || size_ != 0;
  const Zip64 z = zip64_of(extra, size_ == kUnknown32, compressed_ == kUnknown32, false);
  zip64_ = z.found;
  if (size_ == kUnknown32) size_ = z.size;
  if (compressed_ == kUnknown32) compressed_ = z.compressed;
  entry_offset_ = record_offset_;
  if (entries_.size() >= kMaxEntries) return fail("more than " + std::to_string(kMaxEntries) + " entries");
  begin_data();
}

void ZipScanner::begin_data() {
  const bool pickle = is_pickle_entry(name_);
  data_read_ = 0;
  data_left_ = compressed_;
  pickle_.reset();
  inflater_.reset();
  if (pickle && (flags_ & kEncrypted)) {
    findings_.add(name_ + ": encrypted, so it cannot be scanned");
  } else if (pickle && method_ != kStored && method_ != kDeflated) {
    findings_.add(name_ + ": compressed with method " + std::to_string(method_) + ", which the scanner does not read");
  } else if (pickle) {
    pickle_ = std::make_unique<PickleScanner>(findings_, printable(name_, 64) + ": ");
  }
  const bool inflate = method_ == kDeflated && !(flags_ & kEncrypted) && (pickle_ || !sized_);
  if (inflate) {
    inflater_ = std::make_unique<Inflater>();
    if (!inflater_->ok) return fail("zlib could not start");
    inflate_left_ = sized_ ? size_ : kMaxInflated;
  }
  if (!sized_ && !inflater_) {
    return fail("entry " + printable(name_) +
                " gives no size ahead of its data (a stored entry with a data descriptor)");
  }
  step_ = Step::data;
  if (sized_ && data_left_ == 0) data_done();
}

std::size_t ZipScanner::data(std::span<const std::uint8_t> bytes) {
  const std::size_t offered =
      sized_ ? static_cast<std::size_t>(std::min<std::uint64_t>(data_left_, bytes.size())) : bytes.size();
  std::size_t took = offered;
  if (inflater_ && !inflater_->ended) {
    auto& z = inflater_->stream;
    z.next_in = const_cast<Bytef*>(bytes.data());
    z.avail_in = static_cast<uInt>(std::min<std::size_t>(offered, UINT32_MAX));
    for (;;) {
      z.next_out = inflater_->out.data();
      z.avail_out = static_cast<uInt>(inflater_->out.size());
      const int rc = ::inflate(&z, Z_NO_FLUSH);
      const std::size_t produced = inflater_->out.size() - z.avail_out;
      inflater_->produced += produced;
      if (pickle_ && inflate_left_ > 0) {
        const auto give = static_cast<std::size_t>(std::min<std::uint64_t>(produced, inflate_left_));
        pickle_->update(std::span<const std::uint8_t>(inflater_->out.data(), give));
        inflate_left_ -= give;
      }
      if (rc == Z_STREAM_END) {
        inflater_->ended = true;
        break;
      }
      if (rc != Z_OK && rc != Z_BUF_ERROR) {
        if (pickle_ || !sized_) {
          entry_error("entry " + printable(name_) + ": its deflate stream is corrupt");
          if (!sized_) {
            fail("entry " + printable(name_) + ": its deflate stream is corrupt");
            return offered;
          }
        }
        inflater_.reset();
        break;
      }
      if (!sized_ && inflater_->produced > kMaxInflated) {
        fail("entry " + printable(name_) + " inflates past " + std::to_string(kMaxInflated) + " bytes");
        return offered;
      }
      if (z.avail_in == 0 && z.avail_out != 0) break;
    }
    if (inflater_) took = offered - inflater_->stream.avail_in;
  } else if (pickle_ && method_ == kStored) {
    pickle_->update(bytes.first(offered));
  }
  data_read_ += took;
  if (sized_) data_left_ -= took;
  const bool ended = sized_ ? data_left_ == 0 : (inflater_ && inflater_->ended);
  if (ended) data_done();
  return took;
}

void ZipScanner::data_done() {
  if (pickle_) {
    pickle_->finish();
    if (!pickle_->error().empty()) entry_error(printable(name_, 64) + ": " + pickle_->error());
    pickle_.reset();
  }
  inflater_.reset();
  // A descriptor follows the data when the flag says so, whether or not the sizes also came ahead of it.
  if (flags_ & kHasDescriptor) return need(4, Record::descriptor_head);
  entries_.push_back({entry_offset_, compressed_, size_});
  skip(0);
}

void ZipScanner::on_central_names() {
  const std::span<const std::uint8_t> b(buffer_);
  const std::string name(reinterpret_cast<const char*>(b.data()), extra_at_);
  const Zip64 z = zip64_of(b.subspan(extra_at_, extra_length_), central_size_ == kUnknown32,
                           central_compressed_ == kUnknown32, central_offset_ == kUnknown32);
  if (central_size_ == kUnknown32) central_size_ = z.size;
  if (central_compressed_ == kUnknown32) central_compressed_ = z.compressed;
  if (central_offset_ == kUnknown32) central_offset_ = z.offset;
  // Unzipping reads each entry where the directory says and as long as it says: it must be an entry of the
  // sequence, of the size read there.
  const auto found = std::lower_bound(entries_.begin(), entries_.end(), central_offset_,
                                      [](const Entry& e, std::uint64_t offset) { return e.offset < offset; });
  if (found == entries_.end() || found->offset != central_offset_) {
    findings_.add("the central directory names " + printable(name, 64) + " at byte " + std::to_string(central_offset_) +
                  ", where no entry of the archive starts");
  } else if (found->compressed != central_compressed_ || found->size != central_size_) {
    findings_.add("the central directory gives " + printable(name, 64) + " other sizes than its entry");
  }
  skip(0);
}

void ZipScanner::finish() {
  if (pickle_) {
    pickle_->finish();
    pickle_.reset();
  }
  if (step_ == Step::ended || step_ == Step::failed) return;
  fail("the archive ends before its end record");
}

}  // namespace inferllama::scan
