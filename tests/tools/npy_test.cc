// .npy reader and writer: round trips over shapes (0-d, zero-length dims,
// 4-d, many dims), byte-exact NumPy fixtures (versions 1.0, 2.0, 3.0, old
// 16-byte padding, hand-spaced dicts), every malformed-file refusal, and
// write failures that must leave nothing behind.
#include "tools/npy.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <filesystem>
#include <fstream>
#include <limits>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ringattn::tools {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using namespace std::string_view_literals;

int64_t Count(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Little-endian float32 bytes, independent of the host's byte order.
std::string FloatBytes(const std::vector<float>& values) {
  std::string out;
  for (float f : values) {
    const uint32_t u = std::bit_cast<uint32_t>(f);
    for (int b = 0; b < 4; ++b) out.push_back(static_cast<char>((u >> (8 * b)) & 0xFF));
  }
  return out;
}

// 0.25 * i - 3: exact in float32, distinct, both signs.
std::vector<float> Ramp(int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = 0.25f * static_cast<float>(i) - 3.0f;
  return v;
}

// Magic, version major.minor and header length (uint16 for major 1, else
// uint32), followed by the header text as given.
std::string Npy(std::string_view header, int major = 1, int minor = 0, int64_t header_len = -1) {
  if (header_len < 0) header_len = static_cast<int64_t>(header.size());
  std::string out("\x93NUMPY", 6);
  out.push_back(static_cast<char>(major));
  out.push_back(static_cast<char>(minor));
  const int len_bytes = major == 1 ? 2 : 4;
  for (int b = 0; b < len_bytes; ++b)
    out.push_back(static_cast<char>((header_len >> (8 * b)) & 0xFF));
  out.append(header);
  return out;
}

// The dict padded with spaces and a newline so that the data starts at a
// multiple of `align`, as np.save does (align 64; NumPy < 1.14 used 16).
std::string Padded(std::string_view dict, int major = 1, int align = 64) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header(dict);
  while ((prefix + header.size() + 1) % align != 0) header.push_back(' ');
  header.push_back('\n');
  return header;
}

std::string NpyFile(std::string_view dict, const std::vector<float>& data = {}, int major = 1) {
  return Npy(Padded(dict, major), major) + FloatBytes(data);
}

std::string Dict(absl::string_view descr, absl::string_view fortran, absl::string_view shape) {
  return absl::StrCat("{'descr': ", descr, ", 'fortran_order': ", fortran, ", 'shape': ", shape,
                      ", }");
}

std::string ShapeName(const std::vector<int64_t>& shape) {
  return shape.empty() ? "scalar" : absl::StrCat("s", absl::StrJoin(shape, "x"));
}

// Runs as user "nobody" while alive if the test runs as root, so that file
// permissions apply; `ok()` is false if that switch failed.
class AsNobodyIfRoot {
 public:
  AsNobodyIfRoot() {
    if (::geteuid() == 0) {
      switched_ = ::setegid(65534) == 0 && ::seteuid(65534) == 0;
      ok_ = switched_;
    }
  }
  ~AsNobodyIfRoot() {
    if (switched_) {
      EXPECT_EQ(::seteuid(0), 0);
      EXPECT_EQ(::setegid(0), 0);
    }
  }
  bool ok() const { return ok_; }

 private:
  bool switched_ = false;
  bool ok_ = true;
};

class NpyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (std::filesystem::temp_directory_path() / "npy_test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr) << std::strerror(errno);
    dir_ = templ;
    // Searchable by others so that the "nobody" tests meet the permissions
    // of the file or directory under test, not of this one.
    ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  }
  void TearDown() override {
    std::error_code ec;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir_, ec)) {
      std::filesystem::permissions(e.path(), std::filesystem::perms::owner_all,
                                   std::filesystem::perm_options::add, ec);
    }
    std::filesystem::remove_all(dir_, ec);
  }

  std::string Path(absl::string_view name) const { return absl::StrCat(dir_, "/", name); }

  std::string WriteFile(absl::string_view name, std::string_view bytes) const {
    const std::string path = Path(name);
    std::ofstream f(path, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    EXPECT_TRUE(f.good()) << path;
    return path;
  }

  static std::string ReadFile(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }

  // Runs `write` under a 4 KiB file size limit with SIGXFSZ ignored, so
  // that write() fails half way with EFBIG, as on a full disk.
  static absl::Status UnderFileSizeLimit(const std::function<absl::Status()>& write) {
    struct rlimit saved;
    if (::getrlimit(RLIMIT_FSIZE, &saved) != 0) return absl::InternalError("getrlimit failed");
    struct rlimit small = saved;
    small.rlim_cur = 4096;
    auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
    if (::setrlimit(RLIMIT_FSIZE, &small) != 0) return absl::InternalError("setrlimit failed");
    const absl::Status s = write();
    ::setrlimit(RLIMIT_FSIZE, &saved);
    ::signal(SIGXFSZ, old_handler);
    return s;
  }
  static std::vector<std::string> ListDir(const std::string& dir) {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      names.push_back(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string dir_;
};

// ---------------------------------------------------------------------------
// Round trips.

class NpyRoundTripTest : public NpyTest,
                         public ::testing::WithParamInterface<std::vector<int64_t>> {};

TEST_P(NpyRoundTripTest, BitExact) {
  const std::vector<int64_t>& shape = GetParam();
  const int64_t n = Count(shape);
  std::mt19937 rng(1234 + static_cast<unsigned>(n));
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> data(static_cast<size_t>(n));
  for (float& x : data) x = normal(rng);
  // Values whose bits must survive: infinities, NaN, -0, subnormal, extremes.
  const float special[] = {
      std::numeric_limits<float>::infinity(),   -std::numeric_limits<float>::infinity(),
      std::numeric_limits<float>::quiet_NaN(),  -0.0f,
      std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::max(),
      std::numeric_limits<float>::lowest()};
  for (size_t i = 0; i < std::size(special) && i < data.size(); ++i) data[i] = special[i];

  const std::string path = Path("a.npy");
  ASSERT_TRUE(WriteNpy(path, shape, data.data()).ok());
  const std::string bytes = ReadFile(path);
  const int64_t data_offset = static_cast<int64_t>(bytes.size()) - 4 * n;
  EXPECT_EQ(data_offset % 64, 0) << "data is not 64-byte aligned";
  EXPECT_EQ(bytes[6], 1) << "small headers are written as version 1.0";

  absl::StatusOr<NpyArray> a = ReadNpy(path);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->shape, shape);
  ASSERT_EQ(a->data.size(), data.size());
  if (!data.empty()) {  // memcmp of two null pointers is undefined, even for 0 bytes
    EXPECT_EQ(std::memcmp(a->data.data(), data.data(), data.size() * sizeof(float)), 0);
  }
  EXPECT_THAT(ListDir(dir_), ElementsAre("a.npy"));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, NpyRoundTripTest,
    ::testing::Values(std::vector<int64_t>{}, std::vector<int64_t>{0}, std::vector<int64_t>{1},
                      std::vector<int64_t>{7}, std::vector<int64_t>{3, 0, 2},
                      std::vector<int64_t>{17, 33}, std::vector<int64_t>{2, 3, 4, 5},
                      std::vector<int64_t>{1, 1, 1, 1, 1, 1},
                      std::vector<int64_t>{1234567890123, 0}, std::vector<int64_t>{3, 64, 2, 128}),
    [](const ::testing::TestParamInfo<std::vector<int64_t>>& info) {
      return ShapeName(info.param);
    });

TEST_F(NpyTest, OverwriteReplacesTheFile) {
  const std::string path = Path("a.npy");
  const std::vector<float> first = Ramp(6), second = Ramp(3);
  ASSERT_TRUE(WriteNpy(path, {2, 3}, first.data()).ok());
  ASSERT_TRUE(WriteNpy(path, {3}, second.data()).ok());
  absl::StatusOr<NpyArray> a = ReadNpy(path);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->shape, std::vector<int64_t>{3});
  EXPECT_EQ(a->data, second);
  EXPECT_THAT(ListDir(dir_), ElementsAre("a.npy"));
}

TEST_F(NpyTest, HeaderTooBigForVersion1IsWrittenAsVersion2) {
  // 22000 dimensions of 1 spell "1, " 22000 times: more than 65535 bytes.
  const std::vector<int64_t> shape(22000, 1);
  const float x = 42.0f;
  const std::string path = Path("wide.npy");
  ASSERT_TRUE(WriteNpy(path, shape, &x).ok());
  const std::string bytes = ReadFile(path);
  ASSERT_GT(bytes.size(), 12u);
  EXPECT_EQ(bytes[6], 2);
  EXPECT_EQ(bytes[7], 0);
  EXPECT_EQ((bytes.size() - 4) % 64, 0u);
  absl::StatusOr<NpyArray> a = ReadNpy(path);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->shape, shape);
  EXPECT_THAT(a->data, ElementsAre(42.0f));
}

