// SVG canvas, heatmap and line chart; see svg.h.
#include "tools/svg.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ringattn::tools {

std::string XmlEscape(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

std::string CompactNumber(double v, bool binary) {
  if (v == 0) return "0";
  const double a = std::abs(v);
  const double base = binary ? 1024.0 : 1000.0;
  const char* suffix[] = {"", "k", "M", "G", "T", "P"};
  int u = 0;
  double x = a;
  while (x >= base && u < 5) {
    x /= base;
    ++u;
  }
  std::string num;
  if (u == 0 && a < 1) {
    num = absl::StrFormat("%.3g", a);
  } else {
    num = x >= 100 || x == std::floor(x) ? absl::StrFormat("%.0f", x) : absl::StrFormat("%.3g", x);
  }
  return absl::StrCat(v < 0 ? "-" : "", num, suffix[u]);
}

namespace {
std::string Num(double v) { return absl::StrFormat("%.2f", v); }
std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  size_t start = 0;
  for (size_t nl; (nl = s.find('\n', start)) != std::string::npos; start = nl + 1) {
    out.push_back(s.substr(start, nl - start));
  }
  out.push_back(s.substr(start));
  return out;
}
}  // namespace

Svg::Svg(double width, double height) : width_(width), height_(height) {}

void Svg::Rect(double x, double y, double w, double h, absl::string_view fill,
               absl::string_view stroke, double stroke_width, absl::string_view title) {
  absl::StrAppend(&body_, "<rect x=\"", Num(x), "\" y=\"", Num(y), "\" width=\"", Num(w),
                  "\" height=\"", Num(h), "\" fill=\"", fill, "\"");
  if (stroke != "none") {
    absl::StrAppend(&body_, " stroke=\"", stroke, "\" stroke-width=\"", Num(stroke_width), "\"");
  }
  if (title.empty()) {
    body_ += "/>\n";
  } else {
    absl::StrAppend(&body_, "><title>", XmlEscape(title), "</title></rect>\n");
  }
}

void Svg::Line(double x1, double y1, double x2, double y2, absl::string_view stroke, double width,
               absl::string_view dash) {
  absl::StrAppend(&body_, "<line x1=\"", Num(x1), "\" y1=\"", Num(y1), "\" x2=\"", Num(x2),
                  "\" y2=\"", Num(y2), "\" stroke=\"", stroke, "\" stroke-width=\"", Num(width),
                  "\"");
  if (!dash.empty()) absl::StrAppend(&body_, " stroke-dasharray=\"", dash, "\"");
  body_ += "/>\n";
}

void Svg::Polyline(const std::vector<double>& xs, const std::vector<double>& ys,
                   absl::string_view stroke, double width, absl::string_view dash) {
  std::string pts;
  for (size_t i = 0; i < xs.size() && i < ys.size(); ++i) {
    absl::StrAppend(&pts, i ? " " : "", Num(xs[i]), ",", Num(ys[i]));
  }
  absl::StrAppend(&body_, "<polyline points=\"", pts, "\" fill=\"none\" stroke=\"", stroke,
                  "\" stroke-width=\"", Num(width), "\"");
  if (!dash.empty()) absl::StrAppend(&body_, " stroke-dasharray=\"", dash, "\"");
  body_ += "/>\n";
}

void Svg::Circle(double cx, double cy, double r, absl::string_view fill, absl::string_view stroke,
                 absl::string_view title) {
  absl::StrAppend(&body_, "<circle cx=\"", Num(cx), "\" cy=\"", Num(cy), "\" r=\"", Num(r),
                  "\" fill=\"", fill, "\"");
  if (stroke != "none") absl::StrAppend(&body_, " stroke=\"", stroke, "\"");
  if (title.empty()) {
    body_ += "/>\n";
  } else {
    absl::StrAppend(&body_, "><title>", XmlEscape(title), "</title></circle>\n");
  }
}

