// Bodies of the bn_silu_loops.h loops, written once with at::vec::Vectorized<float>. Included inside an
// ISA-named namespace after <ATen/cpu/vec/vec.h> (see bn_silu_kernel.cpp and bn_silu_kernel_avx2.cpp);
// defines `kLoops`.
//
// Vectorised along the channels of a row (channels-last: a row is C contiguous floats). The sums use
// float partials over kFlushRows rows, then add them to the caller's double accumulators: the float
// rounding error stays that of a 32-term sum, and the double adds cost one per kFlushRows elements.

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kW = Vec::size();
constexpr int64_t kFlushRows = 32;

// exp_u20: at::vec's faster exp (a few ulp, against 1 for exp()); the results stay within the float64-bounded
// tolerance of tests/test_batchnorm_silu.py, and on the dev CPU (one thread, yolox-nano's stem) the backward
// took 6.2 ms against 7.9 ms and the forward 3.5 ms against 3.7 ms with exp().
inline Vec silu(const Vec& z) { return z / (Vec(1.0f) + z.neg().exp_u20()); }
inline Vec sigmoid(const Vec& z) { return Vec(1.0f) / (Vec(1.0f) + z.neg().exp_u20()); }

inline void add_to_double(const Vec& v, double* acc, int64_t count) {
  alignas(64) float lanes[kW];
  v.store(lanes);
  for (int64_t j = 0; j < count; ++j) acc[j] += static_cast<double>(lanes[j]);
}

void stats(const float* x, int64_t rows, int64_t C, const float* pivot, double* sum, double* sumsq) {
  for (int64_t r0 = 0; r0 < rows; r0 += kFlushRows) {
    const int64_t r1 = r0 + kFlushRows < rows ? r0 + kFlushRows : rows;
    for (int64_t c = 0; c < C; c += kW) {
      const int64_t n = C - c < kW ? C - c : kW;
      const Vec p = Vec::loadu(pivot + c, n);
      Vec s(0.0f), q(0.0f);
      for (int64_t r = r0; r < r1; ++r) {
        const Vec d = Vec::loadu(x + r * C + c, n) - p;  // lanes >= n: 0 - 0
        s = s + d;
        q = q + d * d;
      }
      add_to_double(s, sum + c, n);
      add_to_double(q, sumsq + c, n);
    }
  }
}

void forward(const float* x, int64_t rows, int64_t C, const float* alpha, const float* beta, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    int64_t c = 0;
    for (; c + kW <= C; c += kW)
      silu(Vec::loadu(xr + c) * Vec::loadu(alpha + c) + Vec::loadu(beta + c)).store(yr + c);
    if (c < C) {
      const int64_t n = C - c;
      silu(Vec::loadu(xr + c, n) * Vec::loadu(alpha + c, n) + Vec::loadu(beta + c, n)).store(yr + c, n);
    }
  }
}

void backward_stats(const float* gy, const float* x, int64_t rows, int64_t C, const float* alpha, const float* beta,
                    const float* mean, double* sum_gz, double* dot) {
  const Vec one(1.0f);
  for (int64_t r0 = 0; r0 < rows; r0 += kFlushRows) {
    const int64_t r1 = r0 + kFlushRows < rows ? r0 + kFlushRows : rows;
    for (int64_t c = 0; c < C; c += kW) {
      const int64_t n = C - c < kW ? C - c : kW;
      const Vec a = Vec::loadu(alpha + c, n), b = Vec::loadu(beta + c, n), m = Vec::loadu(mean + c, n);
      Vec s(0.0f), d(0.0f);
      for (int64_t r = r0; r < r1; ++r) {
        const Vec xv = Vec::loadu(x + r * C + c, n);
        const Vec z = xv * a + b;
        const Vec sig = sigmoid(z);
        const Vec g = Vec::loadu(gy + r * C + c, n) * sig * (one + z * (one - sig));
        s = s + g;  // lanes >= n: gy loads as 0, so g is 0 there
        d = d + g * (xv - m);
      }
      add_to_double(s, sum_gz + c, n);
      add_to_double(d, dot + c, n);
    }
  }
}

void backward_input(const float* gy, const float* x, int64_t rows, int64_t C, const float* alpha, const float* beta,
                    const float* mean, const float* mean_gz, const float* k, const float* scale, float* gx) {
  const Vec one(1.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const float* gr = gy + r * C;
    const float* xr = x + r * C;
    float* out = gx + r * C;
    for (int64_t c = 0; c < C; c += kW) {
      const int64_t n = C - c < kW ? C - c : kW;
      const Vec xv = Vec::loadu(xr + c, n);
      const Vec z = xv * Vec::loadu(alpha + c, n) + Vec::loadu(beta + c, n);
      const Vec sig = sigmoid(z);
      const Vec g = Vec::loadu(gr + c, n) * sig * (one + z * (one - sig));
      const Vec v = (g - Vec::loadu(mean_gz + c, n) - (xv - Vec::loadu(mean + c, n)) * Vec::loadu(k + c, n)) *
                    Vec::loadu(scale + c, n);
      v.store(out + c, n);
    }
  }
}