TEST_F(NpyTest, WrittenFileHasPlainCreatePermissions) {
  const mode_t mask = ::umask(022);
  ::umask(mask);
  const float x = 1.0f;
  const std::string path = Path("p.npy");
  ASSERT_TRUE(WriteNpy(path, {1}, &x).ok());
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0666 & ~mask);
}

// ---------------------------------------------------------------------------
// Files exactly as NumPy 2.4 writes them (np.lib.format.write_array with
// version (1,0), (2,0), (3,0) on np.zeros(shape, np.float32)): the header
// bytes are copied from its output; the data is the little-endian Ramp.

struct NumpyFixture {
  const char* name;
  std::string_view header;
  std::vector<int64_t> shape;
  friend void PrintTo(const NumpyFixture& f, std::ostream* os) { *os << f.name; }
};

const NumpyFixture kNumpyFixtures[] = {
    {"v1_3",
     "\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"
     "                                                            \x0a"sv,
     {3}},
    {"v2_3",
     "\x93NUMPY\x02\x00t\x00\x00\x00{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"
     "                                                          \x0a"sv,
     {3}},
    {"v3_3",
     "\x93NUMPY\x03\x00t\x00\x00\x00{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"
     "                                                          \x0a"sv,
     {3}},
    {"v1_2x3x4x5",
     "\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4, 5), }"
     "                                                    \x0a"sv,
     {2, 3, 4, 5}},
    {"v2_2x3x4x5",
     "\x93NUMPY\x02\x00t\x00\x00\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4, "
     "5), }"
     "                                                  \x0a"sv,
     {2, 3, 4, 5}},
    {"v3_2x3x4x5",
     "\x93NUMPY\x03\x00t\x00\x00\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4, "
     "5), }"
     "                                                  \x0a"sv,
     {2, 3, 4, 5}},
    {"v1_scalar",
     "\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (), }"
     "                                                              \x0a"sv,
     {}},
    {"v2_scalar",
     "\x93NUMPY\x02\x00t\x00\x00\x00{'descr': '<f4', 'fortran_order': False, 'shape': (), }"
     "                                                            \x0a"sv,
     {}},
    {"v3_scalar",
     "\x93NUMPY\x03\x00t\x00\x00\x00{'descr': '<f4', 'fortran_order': False, 'shape': (), }"
     "                                                            \x0a"sv,
     {}},
    {"v1_0",
     "\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (0,), }"
     "                                                            \x0a"sv,
     {0}},
    {"v2_0",
     "\x93NUMPY\x02\x00t\x00\x00\x00{'descr': '<f4', 'fortran_order': False, 'shape': (0,), }"
     "                                                          \x0a"sv,
     {0}},
    {"v3_0",
     "\x93NUMPY\x03\x00t\x00\x00\x00{'descr': '<f4', 'fortran_order': False, 'shape': (0,), }"
     "                                                          \x0a"sv,
     {0}},
    {"v1_4x0x2",
     "\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (4, 0, 2), }"
     "                                                       \x0a"sv,
     {4, 0, 2}},
    {"v2_4x0x2",
     "\x93NUMPY\x02\x00t\x00\x00\x00{'descr': '<f4', 'fortran_order': False, 'shape': (4, 0, 2), }"
     "                                                     \x0a"sv,
     {4, 0, 2}},
    {"v3_4x0x2",
     "\x93NUMPY\x03\x00t\x00\x00\x00{'descr': '<f4', 'fortran_order': False, 'shape': (4, 0, 2), }"
     "                                                     \x0a"sv,
     {4, 0, 2}},
};

class NumpyFixtureTest : public NpyTest, public ::testing::WithParamInterface<NumpyFixture> {};

TEST_P(NumpyFixtureTest, Reads) {
  const NumpyFixture& fx = GetParam();
  const std::vector<float> data = Ramp(Count(fx.shape));
  const std::string path = WriteFile("np.npy", std::string(fx.header) + FloatBytes(data));
  absl::StatusOr<NpyArray> a = ReadNpy(path);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->shape, fx.shape);
  EXPECT_EQ(a->data, data);
}

// np.save picks version 1.0 for all of these, so our output must equal it.
class NpSaveBytesTest : public NpyTest, public ::testing::WithParamInterface<NumpyFixture> {};

TEST_P(NpSaveBytesTest, WriteMatchesByteForByte) {
  const NumpyFixture& fx = GetParam();
  ASSERT_EQ(fx.header[6], 1);
  const std::vector<float> data = Ramp(Count(fx.shape));
  const std::string path = Path("ours.npy");
  ASSERT_TRUE(WriteNpy(path, fx.shape, data.data()).ok());
  EXPECT_EQ(ReadFile(path), std::string(fx.header) + FloatBytes(data));
}