void Svg::Text(double x, double y, absl::string_view text, double size, absl::string_view anchor,
               absl::string_view fill, bool bold, double rotate) {
  absl::StrAppend(&body_, "<text x=\"", Num(x), "\" y=\"", Num(y), "\" font-size=\"", Num(size),
                  "\" text-anchor=\"", anchor, "\" fill=\"", fill, "\"");
  if (bold) body_ += " font-weight=\"bold\"";
  if (rotate != 0) {
    absl::StrAppend(&body_, " transform=\"rotate(", Num(rotate), " ", Num(x), " ", Num(y), ")\"");
  }
  absl::StrAppend(&body_, ">", XmlEscape(text), "</text>\n");
}

std::string Svg::Finish() const {
  return absl::StrCat("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
                      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", Num(width_),
                      "\" height=\"", Num(height_), "\" viewBox=\"0 0 ", Num(width_), " ",
                      Num(height_),
                      "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n",
                      "<rect x=\"0\" y=\"0\" width=\"", Num(width_), "\" height=\"", Num(height_),
                      "\" fill=\"white\"/>\n", body_, "</svg>\n");
}

std::string RampColor(double t) {
  // Five stops of a viridis-like ramp, linearly interpolated in RGB.
  static const double stops[5][3] = {
      {68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  if (!std::isfinite(t)) return "#cccccc";
  t = std::clamp(t, 0.0, 1.0) * 4.0;
  const int i = std::min(3, static_cast<int>(t));
  const double f = t - i;
  int rgb[3];
  for (int c = 0; c < 3; ++c) {
    rgb[c] = static_cast<int>(std::lround(stops[i][c] + f * (stops[i + 1][c] - stops[i][c])));
  }
  return absl::StrFormat("#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
}

std::string Heatmap(const HeatmapSpec& spec) {
  const size_t rows = spec.y_ticks.size(), cols = spec.x_ticks.size();
  const double cell_w = std::clamp(560.0 / std::max<size_t>(cols, 1), 34.0, 80.0);
  const double cell_h = 26;
  const std::vector<std::string> sub = Lines(spec.subtitle);
  const double left = 78, top = 48 + 15 * sub.size();
  const double grid_w = cell_w * cols, grid_h = cell_h * rows;
  const double width = std::max(left + grid_w + 120, 660.0), height = top + grid_h + 64;
  Svg svg(width, height);
  svg.Text(left, 22, spec.title, 15, "start", "#111", true);
  for (size_t i = 0; i < sub.size(); ++i) svg.Text(left, 40 + 15 * i, sub[i], 11, "start", "#555");
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) {
      const double x = left + c * cell_w, y = top + r * cell_h;
      const double v = r < spec.values.size() && c < spec.values[r].size()
                           ? spec.values[r][c]
                           : std::numeric_limits<double>::quiet_NaN();
      const int mark = r < spec.marks.size() && c < spec.marks[r].size() ? spec.marks[r][c] : 0;
      const double t = (v - spec.vmin) / (spec.vmax - spec.vmin);
      const std::string title =
          std::isfinite(v) ? absl::StrFormat("%s = %s, %s = %s: %.4f%s", spec.y_label,
                                             spec.y_ticks[r], spec.x_label, spec.x_ticks[c], v,
                                             mark == 1   ? " (masked: must not retrieve)"
                                             : mark == 2 ? " (FAILED)"
                                                         : "")
                           : std::string("not measured");
      svg.Rect(x, y, cell_w, cell_h, RampColor(std::isfinite(v) ? t : NAN), "white", 1, title);
      if (mark == 1) {  // masked cell: a diagonal hatch line
        svg.Line(x + 2, y + cell_h - 2, x + cell_w - 2, y + 2, "#9a9a9a", 0.8, "3,3");
      } else if (mark == 2) {
        svg.Rect(x + 1.5, y + 1.5, cell_w - 3, cell_h - 3, "none", "#e0201b", 3);
      }
      if (std::isfinite(v)) {
        const std::string label = absl::StrFormat("%.2f", std::abs(v) < 0.005 ? 0.0 : v);
        svg.Text(x + cell_w / 2, y + cell_h / 2 + 4, label, 10, "middle",
                 t > 0.6 ? "#222" : "#f4f4f4");
      }
    }
    svg.Text(left - 6, top + r * cell_h + cell_h / 2 + 4, spec.y_ticks[r], 11, "end");
  }
  for (size_t c = 0; c < cols; ++c) {
    svg.Text(left + c * cell_w + cell_w / 2, top + grid_h + 16, spec.x_ticks[c], 11, "middle");
  }
  svg.Text(left + grid_w / 2, top + grid_h + 36, spec.x_label, 12, "middle");
  svg.Text(18, top + grid_h / 2, spec.y_label, 12, "middle", "#222", false, -90);
  // Colour bar.
  const double bx = left + grid_w + 24, bh = std::max(grid_h, 120.0);
  for (int i = 0; i < 40; ++i) {
    const double t = 1.0 - i / 39.0;
    svg.Rect(bx, top + i * bh / 40, 14, bh / 40 + 0.5, RampColor(t));
  }
  svg.Text(bx + 18, top + 8, absl::StrFormat("%.2g", spec.vmax), 10);
  svg.Text(bx + 18, top + bh, absl::StrFormat("%.2g", spec.vmin), 10);
  svg.Text(bx + 7, top + bh + 16, spec.color_label, 10, "middle");
  // Key for the marks.
  const double ky = top + grid_h + 52;
  svg.Line(left, ky, left + 14, ky - 10, "#888888", 1, "3,2");
  svg.Text(left + 20, ky, "masked: must NOT retrieve", 10);
  svg.Rect(left + 190, ky - 11, 14, 12, "none", "#e0201b", 2.5);
  svg.Text(left + 210, ky, "failed", 10);
  return svg.Finish();
}

namespace {

const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                          "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};

struct Axis {
  double lo, hi;
  bool log;
  double Map(double v, double a, double b) const {  // data -> pixel in [a, b]
    double t = log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo))
                   : (v - lo) / (hi - lo);
    return a + t * (b - a);
  }
  std::vector<double> Ticks(bool binary) const {
    std::vector<double> t;
    if (log) {
      if (binary) {
        for (double p = std::exp2(std::floor(std::log2(lo))); p <= hi * 1.0001; p *= 2) {
          if (p >= lo * 0.9999) t.push_back(p);
        }
        while (t.size() > 9) {  // thin out: every other power of two
          std::vector<double> thin;
          for (size_t i = 0; i < t.size(); i += 2) thin.push_back(t[i]);
          t = thin;
        }
        return t;
      }
      for (double p = std::pow(10, std::floor(std::log10(lo))); p <= hi * 1.0001; p *= 10) {
        for (double m : {1.0, 2.0, 5.0}) {
          const double v = p * m;
          if (v >= lo * 0.9999 && v <= hi * 1.0001) t.push_back(v);
        }
      }
      if (t.size() > 8) {
        std::vector<double> decades;
        for (double v : t) {
          if (std::abs(std::log10(v) - std::round(std::log10(v))) < 1e-9) decades.push_back(v);
        }
        if (decades.size() >= 2) t = decades;
      }
      return t;
    }
    const double span = hi - lo;
    const double raw = span / 5;
    const double mag = std::pow(10, std::floor(std::log10(raw)));
    double step = mag;
    for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
      if (mag * m >= raw) {
        step = mag * m;
        break;
      }
    }
    for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) t.push_back(v);
    return t;
  }
};

