// .npy reading and writing for the CLI tools: the preamble, a strict parser
// for the Python-literal header dict, overflow-checked sizes, and an
// atomic (temporary file + rename) writer of sets of files. See npy.h.
#include "tools/npy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "base/status.h"

namespace ringattn::tools {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr int64_t kMagicLen = 6;
constexpr char kDescr[] = "<f4";
constexpr int64_t kItemSize = 4;  // of the float32 arrays written
// np.save aligns the data to 64 bytes and leaves room for the first axis to
// grow to 21 digits in place (numpy's ARRAY_ALIGN, GROWTH_AXIS_MAX_DIGITS).
constexpr int64_t kArrayAlign = 64;
constexpr int64_t kGrowthAxisMaxDigits = 21;
// Nesting limit of the header parser, so that "((((..." cannot exhaust the stack.
constexpr int kMaxDepth = 32;
// How much of a bad header is quoted in an error message.
constexpr size_t kMaxQuotedHeader = 200;

absl::Status PathError(const std::string& path, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
}

absl::Status ErrnoError(int err, const std::string& path, absl::string_view what) {
  return absl::ErrnoToStatus(err, absl::StrCat(path, ": ", what));
}

std::string Quote(absl::string_view s) {
  std::string quoted = absl::CHexEscape(s.substr(0, kMaxQuotedHeader));
  if (s.size() > kMaxQuotedHeader) absl::StrAppend(&quoted, "...");
  return absl::StrCat("\"", quoted, "\"");
}

// Closes a file descriptor on every return path.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int Release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  // Closes now, reporting close's error (a late write error on some file systems).
  int Close() {
    int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

// Reads exactly n bytes; returns the number read (less than n only at EOF)
// or -1 with errno set.
int64_t ReadFully(int fd, char* buf, int64_t n) {
  int64_t done = 0;
  while (done < n) {
    ssize_t got = ::read(fd, buf + done, static_cast<size_t>(n - done));
    if (got < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (got == 0) break;
    done += got;
  }
  return done;
}

// Writes exactly n bytes; false with errno set on failure.
bool WriteFully(int fd, const char* buf, int64_t n) {
  while (n > 0) {
    ssize_t put = ::write(fd, buf, static_cast<size_t>(n));
    if (put < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    buf += put;
    n -= put;
  }
  return true;
}

// Element count and byte size of a '<f4' array of `shape`, or an error
// message when a dimension is negative or the product overflows int64.
struct Sizes {
  int64_t count = 1;
  int64_t bytes = 0;
};
absl::StatusOr<Sizes> ComputeSizes(const std::vector<int64_t>& shape, int64_t item_size) {
  Sizes s;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("negative dimension ", shape[i], " at index ",
                                                     i, " of shape ", ShapeToString(shape)));
    }
  }
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(s.count, d, &s.count)) {
      return absl::InvalidArgumentError(
          absl::StrCat("element count of shape ", ShapeToString(shape), " overflows int64"));
    }
  }
  if (__builtin_mul_overflow(s.count, item_size, &s.bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("byte count of shape ", ShapeToString(shape),
                                                   " (", s.count, " elements of ", item_size,
                                                   " bytes) overflows int64"));
  }
  return s;
}

// ---------------------------------------------------------------------------
// The header is a Python dict literal, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// The parser accepts the subset of Python literals a header can hold (strings
// without escapes, ints, floats, True/False/None, tuples, lists, dicts) so that
// a wrong but well-formed value gets a precise message, not "syntax error".

struct PyValue {
  enum class Kind { kString, kInt, kFloat, kBool, kNone, kTuple, kList, kDict };
  Kind kind = Kind::kNone;
  std::string text;               // the source text, for messages
  std::string str;                // kString
  int64_t int_value = 0;          // kInt
  bool int_out_of_range = false;  // kInt that does not fit int64
  bool bool_value = false;        // kBool
  std::vector<PyValue> items;     // kTuple, kList; kDict as key, value, key, ...
};

class HeaderParser {
 public:
  explicit HeaderParser(absl::string_view s) : s_(s) {}

