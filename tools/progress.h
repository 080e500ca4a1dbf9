// The tools' one progress bar with an ETA, on stderr (ringattn-eval's
// phases, ringattn-bench's sweep points and iterations). Work is a list of items
// with estimated seconds (from the FLOP count and the measured rate); the
// bar advances by the estimates and the ETA scales the estimated remainder
// by how fast the estimates have come true so far.
//
// Variants: on a terminal it redraws one line with '\r' twice a second; on
// anything else (a log file, CI) it prints a plain line when a phase starts
// and every 30 s, unless made terminal-only (the bench: its redirected
// output stays the figures alone); disabled, it prints nothing (tests).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>

namespace ringattn::tools {

class Progress {
 public:
  // `sink` may be null (disabled). lines_off_terminal false: silent
  // unless `sink` is a terminal.
  explicit Progress(std::FILE* sink, bool lines_off_terminal = true);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Adds estimated work (seconds) to the total.
  void AddWork(double estimate_s);
  // Starts an item of `estimate_s` (already counted by AddWork).
  void Begin(const std::string& label, double estimate_s);
  void End();
  // Renames the running item (a step inside it), its estimate unchanged.
  void Label(const std::string& label);
  // Prints a line above the bar (a phase heading, a verdict).
  void Note(const std::string& line);
  void Finish();

  double ElapsedSeconds() const;

 private:
  void Loop();
  void DrawLocked(bool force_line);
  std::string BarLocked() const;

  std::FILE* sink_;
  bool tty_ = false;
  std::chrono::steady_clock::time_point start_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool finished_ = false;
  double total_ = 0, done_ = 0;  // estimated seconds
  double item_est_ = 0;          // current item
  std::chrono::steady_clock::time_point item_start_;
  bool in_item_ = false;
  std::string label_;
  std::chrono::steady_clock::time_point last_line_;
  std::thread thread_;
};

}  // namespace ringattn::tools