Axis MakeAxis(std::vector<double> vals, bool log) {
  std::vector<double> ok;
  for (double v : vals) {
    if (std::isfinite(v) && (!log || v > 0)) ok.push_back(v);
  }
  if (ok.empty()) return {log ? 1.0 : 0.0, log ? 10.0 : 1.0, log};
  double lo = *std::min_element(ok.begin(), ok.end());
  double hi = *std::max_element(ok.begin(), ok.end());
  if (log) {
    if (hi / lo < 1.5) {
      lo /= 1.5;
      hi *= 1.5;
    }
    const double pad = std::pow(hi / lo, 0.05);
    return {lo / pad, hi * pad, true};
  }
  if (hi == lo) {
    lo -= lo == 0 ? 1 : std::abs(lo) * 0.1;
    hi += hi == 0 ? 1 : std::abs(hi) * 0.1;
  }
  const double pad = (hi - lo) * 0.05;
  if (lo >= 0 && lo - pad < 0) return {0, hi + pad, false};
  return {lo - pad, hi + pad, false};
}

}  // namespace

std::string LineChart(const ChartSpec& spec) {
  const std::vector<std::string> sub = Lines(spec.subtitle);
  const double width = 720, height = 440 + 15 * sub.size();
  const double left = 84, right = 190, top = 44 + 15 * sub.size(), bottom = 58;
  const double px0 = left, px1 = width - right, py0 = height - bottom, py1 = top;
  std::vector<double> xs, ys;
  for (const Series& s : spec.series) {
    xs.insert(xs.end(), s.x.begin(), s.x.end());
    ys.insert(ys.end(), s.y.begin(), s.y.end());
  }
  const Axis ax = MakeAxis(xs, spec.log_x), ay = MakeAxis(ys, spec.log_y);
  Svg svg(width, height);
  svg.Text(left, 22, spec.title, 15, "start", "#111", true);
  for (size_t i = 0; i < sub.size(); ++i) svg.Text(left, 40 + 15 * i, sub[i], 11, "start", "#555");
  svg.Rect(px0, py1, px1 - px0, py0 - py1, "#fafafa", "#999999", 1);
  for (double t : ax.Ticks(spec.binary_x)) {
    const double x = ax.Map(t, px0, px1);
    svg.Line(x, py1, x, py0, "#e4e4e4", 1);
    svg.Text(x, py0 + 16, CompactNumber(t, spec.binary_x), 11, "middle");
  }
  for (double t : ay.Ticks(false)) {
    const double y = ay.Map(t, py0, py1);
    svg.Line(px0, y, px1, y, "#e4e4e4", 1);
    svg.Text(px0 - 6, y + 4, spec.log_y && t < 1e-2 ? absl::StrFormat("%.0e", t) : CompactNumber(t),
             11, "end");
  }
  svg.Text((px0 + px1) / 2, height - 16, spec.x_label, 12, "middle");
  svg.Text(20, (py0 + py1) / 2, spec.y_label, 12, "middle", "#222", false, -90);
  int idx = 0;
  for (const Series& s : spec.series) {
    const std::string color = s.color.empty() ? kPalette[idx % 10] : s.color;
    std::vector<double> px, py;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      if ((spec.log_x && s.x[i] <= 0) || (spec.log_y && s.y[i] <= 0)) continue;
      px.push_back(ax.Map(s.x[i], px0, px1));
      py.push_back(ay.Map(s.y[i], py0, py1));
    }
    if (s.line && px.size() > 1) svg.Polyline(px, py, color, 1.8, s.dashed ? "6,4" : "");
    if (s.points) {
      for (size_t i = 0; i < px.size(); ++i) svg.Circle(px[i], py[i], 3.5, color, "white");
    }
    const double ly = py1 + 14 + idx * 18;
    if (s.line) svg.Line(px1 + 12, ly - 4, px1 + 34, ly - 4, color, 2.5, s.dashed ? "6,4" : "");
    if (s.points) svg.Circle(px1 + 23, ly - 4, 3.5, color, "white");
    svg.Text(px1 + 40, ly, s.name, 11);
    ++idx;
  }
  return svg.Finish();
}

}  // namespace ringattn::tools