  // The whole header: one value, then only whitespace.
  absl::StatusOr<PyValue> Parse() {
    ASSIGN_OR_RETURN(PyValue v, ParseValue(0));
    SkipSpace();
    if (pos_ < s_.size()) return Error("trailing characters after the dict");
    return v;
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(what, " at offset ", pos_));
  }

  // Error for a missing token, saying so when the header simply ended.
  absl::Status Expected(absl::string_view what) {
    SkipSpace();
    if (pos_ >= s_.size()) return Error(absl::StrCat("unexpected end of header, expected ", what));
    return Error(absl::StrCat("expected ", what, ", got ", Quote(s_.substr(pos_, 1))));
  }

  void SkipSpace() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool Consume(char c) {
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  absl::StatusOr<PyValue> ParseValue(int depth) {
    if (depth > kMaxDepth) return Error("nesting too deep");
    SkipSpace();
    if (pos_ >= s_.size()) return Error("unexpected end of header");
    const size_t start = pos_;
    const char c = s_[pos_];
    absl::StatusOr<PyValue> v;
    if (c == '\'' || c == '"') {
      v = ParseString();
    } else if (c == '(' || c == '[') {
      v = ParseSequence(depth);
    } else if (c == '{') {
      v = ParseDict(depth);
    } else if (c == '-' || c == '+' || c == '.' || absl::ascii_isdigit(c)) {
      v = ParseNumber();
    } else if (absl::ascii_isalpha(c) || c == '_') {
      v = ParseName();
    } else {
      return Error(absl::StrCat("unexpected character ", Quote(absl::string_view(&c, 1))));
    }
    if (v.ok()) v->text = std::string(s_.substr(start, pos_ - start));
    return v;
  }

  absl::StatusOr<PyValue> ParseString() {
    const char quote = s_[pos_++];
    PyValue v;
    v.kind = PyValue::Kind::kString;
    while (true) {
      if (pos_ >= s_.size() || s_[pos_] == '\n') return Error("unterminated string");
      const char c = s_[pos_++];
      if (c == quote) break;
      if (c == '\\') return Error("escape sequences in strings are not supported");
      v.str.push_back(c);
    }
    return v;
  }

  // "(a, b)", "(a,)", "()", "[a, b]"; "(a)" is just a parenthesized a.
  absl::StatusOr<PyValue> ParseSequence(int depth) {
    const char open = s_[pos_++];
    const char close = open == '(' ? ')' : ']';
    PyValue v;
    v.kind = open == '(' ? PyValue::Kind::kTuple : PyValue::Kind::kList;
    bool saw_comma = false;
    while (true) {
      if (Consume(close)) break;
      ASSIGN_OR_RETURN(PyValue item, ParseValue(depth + 1));
      v.items.push_back(std::move(item));
      if (Consume(close)) break;
      if (!Consume(',')) {
        return Expected(absl::StrCat("',' or '", absl::string_view(&close, 1), "'"));
      }
      saw_comma = true;
    }
    if (open == '(' && v.items.size() == 1 && !saw_comma) return std::move(v.items[0]);
    return v;
  }

  absl::StatusOr<PyValue> ParseDict(int depth) {
    ++pos_;  // '{'
    PyValue v;
    v.kind = PyValue::Kind::kDict;
    while (true) {
      if (Consume('}')) break;
      ASSIGN_OR_RETURN(PyValue key, ParseValue(depth + 1));
      if (!Consume(':')) return Expected("':' after a dict key");
      ASSIGN_OR_RETURN(PyValue value, ParseValue(depth + 1));
      v.items.push_back(std::move(key));
      v.items.push_back(std::move(value));
      if (Consume('}')) break;
      if (!Consume(',')) return Expected("',' or '}' in the dict");
    }
    return v;
  }

  absl::StatusOr<PyValue> ParseNumber() {
    const size_t start = pos_;
    if (s_[pos_] == '-' || s_[pos_] == '+') ++pos_;
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (absl::ascii_isalnum(c) || c == '.' || c == '_') {
        ++pos_;
      } else if ((c == '-' || c == '+') && (s_[pos_ - 1] == 'e' || s_[pos_ - 1] == 'E')) {
        ++pos_;
      } else {
        break;
      }
    }
    const absl::string_view token = s_.substr(start, pos_ - start);
    absl::string_view digits = token;
    if (!digits.empty() && (digits[0] == '-' || digits[0] == '+')) digits.remove_prefix(1);
    PyValue v;
    if (!digits.empty() &&
        std::all_of(digits.begin(), digits.end(), [](char c) { return absl::ascii_isdigit(c); })) {
      if (digits.size() > 1 && digits[0] == '0' &&
          digits.find_first_not_of('0') != absl::string_view::npos) {
        return Error(absl::StrCat("invalid integer literal '", token, "' (leading zero)"));
      }
      v.kind = PyValue::Kind::kInt;
      v.int_out_of_range = !absl::SimpleAtoi(token, &v.int_value);
      return v;
    }
    double d;
    if (!digits.empty() && (absl::ascii_isdigit(digits[0]) || digits[0] == '.') &&
        absl::SimpleAtod(token, &d)) {
      v.kind = PyValue::Kind::kFloat;
      return v;
    }
    return Error(absl::StrCat("invalid number '", token, "'"));
  }

  absl::StatusOr<PyValue> ParseName() {
    const size_t start = pos_;
    while (pos_ < s_.size() && (absl::ascii_isalnum(s_[pos_]) || s_[pos_] == '_')) ++pos_;
    const absl::string_view name = s_.substr(start, pos_ - start);
    PyValue v;
    if (name == "True" || name == "False") {
      v.kind = PyValue::Kind::kBool;
      v.bool_value = name == "True";
    } else if (name == "None") {
      v.kind = PyValue::Kind::kNone;
    } else {
      pos_ = start;
      return Error(absl::StrCat("unexpected name '", name, "'"));
    }
    return v;
  }

  absl::string_view s_;
  size_t pos_ = 0;
};