std::vector<NumpyFixture> Version1Fixtures() {
  std::vector<NumpyFixture> v1;
  for (const NumpyFixture& fx : kNumpyFixtures) {
    if (fx.header[6] == 1) v1.push_back(fx);
  }
  return v1;
}

std::string FixtureName(const ::testing::TestParamInfo<NumpyFixture>& info) {
  return std::string(info.param.name);
}

INSTANTIATE_TEST_SUITE_P(NumPy, NumpyFixtureTest, ::testing::ValuesIn(kNumpyFixtures), FixtureName);
INSTANTIATE_TEST_SUITE_P(NumPy, NpSaveBytesTest, ::testing::ValuesIn(Version1Fixtures()),
                         FixtureName);

TEST_F(NpyTest, ReadsNpSaveOutputWithValues) {
  // np.save(f, np.array([1.5, -2.0, 0.25], np.float32)), every byte.
  const std::string_view bytes =
      "\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"
      "                                                            \n"
      "\x00\x00\xc0?\x00\x00\x00\xc0\x00\x00\x80>"sv;
  ASSERT_EQ(bytes.size(), 140u);
  absl::StatusOr<NpyArray> a = ReadNpy(WriteFile("np.npy", bytes));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->shape, ElementsAre(3));
  EXPECT_THAT(a->data, ElementsAre(1.5f, -2.0f, 0.25f));
}

// Headers other writers (and older NumPy) produce: 16-byte padding without
// growth room, spaces and tabs anywhere, double quotes, other key orders, no
// trailing comma, no final newline.
struct AcceptedHeader {
  const char* name;
  std::string header;  // everything after the preamble
  int major;
  std::vector<int64_t> shape;
  friend void PrintTo(const AcceptedHeader& h, std::ostream* os) { *os << h.name; }
};

std::vector<AcceptedHeader> AcceptedHeaders() {
  const std::string old = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  return {
      {"OldNumpy16BytePadding", Padded(old, 1, 16), 1, {2, 3}},
      {"SpacesInDict",
       Padded("{ 'descr' : '<f4' ,  'fortran_order' :False,'shape':( 2 ,3 , ) }   "),
       1,
       {2, 3}},
      {"DoubleQuotesOtherOrderNoTrailingComma",
       Padded(R"({"shape": (4,), "fortran_order": False, "descr": "<f4"})"),
       1,
       {4}},
      {"TabsNoNewline", "{'descr':\t'<f4',\t'fortran_order': False, 'shape': (2, 2)}", 1, {2, 2}},
      {"TupleTrailingComma", Padded(Dict("'<f4'", "False", "(2, 3, 4, 5,)")), 1, {2, 3, 4, 5}},
      {"Version2HandWritten", Padded(Dict("'<f4'", "False", "(5,)"), 2), 2, {5}},
      {"Version3HandWritten", Padded(Dict("'<f4'", "False", "(1, 2)"), 3), 3, {1, 2}},
      {"ScalarNoPadding", Dict("'<f4'", "False", "()"), 1, {}},
  };
}

class AcceptedHeaderTest : public NpyTest, public ::testing::WithParamInterface<AcceptedHeader> {};

TEST_P(AcceptedHeaderTest, Reads) {
  const AcceptedHeader& h = GetParam();
  const std::vector<float> data = Ramp(Count(h.shape));
  const std::string path = WriteFile("h.npy", Npy(h.header, h.major) + FloatBytes(data));
  absl::StatusOr<NpyArray> a = ReadNpy(path);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->shape, h.shape);
  EXPECT_EQ(a->data, data);
}

INSTANTIATE_TEST_SUITE_P(Variants, AcceptedHeaderTest, ::testing::ValuesIn(AcceptedHeaders()),
                         [](const ::testing::TestParamInfo<AcceptedHeader>& info) {
                           return std::string(info.param.name);
                         });

// ---------------------------------------------------------------------------
// Refusals: each names the file and the problem.

struct BadFile {
  const char* name;
  std::string bytes;
  std::vector<std::string> expect;  // substrings of the message, besides the path
  friend void PrintTo(const BadFile& b, std::ostream* os) { *os << b.name; }
};

