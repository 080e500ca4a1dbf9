// A small JSON value for ringattn-eval's report.json: built in order (object
// keys keep their insertion order), dumped with two-space indentation, and
// parsed back (strict RFC 8259 subset: no comments, no trailing commas) so
// that the tests can check the report they wrote. Non-finite numbers are
// written as null, since JSON has no NaN or Infinity.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ringattn::eval {

class Json {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  Json() = default;                               // null
  Json(bool b) : type_(Type::kBool), bool_(b) {}  // NOLINT: implicit by design
  Json(int v) : type_(Type::kNumber), num_(v), is_int_(true), int_(v) {}  // NOLINT
  Json(int64_t v)
      : type_(Type::kNumber), num_(static_cast<double>(v)), is_int_(true), int_(v) {}  // NOLINT
  Json(double v) : type_(Type::kNumber), num_(v) {}                                    // NOLINT
  Json(const char* s) : type_(Type::kString), str_(s) {}                               // NOLINT
  Json(std::string s) : type_(Type::kString), str_(std::move(s)) {}                    // NOLINT
  static Json Array() {
    Json j;
    j.type_ = Type::kArray;
    return j;
  }
  static Json Object() {
    Json j;
    j.type_ = Type::kObject;
    return j;
  }
  template <typename T>
  static Json ArrayOf(const std::vector<T>& xs) {
    Json j = Array();
    for (const T& x : xs) j.Push(Json(x));
    return j;
  }

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool boolean() const { return bool_; }
  double number() const { return num_; }
  const std::string& str() const { return str_; }
  const std::vector<Json>& items() const { return items_; }
  const std::vector<std::pair<std::string, Json>>& members() const { return members_; }

  // Object: the member `key`, inserted as null when missing (turns a null
  // value into an object first).
  Json& operator[](const std::string& key);
  // Object: the member or nullptr.
  const Json* Find(const std::string& key) const;
  // Array: appends (turns a null value into an array first).
  Json& Push(Json v);

  std::string Dump() const;
  static absl::StatusOr<Json> Parse(absl::string_view text);

 private:
  void DumpTo(std::string* out, int indent) const;

  Type type_ = Type::kNull;
  bool bool_ = false;
  double num_ = 0;
  bool is_int_ = false;
  int64_t int_ = 0;
  std::string str_;
  std::vector<Json> items_;
  std::vector<std::pair<std::string, Json>> members_;
  std::map<std::string, size_t> index_;  // key -> position in members_
};

}  // namespace ringattn::eval
