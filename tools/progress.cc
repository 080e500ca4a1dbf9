// Progress bar and ETA; see progress.h.
#include "tools/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace ringattn::tools {
namespace {

std::string Duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(std::lround(s));
  if (t >= 3600) return absl::StrFormat("%dh%02dm", t / 3600, (t / 60) % 60);
  if (t >= 60) return absl::StrFormat("%dm%02ds", t / 60, t % 60);
  return absl::StrFormat("%ds", t);
}

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

Progress::Progress(std::FILE* sink, bool lines_off_terminal) : sink_(sink) {
  start_ = last_line_ = item_start_ = std::chrono::steady_clock::now();
  if (sink_ == nullptr) return;
  tty_ = isatty(fileno(sink_)) != 0;
  if (!tty_ && !lines_off_terminal) {
    sink_ = nullptr;
    return;
  }
  thread_ = std::thread([this] { Loop(); });
}

Progress::~Progress() { Finish(); }

double Progress::ElapsedSeconds() const { return Since(start_); }

void Progress::AddWork(double estimate_s) {
  std::lock_guard<std::mutex> l(mu_);
  total_ += std::max(0.0, estimate_s);
}

void Progress::Begin(const std::string& label, double estimate_s) {
  std::lock_guard<std::mutex> l(mu_);
  label_ = label;
  item_est_ = std::max(0.0, estimate_s);
  item_start_ = std::chrono::steady_clock::now();
  in_item_ = true;
  if (sink_ != nullptr && tty_) DrawLocked(false);
}

void Progress::Label(const std::string& label) {
  std::lock_guard<std::mutex> l(mu_);
  label_ = label;
}

void Progress::End() {
  std::lock_guard<std::mutex> l(mu_);
  done_ += item_est_;
  item_est_ = 0;
  in_item_ = false;
}

void Progress::Note(const std::string& line) {
  std::lock_guard<std::mutex> l(mu_);
  if (sink_ == nullptr) return;
  if (tty_) std::fprintf(sink_, "\r%-110s\r", "");
  std::fprintf(sink_, "%s\n", line.c_str());
  if (tty_) DrawLocked(false);
  std::fflush(sink_);
}

void Progress::Finish() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (finished_) return;
    finished_ = true;
    stop_ = true;
    if (sink_ != nullptr) {
      done_ = total_;
      in_item_ = false;
      label_ = "done";
      if (tty_) {
        DrawLocked(false);
        std::fprintf(sink_, "\n");
      } else {
        DrawLocked(true);
      }
      std::fflush(sink_);
    }
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string Progress::BarLocked() const {
  // Done so far in estimated seconds, with the running item counted up to
  // 95% of its estimate.
  const double cur = in_item_ ? std::min(Since(item_start_), 0.95 * item_est_) : 0.0;
  const double done = done_ + cur;
  const double frac = total_ > 0 ? std::clamp(done / total_, 0.0, 1.0) : 0.0;
  const double elapsed = Since(start_);
  // Scale the remaining estimate by how the estimates have come true.
  const double speed = done > 1.0 ? elapsed / done : 1.0;
  const double eta = std::max(0.0, (total_ - done) * speed);
  constexpr int kWidth = 28;
  const int fill = static_cast<int>(std::lround(frac * kWidth));
  std::string bar(kWidth + 2, '.');
  bar.front() = '[';
  bar.back() = ']';
  for (int i = 0; i < fill; ++i) bar[1 + i] = '#';
  std::string label = label_;
  if (label.size() > 48) label = label.substr(0, 45) + "...";
  return absl::StrFormat("%s %3d%%  %-48s  %s elapsed, ETA %s", bar,
                         static_cast<int>(std::lround(frac * 100)), label, Duration(elapsed),
                         frac >= 1.0 ? "0s" : Duration(eta));
}

void Progress::DrawLocked(bool force_line) {
  if (sink_ == nullptr) return;
  if (tty_) {
    std::fprintf(sink_, "\r%s ", BarLocked().c_str());
  } else if (force_line || Since(last_line_) >= 30.0) {
    std::fprintf(sink_, "%s\n", BarLocked().c_str());
    last_line_ = std::chrono::steady_clock::now();
  }
  std::fflush(sink_);
}

void Progress::Loop() {
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    cv_.wait_for(l, std::chrono::milliseconds(tty_ ? 500 : 1000));
    if (!stop_) DrawLocked(false);
  }
}

}  // namespace ringattn::tools
