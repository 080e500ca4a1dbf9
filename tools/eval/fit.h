// Least-squares polynomial fits for the cost check: memory per rank against
// tokens per rank (a + b n + c n^2: is there an n^2 term?) and time against
// FLOPs (a + b F: a fixed cost plus a rate).
#pragma once

#include <vector>

namespace ringattn::eval {

struct Fit {
  double a = 0, b = 0, c = 0;  // y = a + b x + c x^2 (c = 0 for degree 1)
  double r2 = 0;               // coefficient of determination
  int points = 0;
  bool ok = false;  // enough distinct points for the degree
  double At(double x) const { return a + b * x + c * x * x; }
  // Share of the quadratic term in the fitted value at x: c x^2 / y(x).
  double QuadShare(double x) const;
};

// degree 1 or 2; x is rescaled internally so the system stays well
// conditioned at any size.
Fit FitPolynomial(const std::vector<double>& x, const std::vector<double>& y, int degree);

}  // namespace ringattn::eval