std::vector<BadFile> BadFiles() {
  const std::string ok_dict = Dict("'<f4'", "False", "(3,)");
  auto dict_file = [](std::string_view dict, const std::vector<float>& data = {}) {
    return NpyFile(dict, data);
  };
  std::string non_ascii = Padded(ok_dict);
  non_ascii[non_ascii.size() - 3] = '\xe9';
  return {
      {"Empty", "", {"truncated .npy preamble", "file has 0 bytes"}},
      {"PartialMagic", "\x93NUM", {"truncated .npy preamble", "file has 4 bytes"}},
      {"WrongMagic",
       std::string("\x93NUMPX\x01\x00\x76\x00", 10) + Padded(ok_dict),
       {"not a .npy file", "bad magic"}},
      {"TextFile", "hello, this is not numpy\n", {"not a .npy file", "bad magic", "hello,"}},
      {"ZipArchive", std::string("PK\x03\x04\x14\x00\x00\x00", 8), {"zip archive", ".npz"}},
      {"Version4",
       Npy(Padded(ok_dict), 4),
       {"unsupported .npy format version 4.0", "supported: 1.0, 2.0, 3.0"}},
      {"Version1_1", Npy(Padded(ok_dict), 1, 1), {"unsupported .npy format version 1.1"}},
      {"Version0", Npy(Padded(ok_dict), 0), {"unsupported .npy format version 0.0"}},
      {"TruncatedV1Preamble",
       std::string("\x93NUMPY\x01\x00v", 9),
       {"truncated .npy preamble", "file has 9 bytes", "needs 10"}},
      {"TruncatedV2Preamble",
       std::string("\x93NUMPY\x02\x00t\x00\x00", 11),
       {"truncated .npy preamble", "file has 11 bytes", "needs 12"}},
      {"HeaderLengthBeyondFile",
       Npy(ok_dict + "\n", 1, 0, 1000),
       {"header length 1000 goes beyond the end of the file"}},
      {"HeaderLengthBeyondFileV2",
       Npy(ok_dict + "\n", 2, 0, 0xFFFFFFFF),
       {"header length 4294967295 goes beyond the end of the file"}},
      {"EmptyHeader", Npy(""), {"malformed .npy header", "unexpected end of header"}},
      {"MissingShape",
       dict_file("{'descr': '<f4', 'fortran_order': False, }"),
       {"malformed .npy header", "missing key 'shape'"}},
      {"MissingDescr",
       dict_file("{'fortran_order': False, 'shape': (3,), }"),
       {"missing key 'descr'"}},
      {"MissingFortranOrder",
       dict_file("{'descr': '<f4', 'shape': (3,), }"),
       {"missing key 'fortran_order'"}},
      {"ExtraKey",
       dict_file("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': 1}"),
       {"unexpected key \"x\""}},
      {"DuplicateKey",
       dict_file("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'shape': (3,)}"),
       {"duplicate key \"shape\""}},
      {"NonStringKey",
       dict_file("{'descr': '<f4', 'fortran_order': False, 3: (3,)}"),
       {"dict key 3 is not a string"}},
      {"MissingComma",
       dict_file("{'descr': '<f4' 'fortran_order': False, 'shape': (3,), }"),
       {"malformed .npy header", "expected ',' or '}'"}},
      {"MissingColon",
       dict_file("{'descr' '<f4', 'fortran_order': False, 'shape': (3,), }"),
       {"expected ':'"}},
      {"TrailingGarbage", dict_file(ok_dict + " xyz"), {"trailing characters after the dict"}},
      {"TwoDicts", dict_file(ok_dict + ok_dict), {"trailing characters after the dict"}},
      {"UnterminatedString",
       dict_file("{'descr: '<f4', 'fortran_order': False, 'shape': (3,)}"),
       {"malformed .npy header"}},
      {"UnclosedDict",
       Npy("{'descr': '<f4', 'fortran_order': False"),
       {"unexpected end of header, expected ',' or '}'"}},
      {"UnclosedTuple",
       Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3"),
       {"unexpected end of header, expected ',' or ')'"}},
      {"NotADict", dict_file("[('descr', '<f4')]"), {"expected a dict"}},
      {"EscapeInString",
       dict_file(R"({'descr': '<\x66\x34', 'fortran_order': False, 'shape': (3,)})"),
       {"escape sequences"}},
      {"UnknownName", dict_file(Dict("'<f4'", "False", "(n,)")), {"unexpected name 'n'"}},
      {"DeepNesting",
       dict_file(Dict("'<f4'", "False", std::string(100, '(') + "3" + std::string(100, ')'))),
       {"nesting too deep"}},
      {"ShapeNotTuple", dict_file(Dict("'<f4'", "False", "(3)")), {"'shape' is not a tuple: (3)"}},
      {"ShapeList", dict_file(Dict("'<f4'", "False", "[3]")), {"'shape' is not a tuple: [3]"}},
      {"FortranOrderNotBool",
       dict_file(Dict("'<f4'", "0", "(3,)")),
       {"'fortran_order' is not True or False: 0"}},
      {"DescrNotString", dict_file(Dict("4", "False", "(3,)")), {"'descr' is not a string: 4"}},
      {"DtypeF8", dict_file(Dict("'<f8'", "False", "(3,)")), {"unsupported dtype '<f8'"}},
      {"DtypeBigEndianF4", dict_file(Dict("'>f4'", "False", "(3,)")), {"unsupported dtype '>f4'"}},
      {"DtypeU1", dict_file(Dict("'|u1'", "False", "(3,)")), {"unsupported dtype '|u1'"}},
      {"DtypeF2", dict_file(Dict("'<f2'", "False", "(3,)")), {"unsupported dtype '<f2'"}},
      {"DtypeI4", dict_file(Dict("'<i4'", "False", "(3,)")), {"unsupported dtype '<i4'"}},
      {"DtypeStructured",
       dict_file(Dict("[('a', '<f4')]", "False", "(3,)")),
       {"unsupported structured dtype [('a', '<f4')]"}},
      {"FortranOrderTrue",
       dict_file(Dict("'<f4'", "True", "(2, 3)"), Ramp(6)),
       {"fortran_order is True", "not supported"}},
      {"NegativeDim",
       dict_file(Dict("'<f4'", "False", "(2, -3)")),
       {"negative dimension -3 at index 1"}},
      {"FloatDim",
       dict_file(Dict("'<f4'", "False", "(2.5,)")),
       {"dimension 0 is not an integer: 2.5"}},
      {"StringDim",
       dict_file(Dict("'<f4'", "False", "(2, '3')")),
       {"dimension 1 is not an integer: '3'"}},
      {"NoneDim",
       dict_file(Dict("'<f4'", "False", "(None,)")),
       {"dimension 0 is not an integer: None"}},
      {"BoolDim",
       dict_file(Dict("'<f4'", "False", "(True,)")),
       {"dimension 0 is not an integer: True"}},
      {"LeadingZeroDim", dict_file(Dict("'<f4'", "False", "(03,)")), {"leading zero"}},
      {"DimBeyondInt64",
       dict_file(Dict("'<f4'", "False", "(99999999999999999999,)")),
       {"dimension 0 (99999999999999999999) does not fit in int64"}},
      {"ElementCountOverflow",
       dict_file(Dict("'<f4'", "False", "(4294967296, 4294967296)")),
       {"element count of shape (4294967296, 4294967296) overflows int64"}},
      {"ByteCountOverflow",
       dict_file(Dict("'<f4'", "False", "(4611686018427387904,)")),
       {"byte count of shape (4611686018427387904,)", "overflows int64"}},
      {"TruncatedData",
       dict_file(Dict("'<f4'", "False", "(2, 3)"), Ramp(5)),
       {"truncated data", "shape (2, 3)", "needs 24 bytes", "file has 20"}},
      {"HugeShapeNoData",
       dict_file(Dict("'<f4'", "False", "(1000000000000,)")),
       {"truncated data", "needs 4000000000000 bytes", "file has 0"}},
      {"ScalarWithoutData",
       dict_file(Dict("'<f4'", "False", "()")),
       {"truncated data", "shape ()", "needs 4 bytes", "file has 0"}},
      {"TrailingBytes",
       dict_file(Dict("'<f4'", "False", "(2,)"), Ramp(3)),
       {"4 trailing bytes after the data", "needs 8 bytes", "file has 12"}},
      {"ZeroSizeWithTrailingBytes",
       dict_file(Dict("'<f4'", "False", "(0, 5)"), Ramp(1)),
       {"4 trailing bytes"}},
      {"NonAsciiInV1Header", Npy(non_ascii) + FloatBytes(Ramp(3)), {"non-ASCII byte"}},
  };
}