// The dtypes a reader takes: their descr strings and, for messages, what
// it accepts.
struct Accepted {
  std::vector<std::string> descrs;
  const char* what;
};
const Accepted kFloat32{{kDescr}, "only little-endian float32 '<f4' is supported"};
const Accepted kInteger{{"<i4", "<i8"}, "expected little-endian int32 '<i4' or int64 '<i8'"};
const Accepted kBytes{{"|b1", "|u1"}, "expected bool '|b1' or uint8 '|u1'"};

struct Header {
  std::vector<int64_t> shape;
  std::string descr;
};

// The shape and dtype of a valid C-order header dict of an accepted dtype,
// or what is wrong with it. Messages come without the path; the caller
// prefixes it.
absl::StatusOr<Header> InterpretHeader(absl::string_view header, const Accepted& accepted) {
  auto malformed = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed .npy header: ", what, " (header: ", Quote(header), ")"));
  };
  absl::StatusOr<PyValue> parsed = HeaderParser(header).Parse();
  if (!parsed.ok()) return malformed(parsed.status().message());
  if (parsed->kind != PyValue::Kind::kDict) {
    return malformed(absl::StrCat("expected a dict, got ", Quote(parsed->text)));
  }
  const PyValue* descr = nullptr;
  const PyValue* fortran_order = nullptr;
  const PyValue* shape = nullptr;
  for (size_t i = 0; i < parsed->items.size(); i += 2) {
    const PyValue& key = parsed->items[i];
    if (key.kind != PyValue::Kind::kString) {
      return malformed(absl::StrCat("dict key ", key.text, " is not a string"));
    }
    const PyValue** slot = key.str == "descr"           ? &descr
                           : key.str == "fortran_order" ? &fortran_order
                           : key.str == "shape"         ? &shape
                                                        : nullptr;
    if (slot == nullptr) {
      return malformed(absl::StrCat("unexpected key ", Quote(key.str),
                                    " (expected 'descr', 'fortran_order', 'shape')"));
    }
    if (*slot != nullptr) return malformed(absl::StrCat("duplicate key ", Quote(key.str)));
    *slot = &parsed->items[i + 1];
  }
  if (descr == nullptr) return malformed("missing key 'descr'");
  if (fortran_order == nullptr) return malformed("missing key 'fortran_order'");
  if (shape == nullptr) return malformed("missing key 'shape'");

  if (descr->kind == PyValue::Kind::kList) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported structured dtype ", descr->text, " (", accepted.what, ")"));
  }
  if (descr->kind != PyValue::Kind::kString) {
    return malformed(absl::StrCat("'descr' is not a string: ", descr->text));
  }
  if (std::find(accepted.descrs.begin(), accepted.descrs.end(), descr->str) ==
      accepted.descrs.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported dtype ", descr->text, " (", accepted.what, ")"));
  }
  if (fortran_order->kind != PyValue::Kind::kBool) {
    return malformed(absl::StrCat("'fortran_order' is not True or False: ", fortran_order->text));
  }
  if (fortran_order->bool_value) {
    return absl::InvalidArgumentError(
        "fortran_order is True: Fortran-ordered arrays are not supported (save a "
        "C-contiguous array, e.g. np.ascontiguousarray(a))");
  }
  if (shape->kind != PyValue::Kind::kTuple) {
    return malformed(absl::StrCat("'shape' is not a tuple: ", shape->text));
  }
  std::vector<int64_t> dims;
  for (size_t i = 0; i < shape->items.size(); ++i) {
    const PyValue& d = shape->items[i];
    if (d.kind != PyValue::Kind::kInt) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape ", shape->text, ": dimension ", i, " is not an integer: ", d.text));
    }
    if (d.int_out_of_range) {
      return absl::InvalidArgumentError(absl::StrCat("shape ", shape->text, ": dimension ", i, " (",
                                                     d.text, ") does not fit in int64"));
    }
    if (d.int_value < 0) {
      return absl::InvalidArgumentError(absl::StrCat("shape ", shape->text, ": negative dimension ",
                                                     d.int_value, " at index ", i));
    }
    dims.push_back(d.int_value);
  }
  return Header{std::move(dims), descr->str};
}

