// Polynomial least squares by the normal equations on rescaled x; see fit.h.
#include "tools/eval/fit.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace ringattn::eval {

double Fit::QuadShare(double x) const {
  const double y = At(x);
  return y != 0 ? c * x * x / y : 0.0;
}

Fit FitPolynomial(const std::vector<double>& x, const std::vector<double>& y, int degree) {
  Fit f;
  const size_t n = std::min(x.size(), y.size());
  f.points = static_cast<int>(n);
  const int k = degree + 1;
  std::set<double> distinct(x.begin(), x.begin() + n);
  if (degree < 1 || degree > 2 || static_cast<int>(distinct.size()) < k) return f;
  double xmax = 0;
  for (size_t i = 0; i < n; ++i) xmax = std::max(xmax, std::abs(x[i]));
  if (xmax == 0) return f;
  // Normal equations in u = x / xmax: A p = r, A[i][j] = sum u^(i+j).
  double A[3][4] = {};
  for (size_t i = 0; i < n; ++i) {
    const double u = x[i] / xmax;
    double pw[5] = {1, u, u * u, u * u * u, u * u * u * u};
    for (int r = 0; r < k; ++r) {
      for (int c = 0; c < k; ++c) A[r][c] += pw[r + c];
      A[r][k] += pw[r] * y[i];
    }
  }
  for (int col = 0; col < k; ++col) {  // Gaussian elimination, partial pivoting
    int piv = col;
    for (int r = col + 1; r < k; ++r) {
      if (std::abs(A[r][col]) > std::abs(A[piv][col])) piv = r;
    }
    if (std::abs(A[piv][col]) < 1e-300) return f;
    for (int c = 0; c <= k; ++c) std::swap(A[col][c], A[piv][c]);
    for (int r = 0; r < k; ++r) {
      if (r == col) continue;
      const double m = A[r][col] / A[col][col];
      for (int c = col; c <= k; ++c) A[r][c] -= m * A[col][c];
    }
  }
  double p[3] = {0, 0, 0};
  for (int r = 0; r < k; ++r) p[r] = A[r][k] / A[r][r];
  f.a = p[0];
  f.b = p[1] / xmax;
  f.c = p[2] / (xmax * xmax);
  double mean = 0;
  for (size_t i = 0; i < n; ++i) mean += y[i];
  mean /= n;
  double ss_tot = 0, ss_res = 0;
  for (size_t i = 0; i < n; ++i) {
    ss_tot += (y[i] - mean) * (y[i] - mean);
    ss_res += (y[i] - f.At(x[i])) * (y[i] - f.At(x[i]));
  }
  f.r2 = ss_tot > 0 ? 1 - ss_res / ss_tot : 1.0;
  f.ok = true;
  return f;
}

}  // namespace ringattn::eval