class BadFileTest : public NpyTest, public ::testing::WithParamInterface<BadFile> {};

TEST_P(BadFileTest, RefusedWithPathAndReason) {
  const BadFile& bad = GetParam();
  const std::string path = WriteFile(absl::StrCat(bad.name, ".npy"), bad.bytes);
  absl::StatusOr<NpyArray> a = ReadNpy(path);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << a.status();
  EXPECT_THAT(std::string(a.status().message()), HasSubstr(path + ": "));
  for (const std::string& s : bad.expect)
    EXPECT_THAT(std::string(a.status().message()), HasSubstr(s));
}

INSTANTIATE_TEST_SUITE_P(Cases, BadFileTest, ::testing::ValuesIn(BadFiles()),
                         [](const ::testing::TestParamInfo<BadFile>& info) {
                           return std::string(info.param.name);
                         });

TEST_F(NpyTest, MissingFileIsNotFound) {
  const std::string path = Path("nope.npy");
  absl::StatusOr<NpyArray> a = ReadNpy(path);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(a.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("No such file or directory"));
}

TEST_F(NpyTest, DirectoryIsNotARegularFile) {
  absl::StatusOr<NpyArray> a = ReadNpy(dir_);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(a.status().message()), HasSubstr(dir_ + ": not a regular file"));
}