void ByteSwap(char* p, int64_t count, int64_t item_size) {
  for (int64_t i = 0; i < count; ++i, p += item_size) std::reverse(p, p + item_size);
}

// np.save's header: sorted keys, repr() values, room for the first axis to
// grow, padded with spaces and a newline to a multiple of kArrayAlign.
std::string MakeHeader(const std::vector<int64_t>& shape) {
  std::string dict = absl::StrCat(
      "{'descr': '", kDescr, "', 'fortran_order': False, 'shape': ", ShapeToString(shape), ", }");
  if (!shape.empty()) {
    dict.append(kGrowthAxisMaxDigits - absl::StrCat(shape[0]).size(), ' ');
  }
  for (int major : {1, 2}) {
    const int64_t len_bytes = major == 1 ? 2 : 4;
    const int64_t prefix = kMagicLen + 2 + len_bytes;
    const int64_t hlen = static_cast<int64_t>(dict.size()) + 1;
    const int64_t pad = kArrayAlign - (prefix + hlen) % kArrayAlign;
    const int64_t header_len = hlen + pad;
    if (major == 1 && header_len > 0xFFFF) continue;
    std::string out(kMagic, kMagicLen);
    out.push_back(static_cast<char>(major));
    out.push_back(0);
    for (int64_t b = 0; b < len_bytes; ++b) {
      out.push_back(static_cast<char>((static_cast<uint64_t>(header_len) >> (8 * b)) & 0xFF));
    }
    out += dict;
    out.append(pad, ' ');
    out.push_back('\n');
    return out;
  }
  return {};  // unreachable: a 2.0 header holds 4 GiB
}

std::atomic<uint64_t> temp_counter{0};

}  // namespace

