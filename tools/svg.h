// A small self-written SVG writer for ringattn-eval's figures, so that the
// report needs nothing at run time (no Python, no plotting library).
//
// Variants: the primitive canvas (Svg), a heatmap with a colour bar (the
// needle grids: depth x length, colour by retrieval score, with marks for
// cells that must NOT retrieve and for cells that failed), and a line chart
// with linear or log axes (cost curves, error vs ranks).
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace ringattn::tools {

std::string XmlEscape(absl::string_view s);

// Compact number for axis ticks and labels: 1536 -> "1.5k", 131072 -> "128k"
// when `binary`, else SI (1e6 -> "1M").
std::string CompactNumber(double v, bool binary = false);

class Svg {
 public:
  Svg(double width, double height);
  void Rect(double x, double y, double w, double h, absl::string_view fill,
            absl::string_view stroke = "none", double stroke_width = 0,
            absl::string_view title = "");
  void Line(double x1, double y1, double x2, double y2, absl::string_view stroke, double width = 1,
            absl::string_view dash = "");
  void Polyline(const std::vector<double>& xs, const std::vector<double>& ys,
                absl::string_view stroke, double width = 1.5, absl::string_view dash = "");
  void Circle(double cx, double cy, double r, absl::string_view fill,
              absl::string_view stroke = "none", absl::string_view title = "");
  // anchor: start | middle | end; rotate in degrees about (x, y).
  void Text(double x, double y, absl::string_view text, double size = 12,
            absl::string_view anchor = "start", absl::string_view fill = "#222", bool bold = false,
            double rotate = 0);
  std::string Finish() const;

 private:
  double width_, height_;
  std::string body_;
};

// Colour of t in [0, 1] on a perceptual dark-blue -> green -> yellow ramp.
std::string RampColor(double t);

struct HeatmapSpec {
  std::string title, subtitle, x_label, y_label;  // '\n' breaks the subtitle into lines
  std::vector<std::string> x_ticks;               // one per column
  std::vector<std::string> y_ticks;               // one per row, top to bottom
  std::vector<std::vector<double>> values;        // [row][col]; NaN: no cell
  // [row][col]: 0 plain, 1 expected NOT to retrieve (masked), 2 failed.
  std::vector<std::vector<int>> marks;
  double vmin = 0, vmax = 1;
  std::string color_label;
};
std::string Heatmap(const HeatmapSpec& spec);

struct Series {
  std::string name;
  std::vector<double> x, y;
  std::string color;  // empty: from a fixed palette
  bool line = true;
  bool points = true;
  bool dashed = false;
};

struct ChartSpec {
  std::string title, subtitle, x_label, y_label;  // '\n' breaks the subtitle into lines
  bool log_x = false, log_y = false;
  bool binary_x = false;  // x ticks as 1k/64k/1M of 1024
  std::vector<Series> series;
};
std::string LineChart(const ChartSpec& spec);

}  // namespace ringattn::tools