// A FIFO (or a device) is refused by name at once: opening it used to wait
// forever for a writer.
TEST_F(NpyTest, FifoAndDeviceAreRefusedWithoutBlocking) {
  const std::string fifo = dir_ + "/q.npy";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& path : {fifo, std::string("/dev/null")}) {
    absl::StatusOr<NpyArray> a = ReadNpy(path);
    ASSERT_FALSE(a.ok()) << path;
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(a.status().message()), HasSubstr(path + ": not a regular file"));
  }
}

TEST_F(NpyTest, UnreadableFileIsPermissionDenied) {
  const std::vector<float> data = Ramp(3);
  const std::string path = Path("secret.npy");
  ASSERT_TRUE(WriteNpy(path, {3}, data.data()).ok());
  ASSERT_EQ(::chmod(path.c_str(), 0), 0);
  absl::StatusOr<NpyArray> a;
  {
    AsNobodyIfRoot nobody;
    if (!nobody.ok()) GTEST_SKIP() << "running as root and cannot drop to nobody";
    a = ReadNpy(path);
  }
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(a.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("Permission denied"));
}

// ---------------------------------------------------------------------------
// Write failures leave nothing behind.

TEST_F(NpyTest, UnwritableDirectory) {
  const std::string ro = Path("ro");
  ASSERT_EQ(::mkdir(ro.c_str(), 0555), 0);
  ASSERT_EQ(::chmod(ro.c_str(), 0555), 0);
  const std::string path = ro + "/a.npy";
  const std::vector<float> data = Ramp(6);
  absl::Status s;
  {
    AsNobodyIfRoot nobody;
    if (!nobody.ok()) GTEST_SKIP() << "running as root and cannot drop to nobody";
    s = WriteNpy(path, {2, 3}, data.data());
  }
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(path + ": cannot create temporary file"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("Permission denied"));
  EXPECT_THAT(ListDir(ro), IsEmpty());
}

TEST_F(NpyTest, MissingDirectory) {
  const std::string path = Path("no/such/dir/a.npy");
  const float x = 1.0f;
  absl::Status s = WriteNpy(path, {1}, &x);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(path + ": cannot create temporary file"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("No such file or directory"));
  EXPECT_THAT(ListDir(dir_), IsEmpty());
}

TEST_F(NpyTest, TargetIsADirectoryRemovesTheTemporaryFile) {
  const std::string path = Path("d.npy");
  ASSERT_EQ(::mkdir(path.c_str(), 0755), 0);
  const std::vector<float> data = Ramp(4);
  absl::Status s = WriteNpy(path, {4}, data.data());
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr(path + ": cannot rename the temporary file"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("Is a directory"));
  EXPECT_THAT(ListDir(dir_), ElementsAre("d.npy"));
  EXPECT_THAT(ListDir(path), IsEmpty());
}

TEST_F(NpyTest, FailedWriteKeepsTheOldFileAndRemovesTheTemporary) {
  const std::string path = Path("a.npy");
  const std::vector<float> old_data = Ramp(2);
  ASSERT_TRUE(WriteNpy(path, {2}, old_data.data()).ok());
  const std::string old_bytes = ReadFile(path);

  const std::vector<float> big(100000, 1.0f);
  absl::Status s = UnderFileSizeLimit([&] { return WriteNpy(path, {100000}, big.data()); });

  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr(path + ": write error"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("File too large"));
  EXPECT_THAT(ListDir(dir_), ElementsAre("a.npy"));
  EXPECT_EQ(ReadFile(path), old_bytes);
}