std::string ShapeToString(const std::vector<int64_t>& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

namespace {

// An array file of an accepted dtype, its header and sizes checked (the
// data fills the rest of the file exactly), the fd just past the header.
struct OpenedArray {
  int fd = -1;  // owned by the caller
  Header header;
  int64_t data_offset = 0, count = 0, bytes = 0, item_size = 0;
};

absl::StatusOr<OpenedArray> OpenArray(const std::string& path, const Accepted& accepted) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused
  // below with anything else that is not a regular file. (Reads of a
  // regular file ignore the flag.)
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) return ErrnoError(errno, path, "cannot open for reading");
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, path, "cannot stat");
  if (!S_ISREG(st.st_mode)) return PathError(path, "not a regular file");
  const int64_t file_size = st.st_size;

  // Preamble: magic, major, minor, header length (uint16 for 1.0, uint32 after).
  char pre[12];
  const int64_t pre_got = ReadFully(fd.get(), pre, std::min<int64_t>(file_size, sizeof(pre)));
  if (pre_got < 0) return ErrnoError(errno, path, "read error");
  const absl::string_view head(pre, static_cast<size_t>(pre_got));
  const absl::string_view magic(kMagic, kMagicLen);
  if (head.substr(0, kMagicLen) != magic.substr(0, std::min<size_t>(head.size(), kMagicLen))) {
    if (absl::StartsWith(head, "PK\x03\x04")) {
      return PathError(path, "not a .npy file: it is a zip archive (an .npz?), not \\x93NUMPY");
    }
    return PathError(path,
                     absl::StrCat("not a .npy file: bad magic ", Quote(head.substr(0, kMagicLen)),
                                  ", expected ", Quote(magic)));
  }
  if (head.size() < 8) {
    return PathError(path, absl::StrCat("truncated .npy preamble: file has ", file_size,
                                        " bytes, the magic and version need 8"));
  }
  const int major = static_cast<unsigned char>(pre[6]);
  const int minor = static_cast<unsigned char>(pre[7]);
  if (minor != 0 || major < 1 || major > 3) {
    return PathError(path, absl::StrCat("unsupported .npy format version ", major, ".", minor,
                                        " (supported: 1.0, 2.0, 3.0)"));
  }
  const int64_t len_bytes = major == 1 ? 2 : 4;
  const int64_t prefix = 8 + len_bytes;
  if (static_cast<int64_t>(head.size()) < prefix) {
    return PathError(path, absl::StrCat("truncated .npy preamble: file has ", file_size,
                                        " bytes, a version ", major, ".0 preamble needs ", prefix));
  }
  int64_t header_len = 0;
  for (int64_t b = len_bytes - 1; b >= 0; --b) {
    header_len = (header_len << 8) | static_cast<unsigned char>(pre[8 + b]);
  }
  if (prefix + header_len > file_size) {
    return PathError(
        path, absl::StrCat("header length ", header_len, " goes beyond the end of the file (",
                           file_size, " bytes, header would end at ", prefix + header_len, ")"));
  }

  // Header dict, after the preamble bytes already read.
  std::string header(static_cast<size_t>(header_len), '\0');
  const int64_t in_pre = pre_got - prefix;  // header bytes that came with the preamble
  std::memcpy(header.data(), pre + prefix, static_cast<size_t>(std::min(in_pre, header_len)));
  if (header_len > in_pre) {
    const int64_t got = ReadFully(fd.get(), header.data() + in_pre, header_len - in_pre);
    if (got < 0) return ErrnoError(errno, path, "read error");
    if (got != header_len - in_pre) return PathError(path, "file shrank while reading the header");
  }
  if (major < 3) {
    for (size_t i = 0; i < header.size(); ++i) {
      if (static_cast<unsigned char>(header[i]) >= 0x80) {
        return PathError(
            path, absl::StrCat("malformed .npy header: non-ASCII byte at offset ", i,
                               " in a version ", major, ".0 header (header: ", Quote(header), ")"));
      }
    }
  }
  absl::StatusOr<Header> parsed = InterpretHeader(header, accepted);
  if (!parsed.ok()) return PathError(path, parsed.status().message());
  const std::vector<int64_t>* shape = &parsed->shape;
  const std::string& descr = parsed->descr;
  const int64_t item_size = descr == "<i8" ? 8 : descr[0] == '|' ? 1 : 4;
  absl::StatusOr<Sizes> sizes = ComputeSizes(*shape, item_size);
  if (!sizes.ok()) return PathError(path, sizes.status().message());

  // The data must fill the rest of the file exactly; checked before allocating.
  const int64_t data_offset = prefix + header_len;
  const int64_t data_size = file_size - data_offset;
  if (data_size < sizes->bytes) {
    return PathError(path, absl::StrCat("truncated data: shape ", ShapeToString(*shape),
                                        " of '", descr, "' needs ", sizes->bytes, " bytes after the ",
                                        data_offset, "-byte header, file has ", data_size));
  }
  if (data_size > sizes->bytes) {
    return PathError(
        path, absl::StrCat(data_size - sizes->bytes, " trailing bytes after the data: shape ",
                           ShapeToString(*shape), " of '", descr, "' needs ", sizes->bytes,
                           " bytes after the ", data_offset, "-byte header, file has ", data_size));
  }

  OpenedArray opened;
  opened.header = *std::move(parsed);
  opened.data_offset = data_offset;
  opened.count = sizes->count;
  opened.bytes = sizes->bytes;
  opened.item_size = item_size;
  opened.fd = fd.Release();
  return opened;
}

