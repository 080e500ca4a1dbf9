// report.md, report.json and the SVG figures of ringattn-eval; see report.h.
#include "tools/eval/report.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "tools/svg.h"
#include "tools/flags.h"

namespace ringattn::eval {

// The tools' shared SVG and progress code (tools/svg.h, tools/progress.h).
using tools::ChartSpec;
using tools::Series;
using tools::LineChart;
using tools::Heatmap;
using tools::HeatmapSpec;
using tools::CompactNumber;

absl::Status WriteFileAtomic(const std::string& dir, const std::string& name,
                             const std::string& text) {
  const std::string path = absl::StrCat(dir, "/", name);
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return absl::InternalError(absl::StrCat(path, ": cannot write: ", std::strerror(errno)));
  }
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat(path, ": cannot write: ", err));
  }
  return absl::OkStatus();
}

std::string DumpJson(const Json& j) {
  return j.dump(2, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace) + "\n";
}

absl::StatusOr<Json> ParseJson(absl::string_view text) {
  Json j = Json::parse(text, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat("not valid JSON (", text.size(), " bytes)"));
  }
  return j;
}

namespace {

std::string Slug(absl::string_view s) { return absl::StrReplaceAll(s, {{"+", "-"}}); }


// Predicted durations: seconds up to minutes, then hours and days.
std::string HumanSeconds(double s) {
  if (!std::isfinite(s) || s <= 0) return "-";
  if (s < 120) return absl::StrFormat("%.3g s", s);
  if (s < 7200) return absl::StrFormat("%.1f min", s / 60);
  if (s < 2 * 86400) return absl::StrFormat("%.1f h", s / 3600);
  return absl::StrFormat("%.1f days", s / 86400);
}

// Fit coefficients that are zero up to rounding print as 0.
double Clean(double x) { return std::abs(x) < 1e-6 ? 0.0 : x; }

std::string Sci(double x) {
  if (!std::isfinite(x)) return "inf";
  if (x == 0) return "0";
  return absl::StrFormat("%.2e", x);
}

std::string Tokens(int64_t s) { return CompactNumber(static_cast<double>(s), true); }

// A share as a percentage; what is below 1e-6 % is rounding noise.
std::string ShareText(double share) {
  return std::abs(share) < 1e-8 ? "< 1e-6 %" : absl::StrFormat("%.2g %%", share * 100);
}

Json MaskJson(const Mask& m) {
  return Json{
      {"causal", m.causal},
      {"window_left", m.window_left},
      {"window_right", m.window_right},
      {"label", m.ToString()},
  };
}

Json StatJson(const ErrorStat& s) {
  return Json{
      {"max_abs_error", s.max_abs},
      {"naive_max_abs_error", s.naive_max_abs},
      {"tolerance", s.tol},
      {"max_rel_error", s.rel_max},
      {"mean_rel_error", s.rel_mean},
      {"rows_x_heads", s.rows},
      {"finite", s.finite},
      {"pass", s.pass()},
  };
}

Json StatsJson(const RunStats& s) {
  return Json{
      {"fwd_seconds", s.fwd_seconds},
      {"bwd_seconds", s.bwd_seconds},
      {"fwd_compute_seconds", s.fwd_compute_seconds},
      {"bwd_compute_seconds", s.bwd_compute_seconds},
      {"tensor_bytes_per_rank", s.tensor_bytes},
      {"workspace_bytes_per_rank", s.workspace_bytes},
      {"rank_bytes", s.rank_bytes},
      {"ring_steps", s.steps},
      {"fwd_bytes_sent_per_rank", s.bytes_sent},
      {"rss_before_bytes", s.rss_before},
      {"rss_peak_delta_bytes", s.rss_peak_delta},
  };
}

Json FitJson(const Fit& f) {
  return Json{
      {"ok", f.ok},
      {"a", f.a},
      {"b", f.b},
      {"c", f.c},
      {"r2", f.r2},
      {"points", f.points},
  };
}

Json BuildJson(const EvalData& d) {
  const EvalOptions& o = d.options;
  Json j = Json::object();
  j["tool"] = "ringattn-eval";
  j["command_line"] = o.command_line;
  j["pass"] = [&] {
    for (const Verdict& v : d.verdicts) {
      if (!v.pass) return false;
    }
    return true;
  }();
  Json& vs = j["verdicts"];
  vs = Json::array();
  for (const Verdict& v : d.verdicts) {
    Json x = Json::object();
    x["check"] = v.check;
    x["pass"] = v.pass;
    x["reason"] = v.reason;
    vs.push_back(x);
  }
  Json& opt = j["options"];
  opt["ranks"] = o.ranks;
  Json sh = Json::array();
  for (Sharding s : o.shardings) sh.push_back(ShardingName(s));
  opt["shardings"] = sh;
  opt["stripe"] = o.stripe;
  opt["causal"] = o.mask.causal;
  opt["window_left"] = o.mask.window_left;
  opt["window_right"] = o.mask.window_right;
  opt["heads"] = o.heads;
  opt["kv_heads"] = o.kv_heads;
  opt["head_dim"] = o.head_dim;
  Json dt = Json::array();
  for (DType t : o.dtypes) dt.push_back(DTypeName(t));
  opt["dtypes"] = dt;
  opt["max_seq"] = o.max_seq;
  opt["time_budget_s"] = o.time_budget_s;
  opt["mem_budget_bytes"] = o.mem_budget_bytes;
  opt["quick"] = o.quick;
  opt["seed"] = static_cast<int64_t>(o.seed);
  opt["fault"] = FaultName(o.fault);
  opt["strategy"] = StrategySpecName(o.strategy, o.ulysses, o.ranks);
  j["environment"] = d.environment;
  j["plan"] = d.plan;
  j["wall_seconds"] = d.wall_seconds;
  j["phase_seconds"]["exactness"] = d.phase_seconds[0];
  j["phase_seconds"]["reachability"] = d.phase_seconds[1];
  j["phase_seconds"]["cost"] = d.phase_seconds[2];
  j["main_configuration"]["sharding"] = ShardingName(d.main_sharding);
  j["main_configuration"]["dtype"] = DTypeName(d.main_dtype);
  j["main_configuration"]["mask_kind"] = kMaskKinds[d.main_kind];

  Json& ex = j["exactness"];
  ex["sampling"] =
      "out/lse/dq on sampled query rows (random + first/last row of every shard segment) against "
      "float64 ReferenceForwardRow and its float64 gradient; dk/dv on sampled key rows, float64 "
      "over every query row that sees the key, given the forward's saved out/lse";
  ex["runs"] = Json::array();
  for (const ExactRun& r : d.exact) {
    Json x = Json::object();
    x["phase"] = r.phase;
    x["seqlen"] = r.seqlen;
    x["dtype"] = DTypeName(r.dtype);
    x["sharding"] = ShardingName(r.sharding);
    x["mask_kind"] = r.mask_kind;
    x["mask"] = MaskJson(r.mask);
    x["world"] = r.world;
    x["sampled_query_rows"] = r.rows;
    x["sampled_key_rows"] = r.keys;
    x["pass"] = r.err.pass();
    x["out"] = StatJson(r.err.out);
    x["lse"] = StatJson(r.err.lse);
    x["dq"] = StatJson(r.err.dq);
    x["dk"] = StatJson(r.err.dk);
    x["dv"] = StatJson(r.err.dv);
    x["stats"] = StatsJson(r.stats);
    x["check_seconds"] = r.check_seconds;
    ex["runs"].push_back(x);
  }
  if (!d.sweep_note.empty()) ex["growth_with_world_not_measured"] = d.sweep_note;
  ex["growth_with_world"] = Json::array();
  for (const Growth& g : d.growth) {
    Json x = Json::object();
    x["dtype"] = DTypeName(g.dtype);
    x["mask_kind"] = g.mask_kind;
    x["quantity"] = g.quantity;
    x["worlds"] = g.worlds;
    x["max_abs_errors"] = g.errors;
    x["noise"] = g.noise;
    x["pass"] = g.pass;
    ex["growth_with_world"].push_back(x);
  }

  Json& nd = j["reachability"];
  nd["depths"] = d.depths;
  nd["seqlens"] = d.needle_seqs;
  nd["configurations"] = Json::array();
  for (const NeedleConfig& c : d.needles) {
    Json x = Json::object();
    x["sharding"] = ShardingName(c.sharding);
    x["mask_kind"] = c.mask_kind;
    x["pass"] = c.pass();
    x["runs"] = Json::array();
    for (const NeedleRun& r : c.runs) {
      Json y = Json::object();
      y["seqlen"] = r.seqlen;
      y["pass"] = r.pass();
      y["passes"] = r.passes;
      y["probes"] = r.probes;
      y["expected_visible"] = r.expected_visible;
      y["found"] = r.found;
      y["expected_masked"] = r.expected_masked;
      y["leaked"] = r.leaked;
      y["min_visible_cosine"] = r.min_visible_cosine;
      y["min_visible_recovered"] = r.min_visible_recovered;
      y["max_masked_recovered"] = r.max_masked_recovered;
      y["shard_boundaries"] = r.boundaries;
      y["boundaries_with_needles_on_both_sides"] = r.boundaries_probed;
      y["ranks_with_a_needle"] = r.ranks_with_needle;
      y["failures"] = r.failures;
      y["fwd_seconds"] = r.stats.fwd_seconds;
      // Needles: [pos, kind, depth, rank, probes: [pos, kind, expect, recovered, cosine, ok]]
      Json needles = Json::array();
      for (const Needle& n : r.needles) {
        Json z = Json::object();
        z["pos"] = n.pos;
        z["kind"] = n.kind;
        if (n.depth >= 0) z["depth"] = n.depth;
        z["rank"] = n.rank;
        Json probes = Json::array();
        for (const Probe& p : n.probes) {
          probes.push_back(Json::array({p.pos, p.kind, p.expect_visible ? "visible" : "masked",
                                        p.recovered, p.cosine, p.ok}));
        }
        z["probes"] = probes;
        needles.push_back(z);
      }
      y["needles"] = needles;
      x["runs"].push_back(y);
    }
    nd["configurations"].push_back(x);
  }
  nd["probe_columns"] =
      Json::array({"position", "kind", "expectation", "recovered", "cosine", "ok"});

  Json& co = j["cost"];
  const CostResult& c = d.cost;
  co["points"] = Json::array();
  for (const CostPoint& p : c.points) {
    Json x = Json::object();
    x["seqlen"] = p.seqlen;
    x["world"] = p.world;
    x["tokens_per_rank"] = p.shard_len;
    x["fwd_flop"] = p.fwd_flop;
    x["bwd_flop"] = p.bwd_flop;
    x["stats"] = StatsJson(p.stats);
    co["points"].push_back(x);
  }
  co["memory_fit_quadratic"] = FitJson(c.mem_quad);
  co["memory_fit_linear"] = FitJson(c.mem_lin);
  co["rss_available"] = c.rss_available;
  co["rss_fit_quadratic"] = FitJson(c.rss_quad);
  co["rss_fit_linear"] = FitJson(c.rss_lin);
  co["rss_growth_top_two"] = c.rss_growth;
  co["rss_growth_token_ratio"] = c.rss_growth_tokens;
  co["time_fits"] = Json::array();
  for (const auto& tf : c.time_fits) {
    Json x = Json::object();
    x["world"] = tf.world;
    x["fwd_seconds_vs_flop"] = FitJson(tf.fwd);
    x["bwd_seconds_vs_flop"] = FitJson(tf.bwd);
    x["fwd_gflops_fitted"] = tf.fwd.b > 0 ? 1e-9 / tf.fwd.b : 0.0;
    x["bwd_gflops_fitted"] = tf.bwd.b > 0 ? 1e-9 / tf.bwd.b : 0.0;
    x["fwd_time_exponent"] = tf.fwd_exponent;
    x["bwd_time_exponent"] = tf.bwd_exponent;
    x["flop_exponent"] = tf.flop_exponent;
    co["time_fits"].push_back(x);
  }
  co["extrapolation_note"] =
      "EXTRAPOLATED from the linear fits, not measured: the largest context whose per-rank "
      "memory fits --mem-budget, and the time the fitted rate of this machine predicts for it";
  co["mem_budget_bytes"] = o.mem_budget_bytes;
  co["extrapolations"] = Json::array();
  for (const auto& e : c.extrapolations) {
    Json x = Json::object();
    x["world"] = e.world;
    x["max_tokens_per_rank"] = e.max_tokens_per_rank;
    x["max_seqlen"] = e.max_seqlen;
    x["max_seqlen_from_rss"] = e.max_seqlen_rss;
    x["fwd_seconds_at_max"] = e.fwd_seconds;
    x["bwd_seconds_at_max"] = e.bwd_seconds;
    co["extrapolations"].push_back(x);
  }
  return j;
}

// ---- figures ----

std::string NeedleSvg(const EvalData& d, const NeedleConfig& c) {
  HeatmapSpec h;
  h.title = absl::StrFormat("Needle retrieval: %s layout, mask %s, W=%d", ShardingName(c.sharding),
                            c.mask_kind, d.options.ranks);
  int64_t probes = 0, bad = 0;
  for (const NeedleRun& r : c.runs) {
    probes += r.probes;
    bad += r.probes - (r.found + (r.expected_masked - r.leaked));
  }
  h.subtitle = absl::StrFormat(
      "probe at the end of the sequence; colour = fraction of the needle's value recovered\n"
      "%s: %d probes at all distances (after, on, before the needle, window edges), %d wrong",
      c.pass() ? "PASS" : "FAIL", probes, bad);
  h.x_label = "context length (tokens)";
  h.y_label = "needle depth";
  h.color_label = "recovered";
  for (const NeedleRun& r : c.runs) h.x_ticks.push_back(Tokens(r.seqlen));
  for (double dep : d.depths) h.y_ticks.push_back(absl::StrFormat("%.0f%%", dep * 100));
  for (double dep : d.depths) {
    std::vector<double> row;
    std::vector<int> marks;
    for (const NeedleRun& r : c.runs) {
      bool masked = false, ok = true;
      row.push_back(r.Cell(dep, &masked, &ok));
      marks.push_back(!ok ? 2 : masked ? 1 : 0);
    }
    h.values.push_back(row);
    h.marks.push_back(marks);
  }
  return Heatmap(h);
}

const ErrorStat& Pick(const Errors& e, int q) {
  const ErrorStat* s[] = {&e.out, &e.lse, &e.dq, &e.dk, &e.dv};
  return *s[q];
}
const char* kQuantities[] = {"out", "lse", "dq", "dk", "dv"};

std::string ErrorVsRanksSvg(const EvalData& d) {
  ChartSpec c;
  c.title = "Error vs ring size W (max relative error on sampled rows)";
  c.subtitle =
      absl::StrFormat("S=%d, %s layout, mask %s; the partials travel in fp32, so no growth with W",
                      d.matrix_seq, ShardingName(d.main_sharding), kMaskKinds[d.main_kind]);
  c.x_label = "ranks W";
  c.y_label = "max relative error";
  c.log_x = true;
  c.log_y = true;
  c.binary_x = true;
  for (DType t : d.options.dtypes) {
    for (int q : {0, 2, 3, 4}) {
      Series s;
      s.name = absl::StrCat(DTypeName(t), " ", kQuantities[q]);
      s.dashed = t != DType::kFloat32;
      std::map<int, double> by_w;
      for (const ExactRun& r : d.exact) {
        if (r.seqlen == d.matrix_seq && r.dtype == t && r.sharding == d.main_sharding &&
            r.mask_kind == kMaskKinds[d.main_kind]) {
          by_w[r.world] = Pick(r.err, q).rel_max;
        }
      }
      for (const auto& [w, e] : by_w) {
        s.x.push_back(w);
        s.y.push_back(e);
      }
      if (s.x.size() > 1) c.series.push_back(s);
    }
  }
  return LineChart(c);
}

std::string ErrorVsLengthSvg(const EvalData& d) {
  ChartSpec c;
  c.title = "Error vs context length (max relative error on sampled rows)";
  c.subtitle = absl::StrFormat("%s layout, W=%d, mask %s", ShardingName(d.main_sharding),
                               d.options.ranks, kMaskKinds[d.main_kind]);
  c.x_label = "context length S (tokens)";
  c.y_label = "max relative error";
  c.log_x = true;
  c.log_y = true;
  c.binary_x = true;
  for (DType t : d.options.dtypes) {
    for (int q : {0, 2, 3, 4}) {
      Series s;
      s.name = absl::StrCat(DTypeName(t), " ", kQuantities[q]);
      s.dashed = t != DType::kFloat32;
      for (const ExactRun& r : d.exact) {
        if (r.dtype == t && r.sharding == d.main_sharding && r.world == d.options.ranks &&
            r.mask_kind == kMaskKinds[d.main_kind]) {
          s.x.push_back(static_cast<double>(r.seqlen));
          s.y.push_back(Pick(r.err, q).rel_max);
        }
      }
      if (!s.x.empty()) c.series.push_back(s);
    }
  }
  return LineChart(c);
}

std::string MemorySvg(const EvalData& d) {
  const CostResult& cr = d.cost;
  ChartSpec c;
  c.title = "Memory per rank vs tokens per rank (S/W)";
  double nmax = 0;
  for (const CostPoint& p : cr.points) nmax = std::max(nmax, static_cast<double>(p.shard_len));
  c.subtitle = absl::StrFormat(
      "accounted = shard tensors + ring workspace; RSS = process peak growth / W\n"
      "fit a + b n + c n^2 over all (S, W): b = %.0f bytes/token, c n^2 share %s at the largest n",
      cr.mem_quad.b, ShareText(cr.mem_quad.ok ? cr.mem_quad.QuadShare(nmax) : 0.0));
  c.x_label = "tokens per rank n = S/W";
  c.y_label = "bytes per rank";
  std::set<int> worlds;
  for (const CostPoint& p : cr.points) worlds.insert(p.world);
  for (int w : worlds) {
    Series s, r;
    s.name = absl::StrFormat("accounted, W=%d", w);
    s.line = false;
    r.name = absl::StrFormat("RSS/W, W=%d", w);
    r.line = false;
    for (const CostPoint& p : cr.points) {
      if (p.world != w) continue;
      s.x.push_back(static_cast<double>(p.shard_len));
      s.y.push_back(static_cast<double>(p.stats.rank_bytes));
      if (p.stats.rss_peak_delta >= 0) {
        r.x.push_back(static_cast<double>(p.shard_len));
        r.y.push_back(static_cast<double>(p.stats.rss_peak_delta) / w);
      }
    }
    c.series.push_back(s);
    if (!r.x.empty()) c.series.push_back(r);
  }
  if (cr.mem_quad.ok) {
    Series f;
    f.name = "fit (accounted)";
    f.points = false;
    f.dashed = true;
    f.color = "#444444";
    for (int i = 0; i <= 20; ++i) {
      const double x = nmax * i / 20.0;
      f.x.push_back(x);
      f.y.push_back(cr.mem_quad.At(x));
    }
    c.series.push_back(f);
  }
  return LineChart(c);
}

std::string TimeSvg(const EvalData& d) {
  const CostResult& cr = d.cost;
  ChartSpec c;
  c.title = "Time per call vs FLOPs";
  c.subtitle = absl::StrFormat("%s layout, mask %s, %s; one dot per (S, W); dashed: fitted rate",
                               ShardingName(d.main_sharding), kMaskKinds[d.main_kind],
                               DTypeName(d.main_dtype));
  c.x_label = "useful FLOPs per call";
  c.y_label = "seconds";
  c.log_x = true;
  c.log_y = true;
  for (const auto& tf : cr.time_fits) {
    Series f, b;
    f.name = absl::StrFormat("fwd W=%d", tf.world);
    b.name = absl::StrFormat("bwd W=%d", tf.world);
    b.dashed = true;
    for (const CostPoint& p : cr.points) {
      if (p.world != tf.world) continue;
      f.x.push_back(p.fwd_flop);
      f.y.push_back(p.stats.fwd_seconds);
      b.x.push_back(p.bwd_flop);
      b.y.push_back(p.stats.bwd_seconds);
    }
    c.series.push_back(f);
    c.series.push_back(b);
  }
  return LineChart(c);
}

// ---- markdown ----

std::string StatCell(const ErrorStat& s) {
  return absl::StrFormat("%s / %s%s", Sci(s.rel_max), Sci(s.rel_mean), s.pass() ? "" : " **✗**");
}

std::string Markdown(const EvalData& d, const std::vector<std::string>& needle_files) {
  const EvalOptions& o = d.options;
  std::string md;
  absl::StrAppend(&md, "# ringattn-eval report\n\n");
  if (!o.command_line.empty()) absl::StrAppend(&md, "`", o.command_line, "`\n\n");
  const Json& env = d.environment;
  auto number = [&env](const char* key) {
    return env.contains(key) ? env[key].get<double>() : 0.0;
  };
  const bool processes = env.contains("comm_description");  // one rank per process
  absl::StrAppendFormat(
      &md,
      "%s: %d cores (%s), %s available; backend cpu, communicator %s. Heads H=%d, Hkv=%d, D=%d, "
      "batch 1. Main configuration: %s layout, mask %s, %s, W=%d. Wall time %.0f s (budget %.0f "
      "s%s).\n\n",
      processes ? "Rank 0's machine" : "Machine", static_cast<int>(number("cores")),
      env.contains("cpu") ? env["cpu"].get<std::string>() : "?",
      tools::HumanBytes(number("mem_available_bytes")),
      processes ? absl::StrFormat("%s, %d thread(s) per rank",
                                  env["comm_description"].get<std::string>(),
                                  static_cast<int>(number("threads_per_rank")))
                : std::string("local (W ranks as threads)"),
      o.heads, o.kv_heads, o.head_dim, ShardingName(d.main_sharding), d.main_mask.ToString(),
      DTypeName(d.main_dtype), o.ranks, d.wall_seconds,
      o.quick ? std::min(o.time_budget_s, 40.0) : o.time_budget_s, o.quick ? ", --quick" : "");
  if (o.strategy != Strategy::kRing) {
    absl::StrAppendFormat(
        &md,
        "Strategy **%s** in every ring run where it can run (the ring at W = 1%s).\n\n",
        StrategySpecName(o.strategy, o.ulysses, o.ranks),
        o.strategy == Strategy::kUlysses
            ? absl::StrFormat(" and where W > H = %d", o.heads)
            : o.strategy == Strategy::kHybrid
                  ? absl::StrFormat(" and where %d does not divide W or H < %d", o.ulysses,
                                    o.ulysses)
                  : "");
  }
  if (o.fault != Fault::kNone) {
    absl::StrAppend(&md,
                    "**Self-test fault injected into the reachability runs: ", FaultName(o.fault),
                    "** (this run is expected to FAIL reachability).\n\n");
  }
  absl::StrAppend(&md, "## Verdicts\n\n");
  for (const Verdict& v : d.verdicts) {
    absl::StrAppend(&md, "- **", v.check, ": ", v.pass ? "PASS" : "FAIL", "** — ", v.reason, "\n");
  }
  absl::StrAppend(&md, "\n");

  if (o.run_exactness) {
    absl::StrAppend(&md, "## 1. Exactness\n\n");
    absl::StrAppendFormat(
        &md,
        "The ring's forward and backward over W %s against float64, on a sample: %d "
        "random query rows and %d random key rows per length, plus the first and last row of every "
        "shard segment of every layout and W in use (at most 48 of them), every head. `out`, "
        "`lse`, `dq`: against `ReferenceForwardRow` and its float64 gradient (end to end). "
        "`dk`, `dv`: a float64 sum over *every* query row that sees the key, given the forward's "
        "saved `out`/`lse` (the backward's own inputs; the forward is checked on its own). "
        "Tolerance (flash-attn's rule): max error ≤ 2 × the error of a naive implementation in "
        "the same precision on the same rows + atol (fp32 1e-5, bf16 1e-3). Error must not grow "
        "with W: error(W) ≤ 2 × error(W=1) + atol/10.\n\n",
        processes ? "ranks (one per process)" : "local ranks", d.sample_rows, d.sample_rows);
    absl::StrAppend(
        &md,
        "Cells: max / mean relative error over the sample (max|ring − ref| / max|ref| and "
        "mean|ring − ref| / mean|ref|); ✗ marks an error above the tolerance. `err/tol` "
        "is the worst ratio of max abs error to tolerance in the run.\n\n");
    absl::StrAppend(&md,
                    "| phase | S | dtype | layout | mask | W | out | lse | dq | dk | dv | err/tol "
                    "| fwd s | bwd s |\n");
    absl::StrAppend(&md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const ExactRun& r : d.exact) {
      double worst = 0;
      for (int q = 0; q < 5; ++q) {
        const ErrorStat& s = Pick(r.err, q);
        if (s.tol > 0) worst = std::max(worst, s.max_abs / s.tol);
      }
      absl::StrAppendFormat(
          &md, "| %s | %s | %s | %s | %s | %d | %s | %s | %s | %s | %s | %.2f | %.2f | %.2f |\n",
          r.phase, Tokens(r.seqlen), DTypeName(r.dtype), ShardingName(r.sharding),
          r.mask.ToString(), r.world, StatCell(r.err.out), StatCell(r.err.lse), StatCell(r.err.dq),
          StatCell(r.err.dk), StatCell(r.err.dv), worst, r.stats.fwd_seconds, r.stats.bwd_seconds);
    }
    if (!d.sweep_note.empty()) {
      absl::StrAppend(&md, "\nError vs W: **not measured**: ", d.sweep_note, ".\n");
    }
    if (!d.growth.empty()) {
      absl::StrAppendFormat(&md,
                            "\nError vs W (max abs error, S=%d, %s layout):\n\n| dtype | mask | "
                            "quantity | W | max abs error | growth |\n|---|---|---|---|---|---|\n",
                            d.matrix_seq, ShardingName(d.main_sharding));
      for (const Growth& g : d.growth) {
        absl::StrAppendFormat(
            &md, "| %s | %s | %s | %s | %s | %s |\n", DTypeName(g.dtype), g.mask_kind, g.quantity,
            absl::StrJoin(g.worlds, ", "),
            absl::StrJoin(g.errors, ", ", [](std::string* out, double e) { out->append(Sci(e)); }),
            g.pass ? "none beyond noise" : "**GROWS**");
      }
      absl::StrAppend(&md, "\n![error vs W](exactness_vs_ranks.svg)\n");
    }
    absl::StrAppend(&md, "\n![error vs length](exactness_vs_length.svg)\n\n");
  }

  if (o.run_needle) {
    absl::StrAppend(&md, "## 2. Reachability (needles)\n\n");
    absl::StrAppend(
        &md,
        "Each needle is a key at one global position that matches its probes' query direction "
        "strongly (score 32 against ~N(0,1) for the random keys) and carries a distinctive value. "
        "Needles sit at every depth 0–100% of the sequence, on both sides of every shard boundary "
        "(b−1 and b; sampled for striped layouts, which have a boundary every stripe) and inside "
        "every rank's shard. Each needle is probed from the end of the sequence (the heatmaps), "
        "right after it, on it, right before it (the future, for causal masks) and on both sides "
        "of each window edge. Where the mask allows, the output must recover the needle's value "
        "(cosine ≥ 0.9 and ≥ 90% of it); where it forbids, at most 50% of it may appear (in "
        "practice ~0). Hatched cells are masked for the end probe (window), and must stay "
        "dark.\n\n");
    absl::StrAppend(&md,
                    "| layout | mask | lengths | visible found | masked leaked | min cosine | "
                    "boundaries probed | verdict |\n|---|---|---|---|---|---|---|---|\n");
    for (const NeedleConfig& c : d.needles) {
      int64_t vis = 0, found = 0, masked = 0, leaked = 0, bnd = 0, bndp = 0;
      double mc = 1;
      for (const NeedleRun& r : c.runs) {
        vis += r.expected_visible;
        found += r.found;
        masked += r.expected_masked;
        leaked += r.leaked;
        mc = std::min(mc, r.min_visible_cosine);
        bnd = std::max(bnd, r.boundaries);
        bndp = std::max(bndp, r.boundaries_probed);
      }
      absl::StrAppendFormat(&md, "| %s | %s | %s–%s | %d/%d | %d/%d | %.5f | %d of %d | %s |\n",
                            ShardingName(c.sharding), c.mask_kind,
                            c.runs.empty() ? "-" : Tokens(c.runs.front().seqlen),
                            c.runs.empty() ? "-" : Tokens(c.runs.back().seqlen), found, vis, leaked,
                            masked, mc, bndp, bnd, c.pass() ? "PASS" : "**FAIL**");
    }
    std::vector<std::string> fails;
    for (const NeedleConfig& c : d.needles) {
      for (const NeedleRun& r : c.runs) {
        for (const std::string& f : r.failures) {
          if (fails.size() < 20)
            fails.push_back(absl::StrCat(ShardingName(c.sharding), " ", c.mask_kind, ": ", f));
        }
      }
    }
    if (!fails.empty()) {
      absl::StrAppend(&md, "\nFailures (first 20):\n\n");
      for (const std::string& f : fails) absl::StrAppend(&md, "- ", f, "\n");
    }
    absl::StrAppend(&md, "\n");
    for (const std::string& f : needle_files) absl::StrAppend(&md, "![", f, "](", f, ")\n");
    absl::StrAppend(&md, "\n");
  }

  if (o.run_cost) {
    const CostResult& c = d.cost;
    absl::StrAppend(&md, "## 3. Cost\n\n");
    absl::StrAppendFormat(
        &md,
        "Forward + backward of the main configuration (%s, %s layout, mask %s) on synthetic "
        "shards made on each rank, at several lengths and W. Memory per rank = shard tensors (q, "
        "k, v, out, lse, dout, dq, dk, dv) + `RingStats.workspace_bytes`; RSS = the %s "
        "peak resident memory during the run above what it held before, divided by W. FLOPs "
        "count only visible pairs (forward 4·pairs·D·H, backward 2.5×).\n\n",
        DTypeName(d.main_dtype), ShardingName(d.main_sharding), kMaskKinds[d.main_kind],
        processes ? "sum over the W processes of each one's" : "process's");
    absl::StrAppend(&md,
                    "| S | W | tokens/rank | memory/rank | RSS/rank | fwd s | bwd s | fwd GFLOP/s "
                    "| bwd GFLOP/s |\n|---|---|---|---|---|---|---|---|---|\n");
    for (const CostPoint& p : c.points) {
      absl::StrAppendFormat(&md, "| %s | %d | %d | %s | %s | %.3f | %.3f | %.1f | %.1f |\n",
                            Tokens(p.seqlen), p.world, p.shard_len, tools::HumanBytes(p.stats.rank_bytes),
                            p.stats.rss_peak_delta >= 0
                                ? tools::HumanBytes(static_cast<double>(p.stats.rss_peak_delta) / p.world)
                                : "-",
                            p.stats.fwd_seconds, p.stats.bwd_seconds,
                            p.fwd_flop / std::max(p.stats.fwd_seconds, 1e-12) * 1e-9,
                            p.bwd_flop / std::max(p.stats.bwd_seconds, 1e-12) * 1e-9);
    }
    double nmax = 0;
    for (const CostPoint& p : c.points) nmax = std::max(nmax, static_cast<double>(p.shard_len));
    absl::StrAppendFormat(
        &md,
        "\nMemory fit over all (S, W): bytes/rank = %s + %.1f·n + %.3g·n² (n = S/W; R² %.6f); the "
        "n² term is %s of the fitted value at n = %d. Linear fit: %.1f bytes per token per rank "
        "+ %s.\n",
        tools::HumanBytes(Clean(c.mem_quad.a)), c.mem_quad.b, Clean(c.mem_quad.c), c.mem_quad.r2,
        ShareText(c.mem_quad.ok ? c.mem_quad.QuadShare(nmax) : 0.0), static_cast<int64_t>(nmax),
        c.mem_lin.b, tools::HumanBytes(Clean(c.mem_lin.a)));
    if (c.rss_available && c.rss_lin.ok) {
      absl::StrAppendFormat(&md,
                            "RSS per rank: %.1f bytes per token + %s (R² %.4f); at the top two "
                            "lengths it grew %.2f× for %.2f× the tokens.\n",
                            c.rss_lin.b, tools::HumanBytes(c.rss_lin.a), c.rss_lin.r2, c.rss_growth,
                            c.rss_growth_tokens);
    }
    absl::StrAppend(&md,
                    "\nTime against FLOPs (seconds = t0 + FLOPs / rate):\n\n| W | fwd GFLOP/s | "
                    "fwd t0 | R² | bwd GFLOP/s | bwd t0 | R² | time exponent (fwd, top two S) | "
                    "FLOP exponent |\n|---|---|---|---|---|---|---|---|---|\n");
    for (const auto& tf : c.time_fits) {
      absl::StrAppendFormat(&md, "| %d | %.1f | %.3f | %.4f | %.1f | %.3f | %.4f | %.2f | %.2f |\n",
                            tf.world, tf.fwd.b > 0 ? 1e-9 / tf.fwd.b : 0.0, tf.fwd.a, tf.fwd.r2,
                            tf.bwd.b > 0 ? 1e-9 / tf.bwd.b : 0.0, tf.bwd.a, tf.bwd.r2,
                            tf.fwd_exponent, tf.flop_exponent);
    }
    absl::StrAppendFormat(
        &md,
        "\n**Extrapolation (from the fits, not measured)**: the largest context whose memory per "
        "rank fits the budget of %s per rank, and the time this machine's fitted rate predicts "
        "for it:\n\n| W | tokens per rank | context S | S from the RSS fit | fwd (predicted) | bwd "
        "(predicted) |\n|---|---|---|---|---|---|\n",
        tools::HumanBytes(static_cast<double>(o.mem_budget_bytes)));
    for (const auto& e : c.extrapolations) {
      absl::StrAppendFormat(&md, "| %d | %s | %s | %s | %s | %s |\n", e.world,
                            Tokens(e.max_tokens_per_rank), Tokens(e.max_seqlen),
                            e.max_seqlen_rss > 0 ? Tokens(e.max_seqlen_rss) : "-",
                            HumanSeconds(e.fwd_seconds), HumanSeconds(e.bwd_seconds));
    }
    absl::StrAppend(&md,
                    "\n![memory per rank](cost_memory.svg)\n![time vs FLOPs](cost_time.svg)\n");
  }
  absl::StrAppend(&md, "\nEvery number of this report is in [report.json](report.json).\n");
  return md;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> WriteReport(const EvalData& d, const std::string& dir) {
  std::vector<std::string> files;
  auto write = [&](const std::string& name, const std::string& text) -> absl::Status {
    absl::Status s = WriteFileAtomic(dir, name, text);
    if (s.ok()) files.push_back(name);
    return s;
  };
  std::vector<std::string> needle_files;
  if (d.options.run_needle) {
    for (const NeedleConfig& c : d.needles) {
      const std::string name =
          absl::StrCat("needle_", ShardingName(c.sharding), "_", Slug(c.mask_kind), ".svg");
      absl::Status s = write(name, NeedleSvg(d, c));
      if (!s.ok()) return s;
      needle_files.push_back(name);
    }
  }
  if (d.options.run_exactness) {
    absl::Status s = write("exactness_vs_length.svg", ErrorVsLengthSvg(d));
    if (s.ok() && !d.growth.empty()) s = write("exactness_vs_ranks.svg", ErrorVsRanksSvg(d));
    if (!s.ok()) return s;
  }
  if (d.options.run_cost) {
    absl::Status s = write("cost_memory.svg", MemorySvg(d));
    if (s.ok()) s = write("cost_time.svg", TimeSvg(d));
    if (!s.ok()) return s;
  }
  absl::Status s = write("report.json", DumpJson(BuildJson(d)));
  if (s.ok()) s = write("report.md", Markdown(d, needle_files));
  if (!s.ok()) return s;
  return files;
}

}  // namespace ringattn::eval