// A set of outputs is all or nothing: a write that fails on the third file
// (the disk full, here a file size limit) leaves the earlier set exactly as
// it was and no temporary behind; a committed set replaces it and removes
// the stale names it does not write.
TEST_F(NpyTest, OutputSetIsAllOrNothing) {
  const std::vector<float> one = Ramp(2), two = Ramp(3);
  {
    OutputFiles set;
    ASSERT_TRUE(set.AddNpy(Path("out.npy"), {2}, one.data()).ok());
    ASSERT_TRUE(set.AddNpy(Path("lse.npy"), {2}, one.data()).ok());
    ASSERT_TRUE(set.AddNpy(Path("dq.npy"), {2}, one.data()).ok());
    ASSERT_TRUE(set.Commit().ok());
  }
  const std::string out_before = ReadFile(Path("out.npy")), dq_before = ReadFile(Path("dq.npy"));

  const std::vector<float> big(100000, 1.0f);
  absl::Status s;
  {
    OutputFiles set;
    ASSERT_TRUE(set.AddNpy(Path("out.npy"), {3}, two.data()).ok());
    ASSERT_TRUE(set.AddNpy(Path("lse.npy"), {3}, two.data()).ok());
    s = UnderFileSizeLimit([&] { return set.AddNpy(Path("dq.npy"), {100000}, big.data()); });
    // Not committed: the destructor removes the two staged temporaries.
  }
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("File too large"));
  EXPECT_THAT(ListDir(dir_), ElementsAre("dq.npy", "lse.npy", "out.npy"));
  EXPECT_EQ(ReadFile(Path("out.npy")), out_before);
  EXPECT_EQ(ReadFile(Path("dq.npy")), dq_before);

  // A complete set without dq: the stale dq goes, the rest is replaced.
  OutputFiles set;
  ASSERT_TRUE(set.AddNpy(Path("out.npy"), {3}, two.data()).ok());
  ASSERT_TRUE(set.AddNpy(Path("lse.npy"), {3}, two.data()).ok());
  ASSERT_TRUE(set.Commit({Path("dq.npy"), Path("dk.npy")}).ok());
  EXPECT_THAT(ListDir(dir_), ElementsAre("lse.npy", "out.npy"));
  auto read = ReadNpy(Path("out.npy"));
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->data, two);
}

TEST_F(NpyTest, CheckCanCreateNamesTheFlag) {
  EXPECT_TRUE(CheckCanCreate("--json", Path("r.json")).ok());
  EXPECT_THAT(ListDir(dir_), IsEmpty());  // the probe is gone
  absl::Status s = CheckCanCreate("--json", dir_);
  EXPECT_THAT(std::string(s.message()), HasSubstr("--json " + dir_ + ": is a directory"));
  s = CheckCanCreate("--json", Path("no/such/dir/r.json"));
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("--json " + Path("no/such/dir/r.json")));
}

TEST_F(NpyTest, WriteRefusesBadShapesAndMissingData) {
  const float x = 1.0f;
  const std::string path = Path("a.npy");
  absl::Status s = WriteNpy(path, {2, -1}, &x);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr(path + ": negative dimension -1 at index 1"));
  s = WriteNpy(path, {int64_t{1} << 32, int64_t{1} << 32}, &x);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("element count of shape (4294967296, 4294967296) overflows"));
  s = WriteNpy(path, {int64_t{1} << 62}, &x);
  EXPECT_THAT(std::string(s.message()), HasSubstr("byte count of shape (4611686018427387904,)"));
  s = WriteNpy(path, {3}, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr(path + ": no data for shape (3,)"));
  EXPECT_THAT(ListDir(dir_), IsEmpty());
  EXPECT_TRUE(WriteNpy(path, {0, 3}, nullptr).ok());
}

// ---------------------------------------------------------------------------
// Helpers.

TEST(ShapeToStringTest, SpellsLikeNumpy) {
  EXPECT_EQ(ShapeToString({}), "()");
  EXPECT_EQ(ShapeToString({3}), "(3,)");
  EXPECT_EQ(ShapeToString({2, 3, 4, 5}), "(2, 3, 4, 5)");
}

TEST(CheckShapeTest, MatchesWithWildcards) {
  NpyArray a{{2, 3, 4}, std::vector<float>(24)};
  EXPECT_TRUE(CheckShape(a, "q.npy", {2, 3, 4}).ok());
  EXPECT_TRUE(CheckShape(a, "q.npy", {-1, 3, -1}).ok());
  NpyArray scalar{{}, {1.0f}};
  EXPECT_TRUE(CheckShape(scalar, "s.npy", {}).ok());
}

TEST(CheckShapeTest, MismatchNamesFileAndBothShapes) {
  NpyArray a{{2, 3}, std::vector<float>(6)};
  absl::Status s = CheckShape(a, "dir/q.npy", {2, -1, 4});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr("dir/q.npy: shape (2, 3) does not match the expected (2, *, 4)"));
  s = CheckShape(a, "k.npy", {2, 4});
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("k.npy: shape (2, 3) does not match the expected (2, 4)"));
  s = CheckShape(a, "v.npy", {-1});
  EXPECT_THAT(std::string(s.message()), HasSubstr("expected (*,)"));
}

}  // namespace
}  // namespace ringattn::tools