// Reads an array of an accepted dtype: `place(descr, count)` returns where
// its count elements go (little-endian on disk, native in memory).
absl::StatusOr<Header> ReadArray(const std::string& path, const Accepted& accepted,
                                 const std::function<char*(const std::string&, int64_t)>& place) {
  ASSIGN_OR_RETURN(OpenedArray a, OpenArray(path, accepted));
  Fd fd(a.fd);
  char* bytes = place(a.header.descr, a.count);
  const int64_t got = ReadFully(fd.get(), bytes, a.bytes);
  if (got < 0) return ErrnoError(errno, path, "read error");
  if (got != a.bytes) return PathError(path, "file shrank while reading the data");
  if constexpr (std::endian::native == std::endian::big) ByteSwap(bytes, a.count, a.item_size);
  return std::move(a.header);
}

}  // namespace

absl::StatusOr<NpyArray> ReadNpy(const std::string& path) {
  NpyArray array;
  ASSIGN_OR_RETURN(Header h, ReadArray(path, kFloat32, [&](const std::string&, int64_t count) {
                     array.data.resize(static_cast<size_t>(count));
                     return reinterpret_cast<char*>(array.data.data());
                   }));
  array.shape = std::move(h.shape);
  return array;
}

absl::StatusOr<NpyIntArray> ReadNpyInt(const std::string& path) {
  NpyIntArray array;
  std::vector<int32_t> narrow;
  ASSIGN_OR_RETURN(Header h, ReadArray(path, kInteger, [&](const std::string& descr, int64_t count) {
                     if (descr == "<i8") {
                       array.data.resize(static_cast<size_t>(count));
                       return reinterpret_cast<char*>(array.data.data());
                     }
                     narrow.resize(static_cast<size_t>(count));
                     return reinterpret_cast<char*>(narrow.data());
                   }));
  if (h.descr == "<i4") array.data.assign(narrow.begin(), narrow.end());
  array.shape = std::move(h.shape);
  return array;
}

absl::StatusOr<NpyByteArray> ReadNpyBytes(const std::string& path) {
  NpyByteArray array;
  ASSIGN_OR_RETURN(Header h, ReadArray(path, kBytes, [&](const std::string&, int64_t count) {
                     array.data.resize(static_cast<size_t>(count));
                     return reinterpret_cast<char*>(array.data.data());
                   }));
  array.shape = std::move(h.shape);
  return array;
}

namespace {

// Splits `path` into its directory ("" or ending in '/') and file name;
// an error unless the name is a plain file name.
absl::Status SplitPath(const std::string& path, std::string* dir, std::string* base) {
  const size_t slash = path.rfind('/');
  *dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  *base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (base->empty() || *base == "." || *base == "..") return PathError(path, "not a file name");
  return absl::OkStatus();
}

// Creates a hidden temporary next to `path` (so that rename() stays within
// one file system and is atomic); O_EXCL with 0666 (less the umask) gives
// the file the permissions a plain create would. Returns the descriptor.
absl::StatusOr<int> CreateTemp(const std::string& path, std::string* tmp) {
  std::string dir, base;
  RETURN_IF_ERROR(SplitPath(path, &dir, &base));
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    *tmp = absl::StrCat(dir, ".", base, ".tmp.", ::getpid(), ".", temp_counter++);
    fd = ::open(tmp->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) return ErrnoError(errno, path, absl::StrCat("cannot create temporary file ", *tmp));
  return fd;
}

}  // namespace

absl::StatusOr<NpyFloatFile> NpyFloatFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(OpenedArray a, OpenArray(path, kFloat32));
  NpyFloatFile f;
  f.fd_ = a.fd;
  f.path_ = path;
  f.shape_ = std::move(a.header.shape);
  f.offset_ = a.data_offset;
  f.count_ = a.count;
  return f;
}

NpyFloatFile::NpyFloatFile(NpyFloatFile&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)),
      path_(std::move(o.path_)),
      shape_(std::move(o.shape_)),
      offset_(o.offset_),
      count_(o.count_) {}

