// JSON value, writer and strict parser; see json.h.
#include "tools/eval/json.h"

#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ringattn::eval {

Json& Json::operator[](const std::string& key) {
  if (type_ == Type::kNull) type_ = Type::kObject;
  auto it = index_.find(key);
  if (it != index_.end()) return members_[it->second].second;
  index_[key] = members_.size();
  members_.emplace_back(key, Json());
  return members_.back().second;
}

const Json* Json::Find(const std::string& key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &members_[it->second].second;
}

Json& Json::Push(Json v) {
  if (type_ == Type::kNull) type_ = Type::kArray;
  items_.push_back(std::move(v));
  return items_.back();
}

namespace {

void Escape(const std::string& s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      default:
        if (c < 0x20) {
          absl::StrAppendFormat(out, "\\u%04x", c);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

// True when every element is a scalar: such arrays go on one line.
bool AllScalars(const std::vector<Json>& items) {
  for (const Json& j : items) {
    if (j.type() == Json::Type::kArray || j.type() == Json::Type::kObject) return false;
  }
  return true;
}

}  // namespace

void Json::DumpTo(std::string* out, int indent) const {
  const std::string pad(indent + 2, ' ');
  switch (type_) {
    case Type::kNull:
      *out += "null";
      break;
    case Type::kBool:
      *out += bool_ ? "true" : "false";
      break;
    case Type::kNumber:
      if (is_int_) {
        absl::StrAppend(out, int_);
      } else if (!std::isfinite(num_)) {
        *out += "null";
      } else {
        absl::StrAppendFormat(out, "%.9g", num_);
      }
      break;
    case Type::kString:
      Escape(str_, out);
      break;
    case Type::kArray:
      if (items_.empty()) {
        *out += "[]";
      } else if (AllScalars(items_)) {
        *out += "[";
        for (size_t i = 0; i < items_.size(); ++i) {
          if (i) *out += ", ";
          items_[i].DumpTo(out, indent);
        }
        *out += "]";
      } else {
        *out += "[\n";
        for (size_t i = 0; i < items_.size(); ++i) {
          *out += pad;
          items_[i].DumpTo(out, indent + 2);
          *out += i + 1 < items_.size() ? ",\n" : "\n";
        }
        *out += std::string(indent, ' ') + "]";
      }
      break;
    case Type::kObject:
      if (members_.empty()) {
        *out += "{}";
        break;
      }
      *out += "{\n";
      for (size_t i = 0; i < members_.size(); ++i) {
        *out += pad;
        Escape(members_[i].first, out);
        *out += ": ";
        members_[i].second.DumpTo(out, indent + 2);
        *out += i + 1 < members_.size() ? ",\n" : "\n";
      }
      *out += std::string(indent, ' ') + "}";
      break;
  }
}

std::string Json::Dump() const {
  std::string s;
  DumpTo(&s, 0);
  s += "\n";
  return s;
}

namespace {

class Parser {
 public:
  explicit Parser(absl::string_view t) : t_(t) {}

  absl::StatusOr<Json> Document() {
    auto v = Value(0);
    if (!v.ok()) return v;
    Space();
    if (pos_ != t_.size()) return Error("trailing characters after the value");
    return v;
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("JSON: ", what, " at offset ", pos_));
  }
  void Space() {
    while (pos_ < t_.size() &&
           (t_[pos_] == ' ' || t_[pos_] == '\n' || t_[pos_] == '\r' || t_[pos_] == '\t')) {
      ++pos_;
    }
  }
  bool Literal(absl::string_view w) {
    if (t_.substr(pos_, w.size()) != w) return false;
    pos_ += w.size();
    return true;
  }

  absl::StatusOr<Json> Value(int depth) {
    if (depth > 200) return Error("nesting too deep");
    Space();
    if (pos_ >= t_.size()) return Error("unexpected end");
    const char c = t_[pos_];
    if (c == '{') return ObjectValue(depth);
    if (c == '[') return ArrayValue(depth);
    if (c == '"') {
      auto s = String();
      if (!s.ok()) return s.status();
      return Json(*std::move(s));
    }
    if (Literal("true")) return Json(true);
    if (Literal("false")) return Json(false);
    if (Literal("null")) return Json();
    return Number();
  }

  absl::StatusOr<Json> ObjectValue(int depth) {
    ++pos_;
    Json obj = Json::Object();
    Space();
    if (pos_ < t_.size() && t_[pos_] == '}') {
      ++pos_;
      return obj;
    }
    while (true) {
      Space();
      if (pos_ >= t_.size() || t_[pos_] != '"') return Error("expected a member name");
      auto key = String();
      if (!key.ok()) return key.status();
      Space();
      if (pos_ >= t_.size() || t_[pos_] != ':') return Error("expected ':'");
      ++pos_;
      auto v = Value(depth + 1);
      if (!v.ok()) return v;
      if (obj.Find(*key) != nullptr) return Error(absl::StrCat("duplicate member \"", *key, "\""));
      obj[*key] = *std::move(v);
      Space();
      if (pos_ < t_.size() && t_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < t_.size() && t_[pos_] == '}') {
        ++pos_;
        return obj;
      }
      return Error("expected ',' or '}'");
    }
  }

  absl::StatusOr<Json> ArrayValue(int depth) {
    ++pos_;
    Json arr = Json::Array();
    Space();
    if (pos_ < t_.size() && t_[pos_] == ']') {
      ++pos_;
      return arr;
    }
    while (true) {
      auto v = Value(depth + 1);
      if (!v.ok()) return v;
      arr.Push(*std::move(v));
      Space();
      if (pos_ < t_.size() && t_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < t_.size() && t_[pos_] == ']') {
        ++pos_;
        return arr;
      }
      return Error("expected ',' or ']'");
    }
  }

  absl::StatusOr<std::string> String() {
    ++pos_;  // opening quote
    std::string s;
    while (pos_ < t_.size()) {
      const unsigned char c = t_[pos_++];
      if (c == '"') return s;
      if (c < 0x20) return Error("control character in a string");
      if (c != '\\') {
        s.push_back(static_cast<char>(c));
        continue;
      }
      if (pos_ >= t_.size()) break;
      const char e = t_[pos_++];
      switch (e) {
        case '"':
          s.push_back('"');
          break;
        case '\\':
          s.push_back('\\');
          break;
        case '/':
          s.push_back('/');
          break;
        case 'b':
          s.push_back('\b');
          break;
        case 'f':
          s.push_back('\f');
          break;
        case 'n':
          s.push_back('\n');
          break;
        case 'r':
          s.push_back('\r');
          break;
        case 't':
          s.push_back('\t');
          break;
        case 'u': {
          if (pos_ + 4 > t_.size()) return Error("short \\u escape");
          unsigned cp = 0;
          for (int i = 0; i < 4; ++i) {
            const char h = t_[pos_++];
            cp <<= 4;
            if (h >= '0' && h <= '9')
              cp |= h - '0';
            else if (h >= 'a' && h <= 'f')
              cp |= h - 'a' + 10;
            else if (h >= 'A' && h <= 'F')
              cp |= h - 'A' + 10;
            else
              return Error("bad \\u escape");
          }
          // UTF-8 of a BMP code point (surrogate pairs are not needed here).
          if (cp < 0x80) {
            s.push_back(static_cast<char>(cp));
          } else if (cp < 0x800) {
            s.push_back(static_cast<char>(0xc0 | (cp >> 6)));
            s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
          } else {
            s.push_back(static_cast<char>(0xe0 | (cp >> 12)));
            s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
            s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
          }
          break;
        }
        default:
          return Error("bad escape");
      }
    }
    return Error("unterminated string");
  }

  absl::StatusOr<Json> Number() {
    const size_t start = pos_;
    auto digits = [&] {
      const size_t s = pos_;
      while (pos_ < t_.size() && t_[pos_] >= '0' && t_[pos_] <= '9') ++pos_;
      return pos_ > s;
    };
    if (pos_ < t_.size() && t_[pos_] == '-') ++pos_;
    if (pos_ < t_.size() && t_[pos_] == '0') {
      ++pos_;
    } else if (!digits()) {
      return Error("expected a value");
    }
    bool integral = true;
    if (pos_ < t_.size() && t_[pos_] == '.') {
      ++pos_;
      integral = false;
      if (!digits()) return Error("expected digits after '.'");
    }
    if (pos_ < t_.size() && (t_[pos_] == 'e' || t_[pos_] == 'E')) {
      ++pos_;
      integral = false;
      if (pos_ < t_.size() && (t_[pos_] == '+' || t_[pos_] == '-')) ++pos_;
      if (!digits()) return Error("expected digits in the exponent");
    }
    const std::string text(t_.substr(start, pos_ - start));
    if (integral && text.size() < 19)
      return Json(static_cast<int64_t>(std::strtoll(text.c_str(), nullptr, 10)));
    return Json(std::strtod(text.c_str(), nullptr));
  }

  absl::string_view t_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<Json> Json::Parse(absl::string_view text) { return Parser(text).Document(); }

}  // namespace ringattn::eval