NpyFloatFile& NpyFloatFile::operator=(NpyFloatFile&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
    path_ = std::move(o.path_);
    shape_ = std::move(o.shape_);
    offset_ = o.offset_;
    count_ = o.count_;
  }
  return *this;
}

NpyFloatFile::~NpyFloatFile() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status NpyFloatFile::ReadElements(int64_t first, int64_t count, float* dst) const {
  if (first < 0 || count < 0 || first > count_ - count) {
    return PathError(path_, absl::StrCat("elements [", first, ", ", first + count,
                                         ") are outside the array of ", count_));
  }
  char* buf = reinterpret_cast<char*>(dst);
  const int64_t bytes = count * kItemSize;
  int64_t done = 0;
  while (done < bytes) {
    const ssize_t got = ::pread(fd_, buf + done, static_cast<size_t>(bytes - done),
                                static_cast<off_t>(offset_ + first * kItemSize + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return ErrnoError(errno, path_, "read error");
    if (got == 0) return PathError(path_, "file shrank while reading the data");
    done += got;
  }
  if constexpr (std::endian::native == std::endian::big) ByteSwap(buf, count, kItemSize);
  return absl::OkStatus();
}

OutputFiles::~OutputFiles() {
  for (const Staged& f : staged_) ::unlink(f.tmp.c_str());
}

absl::Status OutputFiles::Stage(const std::string& path,
                                const std::function<bool(int fd)>& write) {
  std::string tmp;
  ASSIGN_OR_RETURN(const int raw_fd, CreateTemp(path, &tmp));
  Fd fd(raw_fd);
  auto fail = [&](int err, absl::string_view what) {
    if (fd.get() >= 0) fd.Close();
    ::unlink(tmp.c_str());
    return ErrnoError(err, path, absl::StrCat(what, " (temporary file ", tmp, ")"));
  };
  if (!write(fd.get())) return fail(errno, "write error");
  // fsync before rename: otherwise a crash can leave the new name pointing
  // at a file whose data never reached the disk.
  if (::fsync(fd.get()) != 0) return fail(errno, "fsync failed");
  if (fd.Close() != 0) return fail(errno, "close failed");
  staged_.push_back({tmp, path});
  return absl::OkStatus();
}

absl::Status OutputFiles::AddNpy(const std::string& path, const std::vector<int64_t>& shape,
                                 const float* data) {
  absl::StatusOr<Sizes> sizes = ComputeSizes(shape, kItemSize);
  if (!sizes.ok()) return PathError(path, sizes.status().message());
  if (data == nullptr && sizes->count > 0) {
    return PathError(path, absl::StrCat("no data for shape ", ShapeToString(shape)));
  }
  const std::string header = MakeHeader(shape);
  return Stage(path, [&](int fd) {
    if (!WriteFully(fd, header.data(), static_cast<int64_t>(header.size()))) return false;
    const char* bytes = reinterpret_cast<const char*>(data);
    if constexpr (std::endian::native == std::endian::big) {
      constexpr int64_t kChunk = 1 << 16;
      std::vector<char> buf(kChunk * kItemSize);
      for (int64_t i = 0; i < sizes->count; i += kChunk) {
        const int64_t n = std::min(kChunk, sizes->count - i);
        std::memcpy(buf.data(), bytes + i * kItemSize, static_cast<size_t>(n * kItemSize));
        ByteSwap(buf.data(), n, kItemSize);
        if (!WriteFully(fd, buf.data(), n * kItemSize)) return false;
      }
      return true;
    }
    return sizes->bytes == 0 || WriteFully(fd, bytes, sizes->bytes);
  });
}

absl::Status OutputFiles::AddNpyFrom(
    const std::string& path, const std::vector<int64_t>& shape,
    const std::function<void(int64_t first, int64_t count, float* dst)>& produce) {
  absl::StatusOr<Sizes> sizes = ComputeSizes(shape, kItemSize);
  if (!sizes.ok()) return PathError(path, sizes.status().message());
  const std::string header = MakeHeader(shape);
  return Stage(path, [&](int fd) {
    if (!WriteFully(fd, header.data(), static_cast<int64_t>(header.size()))) return false;
    constexpr int64_t kChunk = 1 << 20;  // elements: a 4 MiB buffer
    std::vector<float> buf(static_cast<size_t>(std::min(kChunk, sizes->count)));
    for (int64_t i = 0; i < sizes->count; i += kChunk) {
      const int64_t n = std::min(kChunk, sizes->count - i);
      produce(i, n, buf.data());
      char* bytes = reinterpret_cast<char*>(buf.data());
      if constexpr (std::endian::native == std::endian::big) ByteSwap(bytes, n, kItemSize);
      if (!WriteFully(fd, bytes, n * kItemSize)) return false;
    }
    return true;
  });
}

absl::Status OutputFiles::AddText(const std::string& path, absl::string_view text) {
  return Stage(path, [&](int fd) {
    return WriteFully(fd, text.data(), static_cast<int64_t>(text.size()));
  });
}

absl::Status OutputFiles::Commit(const std::vector<std::string>& stale) {
  // Stale files first: a reader never sees new files beside old ones that
  // this set does not replace.
  for (const std::string& path : stale) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoError(errno, path, "cannot remove the stale output");
    }
  }
  while (!staged_.empty()) {
    const Staged& f = staged_.front();
    if (::rename(f.tmp.c_str(), f.path.c_str()) != 0) {
      return ErrnoError(errno, f.path, absl::StrCat("cannot rename the temporary file ", f.tmp,
                                                    " onto it"));
    }
    staged_.erase(staged_.begin());
  }
  return absl::OkStatus();
}

absl::Status CheckCanCreate(absl::string_view flag, const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": is a directory"));
  }
  std::string tmp;
  absl::StatusOr<int> fd = CreateTemp(path, &tmp);
  if (!fd.ok()) {
    return absl::Status(fd.status().code(), absl::StrCat(flag, " ", fd.status().message()));
  }
  ::close(*fd);
  ::unlink(tmp.c_str());
  return absl::OkStatus();
}

absl::Status WriteNpy(const std::string& path, const std::vector<int64_t>& shape,
                      const float* data) {
  OutputFiles out;
  RETURN_IF_ERROR(out.AddNpy(path, shape, data));
  return out.Commit();
}

absl::Status CheckShape(const NpyArray& a, const std::string& path,
                        const std::vector<int64_t>& expected) {
  return CheckShape(a.shape, path, expected);
}

absl::Status CheckShape(const std::vector<int64_t>& shape, const std::string& path,
                        const std::vector<int64_t>& expected) {
  const NpyArray a{shape, {}};
  bool match = a.shape.size() == expected.size();
  for (size_t i = 0; match && i < expected.size(); ++i) {
    match = expected[i] == -1 || expected[i] == a.shape[i];
  }
  if (match) return absl::OkStatus();
  std::vector<std::string> want;
  for (int64_t d : expected) want.push_back(d == -1 ? "*" : absl::StrCat(d));
  const std::string want_str = want.size() == 1 ? absl::StrCat("(", want[0], ",)")
                                                : absl::StrCat("(", absl::StrJoin(want, ", "), ")");
  return PathError(path,
                   absl::StrCat("shape ", ShapeToString(a.shape), " does not match the expected ",
                                want_str, " (* = any size)"));
}

absl::Status PrepareOutDir(absl::string_view flag, const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError(absl::StrCat(flag, ": an output directory is required"));
  struct stat st;
  if (stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " ", dir, ": exists and is not a directory"));
    }
  } else {
    std::string parent = dir;
    while (parent.size() > 1 && parent.back() == '/') parent.pop_back();
    const size_t slash = parent.rfind('/');
    parent = slash == std::string::npos ? "." : slash == 0 ? "/" : parent.substr(0, slash);
    if (stat(parent.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " ", dir, ": the parent directory ", parent, " does not exist"));
    }
    if (mkdir(dir.c_str(), 0755) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " ", dir, ": cannot create the directory: ", std::strerror(errno)));
    }
  }
  // Writable? Create and remove a probe file.
  const std::string probe = absl::StrCat(dir, "/.ringattn-write-test");
  std::FILE* f = std::fopen(probe.c_str(), "w");
  if (f == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", dir, ": not writable: ", std::strerror(errno)));
  }
  std::fclose(f);
  std::remove(probe.c_str());
  return absl::OkStatus();
}

}  // namespace ringattn::tools
